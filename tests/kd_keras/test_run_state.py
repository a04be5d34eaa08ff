import json

import pytest

from kd_keras.config import ConfigError
from kd_keras.pipeline.run_state import RunState

CONFIG = {"epochs": 3, "model": {"width": 0.5}, "output_dir": "a", "track": True}


def _state(tmp_path, config=CONFIG, **kwargs):
    return RunState(tmp_path, config, ignore=("output_dir", "track"), **kwargs)


def test_finished_stages_survive_a_new_process_in_order(tmp_path):
    state = _state(tmp_path)
    for name in ("teacher", "scratch", "student"):
        (tmp_path / f"{name}.keras").write_text(name)
        state.finish(name, file=tmp_path / f"{name}.keras", seconds=1.5, loss=0.25)
    again = _state(tmp_path)
    assert again.finished == ["teacher", "scratch", "student"]
    assert again.reused == ["teacher", "scratch", "student"]
    assert again.done("scratch") == {
        "file": str(tmp_path / "scratch.keras"),
        "seconds": 1.5,
        "loss": 0.25,
    }


def test_a_stage_whose_file_is_gone_runs_again_and_invalidates_later_ones(tmp_path):
    state = _state(tmp_path)
    for name in ("teacher", "student", "int8"):
        (tmp_path / name).write_text(name)
        state.finish(name, file=tmp_path / name)
    (tmp_path / "student").unlink()
    again = _state(tmp_path)
    assert again.done("student") is None and again.done("int8") is not None
    (tmp_path / "student").write_text("retrained")
    again.finish("student", file=tmp_path / "student")
    assert again.finished == ["teacher", "student"]  # int8 was made from the old student
    assert again.reused == ["teacher"]


def test_a_changed_training_key_is_refused_and_ignored_keys_are_not(tmp_path):
    state = _state(tmp_path)
    (tmp_path / "t").write_text("t")
    state.finish("teacher", file=tmp_path / "t")
    _state(tmp_path, {**CONFIG, "output_dir": "b", "track": False})  # no complaint
    with pytest.raises(ConfigError) as error:
        _state(tmp_path, {**CONFIG, "model": {"width": 1.0}})
    message = str(error.value)
    assert "holds stages (teacher) trained with another config" in message
    assert "model.width: 0.5 -> 1.0" in message and "--restart" in message
    (tmp_path / "checkpoints" / "teacher").mkdir(parents=True)
    fresh = _state(tmp_path, {**CONFIG, "model": {"width": 1.0}}, restart=True)
    assert fresh.finished == [] and not (tmp_path / "checkpoints").exists()


def test_an_unreadable_state_file_is_a_config_error(tmp_path):
    (tmp_path / "run_state.json").write_text("{truncated")
    with pytest.raises(ConfigError, match="Cannot read the run state"):
        _state(tmp_path)
    (tmp_path / "run_state.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ConfigError, match="--restart"):
        _state(tmp_path)


def test_a_model_file_replaced_under_its_name_retrains_the_stages_that_read_it(tmp_path):
    from classification.config import ClassifyConfig
    from kd_keras import config as config_lib
    from kd_keras.pipeline import run_state

    weights, teacher = tmp_path / "student.weights.h5", tmp_path / "teacher.keras"
    weights.write_bytes(b"first weights")
    teacher.write_bytes(b"first teacher")
    config = config_lib.from_dict(
        ClassifyConfig,
        {
            "output_dir": str(tmp_path / "run"),
            "builtin": "shapes",
            "teacher": str(teacher),
            "student_model": {"backbone": "mobilenet_v2", "width": 0.35, "weights": str(weights)},
        },
    )
    state = run_state(config, plain_stages=["scratch"])
    for stage in ("teacher", "scratch", "student"):
        state.finish(stage, seconds=1.0)
    assert run_state(config, plain_stages=["scratch"]).reused == ["teacher", "scratch", "student"]

    weights.write_bytes(b"other weights")
    with pytest.raises(ConfigError, match=r"student_model\.weights_digest: .*\(trained into "
                       r"scratch, student\)"):  # fmt: skip
        run_state(config, plain_stages=["scratch"])
    weights.write_bytes(b"first weights")
    teacher.write_bytes(b"other teacher")
    with pytest.raises(ConfigError, match=r"teacher_digest: .*\(trained into teacher, scratch"):
        run_state(config, plain_stages=["scratch"])
