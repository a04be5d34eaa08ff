"""Shipped teachers: byte-exact weight files, `teacher: auto` picking them only for runs they
fit, and the detection teacher that ships with the package."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras

from kd_keras.io import atomic_write_json
from kd_keras.models.loading import ModelFileError
from kd_keras.pipeline.builtin_teacher import (
    BuiltinTeacher,
    file_weights_digest,
    read_weights_into,
    shipped_teacher,
    teacher_record,
    teacher_settings,
    weights_digest,
    write_weights,
)
from tests.kd_keras.test_sequence import ToyTask, _config, _run


def _dense(seed: int, width: int = 6) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(width, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))


def test_the_same_weights_give_the_same_bytes_and_load_back_exactly(tmp_path):
    model = _dense(seed=1)
    first = write_weights(model, tmp_path / "a.npz").read_bytes()
    second = write_weights(model, tmp_path / "b.npz").read_bytes()
    assert first == second
    other = _dense(seed=2)
    assert weights_digest(other) != weights_digest(model)
    read_weights_into(other, tmp_path / "a.npz")
    assert weights_digest(other) == weights_digest(model)
    for mine, theirs in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as arrays:  # a plain numpy archive
        assert len([name for name in arrays.files if name != "weights.json"]) == 4


def test_weights_of_another_network_or_a_corrupt_file_are_refused(tmp_path):
    write_weights(_dense(seed=1), tmp_path / "teacher.npz")
    with pytest.raises(ModelFileError, match=r"expected \('hidden/kernel:0', \(4, 8\)\)"):
        read_weights_into(_dense(seed=1, width=8), tmp_path / "teacher.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="broken.npz.*teacher: null"):
        read_weights_into(_dense(seed=1), tmp_path / "broken.npz")


def test_teacher_settings_are_the_keys_the_teacher_stage_reads(tmp_path):
    settings = teacher_settings(_config(tmp_path, seed=3))
    assert settings["teacher_epochs"] == 2
    assert settings["teacher_model.width"] == 2.0
    assert "learning_rate" in settings and "data" in settings
    # Seed, outputs, tracking, student-only, KD-only and compression keys do not pick a teacher.
    for key in ("seed", "output_dir", "epochs", "latency_runs", "teacher"):
        assert key not in settings
    assert not [k for k in settings if k.split(".")[0] in ("tracking", "distill", "compress")]
    assert not [k for k in settings if k.startswith("student_model")]
    assert teacher_settings(_config(tmp_path / "other", seed=9, epochs=5)) == settings


class ShippingToyTask(ToyTask):
    """The toy task with a teacher folder, set per test."""

    builtin_teacher_dir = None


def _ship(tmp_path, config) -> tuple[BuiltinTeacher, keras.Model]:
    """Trains nothing: ships a freshly built toy teacher made 'with' `config`'s settings."""
    task = ShippingToyTask(config)
    keras.utils.set_random_seed(42)
    teacher = task.build("teacher", "teacher")
    shipped = BuiltinTeacher(tmp_path / "teachers")
    write_weights(teacher, shipped.weights)
    record = teacher_record(task, config, teacher, task.evaluate(teacher), 0.0, "test")
    atomic_write_json(shipped.record_file, record)
    ShippingToyTask.builtin_teacher_dir = shipped.directory
    return shipped, teacher


def test_auto_takes_the_shipped_teacher_only_when_it_fits(tmp_path, caplog):
    config = _config(tmp_path / "run")
    shipped, _ = _ship(tmp_path, config)
    task = ShippingToyTask(config)
    assert shipped_teacher(task, config) == shipped
    assert shipped_teacher(task, _config(tmp_path / "run", seed=4, epochs=7)) == shipped
    assert shipped_teacher(task, _config(tmp_path / "run", teacher=None)) is None
    with caplog.at_level(logging.INFO, logger="kd_keras"):
        changed = _config(tmp_path / "run", teacher_epochs=3, teacher_model={"width": 3.0})
        assert shipped_teacher(task, changed) is None
    message = caplog.records[-1].getMessage()
    assert "teacher_epochs=3 (built-in: 2)" in message
    assert "teacher_model.width=3.0 (built-in: 2.0)" in message


