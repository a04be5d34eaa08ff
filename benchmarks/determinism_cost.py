"""What TensorFlow's op determinism costs a training step, and what it buys.

The main job's heaviest stage, the built-in detection teacher (`recipes.detect` defaults:
128×128 images, batch 16, a width-1.0 depth-2 ResNet CenterNet), trains for one warm-up epoch
and one timed epoch in a fresh process per measurement, with `deterministic` on and off. The
two settings alternate within each round (A B, then B A), so load and drift hit both alike.

Printed: ms/step of each setting as the median over rounds with min-max, the median per-round
ratio (deterministic / not) with min-max, and whether every run of a setting trained to the same
losses and weights (bit for bit).

    python benchmarks/determinism_cost.py [--rounds 5] [--epochs 2]

Not a test; never run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_once(deterministic: bool, epochs: int, data_dir: str) -> dict:
    """One process's measurement: the last epoch's ms/step, the losses, a weight checksum."""
    import tf_keras as keras

    from detection.task import DetectionTask
    from kd_keras.pipeline import Role, Stage
    from kd_keras.pipeline.determinism import set_determinism
    from recipes import detect

    config = detect.parse_config(["--set", f"builtin_dir={data_dir}"])
    set_determinism(deterministic)
    task = DetectionTask(config)
    keras.utils.set_random_seed(config.seed)
    model = task.build("teacher", "teacher")
    stage = Stage("teacher", Role.TEACHER, epochs, config.learning_rate, config.seed)
    training = task.plain(model, stage)

    class LastEpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.steps = time.perf_counter(), 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    timer = LastEpochTimer()
    history = model.fit(
        training.data,
        epochs=epochs,
        steps_per_epoch=training.steps_per_epoch,
        callbacks=[timer],
        verbose=0,
    )
    return {
        "ms_per_step": 1000 * timer.seconds / timer.steps,
        "losses": [float(loss) for loss in history.history["loss"]],
        "checksum": float(sum(float(w.numpy().sum()) for w in model.weights)),
    }


def measure(deterministic: bool, epochs: int, data_dir: str) -> dict:
    command = [sys.executable, __file__, "--child", str(int(deterministic)), "--epochs"]
    command += [str(epochs), "--data-dir", data_dir]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="the last one is timed")
    parser.add_argument("--data-dir", default="runs/detect_data/shapes")
    parser.add_argument("--child", type=int, choices=[0, 1], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(train_once(bool(args.child), args.epochs, args.data_dir)))
        return
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for round_index in range(args.rounds):
        order = (True, False) if round_index % 2 == 0 else (False, True)
        for deterministic in order:
            runs[deterministic].append(measure(deterministic, args.epochs, args.data_dir))
        print(
            f"round {round_index + 1}: deterministic {runs[True][-1]['ms_per_step']:.1f} ms/step, "
            f"not {runs[False][-1]['ms_per_step']:.1f} ms/step",
            flush=True,
        )
    print(f"\ndetection teacher (recipes.detect defaults), {args.rounds} rounds, medians [range]:")
    for deterministic, label in ((True, "deterministic: true "), (False, "deterministic: false")):
        times = [run["ms_per_step"] for run in runs[deterministic]]
        same = all(
            run["losses"] == runs[deterministic][0]["losses"]
            and run["checksum"] == runs[deterministic][0]["checksum"]
            for run in runs[deterministic]
        )
        print(
            f"  {label} {statistics.median(times):7.1f} ms/step [{min(times):.1f}-{max(times):.1f}]"
            f"   every run identical: {same}"
        )
    ratios = [a["ms_per_step"] / b["ms_per_step"] for a, b in zip(runs[True], runs[False])]
    print(
        f"  ratio deterministic / not: {statistics.median(ratios):.3f}x "
        f"[{min(ratios):.3f}-{max(ratios):.3f}]"
    )
    same_across = runs[True][0]["losses"] == runs[False][0]["losses"]
    print(f"  the two settings trained to the same losses: {same_across}")


if __name__ == "__main__":
    main()
