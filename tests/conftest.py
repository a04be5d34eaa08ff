"""Test set-up: two logical CPU devices (for MirroredStrategy tests), small thread pools, and
the `kd_keras` logger and TensorFlow's op determinism reset after each test."""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import tensorflow as tf

from kd_keras.pipeline.determinism import set_determinism

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


@pytest.fixture(autouse=True)
def _kd_keras_logger_as_found():
    """A recipe run in-process sets up the `kd_keras` logger for a terminal; undo it after."""
    yield
    logger = logging.getLogger("kd_keras")
    for handler in [h for h in logger.handlers if getattr(h, "_kd_keras_recipe", False)]:
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def _op_determinism_off_after():
    """A pipeline run in-process turns op determinism on for its process; a new test starts
    with it off, as a new process does."""
    yield
    set_determinism(False)


@pytest.fixture(scope="session")
def robot_python(tmp_path_factory):
    """The python of a virtual environment with only numpy, ai-edge-litert, Pillow (and what they
    require) and `kd_runtime`: what a robot installs. See `tests.helpers.robot_python`."""
    from tests.helpers import robot_python as make

    return make(tmp_path_factory.mktemp("robot") / "venv")
