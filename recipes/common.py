"""Command-line and tracking plumbing shared by the recipes.

This is the one layer that reads the process environment (`MLFLOW_TRACKING_URI`); library code only
receives the resolved values.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import yaml

from kd_keras import config as config_lib

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


def config_from_args(cls: type[T], args: argparse.Namespace, named: Mapping[str, object]) -> T:
    """YAML file, then `--set`, then the named options (those given), validated into `cls`."""
    data = config_lib.load_yaml(args.config) if args.config else {}
    data = config_lib.apply_overrides(data, args.set)
    named = {
        "output_dir": args.output_dir,
        "track": args.track,
        "tracking_uri": args.tracking_uri,
        "register_as": args.register_as,
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
    model, dataset, epochs: int, checkpoint_dir, callbacks=(), steps_per_epoch: int | None = None
) -> tuple[float, dict]:
    """Fits with a `BackupAndRestore` in `checkpoint_dir`, so an interrupted run resumes there.

    Returns the wall-clock seconds and the history.
    """
    import tf_keras as keras

    backup = keras.callbacks.BackupAndRestore(str(checkpoint_dir), delete_checkpoint=True)
    start = time.perf_counter()
    history = model.fit(
        dataset,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=[backup, *callbacks],
        verbose=0,
    )
    return time.perf_counter() - start, history.history


def parse_and_run(parse_config, run, argv):
    """`(config, report)`, or `None` after printing why the options, config or data were refused."""
    try:
        config = parse_config(argv)
        return config, run(config)
    except (config_lib.ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def print_artifacts(output_dir, report: Mapping) -> None:
    names = ["report.json", *(Path(p).name for p in report["artifacts"].values())]
    print(f"\nartifacts in {output_dir}: {', '.join(dict.fromkeys(names))}")
