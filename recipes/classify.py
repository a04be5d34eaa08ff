"""`python -m recipes.classify`: teacher, scratch student and distilled student, side by side.

With no arguments it runs on scikit-learn's bundled digits. `--data DIR` takes an image folder
with one subfolder per class; `--teacher PATH` a saved `.keras` teacher; `--classes 0,3,7` trains
a student for a subset of the teacher's classes; `--offline` distills from cached teacher outputs.
The distilled student is then compressed for the robot: `--prune SPARSITY|auto` (TF-MOT magnitude
pruning, `auto` picks the knee of the accuracy-vs-sparsity curve), `--qat` (quantization-aware
training), both fine-tuned with the teacher, and `--export float32|float16|dynamic|int8` writes a
`.tflite` that is measured in LiteRT. The run is recorded in MLflow (`--tracking-uri`, default
`sqlite:///mlflow.db` in the working directory) and the `.tflite` student is registered as a new
version of `tracking.register_as` with alias `challenger`. Every option is also a config key
(`--config FILE`, `--set key=value`).
"""

from __future__ import annotations

import argparse
import sys

from classification.config import ClassifyConfig
from classification.subset import parse_classes
from classification.task import ClassificationTask
from recipes.common import Recipe

__all__ = ["ClassifyConfig", "main", "parse_config", "prepare", "run"]


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", help="teacher classes for the student, e.g. 0,3,7")
    parser.add_argument("--offline", action="store_true", default=None, help="cache the teacher")
    parser.add_argument(
        "--prune", metavar="SPARSITY|auto", help="final sparsity in [0, 1), 0 = off, or auto"
    )
    parser.add_argument(
        "--qat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="quantization-aware distillation before export (--no-qat: qat_epochs=0)",
    )
    parser.add_argument(
        "--export", choices=["float32", "float16", "dynamic", "int8", "none"], help="TFLite file"
    )


def _named_options(args: argparse.Namespace) -> dict:
    return {
        "classes": None if args.classes is None else list(parse_classes(args.classes)),
        "offline": args.offline,
        "compress.sparsity": _prune_value(args.prune),
        "compress.qat_epochs": None if args.qat in (None, True) else 0,
        "compress.export": args.export,
    }


def _prune_value(text: str | None):
    """`--prune 0.5` -> 0.5, `--prune auto` -> "auto"; anything else is left to validation."""
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        return text


RECIPE = Recipe(
    "classify", ClassifyConfig, ClassificationTask, __doc__, _add_options, _named_options
)
parse_config, prepare, run, main = RECIPE.parse_config, RECIPE.prepare, RECIPE.run, RECIPE.main

if __name__ == "__main__":
    sys.exit(main())
