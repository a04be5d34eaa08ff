"""Teacher convergence: the built-in teacher's metric over seeds, for a given schedule.

    python benchmarks/teacher_convergence.py detect --seeds 0 1 2 3 4
    python benchmarks/teacher_convergence.py detect --seeds 0 1 2 3 4 --set teacher_epochs=60
    python benchmarks/teacher_convergence.py reid --seeds 0 1 2 3 4

Per seed, trains the task's teacher exactly as its recipe does (the same stage, seed, data,
augmentation and optimizer as `python -m recipes.<task>`; `--set key=value` overrides the config)
and evaluates it on the students' test data. Prints each seed's metric and seconds, then the mean
and the standard deviation over seeds: a teacher worth distilling converges to about the same
metric from every seed. Writes `<output>/teacher_convergence.json`. Not a test; never run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: task → headline metric; each task's config and task classes are those of `recipes.<task>`
METRICS = {"detect": "AP", "reid": "mAP", "classify": "accuracy"}


def train_teacher(task_name: str, data: dict) -> tuple[dict, float, float]:
    """`(metrics, seconds, final loss)` of one teacher trained as the recipe trains it."""
    import importlib

    from kd_keras import config as config_lib
    from recipes.teacher import train_teacher as train_recipe_teacher

    recipe = importlib.import_module(f"recipes.{task_name}").RECIPE
    config = config_lib.from_dict(recipe.config_class, data)
    task, model, seconds, history = train_recipe_teacher(recipe, config)
    return task.evaluate_teacher(model), seconds, float(history["loss"][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task", choices=sorted(METRICS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=V")
    parser.add_argument("--output", default="runs/benchmark_teacher")
    args = parser.parse_args()

    from kd_keras import config as config_lib

    metric = METRICS[args.task]
    base = config_lib.apply_overrides(
        {"tracking": {"enabled": False}, "teacher": None}, args.overrides
    )
    output = Path(args.output)
    runs = []
    for seed in args.seeds:
        seeded = {"seeds": [seed]} if args.task == "reid" else {"seed": seed}
        data = {**base, **seeded, "output_dir": str(output / f"seed{seed}")}
        metrics, seconds, loss = train_teacher(args.task, data)
        runs.append({"seed": seed, "metrics": metrics, "seconds": seconds, "final_loss": loss})
        print(
            f"seed {seed}: teacher {metric} {metrics[metric]:.3f}, final loss {loss:.4f}, "
            f"{seconds:.0f} s"
        )
    values = [run["metrics"][metric] for run in runs]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    summary = {
        "task": args.task,
        "overrides": args.overrides,
        "metric": metric,
        "mean": statistics.fmean(values),
        "std": spread,
        "min": min(values),
        "max": max(values),
        "seconds_per_teacher": statistics.fmean(run["seconds"] for run in runs),
        "runs": runs,
    }
    print(
        f"teacher {metric} over {len(values)} seeds: {summary['mean']:.3f} ± {spread:.3f} "
        f"(std; min {summary['min']:.3f}, max {summary['max']:.3f}), "
        f"{summary['seconds_per_teacher']:.0f} s per teacher"
    )
    output.mkdir(parents=True, exist_ok=True)
    (output / "teacher_convergence.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
