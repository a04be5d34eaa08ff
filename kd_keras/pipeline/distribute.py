"""Training on several devices or machines: `tf.distribute` strategies by name.

    none         the default strategy: one device
    mirrored     `MirroredStrategy`: every local device (GPUs, or the CPU), one process
    multiworker  `MultiWorkerMirroredStrategy`: one process per worker, described by the
                 `TF_CONFIG` environment variable (`cluster.worker` addresses, `task.index`)

Each worker runs the same pipeline on the same data; a training step averages the gradients of
all replicas over the global batch, so the batch size, learning rate and results are those of one
worker. Worker 0 is the chief: it writes the output folder and records the run; the others write
to `<output_dir>/worker_<index>`, untracked.

Under `multiworker` a worker first waits, in Python, for every other worker to start
(`wait_for_workers`), and stops with a `WorkerTimeoutError` naming those that did not within
`worker_timeout` seconds. TensorFlow's own wait for the other workers holds the GIL and replaces
the SIGTERM handler, so no Python thread, watchdog or signal handler can run during it: left to
TensorFlow, a missing worker hangs the process forever, deaf to Ctrl-C and SIGTERM. Waiting
first leaves TensorFlow only a short wait, bounded by its registration timeout, and SIGTERM
stops the worker again once the strategy is built.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import select
import signal
import socket
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Literal

import tensorflow as tf

StrategyName = Literal["none", "mirrored", "multiworker"]

_log = logging.getLogger("kd_keras")
_POLL_SECONDS = 0.2  # at most, between two rounds of connection attempts
_FIRST_NOTE_SECONDS, _NOTE_EVERY_SECONDS = 10.0, 30.0  # "still waiting" warnings


class WorkerTimeoutError(TimeoutError, ValueError):
    """A `multiworker` worker listed in `TF_CONFIG` did not start within `worker_timeout`.

    Also a `ValueError` (like `io.UnsupportedOperation` is both), so callers that report bad
    inputs in one line report this one too.
    """


def make_strategy(name: StrategyName, *, worker_timeout: float = 120.0) -> tf.distribute.Strategy:
    """The strategy called `name`; create it before any other TensorFlow op runs.

    `multiworker` reads `TF_CONFIG` from the environment and refuses a missing or malformed one,
    naming what it expected. It then waits up to `worker_timeout` seconds for the other workers
    to start (Ctrl-C and SIGTERM stop the wait) and raises `WorkerTimeoutError`, naming the
    missing workers and their addresses, if they do not.
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name != "multiworker":
        raise ValueError(
            f"Expected strategy none, mirrored or multiworker. Received: strategy={name!r}."
        )
    if not (isinstance(worker_timeout, (int, float)) and 0 < worker_timeout < math.inf):
        raise ValueError(
            f"Expected worker_timeout a number of seconds > 0. Received: "
            f"worker_timeout={worker_timeout!r}."
        )
    cluster = cluster_spec(os.environ)  # a clear error before TensorFlow's own
    wait_for_workers(cluster, worker_timeout)
    _configure_coordination(worker_timeout)
    # Ring all-reduce over gRPC: the collective implementation that runs on CPUs.
    communication = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    with _sigterm_kept():
        try:
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=communication)
        except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as error:
            _log.info("TensorFlow could not register all workers: %s", error.message)
            message = _registration_message(cluster, worker_timeout, error.message)
            raise WorkerTimeoutError(message) from error


def cluster_spec(environ: Mapping[str, str]) -> dict:
    """`{"worker": [addresses], "index": this worker}` from `environ["TF_CONFIG"]`."""
    text = environ.get("TF_CONFIG")
    expected = (
        'Expected TF_CONFIG like {"cluster": {"worker": ["host:port", ...]}, '
        '"task": {"type": "worker", "index": 0}} for strategy=multiworker'
    )
    if not text:
        raise ValueError(f"{expected}. Received: no TF_CONFIG in the environment.")
    try:
        config = json.loads(text)
        workers = list(config["cluster"]["worker"])
        task = config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{expected}. Received: TF_CONFIG={text!r} ({error}).") from None
    if task.get("type", "worker") != "worker" or not 0 <= index < len(workers):
        raise ValueError(
            f"{expected}, with 0 <= index < {len(workers)} workers. Received: task={task!r}."
        )
    return {"worker": workers, "index": index}


