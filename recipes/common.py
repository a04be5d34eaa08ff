"""Command-line and tracking plumbing shared by the recipes.

This is the one layer that reads the process environment (`MLFLOW_TRACKING_URI`); library code only
receives the resolved values.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import yaml

from kd_keras import config as config_lib
from kd_keras.run_state import RunState

T = TypeVar("T")


def add_run_arguments(parser: argparse.ArgumentParser, config_name: str) -> None:
    """`--config`, `--output-dir`, the MLflow options and `--set`, the same in every recipe."""
    parser.add_argument("--config", help=f"YAML config file (keys as in {config_name})")
    parser.add_argument("--output-dir", dest="output_dir")
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument(
        "--no-tracking", dest="track", action="store_false", default=None, help="skip MLflow"
    )
    parser.add_argument("--register-as", help="registered model name for the .tflite student")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any config key"
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        default=None,
        help="retrain every stage instead of reusing those finished in --output-dir",
    )


def config_from_args(cls: type[T], args: argparse.Namespace, named: Mapping[str, object]) -> T:
    """YAML file, then `--set`, then the named options (those given), validated into `cls`."""
    data = config_lib.load_yaml(args.config) if args.config else {}
    data = config_lib.apply_overrides(data, args.set)
    named = {
        "output_dir": args.output_dir,
        "track": args.track,
        "tracking_uri": args.tracking_uri,
        "register_as": args.register_as,
        "restart": args.restart,
        **named,
    }
    overrides = [
        f"{key}={_yaml_scalar(value)}" for key, value in named.items() if value is not None
    ]
    return config_lib.from_dict(cls, config_lib.apply_overrides(data, overrides))


def _yaml_scalar(value) -> str:
    return "null" if value == "none" else yaml.safe_dump(value, default_flow_style=True).strip()


def tracking_session(config, task: str):
    """The MLflow run shared by a recipe's trainings, or `None` when `config.track` is false.

    `config` needs `track`, `tracking_uri`, `experiment` and `output_dir`.
    """
    if not config.track:
        return None
    from kd_keras import tracking

    return tracking.RunSession(
        config.output_dir,
        tracking_uri=tracking.resolve_tracking_uri(config.tracking_uri, os.environ),
        experiment=config.experiment,
        task=task,
    )


def run_summary(record) -> dict:
    """The part of a `RunRecord` that goes into the recipe's report."""
    return {
        "tracking_uri": record.tracking_uri,
        "run_id": record.run_id,
        "model_uri": record.model_uri,
        "complete": record.complete,
    }


def print_tracking(report: Mapping) -> None:
    tracked = report.get("mlflow")
    if tracked:
        model = f", model {tracked['model_uri']}" if tracked["model_uri"] else ""
        state = "" if tracked["complete"] else " (incomplete: see the warning above)"
        print(f"MLflow run {tracked['run_id']} in {tracked['tracking_uri']}{model}{state}")


def fit_resumable(
    model,
    dataset,
    epochs: int,
    checkpoint_dir,
    callbacks=(),
    steps_per_epoch: int | None = None,
    stage: str | None = None,
) -> tuple[float, dict]:
    """Fits with a `BackupAndRestore` in `checkpoint_dir`, so an interrupted run resumes there.

    A NaN or infinite loss stops the run with `TrainingDivergedError` (naming `stage`) before
    anything is saved. Returns the wall-clock seconds and the history.
    """
    import tf_keras as keras

    from kd_keras.training import StopOnNonFiniteLoss

    backup = keras.callbacks.BackupAndRestore(str(checkpoint_dir), delete_checkpoint=True)
    guard = StopOnNonFiniteLoss(stage or Path(checkpoint_dir).name)
    start = time.perf_counter()
    history = model.fit(
        dataset,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        # The backup comes last: once an epoch's checkpoint exists, its metrics are logged.
        callbacks=[guard, *callbacks, backup],
        verbose=0,
    )
    return time.perf_counter() - start, history.history


# Config keys that can change between reruns in one output folder without changing what is
# trained: where results go, how they are tracked, how often latency is timed.
RERUN_SAFE_KEYS = (
    "output_dir",
    "track",
    "tracking_uri",
    "experiment",
    "register_as",
    "latency_runs",
    "compress.latency_runs",
    "restart",
)


def run_state(config) -> RunState:
    """The finished stages of `config.output_dir` (refuses a folder made with another config)."""
    return RunState(
        config.output_dir,
        config_lib.to_dict(config),
        ignore=RERUN_SAFE_KEYS,
        restart=config.restart,
    )


def reuse_or_train(
    state: RunState,
    stage: str,
    path: Path,
    train: Callable[[], tuple[object, dict]],
):
    """`(model, record)`: `stage`'s saved model if it finished before, else what `train()` made.

    `train()` returns the model and a JSON-able record of its training (`training_record`).

    A trained model is saved atomically to `path` before the stage is recorded as finished, so an
    interruption at any point either reuses the whole stage or runs it again.
    """
    from kd_keras.io import atomic_save_model
    from kd_keras.models import load_model_file

    record = state.done(stage)
    if record is not None:
        return load_model_file(path, option=stage), record
    model, record = train()
    atomic_save_model(model, path)
    state.finish(stage, file=path, **record)
    return model, record


def training_record(seconds: float, history: Mapping[str, list]) -> dict:
    """What a stage keeps of its training: wall-clock seconds and the last epoch's loss."""
    losses = history.get("loss") or [None]
    return {
        "seconds": round(seconds, 1),
        "loss": None if losses[-1] is None else round(float(losses[-1]), 6),
    }


def check_batch_size(batch_size: int, examples: int, what: str) -> None:
    """Refuses a batch larger than the training set (it would give zero training batches)."""
    if batch_size > examples:
        raise config_lib.ConfigError(
            f"Expected batch_size at most the {examples} {what}: a larger batch leaves no "
            f"complete training batch. Lower batch_size or add data. "
            f"Received: batch_size={batch_size}."
        )


def parse_and_run(parse_config, prepare, run, argv):
    """`(config, report)`, or `None` after printing why the run was refused or stopped.

    Options, config and data are checked by `parse_config` and `prepare` before any training;
    their errors (bad values, bad files, bad data) are printed in one line. Once training has
    started only a diverged loss is reported that way: any other error is a fault to see in full.
    """
    from kd_keras.training import TrainingDivergedError

    try:
        config = parse_config(argv)
        inputs = prepare(config)
    except (config_lib.ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    try:
        return config, run(config, inputs)
    except TrainingDivergedError as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def print_artifacts(output_dir, report: Mapping) -> None:
    names = ["report.json", *(Path(p).name for p in report["artifacts"].values())]
    print(f"\nartifacts in {output_dir}: {', '.join(dict.fromkeys(names))}")
