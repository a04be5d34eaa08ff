import json
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras

from classification.data import load_digits
from classification.subset import load_class_mapping
from kd_keras import config as config_lib
from kd_keras.models import build_cnn_classifier
from recipes import classify
from tests.helpers import run_on_robot

FAST = [
    "--epochs",
    "2",
    "--set",
    "teacher_epochs=3",
    "--set",
    "teacher_model.width=0.5",
    "--set",
    "compress.prune_epochs=1",
    "--set",
    "compress.qat_epochs=1",
    "--set",
    "latency_runs=20",
]
CONFIGS = Path(classify.__file__).parent / "configs"


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("classify")
    store = f"sqlite:///{output}/mlflow.db"
    assert classify.main([*FAST, "--output-dir", str(output), "--tracking-uri", store]) == 0
    return output


@pytest.mark.slow
def test_default_run_is_tracked_and_registered(default_run, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from kd_keras import export

    report = json.loads((default_run / "report.json").read_text())
    tracked = report["mlflow"]
    assert tracked["complete"] is True
    client = MlflowClient(tracking_uri=tracked["tracking_uri"])
    run = client.get_run(tracked["run_id"])
    assert run.data.params["distill.temperature"] == "4.0"
    assert run.data.params["compress.sparsity"] == "0.5"
    assert run.data.tags["task"] == "classification"
    history = client.get_metric_history(run.info.run_id, "distilled/logits_kd_temperature")
    assert [(m.step, m.value) for m in history] == [(0, 4.0), (1, 4.0)]
    assert len(client.get_metric_history(run.info.run_id, "teacher/loss")) == 3
    assert run.data.metrics["tflite_accuracy"] == report["rows"][-1]["accuracy"]
    version = client.get_model_version_by_alias("classify-student", "challenger")
    assert version.run_id == run.info.run_id
    # The registry URI comes from the environment here, as for a user of the registered model.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked["tracking_uri"])
    (default_run / "loaded").mkdir(exist_ok=True)
    model = mlflow.pyfunc.load_model(
        "models:/classify-student@challenger", dst_path=str(default_run / "loaded")
    )
    x = load_digits().x[:3]
    np.testing.assert_allclose(
        model.predict(x), export.tflite_predict(default_run / "student_int8.tflite", x)
    )


@pytest.mark.slow
def test_default_run_reports_five_models(default_run):
    report = json.loads((default_run / "report.json").read_text())
    rows = {row["model"]: row for row in report["rows"]}
    assert list(rows) == [
        "teacher",
        "student (scratch)",
        "student (distilled)",
        "student (pruned 50%, QAT)",
        "student (int8 TFLite, LiteRT)",
    ]
    assert rows["teacher"]["accuracy"] > 0.6  # ten classes: chance is 0.1
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0
    assert rows["student (distilled)"]["params"] == rows["student (scratch)"]["params"]
    assert rows["student (distilled)"]["params"] * 3 < rows["teacher"]["params"]
    assert rows["student (distilled)"]["flops"] < rows["teacher"]["flops"]
    student = keras.models.load_model(default_run / "student.keras")
    assert student.output_shape == (None, 10)
    saved = classify.parse_config(["--config", str(default_run / "config.yaml")])
    assert saved.epochs == 2 and saved.teacher_epochs == 3


@pytest.mark.slow
def test_default_run_ships_pruned_int8_student_checked_in_litert(default_run):
    from kd_keras import export

    report = json.loads((default_run / "report.json").read_text())
    rows = {row["model"]: row for row in report["rows"]}
    qat, tflite = rows["student (pruned 50%, QAT)"], rows["student (int8 TFLite, LiteRT)"]
    # 50% of every kernel but the first conv's (kept dense): just under 50% overall.
    sparsity = report["compression"]["sparsity"]
    assert sparsity["stage1_block1_conv"] == 0.0 and sparsity["logits"] == pytest.approx(0.5)
    assert 0.45 < sparsity["total"] < 0.5
    assert qat["sparsity"] == pytest.approx(sparsity["total"])  # zeros survive QAT (PQAT)
    assert tflite["sparsity"] == qat["sparsity"]
    path = Path(report["artifacts"]["student_tflite"])
    assert path == default_run / "student_int8.tflite"
    assert tflite["size_bytes"] == path.stat().st_size
    assert tflite["gzip_bytes"] < tflite["size_bytes"]
    assert tflite["size_bytes"] < rows["student (distilled)"]["size_bytes"] / 3
    assert tflite["latency_ms"] > 0
    # The LiteRT accuracy is measured, and the int8 file agrees with its Keras model.
    assert abs(tflite["accuracy"] - qat["accuracy"]) <= 0.03
    parity = report["compression"]["export"]["parity"]
    assert parity["top1_agreement"] >= 0.97 and parity["examples"] == report["test_examples"]
    io = json.loads((default_run / "student_int8.io.json").read_text())
    assert io == json.loads(json.dumps(report["compression"]["export"]["io"]))
    assert io["inputs"][0]["shape"] == [1, 8, 8, 1] and io["mode"] == "int8"
    assert export.io_details(path)["outputs"][0]["dtype"] == io["outputs"][0]["dtype"]


@pytest.mark.slow
def test_default_run_deploy_bundle_classifies_on_the_robot(default_run, robot_python, tmp_path):
    from kd_keras import export
    from kd_runtime import load_bundle

    bundle = load_bundle(default_run / "deploy")
    assert bundle.task == "classification" and bundle.classes == tuple(str(d) for d in range(10))
    assert bundle.model_path.read_bytes() == (default_run / "student_int8.tflite").read_bytes()
    # The robot sees the digits' own 0..16 samples as uint8 pixels; the bundle divides by 16.
    digits = load_digits()
    frames = np.rint(digits.x[:16] * 16).astype(np.uint8)
    (probabilities,) = run_on_robot(robot_python, default_run / "deploy", frames, tmp_path)
    logits = export.tflite_predict(default_run / "student_int8.tflite", digits.x[:16])
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(1, keepdims=True), atol=1e-5)


