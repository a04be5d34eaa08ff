import json
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras

from kd_keras import config as config_lib
from kd_keras.export import tflite_predict
from recipes import reid
from reid.models import embedding_model
from reid.synthetic import SyntheticConfig, write_synthetic_market1501
from tests.helpers import assert_litert_agrees, run_on_robot

CONFIGS = Path(reid.__file__).parent / "configs"
TINY_DATA = SyntheticConfig(
    train_identities=8,
    test_identities=6,
    cameras=3,
    cameras_per_identity=2,
    images_per_camera=2,
    junk=2,
    distractors=3,
    image_size=(32, 16),
)
TINY = [
    "--set", "image_height=32", "--set", "image_width=16", "--set", "p=4", "--set", "k=2",
    "--epochs", "2", "--set", "steps_per_epoch=3", "--set", "teacher_epochs=1",
    "--set", "teacher_steps_per_epoch=6", "--set", "compress.prune_epochs=1",
    "--set", "compress.qat_epochs=1", "--set", "latency_runs=3",
    "--set", "teacher_model.width=0.25", "--set", "student_model.width=0.125",
    # Big enough for int8 to shrink it: at this width a 32-d MobileNet-like student is mostly
    # per-tensor quantization parameters.
    "--set", "student_model.backbone=resnet", "--set", "student_model.embedding_dim=64",
    # The shipped file takes camera pixels; its float-input twin is measured beside it.
    "--set", "compress.camera_input=true",
]  # fmt: skip


@pytest.mark.slow
def test_tiny_end_to_end_run(tmp_path, robot_python):
    data = write_synthetic_market1501(tmp_path / "market", TINY_DATA)
    output = tmp_path / "out"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [*TINY, "--data", str(data), "--output-dir", str(output), "--tracking-uri", uri]
    assert reid.main(args) == 0
    report = json.loads((output / "report.json").read_text())
    rows = {row["model"]: row for row in report["rows"]}
    assert list(rows) == [
        "teacher",
        "student (scratch)",
        "student (KD constant T)",
        "student (KD dynamic T, exponential)",
        "student (int8 PTQ TFLite, LiteRT)",
        "student (pruned 30%, QAT)",
        "student (int8 TFLite, float input, LiteRT)",
        "student (int8 TFLite, uint8 camera input, LiteRT)",
    ]
    for row in rows.values():
        assert 0 <= row["rank1"] <= row["rank5"] <= 1 and 0 < row["mAP"] <= 1
        assert row["valid_queries"] == 12
    for name, row in rows.items():
        if name != "student (pruned 30%, QAT)":  # fake-quantized: its size is the .tflite's
            assert row["latency_ms"] > 0 and row["size_bytes"] > 0, name
    assert rows["teacher"]["params"] > 2 * rows["student (scratch)"]["params"]
    int8 = rows["student (int8 TFLite, uint8 camera input, LiteRT)"]
    float_input = rows["student (int8 TFLite, float input, LiteRT)"]
    camera = report["compression"]["export"]["camera_input"]
    assert camera["normalization"] == {"mean": 0.0, "std": 255.0}
    assert camera["minus_float_input"]["mAP"] == pytest.approx(int8["mAP"] - float_input["mAP"])
    assert abs(camera["minus_float_input"]["mAP"]) <= 0.02
    assert int8["sparsity"] == float_input["sparsity"] > 0.2
    shipped = rows["student (KD dynamic T, exponential)"]
    assert int8["size_bytes"] < 0.75 * shipped["size_bytes"]
    # The shipped student's int8 cost column is the PTQ row's file, up to the folded BN neck.
    ptq = rows["student (int8 PTQ TFLite, LiteRT)"]["size_bytes"]
    assert shipped["int8_bytes"] == pytest.approx(ptq, rel=0.05)
    assert rows["teacher"]["int8_bytes"] > rows["student (scratch)"]["int8_bytes"] > 0
    temperatures = report["temperatures_per_epoch"]
    assert temperatures["KD constant T"] == [8.0, 8.0]
    dynamic = temperatures["KD dynamic T, exponential"]
    assert 1.0 < dynamic[1] < dynamic[0] < 8.0
    # The int8 embedding model in LiteRT reproduces the Keras QAT model's embeddings.
    assert report["compression"]["export"]["parity"]["mean_cosine"] > 0.98
    # And the post-training int8 export reproduces the saved float student's embeddings.
    student = keras.models.load_model(output / "student.keras")
    images = np.stack(
        [
            np.asarray(keras.utils.load_img(p), np.float32) / 255.0
            for p in sorted((data / "query").iterdir())
        ]
    )
    tflite = output / "student_ptq_int8.tflite"
    assert_litert_agrees(embedding_model(student), tflite, images, cosine=0.97)
    assert (output / "student_int8.tflite").is_file() and (
        output / "student_int8.io.json"
    ).is_file()
    # The deploy bundle, in the robot runtime without TensorFlow, embeds the query crops as the
    # in-process LiteRT evaluation does (cosine metric: L2-normalised).
    bundle = json.loads((output / "deploy" / "bundle.json").read_text())
    assert bundle["task"] == "reid" and bundle["decoder"]["metric"] == "cosine"
    crops = np.stack(
        [np.asarray(keras.utils.load_img(p)) for p in sorted((data / "query").iterdir())]
    )
    assert crops.shape[1:3] == tuple(bundle["input"][k] for k in ("height", "width"))
    assert bundle["input"]["dtype"] == "uint8" and bundle["input"]["quantization"] == {
        "scale": pytest.approx(1 / 255),
        "zero_point": 0,
    }
    (embeddings,) = run_on_robot(robot_python, output / "deploy", crops, tmp_path / "robot")
    expected = tflite_predict(output / "student_int8.tflite", crops / np.float32(255.0))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert embeddings.shape == (len(crops), bundle["decoder"]["embedding_dim"])
    np.testing.assert_allclose(embeddings, expected, atol=1e-6)
    # The camera-native file computes the float-input file's embeddings from the same pixels.
    twin = tflite_predict(output / "student_int8_float_input.tflite", crops / np.float32(255.0))
    twin /= np.linalg.norm(twin, axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings, twin, atol=1e-5)


