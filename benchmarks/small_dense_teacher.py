"""Small, dense detection sets: does the teacher learn with the default schedule?

    python benchmarks/small_dense_teacher.py [--seeds 0 1 2 3 4] [--image-size 128]

The built-in `small_dense` mode writes 130 images of 200 px (104 train, 26 validation), each
packed with 6 to 14 objects of about 40 px, like a small set of real photos. Per seed, one
teacher is trained twice from the same initial weights and batches:

- `min_steps` (the default, 900): every epoch passes over the 104 images several times;
- epoch-counted (`min_steps: 0`): 30 passes, 6 batches each (180 steps).

Prints COCOeval AP / AP50 of both per seed, and the paired difference over seeds with its 95%
interval. Not a test; never run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train_teacher(config, seed: int) -> dict:
    import tf_keras as keras

    from detection.task import DetectionTask
    from kd_keras.pipeline import Role, Stage

    task = DetectionTask(config)
    stage = Stage("teacher", Role.TEACHER, config.teacher_epochs, config.learning_rate, seed)
    keras.utils.set_random_seed(seed)
    teacher = task.build("teacher", "teacher")
    training = task.plain(teacher, stage)
    start = time.perf_counter()
    teacher.fit(
        training.data, epochs=stage.epochs, steps_per_epoch=training.steps_per_epoch, verbose=0
    )
    seconds = time.perf_counter() - start
    metrics = task.evaluate(teacher)
    steps = stage.epochs * task.labelled_steps(stage)
    return {"AP": metrics["AP"], "AP50": metrics["AP50"], "steps": steps, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--output", default="runs/benchmark_small_dense")
    args = parser.parse_args()

    from detection.config import DetectConfig
    from kd_keras import config as config_lib
    from kd_keras import stats

    base = {
        "builtin_mode": "small_dense",
        "builtin_train": 104,
        "builtin_val": 26,
        "builtin_dir": str(Path(args.output) / "data"),
        "image_size": args.image_size,
        "tracking": {"enabled": False},
    }
    runs = {"min_steps": [], "epoch_counted": []}
    for seed in args.seeds:
        for name, min_steps in (("min_steps", 900), ("epoch_counted", 0)):
            config = config_lib.from_dict(DetectConfig, {**base, "min_steps": min_steps})
            result = train_teacher(config, seed)
            runs[name].append(result)
            print(
                f"seed {seed}, {name:13s}: AP {result['AP']:.3f}  AP50 {result['AP50']:.3f}  "
                f"({result['steps']} steps, {result['seconds']:.0f} s)",
                flush=True,
            )
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "benchmark.json").write_text(json.dumps(runs, indent=2) + "\n")
    for key in ("AP", "AP50"):
        longer = [r[key] for r in runs["min_steps"]]
        counted = [r[key] for r in runs["epoch_counted"]]
        if len(args.seeds) < 2:
            print(f"{key}: min_steps {longer[0]:.3f}; epoch-counted {counted[0]:.3f} (one seed)")
            continue
        print(f"{key}: min_steps {stats.mean_interval(longer).text()}; epoch-counted "
              f"{stats.mean_interval(counted).text()}")  # fmt: skip
        difference = stats.paired_difference(longer, counted)
        print(f"  min_steps − epoch-counted {key}, paired: {difference.text()}")


if __name__ == "__main__":
    main()
