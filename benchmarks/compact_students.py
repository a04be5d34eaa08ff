"""Compact students on the built-in digits: LMA activations and low-rank convolutions.

    python benchmarks/compact_students.py [--ranks 0.25 0.5 0.75] [--output runs/compact]

(1) The default classification pipeline with `methods: [lma]`: a ReLU and an LMA student
    distilled on the same budget from the same initial weights, side by side.
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
    from kd_keras.report import format_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--output", default="runs/compact_students")
    args = parser.parse_args()
    output = Path(args.output)

    base = _run({"methods": ["lma"]}, output / "base")
    rows = {row["model"]: row for row in base["rows"]}
    relu, lma = rows["student (distilled)"], rows["student (distilled, LMA activations)"]
    print("== LMA vs ReLU student (distilled, same budget and initial weights) ==")
    print(format_table([rows["student (scratch)"], relu, lma], COLUMNS))
    print(
        f"LMA - ReLU accuracy: {lma['accuracy'] - relu['accuracy']:+.4f}; params "
        f"{lma['params'] / relu['params']:.3f}x, float LiteRT latency "
        f"{lma['latency_ms'] / relu['latency_ms']:.2f}x"
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
    result = {"lma": {"relu": relu, "lma": lma}, "lowrank": table}
    (output / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {output / 'benchmark.json'}")


COLUMNS = [
    ("model", "model", ""),
    ("accuracy", "accuracy", ".4f"),
    ("params", "params", ","),
    ("flops", "FLOPs", ","),
    ("size_bytes", "size (bytes)", ","),
    ("latency_ms", "LiteRT (ms)", ".4f"),
]
RATIOS = [("params_ratio", "params / full", ".3f"), ("latency_ratio", "latency / full", ".2f")]


if __name__ == "__main__":
    main()
