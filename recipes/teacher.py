"""`python -m recipes.teacher detect`: trains the teacher a task ships for its built-in data.

Trains the teacher exactly as `python -m recipes.<task>` does from seed 0 (the recipe's teacher
stage: its data, augmentation, schedule and seed, deterministic kernels), scores it, and writes
`builtin.npz` (the weights) and `builtin.json` (settings, metrics, weights digest) into the task's
`builtin_teacher_dir`, or into `--output`. With `teacher: auto` a run on the built-in data with
the same teacher settings starts from that file instead of training a teacher
(`kd_keras.pipeline.builtin_teacher`).

    python -m recipes.teacher detect             # rewrite the shipped file
    python -m recipes.teacher detect --check     # retrain and compare with it, bit for bit

`--check` exits with status 1 when the new weights differ from the shipped ones. The same
weights come back on the same TensorFlow build and CPU; another CPU may sum floats in another
order. `--set key=value` changes the config (the file then fits runs with those settings only).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("kd_keras.teacher")

#: the recipes whose task may ship a teacher
TASKS = ("classify", "detect", "reid")


def train_teacher(recipe, config):
    """`(task, model, seconds, history)`: the recipe's teacher trained from `config` as a run
    trains it."""
    import tf_keras as keras

    from kd_keras.pipeline.determinism import set_determinism
    from kd_keras.pipeline.resumable import fit_resumable
    from kd_keras.pipeline.sequence import teacher_stage

    set_determinism(config.deterministic)
    task = recipe.task_class(config)
    stage = teacher_stage(config)
    keras.utils.set_random_seed(stage.seed)
    model = task.build("teacher", "teacher")
    training = task.plain(model, stage)
    with tempfile.TemporaryDirectory() as checkpoints:
        seconds, history = fit_resumable(
            training.model,
            training.data,
            stage.epochs,
            Path(checkpoints) / "teacher",
            (),
            training.steps_per_epoch,
            stage="teacher",
        )
    return task, model, seconds, history


def build(task_name: str, overrides: list[str], output: Path | None) -> tuple[dict, Path]:
    """Trains `task_name`'s teacher and writes its files; returns its record and folder."""
    from kd_keras import config as config_lib
    from kd_keras.io import atomic_write_json
    from kd_keras.pipeline.builtin_teacher import BuiltinTeacher, teacher_record, write_weights

    recipe = importlib.import_module(f"recipes.{task_name}").RECIPE
    seed = "seeds=[0]" if "seeds" in recipe.config_class.model_fields else "seed=0"
    data = config_lib.apply_overrides({}, [*overrides, "teacher=null", seed])
    config = config_lib.from_dict(recipe.config_class, data)
    folder = output or recipe.task_class.builtin_teacher_dir
    if folder is None:
        raise SystemExit(f"The {task_name} task ships no teacher: give --output DIR.")
    task, model, seconds, _ = train_teacher(recipe, config)
    metrics = task.evaluate_teacher(model)
    command = " ".join(["python -m recipes.teacher", task_name, *[f"--set {o}" for o in overrides]])
    record = teacher_record(task, config, model, metrics, seconds, command)
    builtin = BuiltinTeacher(Path(folder))
    write_weights(model, builtin.weights)
    atomic_write_json(builtin.record_file, record)
    return record, Path(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.teacher", description=__doc__)
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--output", type=Path, help="folder for the files (default: the task's)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="train into a temporary folder and compare the weights with the shipped teacher's",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from recipes.common import configure_logging

    configure_logging()
    if not args.check:
        start = time.perf_counter()
        record, folder = build(args.task, args.set, args.output)
        print(
            f"{args.task} teacher: {record['metrics']} in {time.perf_counter() - start:.0f} s, "
            f"weights {record['weights_digest']} -> {folder}"
        )
        return 0
    from kd_keras.pipeline.builtin_teacher import BuiltinTeacher

    recipe = importlib.import_module(f"recipes.{args.task}").RECIPE
    folder = args.output or recipe.task_class.builtin_teacher_dir
    shipped = BuiltinTeacher(Path(folder)) if folder else None
    if shipped is None or not shipped.exists():
        where = f"in {folder}" if folder else "(the task ships none; give --output DIR)"
        print(f"No {args.task} teacher {where} to compare with.")
        return 1
    expected = shipped.record()["weights_digest"]
    with tempfile.TemporaryDirectory() as folder:
        record, _ = build(args.task, args.set, Path(folder))
    same = record["weights_digest"] == expected
    print(
        f"{args.task} teacher retrained: {record['weights_digest']}\n"
        f"shipped ({shipped.weights}): {expected}\n"
        + ("identical, bit for bit" if same else "DIFFERENT weights")
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