def wait_for_workers(cluster: Mapping, timeout: float) -> None:
    """Returns once this worker and every other worker of `cluster` (`cluster_spec`) have
    connected to each other.

    Meanwhile this worker listens on its own port, so the others, waiting the same way, can
    reach it before its TensorFlow server starts (only with the strategy); it stops listening
    once every other worker has connected and said which it is, so none is left waiting for it.
    The wait is plain Python: Ctrl-C raises `KeyboardInterrupt` and SIGTERM ends the process.

    Raises:
        WorkerTimeoutError: after `timeout` seconds; the message names each worker (index and
            address) that accepts no connection or never connected, and how to fix it.
        ValueError: an address in `cluster` is not `host:port`, or this worker's port is taken.
    """
    workers, index = list(cluster["worker"]), int(cluster["index"])
    addresses = {i: _host_port(address, i) for i, address in enumerate(workers)}
    unreached = {i: "not tried yet" for i in addresses if i != index}  # i -> why not
    unheard = set(unreached)  # have not connected to this worker yet
    if not unreached:
        return
    hello = _hello(index, len(workers))
    start = time.monotonic()
    deadline, note = start + timeout, start + _FIRST_NOTE_SECONDS
    with _listening(addresses[index][1], workers[index], index) as server, _ctrl_c() as pressed:
        while True:
            for i in list(unreached):
                left = max(deadline - time.monotonic(), 0.05)
                reason = _greet(addresses[i], hello, timeout=min(1.0, left))
                if reason is None:
                    del unreached[i]
                else:
                    unreached[i] = reason
            if unreached or unheard:
                wait = min(_POLL_SECONDS, max(deadline - time.monotonic(), 0))
                unheard -= _greeted_by(server, len(workers), wait)
            now = time.monotonic()
            if pressed:
                raise KeyboardInterrupt
            if not unreached and not unheard:
                _log.info("All %d workers started (%.1f s).", len(workers), now - start)
                return
            if now >= deadline:
                raise WorkerTimeoutError(
                    _missing_message(workers, index, unreached, unheard, timeout)
                )
            if now >= note:
                waiting = _named(unreached, workers) or _named(dict.fromkeys(unheard), workers)
                _log.warning(
                    "Still waiting for %s after %.0f s (worker_timeout=%g s).",
                    waiting,
                    now - start,
                    timeout,
                )
                note = now + _NOTE_EVERY_SECONDS


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's worker index (0, the chief, for a single-process strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0
    return int(resolver.task_id or 0)


def _host_port(address: str, index: int) -> tuple[str, int]:
    host, _, port = str(address).rpartition(":")
    host = host.strip("[]")  # an IPv6 address is written [::1]:2222
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"Expected each TF_CONFIG cluster.worker address as host:port. "
            f"Received: cluster.worker[{index}]={address!r}."
        )
    return host, int(port)


@contextmanager
def _listening(port: int, address: str, index: int):
    """A socket listening on `port` (every interface, like TensorFlow's server)."""
    try:
        if socket.has_dualstack_ipv6():
            server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            server = socket.create_server(("", port))
    except OSError as error:
        raise ValueError(
            f"Expected port {port} free for worker {index}, this worker: its TensorFlow server "
            f"listens there. Stop what uses it or change the address in TF_CONFIG. "
            f"Received: cluster.worker[{index}]={address!r} ({error.strerror or error})."
        ) from None
    server.setblocking(False)
    with server:  # closing it frees the port for TensorFlow's server
        yield server


def _hello(index: int, count: int) -> bytes:
    return f"kd-keras worker {index} of {count}\n".encode()


def _greet(address: tuple[str, int], hello: bytes, timeout: float) -> str | None:
    """Connects to `address` and sends `hello`: `None` if done, else why not."""
    try:
        with socket.create_connection(address, timeout=timeout) as connection:
            connection.sendall(hello)
    except OSError as error:
        return error.strerror or str(error) or type(error).__name__
    return None


def _greeted_by(server: socket.socket, count: int, wait: float) -> set[int]:
    """The workers (of `count`) whose hello reaches `server` within `wait` seconds; other
    connections (a port probe, a scan) are closed unread."""
    heard: set[int] = set()
    ready, _, _ = select.select([server], [], [], wait)
    while ready:
        try:
            connection, _ = server.accept()
        except (BlockingIOError, InterruptedError):
            break
        with connection:
            connection.settimeout(1.0)
            text = b""
            try:
                while not text.endswith(b"\n") and len(text) < 64:
                    chunk = connection.recv(64)
                    if not chunk:
                        break
                    text += chunk
            except OSError:
                continue
        match = re.fullmatch(rb"kd-keras worker (\d+) of (\d+)\n", text)
        if match and int(match[2]) == count:
            heard.add(int(match[1]))
    return heard


def _refusal(address: tuple[str, int], timeout: float) -> str | None:
    """`None` if `address` accepts a connection, else why not ("Connection refused", ...)."""
    try:
        socket.create_connection(address, timeout=timeout).close()
    except OSError as error:
        return error.strerror or str(error) or type(error).__name__
    return None


