"""`python -m recipes.detect`: CenterNet teacher, scratch and distilled students, int8, COCOeval.

With no arguments it generates the built-in shapes-on-photos COCO dataset (if absent), trains a
teacher, a student from scratch and a distilled student with the same budget, optionally prunes
and quantization-aware fine-tunes the distilled student (still distilling; `compress.*`), exports
it to full-int8 TFLite, scores everything with COCOeval (the int8 model running in LiteRT) and
prints the table.
`--data DIR --annotations FILE` trains on a real COCO-format dataset; `--teacher PATH` reuses a
saved teacher. Every option is also a config key (`--config FILE`, `--set key=value`).
"""

from __future__ import annotations

import argparse
import sys

from detection.config import DetectConfig
from detection.task import DetectionTask
from kd_keras.pipeline import Prepared
from kd_keras.pipeline import prepare as prepare_pipeline
from recipes.common import add_run_arguments, config_from_args, recipe_main, run_prepared


def parse_config(argv: list[str] | None = None) -> DetectConfig:
    """Command line to a validated config: YAML file, then `--set`, then the named options."""
    parser = argparse.ArgumentParser(prog="python -m recipes.detect", description=__doc__)
    add_run_arguments(parser, "DetectConfig")
    parser.add_argument("--data", help="COCO images folder (default: the built-in dataset)")
    parser.add_argument("--annotations", help="COCO instances JSON for --data")
    parser.add_argument("--teacher", help="saved .keras CenterNet teacher (default: train one)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--ablation", action="store_true", default=None)
    args = parser.parse_args(argv)
    named = {
        "data": args.data,
        "annotations": args.annotations,
        "teacher": args.teacher,
        "epochs": args.epochs,
        "ablation": args.ablation,
        "distill.temperature": args.temperature,
    }
    return config_from_args(DetectConfig, args, named)


def prepare(config: DetectConfig) -> Prepared:
    """Loads and checks the data and a given teacher; every input error is raised here."""
    return prepare_pipeline(DetectionTask(config), config)


def run(config: DetectConfig, inputs: Prepared | None = None) -> dict:
    """Runs every stage (see `recipes.common.run_prepared`); returns the report."""
    return run_prepared(config, inputs or prepare(config))


def main(argv: list[str] | None = None) -> int:
    # A bad dataset raises AnnotationError, a ValueError: reported like a bad option.
    return recipe_main(parse_config, prepare, run, argv, DetectionTask.columns)


if __name__ == "__main__":
    sys.exit(main())
