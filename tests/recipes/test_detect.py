import json
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras

from detection.centernet import decode_detections
from detection.data import load_data, load_images
from detection.evaluation import evaluate_detector
from detection.litert import LiteRTDetector
from kd_keras import config as config_lib
from recipes import detect
from tests.helpers import run_on_robot

CONFIGS = Path(detect.__file__).parent / "configs"
TINY = [
    "--epochs", "2",
    "--set", "teacher_epochs=2",
    "--set", "min_steps=0",
    "--set", "image_size=32",
    "--set", "builtin_train=16",
    "--set", "builtin_val=6",
    "--set", "batch_size=4",
    "--set", "teacher_model.width=0.25",
    "--set", "teacher_model.depth=1",
    "--set", "compress.sparsity=0.3",
    "--set", "compress.prune_epochs=1",
    "--set", "compress.qat_epochs=1",
    "--set", "latency_runs=3",
]  # fmt: skip


@pytest.mark.slow
def test_tiny_run_trains_exports_and_evaluates(tmp_path, robot_python):
    output = tmp_path / "run"
    args = [*TINY, "--set", f"builtin_dir={tmp_path / 'shapes'}", "--output-dir", str(output)]
    store = f"sqlite:///{tmp_path}/mlflow.db"
    assert detect.main([*args, "--tracking-uri", store]) == 0
    report = json.loads((output / "report.json").read_text())
    rows = {row["model"]: row for row in report["rows"]}
    assert list(rows) == [
        "teacher",
        "student (scratch)",
        "student (distilled)",
        "student (pruned 30%, QAT)",
        "student (int8 TFLite, LiteRT)",
    ]
    for row in rows.values():
        assert 0.0 <= row["AP"] <= 1.0 and 0.0 <= row["AP50"] <= 1.0
    int8 = rows["student (int8 TFLite, LiteRT)"]
    assert int8["latency_ms"] > 0 and rows["teacher"]["latency_ms"] > 0
    assert int8["size_bytes"] < rows["student (distilled)"]["size_bytes"]
    assert rows["student (distilled)"]["params"] == rows["student (scratch)"]["params"]
    for name in ("teacher", "student (scratch)", "student (distilled)"):
        # Post-training int8: a byte per weight and the flatbuffer's overhead.
        params = rows[name]["params"]
        assert params < rows[name]["int8_bytes"] < 1.5 * params + 20_000, rows[name]
        assert rows[name]["int8_latency_ms"] > 0, name
    assert report["compression"]["qat"] and report["compression"]["prune_sparsity"] > 0.1
    assert report["train_images"] == 16 and report["val_images"] == 6
    # The exported file re-scores to the reported AP in LiteRT.
    val = load_data(detect.parse_config(["--config", str(output / "config.yaml")]))[1]
    again = evaluate_detector(LiteRTDetector(output / "student_int8.tflite"), val, (32, 32))
    assert again["AP"] == pytest.approx(int8["AP"], abs=1e-9)
    student = keras.models.load_model(output / "student.keras")
    assert [o.shape[-1] for o in student.outputs] == [4, 2, 2]
    # The deploy bundle, run by the robot runtime in an environment without TensorFlow, finds
    # the boxes and scores of the in-process LiteRT evaluation.
    bundle = json.loads((output / "deploy" / "bundle.json").read_text())
    assert bundle["task"] == "detection" and bundle["classes"] == list(val.class_names)
    assert bundle["source"]["metrics"]["AP"] == pytest.approx(int8["AP"])
    assert (output / "deploy" / "model.tflite").read_bytes() == (
        output / "student_int8.tflite"
    ).read_bytes()
    images = load_images(val, (32, 32))
    heads = LiteRTDetector(output / "student_int8.tflite")(images / np.float32(255.0))
    expected = decode_detections(*heads, 4, 100, 0.01)
    found = run_on_robot(robot_python, output / "deploy", images, tmp_path / "robot")
    assert sum(len(f) for f in found) > 0
    for want, got in zip(expected, found, strict=True):
        np.testing.assert_allclose(got[:, :4], want.boxes, atol=1e-4)
        np.testing.assert_allclose(got[:, 4], want.scores, rtol=1e-6)
        np.testing.assert_array_equal(got[:, 5], want.classes)
    # Recorded in MLflow, the int8 file registered as the challenger with its LiteRT AP.
    from mlflow.tracking import MlflowClient

    assert report["mlflow"]["complete"] is True
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(report["mlflow"]["run_id"])
    assert run.data.metrics["tflite_AP"] == pytest.approx(int8["AP"])
    assert run.data.tags["task"] == "detection"
    assert client.get_metric_history(run.info.run_id, "distilled/loss")
    assert client.get_metric_history(run.info.run_id, "qat/loss")
    version = client.get_model_version_by_alias("detect-student", "challenger")
    assert version.run_id == run.info.run_id
    # The registered model carries the bundle and predicts through the runtime.
    import mlflow

    model_uri = f"models:/detect-student/{version.version}"
    mlflow.set_tracking_uri(store)
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    assert (local / "artifacts" / "deploy" / "bundle.json").read_text() == (
        output / "deploy" / "bundle.json"
    ).read_text()
    predicted = mlflow.pyfunc.load_model(model_uri).predict(images[:2] / np.float32(255.0))
    heatmaps = [v for v in predicted.values() if v.shape[-1] == 4]
    np.testing.assert_array_equal(heatmaps[0], heads[0][:2])


def test_shipped_config_equals_defaults():
    config = detect.parse_config(["--config", str(CONFIGS / "detect_shapes.yaml")])
    assert config == detect.DetectConfig()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "epoch=3"], "Unknown config key 'epoch'"),
        (["--set", "image_size=100"], "Expected image_size a multiple of 16"),
        (["--data", "x"], "needs both --data DIR (images) and --annotations FILE"),
        (["--set", "distill.box_region=boxes"], "Allowed values: 'gaussian', 'centres'"),
        (["--set", "on_bad_annotations=ignore"], "Allowed values: 'raise', 'skip'"),
        (["--teacher", "missing.keras"], "Expected --teacher to be an existing .keras file"),
    ],
)
def test_bad_options_fail_before_training(args, message, tmp_path, capsys):
    base = ["--set", "builtin_train=2", "--set", "builtin_val=1", "--set", "image_size=32"]
    base += ["--set", f"builtin_dir={tmp_path / 'shapes'}", "--set", "batch_size=2"]
    assert detect.main([*base, *args, "--output-dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_bad_annotations_stop_the_run_with_the_report(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(images / "a.jpg")
    data = {
        "categories": [{"id": 1, "name": "thing"}],
        "images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 32}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [20, 20, 30, 30]}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    args = ["--data", str(images), "--annotations", str(tmp_path / "ann.json")]
    assert detect.main([*args, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "[image_id=1, annotation_id=5]: box [20, 20, 30, 30] lies outside" in err
    assert "on_bad_annotations=skip" in err


def test_config_error_type():
    with pytest.raises(config_lib.ConfigError):
        detect.parse_config(["--set", "distill.temperature=0"])