def _named(missing: Mapping[int, str | None], workers: list[str]) -> str:
    return ", ".join(
        f"worker {i} at {workers[i]}" + (f" ({reason})" if reason else "")
        for i, reason in sorted(missing.items())
    )


def _missing_message(
    workers: list[str],
    index: int,
    unreached: Mapping[int, str],
    unheard: set[int],
    timeout: float,
) -> str:
    silent = {i: None for i in unheard if i not in unreached}
    found = []
    if unreached:
        found.append(f"not started (no connection accepted): {_named(unreached, workers)}")
    if silent:
        found.append(
            f"started but never connected to this worker {index} at {workers[index]}: "
            f"{_named(silent, workers)}"
        )
    return (
        f"Expected all {len(workers)} workers in TF_CONFIG to start within worker_timeout="
        f"{timeout:g} seconds; {'; '.join(found)}. Start each missing worker with the same "
        "TF_CONFIG cluster and its own task.index, check that the workers reach each other at "
        "the addresses in TF_CONFIG, or raise worker_timeout. "
        f"Received: worker_timeout={timeout:g}."
    )


def _registration_message(cluster: Mapping, timeout: float, reported: str) -> str:
    """Why TensorFlow's registration timed out: the workers that accept no connection now, else
    those TensorFlow's `reported` error lists as timed out, else every worker may be at fault."""
    workers, index = list(cluster["worker"]), int(cluster["index"])
    missing = {}
    for i, address in enumerate(workers):
        reason = None if i == index else _refusal(_host_port(address, i), timeout=1.0)
        if reason is not None:
            missing[i] = reason
    if missing:
        return _missing_message(workers, index, missing, set(), timeout)
    _, _, listed = reported.partition("timed out task names")
    late = sorted({int(i) for i in re.findall(r"/job:worker/replica:0/task:(\d+)", listed)})
    late = [i for i in late if i != index and i < len(workers)]
    which = ", ".join(f"worker {i} at {workers[i]}" for i in late) if late else "not every worker"
    return (
        f"Expected all {len(workers)} workers in TF_CONFIG to join TensorFlow's cluster within "
        f"worker_timeout={timeout:g} seconds; every address accepts connections, but {which} "
        "did not register: a worker may have failed while starting (see its output) or another "
        "program may listen at its address. Check the workers and TF_CONFIG, or raise "
        f"worker_timeout. Received: worker_timeout={timeout:g}."
    )


def _configure_coordination(timeout: float) -> None:
    """TensorFlow's coordination service as `MultiWorkerMirroredStrategy` would configure it,
    plus a registration timeout: past `timeout` seconds without every worker registered, the
    strategy raises `DeadlineExceededError` instead of waiting forever."""
    from kd_keras.compat import coordination_config_pb2
    from kd_keras.compat import eager_context as context  # the strategy's own hook

    if context.context().coordination_service is not None:
        return  # configured already: the strategy leaves it as it is too
    cluster = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    jobs = [job for job in ("chief", "worker") if job in cluster.jobs]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{jobs[0]}/replica:0/task:0",
        cluster_register_timeout_in_ms=int(timeout * 1000),
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
            for job in jobs
        ],
    )
    config = context.context().coordination_service
    # Without the barrier the registration timeout is not applied to the wait for all tasks.
    if "cluster_register_with_barrier" in config.DESCRIPTOR.fields_by_name:
        config.cluster_register_with_barrier = True


@contextmanager
def _ctrl_c():
    """A list that Ctrl-C (SIGINT) appends to, for the block: the wait raises
    `KeyboardInterrupt` itself, at a point of its choosing. Python's own handler raises it
    wherever the main thread is, and when that is a finalizer or a callback (a socket or
    TensorFlow object collected mid-wait) the exception is printed and dropped, so the worker
    would keep waiting. It replaces any other handler for the block (a library's handler that
    only records the signal would leave the worker waiting), and puts it back after."""
    pressed: list[int] = []
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    ):
        yield pressed  # only the main thread may set handlers; an ignored SIGINT stays ignored
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _sigterm_kept():
    """Restores this process's SIGTERM handling after the block.

    Building a `MultiWorkerMirroredStrategy` installs TensorFlow's preemption notifier, a SIGTERM
    handler that only records the signal, so SIGTERM would no longer stop the worker.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if handler is not None:  # None: set outside Python, cannot be restored from here
            signal.signal(signal.SIGTERM, handler)


__all__ = [
    "StrategyName",
    "WorkerTimeoutError",
    "cluster_spec",
    "make_strategy",
    "wait_for_workers",
    "worker_index",
]
