"""Long runs show they are alive: a line per stage and per epoch, and a heartbeat."""

import logging
import re
import time

import tensorflow as tf
import tf_keras as keras

from kd_keras.pipeline import fit_resumable, reuse_or_train, training_record
from kd_keras.pipeline.progress import EpochLog, Heartbeat
from kd_keras.pipeline.run_state import RunState
from recipes.common import configure_logging
from tests.helpers import tiny_classifier, tiny_data


def _compiled():
    keras.utils.set_random_seed(0)
    model = tiny_classifier()
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]
    )
    return model


def _data():
    x, y = tiny_data(8)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kd_keras"]


def test_one_line_per_epoch_with_loss_metrics_and_seconds(caplog):
    caplog.set_level(logging.INFO, logger="kd_keras")
    history = _compiled().fit(_data(), epochs=2, callbacks=[EpochLog("teacher", 2)], verbose=0)
    lines = _lines(caplog)
    assert len(lines) == 2
    pattern = r"teacher epoch (\d)/2: loss ([\d.]+), accuracy ([\d.]+) \(\d+\.\d s\)"
    for epoch, line in enumerate(lines):
        found = re.fullmatch(pattern, line)
        assert found, line
        assert int(found[1]) == epoch + 1
        assert abs(float(found[2]) - history.history["loss"][epoch]) < 1e-3


def test_a_long_epoch_logs_the_batch_it_reached(caplog):
    caplog.set_level(logging.INFO, logger="kd_keras")
    _compiled().fit(_data(), epochs=1, callbacks=[EpochLog("scratch", 1, every=0.0)], verbose=0)
    lines = _lines(caplog)
    assert [line.split(",")[0] for line in lines[:2]] == [
        "scratch epoch 1/1: batch 1",
        "scratch epoch 1/1: batch 2",
    ]
    assert lines[-1].startswith("scratch epoch 1/1: loss")


def test_stages_log_start_finish_and_reuse(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kd_keras")
    state = RunState(tmp_path, {"epochs": 1})

    def train():
        model = _compiled()
        seconds, history = fit_resumable(model, _data(), 1, tmp_path / "ckpt", stage="teacher")
        return model, training_record(seconds, history)

    reuse_or_train(state, "teacher", tmp_path / "teacher.keras", train)
    lines = _lines(caplog)
    assert lines[0] == "teacher: started"
    assert re.fullmatch(r"teacher epoch 1/1: loss [\d.]+, accuracy [\d.]+ \(\d+\.\d s\)", lines[1])
    assert re.fullmatch(r"teacher: finished in \d+\.\d s, final loss [\d.]+", lines[2])
    caplog.clear()
    reuse_or_train(RunState(tmp_path, {"epochs": 1}), "teacher", tmp_path / "teacher.keras", train)
    assert _lines(caplog) == ["teacher: reused (finished earlier, teacher.keras)"]


def test_heartbeat_speaks_only_when_the_run_is_silent(caplog):
    caplog.set_level(logging.INFO, logger="kd_keras")
    log = logging.getLogger("kd_keras")
    with Heartbeat(every=0.4) as heartbeat:
        for _ in range(8):  # busy and talking: no heartbeat
            log.info("working")
            time.sleep(0.1)
        assert all(line == "working" for line in _lines(caplog))
        heartbeat.what = "exporting"
        time.sleep(1.2)  # silent: the heartbeat speaks
    beats = [line for line in _lines(caplog) if line.startswith("still")]
    assert 1 <= len(beats) <= 3
    assert re.fullmatch(r"still exporting \(\d+ s into the run\)", beats[0])


def test_recipe_loudness_flags():
    logger = logging.getLogger("kd_keras")
    configure_logging(quiet=True)
    assert logger.level == logging.WARNING
    configure_logging(verbose=True)
    assert logger.level == logging.DEBUG
    configure_logging()
    assert logger.level == logging.INFO and not logger.propagate
    assert sum(getattr(h, "_kd_keras_recipe", False) for h in logger.handlers) == 1
