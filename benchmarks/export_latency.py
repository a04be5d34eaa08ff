"""LiteRT latency and size: float32 teacher vs float32 student vs int8 (pruned + QAT) student.

    python benchmarks/export_latency.py                      # trains the default classify run
    python benchmarks/export_latency.py --from-run runs/classify   # reuses a finished run

All three `.tflite` files are measured in the same process, on one thread, interleaved over
several rounds (the median of each round's median), so the ratios compare like with like. Targets
on the default classification setup: the int8 student at least 10x faster and 20x smaller than the
float teacher, its accuracy at least 98% of the teacher's, and top-1 agreement with its own Keras
model at least 99%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import tf_keras as keras

from classification.config import ClassifyConfig
from classification.task import ClassificationTask
from kd_keras import config as config_lib
from kd_keras import export
from kd_keras.pipeline import prepare, run_pipeline
from kd_keras.pipeline.reporting import format_table

TARGETS = {"speedup": 10.0, "shrink": 20.0, "relative_accuracy": 0.98, "agreement": 0.99}


def measure(run_dir: Path, runs: int, rounds: int) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    config = config_lib.from_dict(ClassifyConfig, config_lib.load_yaml(run_dir / "config.yaml"))
    test = ClassificationTask(config).test
    teacher = keras.models.load_model(report["artifacts"]["teacher"], compile=False)
    student = keras.models.load_model(report["artifacts"]["student"], compile=False)
    files = {
        "teacher (float32)": export.to_tflite(teacher, "float32"),
        "student (float32)": export.to_tflite(student, "float32"),
        "student (int8, pruned+QAT)": Path(report["artifacts"]["student_tflite"]).read_bytes(),
    }
    timings = {name: [] for name in files}
    for _ in range(rounds):
        for name, content in files.items():
            timings[name].append(export.tflite_latency(content, runs=runs, num_threads=1))
    rows = []
    for name, content in files.items():
        size = export.tflite_size(content)
        rows.append(
            {
                "model": name,
                "accuracy": export.evaluate_tflite(content, test.x, test.y),
                "latency_ms": statistics.median(timings[name]),
                "size_bytes": size["bytes"],
                "gzip_bytes": size["gzip_bytes"],
            }
        )
    teacher_row, int8_row = rows[0], rows[-1]
    for row in rows:
        row["speedup"] = teacher_row["latency_ms"] / row["latency_ms"]
        row["shrink"] = teacher_row["size_bytes"] / row["size_bytes"]
        row["relative_accuracy"] = row["accuracy"] / teacher_row["accuracy"]
    agreement = report["compression"]["export"]["parity"]["top1_agreement"]
    checks = {
        "speedup": int8_row["speedup"],
        "shrink": int8_row["shrink"],
        "relative_accuracy": int8_row["relative_accuracy"],
        "agreement": agreement,
    }
    return {"rows": rows, "checks": checks, "runs": runs, "rounds": rounds}


COLUMNS = [
    ("model", "model (LiteRT, 1 thread)", ""),
    ("accuracy", "accuracy", ".4f"),
    ("latency_ms", "latency (ms)", ".4f"),
    ("speedup", "teacher/x latency", ".1f"),
    ("size_bytes", "size (bytes)", ","),
    ("gzip_bytes", "gzip (bytes)", ","),
    ("shrink", "teacher/x size", ".1f"),
    ("relative_accuracy", "x/teacher accuracy", ".3f"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-run", help="output_dir of a finished recipes.classify run")
    parser.add_argument("--runs", type=int, default=500, help="invocations per latency median")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(args.from_run) if args.from_run else Path(scratch) / "classify"
        if not args.from_run:
            print("training the default classification run (teacher, student, prune+QAT) ...")
            overrides = {"output_dir": str(run_dir), "tracking": {"enabled": False}}
            config = config_lib.from_dict(ClassifyConfig, overrides)
            run_pipeline(prepare(ClassificationTask, config))
        results = measure(run_dir, args.runs, args.rounds)
    print()
    print(format_table(results["rows"], COLUMNS))
    print(f"\nmedian of {args.rounds} rounds x {args.runs} single-example invocations")
    print(f"CPU: {os.cpu_count()} logical cores; LiteRT num_threads=1")
    failed = False
    for key, target in TARGETS.items():
        value = results["checks"][key]
        status = "ok" if value >= target else "MISSED"
        failed |= value < target
        print(f"  {key:<18} {value:8.3f}  (target >= {target})  {status}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
