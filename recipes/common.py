"""Command-line and tracking plumbing shared by the recipes.

This is the one layer that reads the process environment (`MLFLOW_TRACKING_URI`); library code only
receives the resolved values.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import yaml

from kd_keras import config as config_lib
from kd_keras.pipeline.reporting import format_table

T = TypeVar("T")


def add_run_arguments(parser: argparse.ArgumentParser, config_name: str) -> None:
    """The options every recipe has: config file and `--set`, data, teacher, epochs,
    temperature, output, MLflow, strategy, restart."""
    parser.add_argument("--config", help=f"YAML config file (keys as in {config_name})")
    parser.add_argument("--data", help="your dataset (default: the built-in one)")
    parser.add_argument(
        "--teacher",
        help="saved .keras teacher, or null to train one (default auto: the shipped teacher "
        "when it fits the run, else train one)",
    )
    parser.add_argument("--epochs", type=int, help="epochs of every student")
    parser.add_argument("--temperature", type=float, help="KD temperature (the starting one)")
    parser.add_argument("--schedule", help="temperature schedule: constant, linear, cosine, ...")
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
        "--strategy",
        choices=["none", "mirrored", "multiworker"],
        help="spread training over local devices, or over workers listed in TF_CONFIG",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        default=None,
        help="retrain every stage instead of reusing those finished in --output-dir",
    )
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q", "--quiet", action="store_true", help="log warnings only, not stages and epochs"
    )
    loudness.add_argument("-v", "--verbose", action="store_true", help="log debugging details")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (tests replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Shows the `kd_keras` logger on stderr: stages and epochs (INFO), warnings only with
    `quiet`, debugging details with `verbose`. Calling it again replaces the earlier set-up."""
    logger = logging.getLogger("kd_keras")
    for handler in [h for h in logger.handlers if getattr(h, "_kd_keras_recipe", False)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    handler._kd_keras_recipe = True
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False  # a root handler installed by a dependency would print it twice


def config_from_args(cls: type[T], args: argparse.Namespace, named: Mapping[str, object]) -> T:
    """YAML file, then `--set`, then the named options (those given), validated into `cls`."""
    data = config_lib.load_yaml(args.config) if args.config else {}
    data = config_lib.apply_overrides(data, args.set)
    named = {
        "data": args.data,
        "teacher": args.teacher,
        "epochs": args.epochs,
        "distill.temperature": args.temperature,
        "distill.schedule": args.schedule,
        "output_dir": args.output_dir,
        "tracking.enabled": args.track,
        "tracking.uri": args.tracking_uri,
        "tracking.register_as": args.register_as,
        "restart": args.restart,
        "strategy": args.strategy,
        **named,
    }
    overrides = [
        f"{key}={_yaml_scalar(value)}" for key, value in named.items() if value is not None
    ]
    return config_lib.from_dict(cls, config_lib.apply_overrides(data, overrides))


def _yaml_scalar(value) -> str:
    if value in ("none", "null"):
        return "null"
    return yaml.safe_dump(value, default_flow_style=True).strip()


def tracking_session(config, task: str):
    """The MLflow run shared by a recipe's trainings; `None` when `config.tracking.enabled` is off.

    `config` needs `output_dir` and a `tracking` section
    (`kd_keras.pipeline.settings.TrackingSettings`).
    """
    if not config.tracking.enabled:
        return None
    from kd_keras import tracking

    return tracking.RunSession(
        config.output_dir,
        tracking_uri=tracking.resolve_tracking_uri(config.tracking.uri, os.environ),
        experiment=config.tracking.experiment,
        task=task,
    )


def parse_and_run(parse_config, prepare, run, argv):
    """`(config, report)`, or `None` after printing why the run was refused or stopped.

    Options, config and data are checked by `parse_config` and `prepare` before any training;
    their errors (bad values, bad files, bad data) are printed in one line. Once training has
    started only a diverged loss is reported that way: any other error is a fault to see in full.
    """
    from kd_keras.pipeline.divergence import TrainingDivergedError

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


def run_prepared(prepared) -> dict:
    """Runs the shared stage sequence on `prepared`, recorded in MLflow unless tracking is off.

    Stages finished by an earlier run in `output_dir` (with the same config) are reused; an
    interrupted one resumes from its last finished epoch. The report is also written to
    `output_dir/report.json`.
    """
    from kd_keras.pipeline import run_pipeline

    config = prepared.config
    return run_pipeline(prepared, tracking_session(config, prepared.task.name))


def recipe_main(parse_config, prepare, run, argv, columns) -> int:
    """Runs a recipe from the command line and prints its table; 2 when refused or stopped,
    130 when interrupted with Ctrl-C (finished stages are kept: rerun to resume)."""
    try:
        outcome = parse_and_run(parse_config, prepare, run, argv)
    except KeyboardInterrupt:
        print(
            "interrupted: the finished stages are kept; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    if outcome is None:
        return 2
    config, report = outcome
    print(format_table(report["rows"], columns))
    for label, values in report["temperatures_per_epoch"].items():
        if len(set(values)) > 1:
            print(f"{label}: temperature per epoch {values}")
    if report.get("skipped_annotations"):
        print(f"\nskipped {report['skipped_annotations']} bad annotation(s) or image(s)")
    names = ["report.json", *(Path(p).name for p in report["artifacts"].values())]
    print(f"\nartifacts in {config.output_dir}: {', '.join(dict.fromkeys(names))}")
    tracked = report.get("mlflow")
    if tracked:
        model = f", model {tracked['model_uri']}" if tracked["model_uri"] else ""
        state = "" if tracked["complete"] else " (incomplete: see the warning above)"
        print(f"MLflow run {tracked['run_id']} in {tracked['tracking_uri']}{model}{state}")
    return 0


class Recipe:
    """A `python -m recipes.<name>` command: the task's config and task classes, and the
    options of its own (`add_options(parser)`, read back by `named_options(args)` as
    `{config key: value}`) beside those of `add_run_arguments`."""

    def __init__(
        self,
        name: str,
        config_class: type,
        task_class: type,
        description: str,
        add_options: Callable[[argparse.ArgumentParser], None] = lambda parser: None,
        named_options: Callable[[argparse.Namespace], dict] = lambda args: {},
    ) -> None:
        self.name, self.config_class, self.task_class = name, config_class, task_class
        self.description = description
        self.add_options, self.named_options = add_options, named_options

    def parse_config(self, argv: list[str] | None = None):
        """Command line to a validated config: YAML file, then `--set`, then the named options."""
        parser = argparse.ArgumentParser(
            prog=f"python -m recipes.{self.name}", description=self.description
        )
        add_run_arguments(parser, self.config_class.__name__)
        self.add_options(parser)
        args = parser.parse_args(argv)
        configure_logging(args.quiet, args.verbose)
        return config_from_args(self.config_class, args, self.named_options(args))

    def prepare(self, config):
        """Loads and checks the data and a given teacher; every input error is raised here."""
        from kd_keras.pipeline import prepare

        return prepare(self.task_class, config)

    def run(self, config, inputs=None) -> dict:
        """Runs every stage (see `run_prepared`); returns the report."""
        return run_prepared(inputs or self.prepare(config))

    def main(self, argv: list[str] | None = None) -> int:
        columns = self.task_class.columns
        return recipe_main(self.parse_config, self.prepare, self.run, argv, columns)
