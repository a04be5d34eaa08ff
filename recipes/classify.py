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
from kd_keras.pipeline import Prepared
from kd_keras.pipeline import prepare as prepare_pipeline
from recipes.common import add_run_arguments, config_from_args, recipe_main, run_prepared


def parse_config(argv: list[str] | None = None) -> ClassifyConfig:
    """Command line to a validated config: YAML file, then `--set`, then the named options."""
    parser = argparse.ArgumentParser(prog="python -m recipes.classify", description=__doc__)
    add_run_arguments(parser, "ClassifyConfig")
    parser.add_argument("--data", help="image folder, one subfolder per class (default: digits)")
    parser.add_argument("--teacher", help="saved .keras teacher (default: train one)")
    parser.add_argument("--classes", help="teacher classes for the student, e.g. 0,3,7")
    parser.add_argument("--offline", action="store_true", default=None, help="cache the teacher")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--schedule", help="constant, linear, cosine, exponential or step")
    parser.add_argument("--epochs", type=int)
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
    args = parser.parse_args(argv)
    named = {
        "data": args.data,
        "teacher": args.teacher,
        "classes": None if args.classes is None else list(parse_classes(args.classes)),
        "offline": args.offline,
        "epochs": args.epochs,
        "distill.temperature": args.temperature,
        "distill.schedule": args.schedule,
        "compress.sparsity": _prune_value(args.prune),
        "compress.qat_epochs": None if args.qat in (None, True) else 0,
        "compress.export": args.export,
    }
    return config_from_args(ClassifyConfig, args, named)


def _prune_value(text: str | None):
    """`--prune 0.5` -> 0.5, `--prune auto` -> "auto"; anything else is left to validation."""
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        return text


def prepare(config: ClassifyConfig) -> Prepared:
    """Loads and checks the data and a given teacher; every input error is raised here."""
    return prepare_pipeline(ClassificationTask(config), config)


def run(config: ClassifyConfig, inputs: Prepared | None = None) -> dict:
    """Runs every stage (see `recipes.common.run_prepared`); returns the report."""
    return run_prepared(config, inputs or prepare(config))


def main(argv: list[str] | None = None) -> int:
    return recipe_main(parse_config, prepare, run, argv, ClassificationTask.columns)


if __name__ == "__main__":
    sys.exit(main())