def test_shipped_config_equals_defaults():
    config = reid.parse_config(["--config", str(CONFIGS / "reid_market1501.yaml")])
    assert config == reid.ReIDConfig()


def test_named_options_override_config():
    config = reid.parse_config(["--seeds", "0,1,2", "--schedule", "step", "--temperature", "6"])
    assert config.seeds == (0, 1, 2)
    assert config.distill.schedule == "step" and config.distill.temperature == 6.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "epoch=3"], "Unknown config key 'epoch'"),
        (["--schedule", "hot"], "Allowed values: 'linear', 'cosine', 'exponential', 'step'"),
        (["--set", "distill.embedding_kd=l2"], "Allowed values: 'similarity', 'projection'"),
        (["--set", "p=1"], "Expected p >= 2"),
        (["--set", "compress.sparsity=1.0"], "Expected compress.sparsity < 1"),
        (["--data", "no/such/folder"], "Market-1501 folder not found"),
        (["--teacher", "missing.keras", "--data", "."], "bounding_box_train"),
    ],
)
def test_bad_options_fail_before_training(args, message, tmp_path, capsys):
    assert reid.main([*args, "--output-dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_malformed_dataset_fails_before_training(tmp_path, capsys):
    data = write_synthetic_market1501(tmp_path / "market", TINY_DATA)
    next((data / "query").iterdir()).rename(data / "query" / "person_7.jpg")
    assert reid.main(["--data", str(data), "--output-dir", str(tmp_path / "out")]) == 2
    assert "Received: filename='person_7.jpg'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_config_error_type():
    with pytest.raises(config_lib.ConfigError):
        reid.parse_config(["--set", "distill.temperature=0.5"])
