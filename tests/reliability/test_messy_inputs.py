"""Messy real inputs found by trying the recipes as a new user: each is refused before training
with a one-line message naming what was wrong, or handled."""

import json
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras
from PIL import Image

from classification.config import ClassifyConfig
from classification.data import load_image_folder
from classification.task import ClassificationTask
from kd_keras import config as config_lib
from kd_keras.config import ConfigError
from kd_keras.models import build_cnn_classifier
from kd_keras.pipeline import prepare, stage_dependencies
from kd_keras.pipeline.run_state import RunState
from recipes import classify, detect, reid

QUIET = ["--no-tracking", "--set", "latency_runs=1", "--set", "int8_costs=false"]


def _image(path: Path, value: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size, 3), value, np.uint8)
    pixels[: size // 2, : size // 2] = 255 - value
    Image.fromarray(pixels).save(path)


def _class_folder(root: Path, per_class: int = 4, classes=("cat", "dog")) -> Path:
    for index, name in enumerate(classes):
        for i in range(per_class):
            _image(root / name / f"{i}.png", 40 * index + 10 * i)
    return root


def _coco(folder: Path, categories, names=("a.png", "b.png")) -> Path:
    for i, name in enumerate(names):
        _image(folder / name, 30 * i, size=32)
    images = [
        {"id": i + 1, "file_name": name, "width": 32, "height": 32} for i, name in enumerate(names)
    ]
    annotations = [
        {"id": i + 1, "image_id": i + 1, "category_id": categories[0]["id"], "bbox": [2, 2, 9, 9]}
        for i in range(len(names))
    ]
    path = folder / "instances.json"
    data = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(data))
    return path


def _refused(main, args, capsys) -> str:
    assert main([*args, *QUIET]) == 2
    lines = capsys.readouterr().err.splitlines()
    # Warnings about the data (these 32-px images have small boxes) may come first.
    errors = [line for line in lines if not line[:2].isdigit()]
    assert len(errors) == 1 and errors[0].startswith("error: "), lines
    assert not any("Traceback" in line for line in lines)
    return errors[0] + "\n"


# --- 2. data that changed between two runs ---


def _classify_config(data: Path, output: Path, **values) -> ClassifyConfig:
    values = {"data": str(data), "image_size": 8, "output_dir": str(output), **values}
    return config_lib.from_dict(ClassifyConfig, {**values, "tracking": {"enabled": False}})


def _finish_teacher(prepared) -> None:
    teacher_file = Path(prepared.config.output_dir) / "teacher.keras"
    teacher_file.parent.mkdir(parents=True, exist_ok=True)
    teacher_file.write_bytes(b"finished")
    prepared.state.finish("teacher", file=teacher_file, seconds=1.0, loss=0.5)


def test_changed_images_are_refused_naming_them_until_restart(tmp_path, capsys):
    data = _class_folder(tmp_path / "data")
    config = _classify_config(data, tmp_path / "out")
    _finish_teacher(prepare(ClassificationTask, config))
    assert prepare(ClassificationTask, config).state.reused == ["teacher"]  # same data: reused

    _image(data / "dog" / "9.png", 200)  # a new image
    _image(data / "cat" / "0.png", 99)  # a fixed one (other bytes)
    args = ["--data", str(data), "--set", "image_size=8", "--output-dir", str(tmp_path / "out")]
    err = _refused(classify.main, args, capsys)
    assert "trained on other data" in err
    assert "images: 1 added (dog/9.png); 1 modified (cat/0.png)" in err
    assert "--restart" in err

    restarted = prepare(ClassificationTask, config.model_copy(update={"restart": True}))
    assert restarted.state.finished == []


def test_a_fixed_annotation_file_is_refused(tmp_path, capsys):
    categories = [{"id": 1, "name": "box"}]
    annotations = _coco(tmp_path / "data", categories, names=[f"{i}.png" for i in range(8)])
    args = ["--data", str(tmp_path / "data"), "--annotations", str(annotations)]
    args += ["--set", "image_size=32", "--set", "batch_size=2"]
    args += ["--output-dir", str(tmp_path / "out")]
    prepared = prepare(detect.DetectionTask, detect.parse_config([*args, *QUIET]))
    _finish_teacher(prepared)
    data = json.loads(annotations.read_text())
    data["annotations"][0]["bbox"] = [3, 3, 9, 9]
    annotations.write_text(json.dumps(data))
    err = _refused(detect.main, args, capsys)
    assert "annotations: 'sha256:" in err and "trained on other data" in err


