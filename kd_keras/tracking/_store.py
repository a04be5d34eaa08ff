"""Low-level MLflow access shared by runs and the registry: clients, probes, batched logging."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from kd_keras import config as config_lib

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""Embedded store: a SQLite file in the working directory (`mlflow ui --backend-store-uri ...`)."""

_MAX_PARAM_VALUE = 6000
_BATCH = 100


class TrackingError(RuntimeError):
    """MLflow could not be reached or refused a request."""


def resolve_tracking_uri(explicit: str | None, environment: Mapping[str, str]) -> str:
    """`--tracking-uri`, else `MLFLOW_TRACKING_URI` from `environment`, else the SQLite default.

    Library code does not read the environment itself: command-line entry points pass
    `os.environ` here.
    """
    return explicit or environment.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def reachable(tracking_uri: str, timeout: float) -> str | None:
    """`None` when the store answers, else why not (HTTP stores only; others are local)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    try:
        requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout)
    except requests.RequestException as error:
        return f"{type(error).__name__}: {error}"
    return None


def default_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside its file (`<db dir>/mlruns/<experiment>`).

    MLflow's own default is `./mlruns` relative to whatever directory the process runs in, which
    scatters one store's artifacts over several folders. Servers choose their own root (`None`).
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = Path(tracking_uri[len(prefix) :]).resolve()
    return (database.parent / "mlruns" / experiment).as_uri()


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Gets or creates experiment `name` (safe when two processes create it at once)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    if artifact_location is None:
        artifact_location = default_artifact_location(client.tracking_uri, name)
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        return client.get_experiment_by_name(name).experiment_id


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    items = [Param(k, str(v)[:_MAX_PARAM_VALUE]) for k, v in params.items()]
    for chunk in _chunks(items, _BATCH):
        client.log_batch(run_id, params=chunk, synchronous=True)


def log_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    items = [RunTag(k, str(v)) for k, v in tags.items()]
    for chunk in _chunks(items, _BATCH):
        client.log_batch(run_id, tags=chunk, synchronous=True)


def log_metrics(client: MlflowClient, run_id: str, metrics: Sequence[Sequence]) -> None:
    """Logs `[key, value, step, timestamp_ms]` rows."""
    items = [Metric(k, float(v), int(ts), int(step)) for k, v, step, ts in metrics]
    for chunk in _chunks(items, 10 * _BATCH):
        client.log_batch(run_id, metrics=chunk, synchronous=True)


def flatten(config: Mapping, prefix: str = "") -> dict[str, str]:
    """`{"distill": {"alpha": 0.9}}` to `{"distill.alpha": "0.9"}` (`kd_keras.config.flatten`)
    as MLflow params: lists and mappings become JSON, everything else its text."""
    flat = config_lib.flatten(dict(config), prefix)
    return {key: _param_text(value) for key, value in flat.items()}


def _param_text(value) -> str:
    return json.dumps(value, default=str) if isinstance(value, list | tuple | dict) else str(value)


def environment_tags(task: str | None) -> dict[str, str]:
    """kd-keras, TensorFlow and tf_keras versions, the git commit when there is one, the task."""
    tags = {"kd_keras.version": _version("kd-keras")}
    for name, distribution in (("tensorflow", "tensorflow"), ("tf_keras", "tf-keras")):
        tags[f"{name}.version"] = _version(distribution)
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if task:
        tags["task"] = task
    return tags


def now_ms() -> int:
    return int(time.time() * 1000)


def _version(distribution: str) -> str:
    try:
        return importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path.cwd(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_UPSERTS = frozenset(
    {"set_registered_model_alias", "set_model_version_tag", "set_registered_model_tag", "set_tag"}
)


# How a lost insert race reads: SQLite's message, then PostgreSQL's.
_UNIQUE_KEY_ERRORS = (
    "UNIQUE constraint failed",
    "duplicate key value violates unique constraint",
)


def _transient(method: str, error: Exception) -> bool:
    """Whether `error` came from another writer and the same call would succeed now."""
    message = str(error)
    if "database is locked" in message:
        return True
    # Two upserts of a row that did not exist both try to insert it; the later one loses on
    # the unique key, and its retry finds the row and updates it.
    return method in _UPSERTS and any(text in message for text in _UNIQUE_KEY_ERRORS)


class LockRetryingClient:
    """An `MlflowClient` whose calls retry while another writer holds a SQLite store.

    SQLite lets one writer in at a time; when several processes (two promotions, say) write at
    once, the others fail with `database is locked` instead of waiting, and two upserts of the
    same new row (an alias, a tag) collide on its unique key. Each such call is retried with a
    growing pause, `attempts` times at most, then the last error is raised.
    """

    def __init__(self, client: MlflowClient, attempts: int = 30, pause: float = 0.05):
        self._client = client
        self._attempts = attempts
        self._pause = pause

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            for attempt in range(self._attempts):
                try:
                    return method(*args, **kwargs)
                except Exception as error:  # sqlalchemy or MlflowException, depending on the call
                    if not _transient(name, error) or attempt == self._attempts - 1:
                        raise
                    time.sleep(min(1.0, self._pause * (attempt + 1)))
            raise AssertionError("unreachable")

        return call
