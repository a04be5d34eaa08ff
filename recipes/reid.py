"""`python -m recipes.reid`: person re-identification teacher, students, KD, compression, int8.

With no arguments it writes the built-in Market-1501-layout dataset (if absent), trains a teacher,
a scratch student, a constant-temperature KD student and a dynamic-temperature KD student on the
same budget, prunes and quantization-aware fine-tunes the dynamic-T student with the teacher,
exports its embedding model to int8 TFLite and evaluates everything (Keras and LiteRT) under the
Market-1501 protocol in one table. `--data DIR` takes a real Market-1501 folder. Every option is
also a config key (`--config FILE`, `--set key=value`).
"""

from __future__ import annotations

import argparse
import sys

from kd_keras.pipeline import Prepared
from kd_keras.pipeline import prepare as prepare_pipeline
from recipes.common import add_run_arguments, config_from_args, recipe_main, run_prepared
from reid.config import ReIDConfig
from reid.task import ReIDTask


def parse_config(argv: list[str] | None = None) -> ReIDConfig:
    """Command line to a validated config: YAML file, then `--set`, then the named options."""
    parser = argparse.ArgumentParser(prog="python -m recipes.reid", description=__doc__)
    add_run_arguments(parser, "ReIDConfig")
    parser.add_argument("--data", help="Market-1501 folder (default: the built-in dataset)")
    parser.add_argument("--teacher", help="saved .keras ReID teacher (default: train one)")
    parser.add_argument("--temperature", type=float, help="starting KD temperature")
    parser.add_argument("--schedule", help="linear, cosine, exponential or step")
    parser.add_argument("--seeds", help="comma-separated student seeds, e.g. 0,1,2")
    parser.add_argument("--epochs", type=int)
    args = parser.parse_args(argv)
    named = {
        "data": args.data,
        "teacher": args.teacher,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "distill.temperature": args.temperature,
        "distill.schedule": args.schedule,
    }
    return config_from_args(ReIDConfig, args, named)


def prepare(config: ReIDConfig) -> Prepared:
    """Loads and checks the data and a given teacher; every input error is raised here."""
    return prepare_pipeline(ReIDTask(config), config)


def run(config: ReIDConfig, inputs: Prepared | None = None) -> dict:
    """Runs every stage (see `recipes.common.run_prepared`); returns the report."""
    return run_prepared(config, inputs or prepare(config))


def main(argv: list[str] | None = None) -> int:
    return recipe_main(parse_config, prepare, run, argv, ReIDTask.columns)


if __name__ == "__main__":
    sys.exit(main())
