import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
import tensorflow as tf
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter
from mlflow import MlflowClient

from kd_keras import Distiller, LogitsDistillation, schedules, tracking
from recipes import upload_pending
from tests.helpers import tiny_classifier, tiny_data

SHAPE = (8, 8, 1)
TEMPERATURES = [6.0, 4.0, 2.0]  # Step([2, 4], ...) with 2 steps per epoch: one value per epoch


@pytest.fixture(scope="module", autouse=True)
def fast_failing_client():
    """A stopped server must fail the client at once, not after MLflow's retry back-off."""
    default_store = [Path("mlflow.db"), Path("mlruns")]
    existed = [path.exists() for path in default_store]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        patch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        yield
    # Every test names its store: nothing may land in the working directory's default store.
    assert [path.exists() for path in default_store] == existed


def make_tflite(model: keras.Model, x: np.ndarray, path: Path) -> Path:
    """Full-int8 TFLite (int8 input and output) calibrated on `x`."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(len(x)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


def litert_predict(path: Path, x: np.ndarray) -> np.ndarray:
    """Reference: quantize, invoke and dequantize one example at a time with LiteRT."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    (in_scale, in_zero), (out_scale, out_zero) = inp["quantization"], out["quantization"]
    rows = []
    for example in x:
        q = np.clip(np.round(example[None] / in_scale) + in_zero, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        rows.append(
            (interpreter.get_tensor(out["index"]).astype(np.float32) - out_zero) * out_scale
        )
    return np.concatenate(rows)


def train(session: tracking.RunSession | None, output: Path, epochs: int, extra_callbacks=()):
    """A tiny distillation with a stepped temperature; saves the student and its int8 TFLite."""
    keras.utils.set_random_seed(0)
    x, y = tiny_data(4, 3, SHAPE)
    teacher = tiny_classifier(3, 8, SHAPE, name="teacher")
    student = tiny_classifier(3, 4, SHAPE, name="student")
    term = LogitsDistillation(temperature=schedules.Step([2, 4], TEMPERATURES), name="logits_kd")
    distiller = Distiller(teacher, student, term, 0.9, 0.1)
    distiller.compile(
        keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    callbacks = [session.callback("distilled")] if session else []
    history = distiller.fit(
        x, y, batch_size=2, epochs=epochs, callbacks=[*callbacks, *extra_callbacks], verbose=0
    )
    output.mkdir(parents=True, exist_ok=True)
    student.save(output / "student.keras")
    tflite = make_tflite(student, x, output / "student_int8.tflite")
    accuracy = float(np.mean(np.argmax(litert_predict(tflite, x), -1) == y))
    return history.history, tflite, x, accuracy, tracking.describe_distiller(distiller)


CONFIG = {"epochs": 3, "distill": {"temperature": 6.0, "schedule": "step", "alpha": 0.9}}
PARAMS = 4 + 26 + 3  # config, distiller description, calibration


def finish(session, output, tflite, x, accuracy, described, register_as="tiny-student"):
    return session.finish(
        CONFIG,
        {
            "task": "classification",
            "rows": [{"model": "student (distilled)", "accuracy": 0.5, "size_bytes": 9000}],
        },
        {"student": output / "student.keras"},
        tflite_path=tflite,
        register_as=register_as,
        input_example=x[:2],
        calibration={"dataset": "tiny random", "examples": len(x), "seed": 0},
        tflite_metrics={"accuracy": accuracy},
        params={"distiller": described},
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    return {"uri": f"sqlite:///{root}/mlflow.db", "artifacts": str(root / "artifacts")}


@pytest.fixture(scope="module")
def recorded(store, tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    session = tracking.RunSession(
        output,
        tracking_uri=store["uri"],
        experiment="tiny",
        task="classification",
        artifact_location=store["artifacts"],
    )
    history, tflite, x, accuracy, described = train(session, output, epochs=3)
    record = finish(session, output, tflite, x, accuracy, described)
    return {
        "record": record,
        "history": history,
        "tflite": tflite,
        "x": x,
        "output": output,
        "client": MlflowClient(store["uri"]),
        "accuracy": accuracy,
    }


def test_resolve_tracking_uri_precedence():
    env = {"MLFLOW_TRACKING_URI": "http://team:5000"}
    assert tracking.resolve_tracking_uri("http://cli:1", env) == "http://cli:1"
    assert tracking.resolve_tracking_uri(None, env) == "http://team:5000"
    assert tracking.resolve_tracking_uri(None, {}) == "sqlite:///mlflow.db"


def test_flatten_nested_config():
    flat = tracking.flatten({"a": 1, "distill": {"alpha": 0.9, "classes": [0, 3]}, "b": None})
    assert flat == {"a": "1", "distill.alpha": "0.9", "distill.classes": "[0, 3]", "b": "None"}


def test_params_metrics_tags_and_artifacts_in_store(recorded):
    record, client = recorded["record"], recorded["client"]
    assert record.complete and record.not_logged == []
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["distill.alpha"] == "0.9" and params["distill.schedule"] == "step"
    assert params["calibration.dataset"] == "tiny random" and params["calibration.examples"] == "4"
    assert params["distiller.teacher.name"] == "teacher"
    assert params["distiller.student.params"] == "55"
    assert params["distiller.terms.logits_kd.temperature.config.values"] == "[6.0, 4.0, 2.0]"
    assert params["distiller.terms.logits_kd.weight.value"] == "0.9"
    tags = run.data.tags
    assert tags["task"] == "classification"
    assert tags["tensorflow.version"] == tf.__version__
    assert tags["kd_keras.version"] == "0.1.0"
    assert tags["tf_keras.version"].startswith("2.")
    for name in ("loss", "student_loss", "distillation_loss", "total_loss", "accuracy"):
        history = client.get_metric_history(record.run_id, f"distilled/{name}")
        assert [m.step for m in history] == [0, 1, 2]
        np.testing.assert_allclose([m.value for m in history], recorded["history"][name], 1e-6)
    metrics = run.data.metrics
    assert metrics["tflite_size_kb"] == pytest.approx(recorded["tflite"].stat().st_size / 1024)
    assert metrics["tflite_accuracy"] == recorded["accuracy"]
    assert metrics["student_distilled/accuracy"] == 0.5

    def listing(path=None):
        names = []
        for item in client.list_artifacts(record.run_id, path):
            names += listing(item.path) if item.is_dir else [item.path]
        return names

    files = set(listing())
    expected = {
        "config/config.json",
        "report/report.json",
        "models/student.keras",
        "tflite/student_int8.tflite",
        "plots/training_curves.png",
        "plots/accuracy_vs_size.png",
        "tflite_model/MLmodel",
        "tflite_model/artifacts/student_int8.tflite",
    }
    assert expected <= files
    config = json.loads(
        Path(client.download_artifacts(record.run_id, "config/config.json")).read_text()
    )
    assert config == CONFIG
    shipped = client.download_artifacts(record.run_id, "tflite_model/artifacts/student_int8.tflite")
    assert Path(shipped).read_bytes() == recorded["tflite"].read_bytes()
    assert not (recorded["output"] / "mlflow" / "pending.json").exists()


def test_missing_file_is_reported_and_the_rest_logged(store, tmp_path):
    session = tracking.RunSession(
        tmp_path, tracking_uri=store["uri"], experiment="tiny", artifact_location=store["artifacts"]
    )
    with pytest.warns(tracking.TrackingWarning, match="will miss: artifact 'ghost' not found"):
        record = session.finish(CONFIG, None, {"ghost": tmp_path / "ghost.keras"})
    assert record.complete and record.not_logged == [
        f"artifact 'ghost' not found at {tmp_path / 'ghost.keras'}"
    ]
    run = MlflowClient(store["uri"]).get_run(record.run_id)
    assert run.data.params["distill.alpha"] == "0.9" and run.info.status == "FINISHED"


def test_temperature_recorded_per_epoch(recorded):
    history = recorded["client"].get_metric_history(
        recorded["record"].run_id, "distilled/logits_kd_temperature"
    )
    assert [(m.step, m.value) for m in history] == list(enumerate(TEMPERATURES))


def test_registered_pyfunc_predicts_like_litert(recorded, store, monkeypatch):
    record, client = recorded["record"], recorded["client"]
    assert (record.model_name, record.model_version) == ("tiny-student", "1")
    version = client.get_model_version_by_alias("tiny-student", "challenger")
    assert str(version.version) == "1" and version.tags["task"] == "classification"
    assert "tiny random" in version.tags["calibration"]
    client.set_registered_model_alias("tiny-student", "champion", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])  # as a user's shell would
    model = mlflow.pyfunc.load_model("models:/tiny-student@champion")
    x = np.random.default_rng(1).normal(size=(5, *SHAPE)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), litert_predict(recorded["tflite"], x))
    signature = model.metadata.signature
    assert signature.inputs.inputs[0].shape == (-1, *SHAPE)
    assert model.metadata.metadata["calibration"]["examples"] == 4
    assert model.metadata.saved_input_example_info is not None


@pytest.mark.slow
def test_pyfunc_loads_without_tensorflow(recorded, tmp_path):
    """The logged model needs only mlflow, numpy and ai_edge_litert to load and predict."""
    x = np.random.default_rng(2).normal(size=(3, *SHAPE)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        """
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "tf_keras", "keras", "kd_keras"):
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import mlflow, numpy as np
        model = mlflow.pyfunc.load_model(sys.argv[1])
        print(json.dumps(model.predict(np.load(sys.argv[2])).tolist()))
        assert not any(m.split(".")[0] in ("tensorflow", "tf_keras") for m in sys.modules)
        """
    )
    model_dir = recorded["output"] / "mlflow" / "tflite_model"
    result = subprocess.run(
        [sys.executable, "-c", script, str(model_dir), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = np.array(json.loads(result.stdout.strip().splitlines()[-1]), np.float32)
    np.testing.assert_array_equal(predictions, litert_predict(recorded["tflite"], x))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_store_keeps_run_and_upload_sends_it(store, tmp_path, capsys):
    session = tracking.RunSession(
        tmp_path,
        tracking_uri=f"http://127.0.0.1:{_free_port()}",
        experiment="offline",
        artifact_location=str(tmp_path / "artifacts"),
        probe_timeout=0.5,
    )
    with pytest.warns(tracking.TrackingWarning, match="reaching the tracking server"):
        history, tflite, x, accuracy, described = train(session, tmp_path, epochs=2)
    assert len(history["loss"]) == 2  # training finished
    with pytest.warns(tracking.TrackingWarning, match="upload them later"):
        record = finish(
            session, tmp_path, tflite, x, accuracy, described, register_as="offline-student"
        )
    assert not record.complete and record.run_id is None
    per_epoch = 2 * len(history)  # every Keras log of both epochs
    assert record.not_logged[0] == f"{PARAMS} params"
    assert record.not_logged[2] == f"{per_epoch + 4} metric values"  # + report and TFLite values
    assert "registration as 'offline-student' with alias 'challenger'" in record.not_logged
    assert record.pending_file == tmp_path / "mlflow" / "pending.json"

    code = upload_pending.main([str(tmp_path), "--tracking-uri", store["uri"]])
    assert code == 0 and "uploaded:" in capsys.readouterr().out
    client = MlflowClient(store["uri"])
    version = client.get_model_version_by_alias("offline-student", "challenger")
    run = client.get_run(version.run_id)
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "distilled/loss")]
    np.testing.assert_allclose(losses, history["loss"], 1e-6)
    assert run.data.params["distill.alpha"] == "0.9"
    assert not record.pending_file.exists()
    assert upload_pending.main([str(tmp_path)]) == 2  # nothing left to upload


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 over a SQLite store; restartable on the same data."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        command = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.root}/db.sqlite",
            "--artifacts-destination",
            str(self.root / "artifacts"),
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.root / "server.log").read_text()[-3000:])
            try:
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError("mlflow server did not answer /health within 120 s")

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(15)
        deadline = time.monotonic() + 15  # the worker may outlive the parent for a moment
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = MlflowServer(tmp_path_factory.mktemp("server"))
    instance.start()
    yield instance
    instance.stop()


