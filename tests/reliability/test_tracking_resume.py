"""Tracking after an interruption or with an undefined metric: the run is continued and closed."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from kd_keras import tracking

ROOT = Path(__file__).resolve().parents[2]


def test_undefined_tflite_metric_still_finishes_the_run(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    (tmp_path / "model.tflite").write_bytes(b"not a model")  # only its size is read here
    session = tracking.RunSession(tmp_path / "out", tracking_uri=store, experiment="e")
    session.log_metrics({"teacher/loss": 1.5}, step=0)
    report = {"rows": [{"model": "int8", "AP": None, "size_bytes": 3}]}
    with pytest.warns(tracking.TrackingWarning, match="pyfunc model not built"):
        record = session.finish(
            {"seed": 0},
            report,
            tflite_path=tmp_path / "model.tflite",
            tflite_metrics={"AP": None, "latency_ms": 0.5},
        )
    run = MlflowClient(store).get_run(record.run_id)
    assert run.info.status == "FINISHED"
    assert "tflite_AP" not in run.data.metrics
    assert run.data.metrics["tflite_latency_ms"] == 0.5


_KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from kd_keras import tracking
    session = tracking.RunSession(sys.argv[1], tracking_uri=sys.argv[2], experiment="e")
    session.log_metrics({"teacher/loss": 2.0}, step=0)
    session.log_metrics({"teacher/loss": 1.0}, step=1)
    print(session.run_id, flush=True)
    time.sleep(120)
    """
)


@pytest.mark.slow
def test_a_run_killed_mid_training_is_continued_and_closed_by_the_rerun(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(output), store],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        run_id = process.stdout.readline().strip()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    client = MlflowClient(store)
    assert client.get_run(run_id).info.status == "RUNNING"  # what kill -9 leaves behind

    session = tracking.RunSession(output, tracking_uri=store, experiment="e")
    assert session.run_id == run_id
    session.log_metrics({"student/loss": 0.5}, step=0)
    record = session.finish({"seed": 0}, {"rows": []})
    assert record.run_id == run_id and record.complete
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["kd_keras.resumed"] == "true"
    history = [m.value for m in client.get_metric_history(run_id, "teacher/loss")]
    assert history == [2.0, 1.0]  # sent once, before the kill, and not again
    assert [m.value for m in client.get_metric_history(run_id, "student/loss")] == [0.5]
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert not (output / "mlflow" / "session.json").exists()
    # The next run in the folder is a new one.
    fresh = tracking.RunSession(output, tracking_uri=store, experiment="e")
    fresh.log_metrics({"x": 1.0}, step=0)
    assert fresh.run_id != run_id


def test_metrics_of_an_unreachable_store_survive_the_kill(tmp_path):
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    output = tmp_path / "out"
    with pytest.warns(tracking.TrackingWarning):
        first = tracking.RunSession(output, tracking_uri=dead, probe_timeout=0.2)
        first.log_metrics({"teacher/loss": 3.0}, step=0)
    del first  # the process dies here; only the files remain
    with pytest.warns(tracking.TrackingWarning):
        again = tracking.RunSession(output, tracking_uri=dead, probe_timeout=0.2)
        again.log_metrics({"student/loss": 1.0}, step=0)
        record = again.finish({"seed": 0}, {"rows": []})
    bundle = json.loads(record.pending_file.read_text())
    names = [row[0] for row in bundle["metrics"]]
    assert names == ["teacher/loss", "student/loss"]
    assert np.isclose(bundle["metrics"][0][1], 3.0)