def test_a_shipped_file_that_does_not_match_its_digest_is_refused(tmp_path):
    config = _config(tmp_path / "run")
    shipped, _ = _ship(tmp_path, config)
    record = shipped.record()
    atomic_write_json(shipped.record_file, {**record, "weights_digest": "sha256:0"})
    with pytest.raises(ModelFileError, match="do not match the digest"):
        shipped.load(ShippingToyTask(config).build("teacher", "teacher"))


def test_a_run_with_auto_distils_from_the_shipped_teacher_without_training_one(tmp_path):
    config = _config(tmp_path / "run")
    _, teacher = _ship(tmp_path, config)
    report = _run(ShippingToyTask, config)
    state = json.loads((tmp_path / "run" / "run_state.json").read_text())
    assert "teacher" not in [stage["stage"] for stage in state["stages"]]
    teacher_row = report["rows"][0]
    assert teacher_row["accuracy"] == ShippingToyTask(config).evaluate(teacher)["accuracy"]
    saved = keras.models.load_model(report["artifacts"]["teacher"], compile=False)
    assert weights_digest(saved) == weights_digest(teacher)
    # A rerun reuses every stage and leaves the saved teacher file as it was, byte for byte.
    saved_bytes = Path(report["artifacts"]["teacher"]).read_bytes()
    again = _run(ShippingToyTask, config)
    assert [row["accuracy"] for row in again["rows"]] == [row["accuracy"] for row in report["rows"]]
    assert set(again["reused_stages"]) >= {"scratch", "student", "pruned", "qat"}
    assert Path(again["artifacts"]["teacher"]).read_bytes() == saved_bytes
    # Another teacher setting: the same folder now trains its own teacher.
    trained = _run(ShippingToyTask, _config(tmp_path / "other", teacher_epochs=1))
    state = json.loads((tmp_path / "other" / "run_state.json").read_text())
    assert [stage["stage"] for stage in state["stages"]][0] == "teacher"
    assert trained["rows"][0]["model"] == "teacher"


def test_the_shipped_detection_teacher_fits_the_default_run_and_its_digest():
    from detection.config import DetectConfig
    from detection.data.synthetic_shapes import CLASS_NAMES
    from detection.models import build_detector
    from detection.task import DetectionTask

    shipped = BuiltinTeacher(Path(DetectionTask.builtin_teacher_dir))
    assert shipped.exists(), "run python -m recipes.teacher detect"
    record = shipped.record()
    # A changed default (data, schedule, architecture) needs the teacher made again.
    assert shipped.differences(DetectConfig()) == []
    assert record["metrics"]["AP"] > 0.4
    teacher = build_detector(DetectConfig(), "teacher", len(CLASS_NAMES), "teacher")
    shipped.load(teacher)  # names, shapes and the recorded digest of every weight
    assert teacher.count_params() == record["parameters"]


@pytest.mark.parametrize(
    "task_path, config_path",
    [
        ("detection.task.DetectionTask", "detection.config.DetectConfig"),
        ("reid.task.ReIDTask", "reid.config.ReIDConfig"),
    ],
)
def test_every_shipped_teacher_fits_its_default_run_and_its_digest(task_path, config_path):
    import importlib

    def load(path):
        module, name = path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)

    shipped = BuiltinTeacher(Path(load(task_path).builtin_teacher_dir))
    record = shipped.record()
    assert shipped.differences(load(config_path)()) == [], "run python -m recipes.teacher"
    assert file_weights_digest(shipped.weights) == record["weights_digest"]
    with np.load(shipped.weights, allow_pickle=False) as arrays:
        sizes = [arrays[name].size for name in arrays.files if name != "weights.json"]
    assert sum(sizes) == record["parameters"]