@pytest.mark.slow
def test_auto_sparsity_without_qat_exports_dynamic(default_run, tmp_path):
    teacher = str(default_run / "teacher.keras")
    args = [*FAST, "--teacher", teacher, "--prune", "auto", "--no-qat", "--export", "dynamic"]
    args.append("--no-tracking")
    args += ["--set", "compress.candidates=[0.5,0.9]"]
    assert classify.main([*args, "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    curve = json.loads((tmp_path / "sparsity_curve.json").read_text())
    assert curve["sparsities"] == [0.0, 0.5, 0.9] and curve["method"] == "knee"
    assert curve["chosen"] in curve["sparsities"]
    assert (tmp_path / "sparsity_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert report["compression"]["sparsity_curve"] == curve
    names = [row["model"] for row in report["rows"]]
    assert names[-1] == "student (dynamic TFLite, LiteRT)"
    assert (tmp_path / "student_dynamic.tflite").is_file()
    assert report["compression"]["export"]["io"]["inputs"][0]["dtype"] == "float32"


@pytest.mark.slow
def test_task_specified_offline_run_with_given_teacher(default_run, tmp_path):
    teacher = str(default_run / "teacher.keras")
    args = [*FAST, "--teacher", teacher, "--classes", "0,3,7", "--offline", "--no-tracking"]
    assert classify.main([*args, "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["classes"]["teacher_class_indices"] == [0, 3, 7]
    assert report["test_examples"] < 0.4 * 450
    student = keras.models.load_model(tmp_path / "student.keras")
    assert student.output_shape == (None, 3)
    assert load_class_mapping(tmp_path / "student.keras").class_indices == (0, 3, 7)
    assert (tmp_path / "teacher_cache" / "outputs.npy").is_file()
    assert not (tmp_path / "teacher.keras").exists()  # the given teacher is not retrained


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], (0.5, 8, "int8")),
        (["--prune", "auto"], ("auto", 8, "int8")),
        (["--prune", "0.7", "--no-qat", "--export", "float16"], (0.7, 0, "float16")),
        (["--prune", "0", "--no-qat", "--export", "none"], (0.0, 0, None)),
        (["--qat", "--export", "int8", "--set", "compress.sparsity=0"], (0.0, 8, "int8")),
    ],
)
def test_compression_flags(args, expected):
    settings = classify.parse_config(args).compress
    assert (settings.sparsity, settings.qat_epochs, settings.export) == expected


def test_shipped_config_equals_defaults():
    config = classify.parse_config(["--config", str(CONFIGS / "classify_digits.yaml")])
    assert config == classify.ClassifyConfig()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "epoch=3"], "Unknown config key 'epoch'. Allowed keys: augment, batch_size"),
        (["--schedule", "hot"], "Allowed values: 'constant', 'linear', 'cosine'"),
        (["--set", "distill.logits_weight=-1"], "Expected distill.logits_weight >= 0"),
        (["--offline", "--set", "augment=true"], "cannot be combined with augment=true"),
        (["--teacher", "missing.keras"], "Expected --teacher to be an existing .keras file"),
        (["--classes", "0,x"], "Expected comma-separated class indices"),
        (["--classes", "0,12"], "Class 12 does not exist"),
        (["--data", "no/such/folder"], "Image folder not found"),
        (["--prune", "1.5"], "Expected compress.sparsity in [0, 1) or auto"),
        (["--prune", "most"], "compress.sparsity"),
        (["--export", "float16"], "compress.qat_epochs > 0 trains the student for int8"),
        (
            ["--no-qat", "--export", "dynamic", "--set", "compress.int8_io=true"],
            "needs export=int8",
        ),
    ],
)
def test_bad_options_fail_before_training(args, message, tmp_path, capsys):
    assert classify.main([*args, "--output-dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_teacher_class_mismatch_fails_before_training(tmp_path, capsys):
    teacher = build_cnn_classifier((8, 8, 1), 5, 0.25, name="teacher")
    teacher.save(tmp_path / "teacher5.keras")
    code = classify.main(
        ["--teacher", str(tmp_path / "teacher5.keras"), "--output-dir", str(tmp_path / "o")]
    )
    assert code == 2
    assert "The teacher predicts 5 classes but the data has 10" in capsys.readouterr().err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_image_folder_run_shape_check(tmp_path, capsys):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((9, 9, 3), i * 30, np.uint8)).save(
                tmp_path / "imgs" / name / f"{i}.png"
            )
    teacher = build_cnn_classifier((8, 8, 1), 2, 0.25, name="teacher")
    teacher.save(tmp_path / "t.keras")
    args = ["--data", str(tmp_path / "imgs"), "--teacher", str(tmp_path / "t.keras")]
    assert classify.main([*args, "--output-dir", str(tmp_path / "o")]) == 2
    assert "The teacher expects inputs of shape (8, 8, 1) but the data has (32, 32, 3)" in (
        capsys.readouterr().err
    )


def test_config_error_type():
    with pytest.raises(config_lib.ConfigError):
        classify.parse_config(["--set", "distill.temperature=0"])
