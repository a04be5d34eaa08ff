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

from recipes.common import Recipe
from reid.config import ReIDConfig
from reid.task import ReIDTask

__all__ = ["ReIDConfig", "main", "parse_config", "prepare", "run"]


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", help="comma-separated student seeds, e.g. 0,1,2")


def _named_options(args: argparse.Namespace) -> dict:
    return {"seeds": args.seeds}


RECIPE = Recipe("reid", ReIDConfig, ReIDTask, __doc__, _add_options, _named_options)
parse_config, prepare, run, main = RECIPE.parse_config, RECIPE.prepare, RECIPE.run, RECIPE.main

if __name__ == "__main__":
    sys.exit(main())
