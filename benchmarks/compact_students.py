"""Compact students on the built-in digits: LMA, robust KD, OKDDip, low-rank convolutions.

    python benchmarks/compact_students.py [--ranks 0.25 0.5 0.75] [--output runs/compact]

(1) The default classification pipeline with `methods: [lma, robust, okddip]`: the distilled
    ReLU student beside an LMA student, a robust-KD student and an OKDDip student (peers, no
    teacher), all on the same budget from the same initial weights; every row also gets its
    accuracy under a 10-step PGD attack (ε = 0.1) and the size and LiteRT latency of its
    post-training int8 file.
(2) The same pipeline with `compress.lowrank` at each rank, reusing the first run's teacher:
    the shipped int8 student's parameters, FLOPs, size, LiteRT latency and accuracy per rank,
    against the full-rank (pruned + QAT) student of run (1).
Prints the figures and the ratios; writes `<output>/benchmark.json`. Not a test; never in CI.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from kd_keras.pipeline import table_columns

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _run(overrides: dict, output: Path) -> dict:
    from classification.config import ClassifyConfig
    from classification.task import ClassificationTask
    from kd_keras.config import from_dict
    from kd_keras.pipeline import prepare, run_pipeline

    settings = {**overrides, "output_dir": str(output), "tracking": {"enabled": False}}
    config = from_dict(ClassifyConfig, settings)
    return run_pipeline(prepare(ClassificationTask, config))


def main() -> None:
    from kd_keras.pipeline.reporting import format_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--output", default="runs/compact_students")
    args = parser.parse_args()
    output = Path(args.output)

    base = _run({"methods": ["lma", "robust", "okddip"]}, output / "base")
    rows = {row["model"]: row for row in base["rows"]}
    relu, lma = rows["student (distilled)"], rows["student (distilled, LMA activations)"]
    robust = rows["student (distilled, robust KD (PGD))"]
    online = rows["student (distilled, OKDDip peers, no teacher)"]
    print("== Students on the same budget and initial weights ==")
    students = [rows["teacher"], rows["student (scratch)"], relu, lma, robust, online]
    print(format_table(students, STUDENT_COLUMNS))
    print(
        f"LMA - ReLU accuracy: {lma['accuracy'] - relu['accuracy']:+.4f}; params "
        f"{lma['params'] / relu['params']:.3f}x, float LiteRT latency "
        f"{lma['latency_ms'] / relu['latency_ms']:.2f}x"
    )
    print(
        f"robust - plain KD: clean {robust['accuracy'] - relu['accuracy']:+.4f}, PGD "
        f"{robust['pgd_accuracy'] - relu['pgd_accuracy']:+.4f}; OKDDip - KD: "
        f"{online['accuracy'] - relu['accuracy']:+.4f}"
    )

    shipped = base["rows"][-1]
    table = [{**shipped, "model": "full rank (pruned 50% + QAT, int8)"}]
    teacher = base["artifacts"]["teacher"]
    for rank in args.ranks:
        report = _run({"teacher": teacher, "compress": {"lowrank": rank}}, output / f"rank{rank:g}")
        row = report["rows"][-1]
        table.append({**row, "model": f"low-rank {rank:g} (pruned 50% + QAT, int8)"})
    for row in table:
        row["params_ratio"] = row["params"] / shipped["params"]
        row["latency_ratio"] = row["latency_ms"] / shipped["latency_ms"]
    print("\n== Low-rank convolutions: the shipped int8 student per rank ==")
    print(format_table(table, [*COLUMNS, *RATIOS]))

    output.mkdir(parents=True, exist_ok=True)
    result = {"students": students, "lowrank": table}
    (output / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {output / 'benchmark.json'}")


COLUMNS = table_columns(("accuracy",), digits=4)
STUDENT_COLUMNS = table_columns(("accuracy", "pgd_accuracy"), digits=4)
RATIOS = [("params_ratio", "params / full", ".3f"), ("latency_ratio", "latency / full", ".2f")]


if __name__ == "__main__":
    main()