@pytest.mark.slow
def test_server_stopped_mid_run_loses_nothing(server, tmp_path, monkeypatch):
    class StopServer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                server.stop()

    session = tracking.RunSession(
        tmp_path,
        tracking_uri=server.url,
        experiment="remote",
        task="classification",
        probe_timeout=1.0,
    )
    with pytest.warns(tracking.TrackingWarning, match="MLflow tracking stopped"):
        history, tflite, x, accuracy, described = train(session, tmp_path, 4, [StopServer()])
    assert len(history["loss"]) == 4
    partial_run = session.run_id
    with pytest.warns(tracking.TrackingWarning, match=f"Not logged: {PARAMS} params"):
        record = finish(
            session, tmp_path, tflite, x, accuracy, described, register_as="remote-student"
        )
    assert not record.complete and record.run_id == partial_run
    assert (tmp_path / "student.keras").is_file() and tflite.is_file()
    assert (tmp_path / "mlflow" / "tflite_model" / "MLmodel").is_file()

    server.start()
    client = MlflowClient(server.url)
    assert len(client.get_metric_history(partial_run, "distilled/loss")) == 2  # before the stop
    assert upload_pending.main([str(tmp_path)]) == 0
    version = client.get_model_version_by_alias("remote-student", "challenger")
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and run.data.params["distill.alpha"] == "0.9"
    for name in ("loss", "logits_kd_temperature"):
        values = [m.value for m in client.get_metric_history(run.info.run_id, f"distilled/{name}")]
        np.testing.assert_allclose(values, history[name], 1e-6)
    old = client.get_run(partial_run)
    assert old.info.status == "FAILED"
    assert old.data.tags["kd_keras.superseded_by"] == run.info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    model = mlflow.pyfunc.load_model("models:/remote-student@challenger")
    np.testing.assert_array_equal(model.predict(x), litert_predict(tflite, x))