# --- 3. categories that collide ---


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        ([{"id": 1, "name": "box"}, {"id": 1, "name": "ball"}], "distinct ids"),
        ([{"id": 1, "name": "box"}, {"id": 2, "name": "box"}], "distinct names"),
        ([{"id": "1", "name": "box"}], "integer 'id'"),
    ],
)
def test_colliding_categories_are_refused(tmp_path, capsys, categories, message):
    annotations = _coco(tmp_path, categories)
    args = ["--data", str(tmp_path), "--annotations", str(annotations)]
    err = _refused(detect.main, [*args, "--output-dir", str(tmp_path / "out")], capsys)
    assert message in err and "instances.json" in err


# --- 5. crashes after training started ---


def test_a_one_class_folder_is_refused(tmp_path):
    data = _class_folder(tmp_path, classes=("only",))
    with pytest.raises(ValueError, match=r"one class folder \(only\).*at least 2 classes"):
        load_image_folder(data, 8)


def test_a_class_folder_with_one_image_is_named(tmp_path):
    data = _class_folder(tmp_path, per_class=4)
    _image(tmp_path / "lonely" / "0.png", 7)
    dataset = load_image_folder(data, 8)
    with pytest.raises(ValueError, match=r"at least 2 images.*'lonely' \(1\)"):
        dataset.split(0.25, seed=0)


def _softmax_teacher(path: Path) -> Path:
    model = build_cnn_classifier((8, 8, 3), 2, 0.25, name="teacher")
    probabilities = keras.layers.Softmax(name="probabilities")(model.output)
    keras.Model(model.input, probabilities).save(path)
    return path


def test_a_softmax_teacher_must_be_declared_as_probabilities(tmp_path, capsys):
    data = _class_folder(tmp_path / "data")
    teacher = _softmax_teacher(tmp_path / "teacher.keras")
    args = ["--data", str(data), "--set", "image_size=8", "--teacher", str(teacher)]
    err = _refused(classify.main, [*args, "--output-dir", str(tmp_path / "out")], capsys)
    assert "ends in a softmax" in err and "distill.teacher_outputs=probabilities" in err


@pytest.mark.slow
def test_softmax_teacher_and_few_calibration_images_run_to_the_int8_file(tmp_path):
    """Both used to crash after the scratch student had trained."""
    data = _class_folder(tmp_path / "data", per_class=6)
    teacher = _softmax_teacher(tmp_path / "teacher.keras")
    args = ["--data", str(data), "--set", "image_size=8", "--teacher", str(teacher)]
    args += ["--set", "distill.teacher_outputs=probabilities", "--set", "batch_size=4"]
    args += ["--set", "compress.calibration_images=3", "--epochs", "1"]
    args += ["--set", "compress.prune_epochs=1", "--set", "compress.qat_epochs=1"]
    output = tmp_path / "out"
    assert classify.main([*args, *QUIET, "--output-dir", str(output)]) == 0
    report = json.loads((output / "report.json").read_text())
    models = [row["model"] for row in report["rows"]]
    assert models[-2:] == ["student (pruned 50%, QAT)", "student (int8 TFLite, LiteRT)"]
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in report["rows"])
    assert Path(report["artifacts"]["student_tflite"]).stat().st_size > 0


def _market_name(person: int, camera: int, index: int) -> str:
    return f"{person:04d}_c{camera}s1_{index:06d}_01.jpg"


def test_a_query_seen_only_by_its_own_camera_in_the_gallery_is_refused(tmp_path, capsys):
    for split, entries in {
        "bounding_box_train": [(1, 1), (1, 2), (2, 1), (2, 2)],
        "query": [(3, 1), (4, 1)],
        "bounding_box_test": [(3, 2), (4, 1)],  # person 4 only under camera 1, like its query
    }.items():
        for index, (person, camera) in enumerate(entries):
            _image(tmp_path / "m" / split / _market_name(person, camera, index), 50 * index, 16)
    args = ["--data", str(tmp_path / "m"), "--output-dir", str(tmp_path / "out")]
    err = _refused(reid.main, args, capsys)
    assert "only under the query's own camera" in err
    assert _market_name(4, 1, 1) in err and _market_name(3, 1, 0) not in err


