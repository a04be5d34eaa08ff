"""Budgeted and progressive students against the uniform-width distilled student, same budget.

    python benchmarks/budget_progressive.py [--seeds 0 1 2] [--skip-detect] [--output DIR]

(1) Digits, the default classification pipeline with `methods: [budget, progressive]`, once
    per seed: the uniform distilled student (width 0.25), the budgeted student (widths learned
    from a 2x-wide start under the uniform student's FLOPs) and the progressive blockwise
    student, with FLOPs and params against the budget; mean ± std over the seeds.
(2) Built-in shapes, the default detection pipeline with the same methods (one seed): the budget
    is on the backbone (stem and inner block convs).
Each run is followed by a control: the uniform student distilled from the same teacher for as
many epochs as the budgeted one trained in all (search, cuts and final), so a gain of the
budgeted student can be told apart from its longer training.
Compression is off (the shipped student's int8 figures are `compact_students.py`'s).
Prints the figures and the differences; writes `<output>/benchmark.json`. Not a test; never in CI.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from kd_keras.pipeline import table_columns

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

UNIFORM, BUDGET, PROGRESSIVE, LONGER = (
    "student (distilled)",
    "student (distilled, budgeted widths)",
    "student (distilled, progressive blockwise)",
    "student (distilled, as many epochs as budgeted)",
)


def _run(task: str, overrides: dict, output: Path, methods=("budget", "progressive")) -> dict:
    from kd_keras.config import from_dict
    from kd_keras.pipeline import prepare, run_pipeline

    if task == "classify":
        from classification.config import ClassifyConfig as Config
        from classification.task import ClassificationTask as Task
    else:
        from detection.config import DetectConfig as Config
        from detection.task import DetectionTask as Task
    settings = {**overrides, "output_dir": str(output), "tracking": {"enabled": False}}
    # The students are compared as trained (float LiteRT latency); compression is not re-measured.
    settings.update(methods=list(methods), compress={"sparsity": 0, "qat_epochs": 0})
    return run_pipeline(prepare(Task, from_dict(Config, settings)))


def _longer_uniform(task: str, overrides: dict, report: dict, output: Path) -> dict:
    """The uniform distilled student trained as many epochs as the budgeted one, same teacher."""
    epochs = report["student_details"]["distilled, budgeted widths"]["epochs"]
    control = {**overrides, "teacher": report["artifacts"]["teacher"], "epochs": epochs}
    rows = {row["model"]: row for row in _run(task, control, output / "longer", ())["rows"]}
    return {**rows[UNIFORM], "model": LONGER, "epochs": epochs}


def _measure(task: str, overrides: dict, output: Path) -> tuple[dict, list[dict]]:
    """The methods' report and its table: teacher, scratch, the three students, the control."""
    report = _run(task, overrides, output)
    return report, [*_students(report), _longer_uniform(task, overrides, report, output)]


def _students(report: dict) -> list[dict]:
    rows = {row["model"]: row for row in report["rows"]}
    return [rows[name] for name in ("teacher", "student (scratch)", UNIFORM, BUDGET, PROGRESSIVE)]


def _summary(report: dict, table: list[dict], metric: str) -> str:
    rows = {row["model"]: row for row in table}
    details = report["student_details"]["distilled, budgeted widths"]
    uniform, longer = rows[UNIFORM], rows[LONGER]
    return (
        f"budget {details['measure']} {details['target']:,}: budgeted student "
        f"{details['achieved']:,} ({details['achieved'] / details['target']:.3f}x), widths "
        f"{list(details['widths'].values())} vs uniform {list(details['uniform_widths'].values())}"
        f"; {metric}: budgeted - uniform {rows[BUDGET][metric] - uniform[metric]:+.4f}, "
        f"budgeted - uniform trained {longer['epochs']} epochs "
        f"{rows[BUDGET][metric] - longer[metric]:+.4f}, "
        f"progressive - uniform {rows[PROGRESSIVE][metric] - uniform[metric]:+.4f}; train "
        f"seconds uniform {uniform['train_seconds']:.0f}, budgeted "
        f"{rows[BUDGET]['train_seconds']:.0f}, progressive {rows[PROGRESSIVE]['train_seconds']:.0f}"
        f", uniform {longer['epochs']} epochs {longer['train_seconds']:.0f}"
    )


def main() -> None:
    from kd_keras.pipeline.reporting import format_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])  # none: skip (1)
    parser.add_argument("--skip-detect", action="store_true")
    parser.add_argument("--output", default="runs/budget_progressive")
    args = parser.parse_args()
    output = Path(args.output)
    result: dict = {"classification": {}, "detection": None}

    accuracies: dict[str, list[float]] = {UNIFORM: [], BUDGET: [], PROGRESSIVE: [], LONGER: []}
    for seed in args.seeds:
        report, rows = _measure("classify", {"seed": seed}, output / f"classify_seed{seed}")
        print(f"== Digits, seed {seed} ==")
        print(format_table(rows, CLASSIFY_COLUMNS))
        print(_summary(report, rows, "accuracy"))
        result["classification"][seed] = {"rows": rows, "budget": report["student_details"]}
        for row in rows:
            if row["model"] in accuracies:
                accuracies[row["model"]].append(row["accuracy"])
    if args.seeds:
        _print_means(accuracies)
    result["classification_accuracy"] = accuracies

    if not args.skip_detect:
        report, rows = _measure("detect", {}, output / "detect")
        print("\n== Shapes detection, seed 0 ==")
        print(format_table(rows, DETECT_COLUMNS))
        print(_summary(report, rows, "AP"))
        result["detection"] = {"rows": rows, "budget": report["student_details"]}

    output.mkdir(parents=True, exist_ok=True)
    (output / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {output / 'benchmark.json'}")


def _print_means(accuracies: dict[str, list[float]]) -> None:
    seeds = len(accuracies[UNIFORM])
    print(f"\n== Digits, {seeds} seeds: accuracy mean ± std ==")
    for name, values in accuracies.items():
        print(f"{name}: {np.mean(values):.4f} ± {np.std(values):.4f}  {values}")
    for name in (BUDGET, PROGRESSIVE, LONGER):
        differences = [a - u for a, u in zip(accuracies[name], accuracies[UNIFORM])]
        print(f"{name} - uniform: {np.mean(differences):+.4f} ± {np.std(differences):.4f}")


CLASSIFY_COLUMNS = table_columns(("accuracy",), digits=4)
DETECT_COLUMNS = table_columns(("AP", "AP50"))


if __name__ == "__main__":
    main()
