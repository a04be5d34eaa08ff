"""Two worker processes on loopback train what one process trains, within noise."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kd_keras.pipeline.distribute import cluster_spec

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--epochs", "4",
    "--set", "teacher_epochs=4",
    "--set", "compress.prune_epochs=1",
    "--set", "compress.qat_epochs=1",
    "--set", "latency_runs=3",
    "--set", "int8_costs=false",
    "--set", "teacher_model.dropout=0",
    "--no-tracking",
]  # fmt: skip
# Dropout off: each replica draws its own masks for its half of a batch, which one process
# drawing for the whole batch cannot match.


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(args: list[str], env_extra: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **env_extra}
    command = [sys.executable, "-m", "recipes.classify", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait(processes: list[subprocess.Popen], timeout: float = 600) -> list[str]:
    outputs = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=timeout)
            outputs.append(out.decode(errors="replace"))
            assert process.returncode == 0, outputs[-1][-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return outputs


@pytest.mark.slow
def test_two_workers_on_loopback_match_one_worker(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    _wait([_start([*TINY, "--output-dir", str(single)], {})])

    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        args = [*TINY, "--output-dir", str(multi), "--strategy", "multiworker"]
        processes.append(_start(args, {"TF_CONFIG": json.dumps(tf_config)}))
    _wait(processes)

    one = json.loads((single / "report.json").read_text())
    chief = json.loads((multi / "report.json").read_text())
    worker = json.loads((multi / "worker_1" / "report.json").read_text())
    assert [row["model"] for row in chief["rows"]] == [row["model"] for row in one["rows"]]
    # Same initial weights, batches and global-batch arithmetic: every stage's first epoch is
    # one process's. Later epochs drift by float rounding (the replicas sum in another order),
    # which training amplifies: up to 7.5% on the teacher's near-zero loss after four epochs.
    for stage in ("teacher", "scratch"):
        assert chief["epoch_losses"][stage][0] == pytest.approx(
            one["epoch_losses"][stage][0], rel=1e-4
        ), stage
    for stage, losses in one["epoch_losses"].items():
        assert chief["epoch_losses"][stage] == pytest.approx(losses, rel=0.15), stage
    for expected, row in zip(one["rows"], chief["rows"]):
        assert row["accuracy"] == pytest.approx(expected["accuracy"], abs=0.02), row["model"]
        assert row["accuracy"] > 0.8, row["model"]
        assert row["params"] == expected["params"]
    # Both workers hold the same replicated weights, so they report the same models.
    for a, b in zip(chief["rows"], worker["rows"]):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-6), a["model"]
    assert (multi / "student_int8.tflite").is_file()


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        (None, "Received: no TF_CONFIG in the environment"),
        ("{not json", "Expected TF_CONFIG like"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"index": 3}}', "0 <= index < 1 workers"),
        ('{"cluster": {"chief": ["a:1"]}, "task": {"index": 0}}', "'worker'"),
    ],
)
def test_a_bad_tf_config_is_refused_naming_the_expected_form(tf_config, message):
    environ = {} if tf_config is None else {"TF_CONFIG": tf_config}
    with pytest.raises(ValueError, match="strategy=multiworker") as error:
        cluster_spec(environ)
    assert message in str(error.value)


def test_cluster_spec_reads_workers_and_index():
    text = '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"index": 1}}'
    assert cluster_spec({"TF_CONFIG": text}) == {
        "worker": ["127.0.0.1:1", "127.0.0.1:2"],
        "index": 1,
    }
