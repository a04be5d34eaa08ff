"""`python -m recipes.detect`: CenterNet teacher, scratch and distilled students, int8, COCOeval.

With no arguments it generates the built-in shapes-on-photos COCO dataset (if absent), starts
from the teacher shipped for it (`teacher: auto`; `python -m recipes.teacher detect` makes it),
trains a student from scratch and a distilled student with the same budget, optionally prunes
and quantization-aware fine-tunes the distilled student (still distilling; `compress.*`), exports
it to full-int8 TFLite, scores everything with COCOeval (the int8 model running in LiteRT) and
prints the table.
`--data DIR --annotations FILE` trains on a real COCO-format dataset (and a teacher for it);
`--teacher PATH` reuses a saved teacher, `--teacher null` trains one. Every option is also a
config key (`--config FILE`, `--set key=value`).
"""

from __future__ import annotations

import argparse
import sys

from detection.config import DetectConfig
from detection.task import DetectionTask
from recipes.common import Recipe

__all__ = ["DetectConfig", "main", "parse_config", "prepare", "run"]


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", help="COCO instances JSON for --data (an images folder)")
    parser.add_argument(
        "--ablation", action="store_true", default=None, help="a student per KD part"
    )


def _named_options(args: argparse.Namespace) -> dict:
    return {"annotations": args.annotations, "ablation": args.ablation}


# A bad dataset raises AnnotationError, a ValueError: reported like a bad option.
RECIPE = Recipe("detect", DetectConfig, DetectionTask, __doc__, _add_options, _named_options)
parse_config, prepare, run, main = RECIPE.parse_config, RECIPE.prepare, RECIPE.run, RECIPE.main

if __name__ == "__main__":
    sys.exit(main())
