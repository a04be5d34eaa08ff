"""A `multiworker` run whose other worker never starts stops: after `worker_timeout` with an
error naming that worker, or at once on SIGTERM or Ctrl-C (SIGINT)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kd_keras.pipeline.distribute import WorkerTimeoutError, wait_for_workers

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "1", "--set", "teacher_epochs=1", "--no-tracking"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_worker_0(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, list[str]]:
    """Worker 0 of two on loopback; worker 1 is never started. Returns the process and the
    two worker addresses."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TF_CONFIG": json.dumps(tf_config),
    }
    output = tmp_path / "run"
    command = [sys.executable, "-m", "recipes.classify", "--strategy", "multiworker"]
    command += [*TINY, "--output-dir", str(output), *args]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    return process, workers


def _wait_until_listening(process: subprocess.Popen, address: str, timeout: float = 90) -> None:
    """Until worker 0 accepts connections at its own address: it is past importing TensorFlow
    and waiting for worker 1 (before the fix: inside TensorFlow's own wait)."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode(errors="replace")[-3000:]
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"worker 0 never listened at {address}")


def _finish(process: subprocess.Popen, timeout: float) -> tuple[str, float]:
    """(stderr, seconds) once the process exits; fails if it is still running after `timeout`."""
    start = time.monotonic()
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {timeout} s later")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return err.decode(errors="replace"), time.monotonic() - start


@pytest.mark.slow
def test_a_worker_that_never_starts_is_named_after_worker_timeout(tmp_path):
    process, workers = _start_worker_0(tmp_path, "--set", "worker_timeout=5")
    err, _ = _finish(process, timeout=60)

    assert process.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    assert f"worker 1 at {workers[1]}" in lines[0]
    assert "worker_timeout=5" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_worker_waiting_for_the_others(tmp_path, signum):
    process, workers = _start_worker_0(tmp_path)  # the default worker_timeout, minutes
    try:
        _wait_until_listening(process, workers[0])
        time.sleep(1)
        process.send_signal(signum)
    finally:
        err, seconds = _finish(process, timeout=10)

    assert process.returncode == (130 if signum == signal.SIGINT else -signum), err[-3000:]
    assert seconds < 10
    assert "Traceback" not in err
    if signum == signal.SIGINT:
        assert "interrupted: the finished stages are kept" in err
    assert not (tmp_path / "run").exists()


def _cluster(addresses: list[str], index: int) -> dict:
    return {"worker": addresses, "index": index}


def test_the_wait_names_each_worker_that_accepts_no_connection():
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(3)]
    start = time.monotonic()
    with pytest.raises(WorkerTimeoutError) as error:
        wait_for_workers(_cluster(addresses, 1), timeout=0.5)
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert isinstance(error.value, ValueError)  # reported by the recipes in one line
    assert f"worker 0 at {addresses[0]}" in message and f"worker 2 at {addresses[2]}" in message
    assert "worker 1 " not in message and "worker_timeout=0.5" in message
    assert "not started (no connection accepted)" in message


def test_workers_waiting_for_each_other_all_go_on_and_free_their_ports():
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(3)]
    outcomes = {}

    def worker(index: int) -> None:
        try:
            wait_for_workers(_cluster(addresses, index), timeout=20)
            outcomes[index] = "started"
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            outcomes[index] = repr(error)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(3)]
    for thread in threads:
        thread.start()
        time.sleep(0.5)  # each starts later than the one before
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == {0: "started", 1: "started", 2: "started"}
    for address in addresses:  # free again for TensorFlow's servers
        host, port = address.rsplit(":", 1)
        socket.create_server((host, int(port))).close()


def test_a_taken_port_of_this_worker_is_refused_naming_it():
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    host, port = addresses[0].rsplit(":", 1)
    taken = pytest.raises(ValueError, match=f"Expected port {port} free for worker 0")
    with socket.create_server((host, int(port))), taken:
        wait_for_workers(_cluster(addresses, 0), timeout=5)


def test_a_worker_that_never_connects_back_is_named_too():
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    host, port = addresses[1].rsplit(":", 1)
    with socket.create_server((host, int(port))), pytest.raises(WorkerTimeoutError) as error:
        wait_for_workers(_cluster(addresses, 0), timeout=0.5)  # worker 1's port: no worker
    assert (
        f"started but never connected to this worker 0 at {addresses[0]}: "
        f"worker 1 at {addresses[1]}"
    ) in str(error.value)


def test_ctrl_c_stops_the_wait_in_process_and_the_handler_is_put_back():
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            wait_for_workers(_cluster(addresses, 0), timeout=30)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 3  # raised by the wait itself, within one round
    assert signal.getsignal(signal.SIGINT) is before
