"""tf_keras.applications backbones in the three tasks: configs, models, one whole run."""

import json

import pytest
import tf_keras as keras

from classification.models import build_classifier
from detection.models import build_detector
from kd_keras.config import ConfigError
from kd_keras.models.applications import APPLICATIONS
from recipes import classify, detect, reid
from reid.models import build_reid_model

WIDTH = {"mobilenet_v2": 0.35, "mobilenet_v3_small": 0.75, "resnet50": 1.0, "efficientnet_b0": 1.0}


def _model_args(backbone: str, role: str = "student") -> list[str]:
    key = f"{role}_model"
    return ["--set", f"{key}.backbone={backbone}", "--set", f"{key}.width={WIDTH[backbone]}"]


@pytest.mark.parametrize("backbone", list(APPLICATIONS))
def test_each_task_builds_its_heads_on_each_backbone(backbone):
    config = classify.parse_config([*_model_args(backbone), "--set", "builtin=shapes"])
    classifier = build_classifier(config, "student", (32, 32, 3), 6, "student")
    assert classifier.output_shape == (None, 6)
    assert classifier.get_layer("features").output_shape[-1] > 0

    config = detect.parse_config([*_model_args(backbone, "teacher"), "--set", "image_size=64"])
    detector = build_detector(config, "teacher", 4, "teacher")
    assert [tuple(shape) for shape in detector.output_shape] == [
        (None, 16, 16, 4),
        (None, 16, 16, 2),
        (None, 16, 16, 2),
    ]
    assert detector.get_layer("neck").output_shape[1:3] == (16, 16)
    assert not any(isinstance(layer, keras.Model) for layer in detector.layers)

    config = reid.parse_config(_model_args(backbone))
    spec = config.student_model
    model = build_reid_model(
        (*config.image_size, 3),
        10,
        spec.backbone,
        spec.width,
        spec.embedding_dim,
        weights=spec.weights,
    )
    assert [tuple(shape) for shape in model.output_shape] == [(None, 32), (None, 10)]


@pytest.mark.parametrize(
    ("recipe", "args", "message"),
    [
        (classify, _model_args("mobilenet_v2"), "built-in digits are 8x8 grey images"),
        (classify, [*_model_args("resnet50", "teacher"), "--set", "builtin=shapes", "--set",
                    "methods=[progressive]"],
         "pairs the teacher's CNN stages"),
        (classify, [*_model_args("mobilenet_v2"), "--set", "builtin=shapes", "--set",
                    "methods=[lma]"], "reshape kd-keras's own CNN"),
        (detect, [*_model_args("mobilenet_v2"), "--set", "methods=[budget]"],
         "student_model.backbone='mobilenet_v2' is a tf_keras.applications network"),
        (detect, [*_model_args("mobilenet_v2"), "--set", "image_size=48"], "multiples of 32"),
        (reid, ["--set", "teacher_model.weights=teacher.h5"], "starts from random weights"),
        (reid, [*_model_args("resnet50", "teacher"), "--set", "teacher_model.weights=none.h5"],
         "no file is at 'none.h5'"),
        (detect, ["--set", "student_model.backbone=mobilenet_v2", "--set",
                  "student_model.weights=imagenet", "--set", "student_model.width=0.6"],
         "ImageNet weights of mobilenet_v2 at widths"),
    ],
)  # fmt: skip
def test_backbone_settings_that_cannot_build_are_refused_before_training(recipe, args, message):
    with pytest.raises(ConfigError, match=message):
        recipe.parse_config(args)


@pytest.mark.slow
def test_a_mobilenet_v3_small_detector_calibrates_instead_of_qat_and_ships(tmp_path):
    """tf_keras's MobileNetV3 has TFOpLambda layers TF-MOT cannot wrap: the run skips QAT,
    says why, and ships a calibrated full-int8 file."""
    output = tmp_path / "run"
    args = [
        "--epochs", "1",
        "--set", "teacher_epochs=1",
        "--set", "min_steps=0",
        "--set", "image_size=32",
        "--set", "builtin_train=8",
        "--set", "builtin_val=4",
        "--set", "batch_size=4",
        "--set", "teacher_model.width=0.25",
        "--set", "teacher_model.depth=1",
        *_model_args("mobilenet_v3_small"),
        "--set", "compress.prune_epochs=1",
        "--set", "compress.calibration_images=4",
        "--set", "latency_runs=2",
        "--set", "int8_costs=false",
        "--set", f"builtin_dir={tmp_path / 'shapes'}",
        "--output-dir", str(output),
        "--no-tracking",
    ]  # fmt: skip
    assert detect.main(args) == 0
    report = json.loads((output / "report.json").read_text())
    assert "TFOpLambda" in report["compression"]["qat_skipped"]
    assert "qat" not in [record["stage"] for record in report.get("stages", [])]
    rows = {row["model"]: row for row in report["rows"]}
    assert "student (pruned 30%)" in rows and "student (int8 TFLite, LiteRT)" in rows
    student = keras.models.load_model(output / "student.keras", compile=False)
    assert rows["student (int8 TFLite, LiteRT)"]["params"] == student.count_params()
    assert report["compression"]["export"]["io"]["inputs"][0]["dtype"] == "float32"
    bundle = json.loads((output / "deploy" / "bundle.json").read_text())
    assert bundle["task"] == "detection"
    assert (bundle["input"]["height"], bundle["input"]["width"]) == (32, 32)
