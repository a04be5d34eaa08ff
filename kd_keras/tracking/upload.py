"""Sending a recorded run to MLflow, now or later from `<output_dir>/mlflow/pending.json`."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from mlflow import MlflowClient

from kd_keras.io import atomic_write_json
from kd_keras.tracking import _store, registry

PENDING = Path("mlflow") / "pending.json"
RECORD = Path("mlflow") / "run.json"
# The run an unfinished recipe is logging to, so a rerun after an interruption continues it.
SESSION = Path("mlflow") / "session.json"
MODEL_ARTIFACT = "tflite_model"


@dataclasses.dataclass
class RunRecord:
    """Where a run went.

    Attributes:
        tracking_uri: the store the run was (or will be) sent to.
        experiment: the experiment name.
        run_id: the MLflow run, `None` if none could be created.
        model_name: registered model name, when the TFLite student was registered.
        model_version: its version (alias `challenger`).
        pending_file: the replay file when something could not be sent, else `None`.
        not_logged: what is missing from the store: what waits in `pending_file`, or what could
            not be prepared at all (a missing artifact file, a model that could not be built).
    """

    tracking_uri: str
    experiment: str
    run_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    pending_file: Path | None = None
    not_logged: list[str] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.pending_file is None

    @property
    def model_uri(self) -> str | None:
        if self.model_version is None:
            return None
        return f"models:/{self.model_name}/{self.model_version}"


def upload_pending(
    directory: str | os.PathLike, tracking_uri: str | None = None, probe_timeout: float = 5.0
) -> RunRecord:
    """Sends a run that could not be logged (`<directory>/mlflow/pending.json`) as a new run.

    Args:
        directory: the run's output directory.
        tracking_uri: the store to send it to (default: the one the run was meant for).
        probe_timeout: seconds to wait for an HTTP store's `/health`.

    Raises:
        FileNotFoundError: no pending run in `directory`, or one of its files is gone.
        TrackingError: the store is still unreachable; the pending file is kept.
    """
    pending = Path(directory) / PENDING
    if not pending.is_file():
        raise FileNotFoundError(
            f"No pending MLflow run in {directory}: expected {pending}. Received: "
            f"directory={str(directory)!r}."
        )
    bundle = json.loads(pending.read_text())
    missing = [p for p, _ in bundle["artifacts"] if not Path(p).exists()]
    if bundle["model"] and not Path(bundle["model"]).exists():
        missing.append(bundle["model"])
    if missing:
        raise FileNotFoundError(
            f"The pending run refers to files that no longer exist: {', '.join(missing)}. "
            f"Restore them or rerun the recipe. Received: directory={str(directory)!r}."
        )
    uri = tracking_uri or bundle["tracking_uri"]
    problem = _store.reachable(uri, probe_timeout)
    if problem is not None:
        raise _store.TrackingError(f"The tracking server at {uri} is unreachable: {problem}.")
    client = MlflowClient(tracking_uri=uri)
    try:
        experiment_id = _store.experiment_id(
            client, bundle["experiment"], bundle["artifact_location"]
        )
        run = client.create_run(experiment_id, run_name=bundle["run_name"], tags=bundle["tags"])
        version = upload(client, run.info.run_id, bundle, 0, [])
    except Exception as error:
        raise _store.TrackingError(
            f"Uploading the pending run to {uri} failed ({short_error(error)}); {pending} is kept."
        ) from error
    partial = bundle.get("partial_run_id")
    if partial:
        try:
            client.set_tag(partial, "kd_keras.superseded_by", run.info.run_id)
            client.set_terminated(partial, "FAILED")
        except Exception:  # noqa: BLE001 - the partial run may live in another store
            pass
    return completed(uri, Path(directory), bundle, run.info.run_id, version)


def upload(client: MlflowClient, run_id: str, bundle: dict, sent: int, done: list) -> str | None:
    """Sends the bundle to `run_id` (metrics from index `sent`); appends finished step names."""
    names = iter(steps(bundle, sent))
    _store.log_params(client, run_id, bundle["params"])
    done.append(next(names))
    _store.log_tags(client, run_id, bundle["tags"])
    done.append(next(names))
    _store.log_metrics(client, run_id, bundle["metrics"][sent:])
    done.append(next(names))
    for path, artifact_dir in bundle["artifacts"]:
        if Path(path).is_dir():
            client.log_artifacts(run_id, path, f"{artifact_dir}/{Path(path).name}")
        else:
            client.log_artifact(run_id, path, artifact_dir)
        done.append(next(names))
    version = None
    if bundle["model"]:
        client.log_artifacts(run_id, bundle["model"], MODEL_ARTIFACT)
        done.append(next(names))
        if bundle["register_as"]:
            tags = {**bundle["version_tags"], "task": bundle["tags"].get("task", "")}
            version = registry.register_version(
                client, bundle["register_as"], run_id, MODEL_ARTIFACT, tags
            )
            done.append(next(names))
    client.set_terminated(run_id, "FINISHED")
    return version


def steps(bundle: dict, sent: int) -> list[str]:
    """What `upload` sends, in order, as phrases for the "not logged" warning."""
    names = [
        f"{len(bundle['params'])} params",
        f"{len(bundle['tags'])} tags",
        f"{len(bundle['metrics']) - sent} metric values",
    ]
    names += [f"artifact {Path(p).name} ({d}/)" for p, d in bundle["artifacts"]]
    if bundle["model"]:
        names.append(f"TFLite pyfunc model ({MODEL_ARTIFACT}/)")
        if bundle["register_as"]:
            names.append(f"registration as {bundle['register_as']!r} with alias 'challenger'")
    return names


def completed(tracking_uri: str, output_dir: Path, bundle, run_id: str, version) -> RunRecord:
    """Writes `mlflow/run.json` and removes the pending file of a fully logged run."""
    record = RunRecord(
        tracking_uri,
        bundle["experiment"],
        run_id=run_id,
        model_name=bundle["register_as"],
        model_version=version,
        not_logged=list(bundle["problems"]),
    )
    fields = {k: v for k, v in dataclasses.asdict(record).items() if k != "not_logged"}
    atomic_write_json(output_dir / RECORD, {**fields, "problems": bundle["problems"]})
    (output_dir / PENDING).unlink(missing_ok=True)
    return record


def short_error(error) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    name = type(error).__name__ if isinstance(error, BaseException) else ""
    return f"{name}: {text}"[:300] if name else text[:300]