def _state(tmp_path: Path, config: dict, stages=("teacher", "scratch", "student", "pruned")):
    state = RunState(tmp_path, config, changes_stage=stage_dependencies(["scratch"]))
    for stage in stages:
        state.finish(stage, seconds=1.0)
    return state


def test_a_key_of_the_stage_that_crashed_may_change_without_restart(tmp_path):
    config = {"teacher_epochs": 2, "distill": {"temperature": 4.0}, "compress": {}}
    config["compress"] = {"calibration_images": 2, "sparsity": 0.3, "export": "int8"}
    _state(tmp_path, config)  # then QAT crashed
    fixed = json.loads(json.dumps(config))
    fixed["compress"].update(calibration_images=64, export=None)
    reopened = RunState(tmp_path, fixed, changes_stage=stage_dependencies(["scratch"]))
    assert reopened.reused == ["teacher", "scratch", "student", "pruned"]

    for key, value, spoiled in [
        ("sparsity", 0.5, "pruned"),
        ("teacher_epochs", 3, "teacher, scratch, student, pruned"),
    ]:
        changed = json.loads(json.dumps(fixed))
        if key == "sparsity":
            changed["compress"]["sparsity"] = value
        else:
            changed[key] = value
        with pytest.raises(ConfigError, match=f"trained into {spoiled}\\)"):
            RunState(tmp_path, changed, changes_stage=stage_dependencies(["scratch"]))


def test_kd_keys_may_change_while_only_the_teacher_and_scratch_have_finished(tmp_path):
    config = {"distill": {"temperature": 4.0}, "epochs": 2}
    _state(tmp_path, config, stages=("teacher", "scratch"))
    hotter = {"distill": {"temperature": 8.0}, "epochs": 2}
    reopened = RunState(tmp_path, hotter, changes_stage=stage_dependencies(["scratch"]))
    assert reopened.reused == ["teacher", "scratch"]
    with pytest.raises(ConfigError, match=r"epochs: 2 -> 3 \(trained into scratch\)"):
        RunState(tmp_path, {**hotter, "epochs": 3}, changes_stage=stage_dependencies(["scratch"]))


# --- 7, 8. values that gave a traceback or were misread ---


def test_an_annotation_file_holding_null_is_refused(tmp_path, capsys):
    _image(tmp_path / "a.png", 1, 32)
    (tmp_path / "null.json").write_text("null")
    args = ["--data", str(tmp_path), "--annotations", str(tmp_path / "null.json")]
    err = _refused(detect.main, [*args, "--output-dir", str(tmp_path / "out")], capsys)
    assert "is not a COCO instances file" in err and "Received: a JSON null" in err


def test_bbox_values_written_as_strings_are_named(tmp_path, capsys):
    annotations = _coco(tmp_path, [{"id": 1, "name": "box"}])
    data = json.loads(annotations.read_text())
    data["annotations"][0]["bbox"] = ["10", "10", "5", "5"]
    annotations.write_text(json.dumps(data))
    args = ["--data", str(tmp_path), "--annotations", str(annotations)]
    assert detect.main([*args, *QUIET, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bbox holds non-numbers (write numbers without quotes)" in err
    assert "annotation_id=1" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", "Expected seed >= 0. Received: seed=-1."),
        ("epochs=true", "Expected a number for epochs, not true or false."),
        ("compress.calibration_images=false", "Expected a number for compress.calibration_images"),
    ],
)
def test_numbers_out_of_range_or_booleans_are_refused(override, message, tmp_path, capsys):
    args = ["--set", override, "--output-dir", str(tmp_path / "out")]
    assert message in _refused(classify.main, args, capsys)


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    args = ["--output-dir", str(tmp_path / "taken")]
    err = _refused(classify.main, args, capsys)
    assert "is an existing file, not a folder" in err
