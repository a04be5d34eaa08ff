"""Bad options, files and numbers stop a recipe with a message; faults in training do not hide."""

import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_keras import config as config_lib
from kd_keras.models import ModelFileError, load_model_file
from kd_keras.pipeline import fit_resumable
from kd_keras.pipeline.divergence import TrainingDivergedError
from recipes import classify, detect
from recipes.common import parse_and_run
from tests.helpers import tiny_classifier


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=!!python/object/apply:os.system ['echo unsafe']", "Cannot read the value of seed"),
        ("epochs=[1", "Cannot read the value of epochs as YAML"),
    ],
)
def test_unreadable_override_values_are_config_errors(override, message):
    with pytest.raises(config_lib.ConfigError, match=message) as error:
        detect.parse_config(["--set", override])
    assert f"Received: {override!r}" in str(error.value)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", ".inf"])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(config_lib.ConfigError, match="Expected a finite number for learning_rate"):
        detect.parse_config(["--set", f"learning_rate={value}"])


def test_corrupt_teacher_files_name_the_file(tmp_path, capsys):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"\x00not a model")
    with pytest.raises(ModelFileError, match="is not a .keras archive"):
        load_model_file(garbage)
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("config.json", "{not json")
    with pytest.raises(ModelFileError, match=r"Cannot load .*broken.keras") as error:
        load_model_file(broken)
    assert "Received: teacher=" in str(error.value)
    # Through the recipe: refused before training, one line, exit code 2.
    args = ["--teacher", str(broken), "--output-dir", str(tmp_path / "out"), "--no-tracking"]
    assert classify.main([*args, "--epochs", "1"]) == 2
    assert "Cannot load" in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_batch_larger_than_the_training_set_names_the_cause(tmp_path, capsys):
    args = ["--set", "builtin_train=3", "--set", "builtin_val=1", "--set", "image_size=32"]
    args += ["--set", f"builtin_dir={tmp_path / 'shapes'}", "--set", "batch_size=8"]
    assert detect.main([*args, "--output-dir", str(tmp_path / "out"), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "Expected batch_size at most the 3 training images" in err
    assert "Received: batch_size=8" in err


def test_a_diverging_loss_stops_training_with_a_message(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_classifier(3, 4, (8, 8, 1))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(1e12), loss=loss)  # as with learning_rate=1e12
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(TrainingDivergedError) as error:
        fit_resumable(model, dataset, 3, tmp_path / "ckpt", stage="teacher")
    message = str(error.value)
    assert "The teacher loss became nan at epoch 2, batch 1" in message
    assert "Lower the learning rate" in message


def test_only_input_errors_before_training_are_shortened(capsys):
    def refuse(config):
        raise ValueError("bad data file")

    def fault(config, inputs):
        raise ValueError("a bug inside training")

    def diverge(config, inputs):
        raise TrainingDivergedError("loss became nan")

    assert parse_and_run(lambda argv: "config", refuse, fault, []) is None
    assert capsys.readouterr().err == "error: bad data file\n"
    with pytest.raises(ValueError, match="a bug inside training"):
        parse_and_run(lambda argv: "config", lambda config: None, fault, [])
    assert parse_and_run(lambda argv: "config", lambda config: None, diverge, []) is None
    assert "loss became nan" in capsys.readouterr().err
