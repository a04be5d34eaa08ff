"""Classification benchmark: does the distilled student beat the same student trained alone?

    python benchmarks/classification_kd.py                        # seeds 0-4, labelled shapes only
    python benchmarks/classification_kd.py --unlabeled builtin    # + 3,000 unlabelled shapes
    python benchmarks/classification_kd.py --methods dkd          # + a decoupled-KD row

The classification pipeline (`classification.task.ClassificationTask`) on the built-in `shapes`
task (6 shapes on photo backgrounds, 32 px; `--per-class` labelled images of each), with every
seed: the scratch and the distilled student start from the same weights and see the same
labelled batches; one teacher serves all seeds. Prints each row's accuracy (mean ± std over the
seeds), the distilled − scratch difference paired by seed with its 95% interval, the fraction
of the teacher–scratch gap the distilled student closes, each `--methods` row minus the plain
distilled student (paired the same way), the teacher/student size ratio and the wall clock.
`--no-compress` skips pruning, QAT and the int8 export (the KD figures do not
depend on them). Writes `<output-dir>/benchmark.json`. Not a test; never run in CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from classification.config import ClassifyConfig
from classification.task import ClassificationTask
from kd_keras import config as config_lib
from kd_keras.io import atomic_write_json
from kd_keras.pipeline import prepare, run_pipeline
from kd_keras.pipeline.reporting import format_table
from kd_keras.stats import interval_text, kd_gain_lines, paired_difference


def overrides(args: argparse.Namespace) -> dict:
    """The config of the run: the built-in shapes over the seeds, tracking off."""
    output = Path(args.output_dir)
    settings: dict = {
        "builtin": "shapes",
        "builtin_per_class": args.per_class,
        "builtin_dir": str(output / "shapes"),
        "seeds": tuple(int(seed) for seed in args.seeds.split(",")),
        "output_dir": str(output),
        "tracking": {"enabled": False},
        "restart": True,
    }
    if args.methods:
        settings["methods"] = tuple(args.methods.split(","))
    if args.unlabeled:
        settings.update(unlabeled_data=args.unlabeled, unlabeled_ratio=args.unlabeled_ratio)
    if args.no_compress:
        settings.update(compress={"sparsity": 0.0, "qat_epochs": 0, "export": None})
        settings.update(int8_costs=False, latency_runs=1)
    return settings


def method_differences(report: dict) -> dict[str, dict]:
    """Each method's student minus the plain distilled student on accuracy, paired by seed."""
    runs = report.get("seed_runs", [])
    by_model: dict[str, dict[int, float]] = {}
    for run in runs:
        by_model.setdefault(run["model"], {})[run["seed"]] = run["accuracy"]
    plain = by_model.get("student (distilled)", {})
    if len(plain) < 2:
        return {}
    seeds = sorted(plain)
    differences = {}
    for model, values in by_model.items():
        if model.startswith("student (distilled, ") and set(values) >= set(seeds):
            treated = [values[seed] for seed in seeds]
            baseline = [plain[seed] for seed in seeds]
            differences[model] = paired_difference(treated, baseline).as_dict()
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--per-class", type=int, default=1000, help="labelled images per shape")
    parser.add_argument("--output-dir", default="runs/classification_benchmark")
    parser.add_argument(
        "--unlabeled",
        help="unlabelled images the distilled students also learn from: a folder, or builtin",
    )
    parser.add_argument("--unlabeled-ratio", type=float, default=1.0)
    parser.add_argument("--methods", help="more students, comma-separated: dkd, lma, robust, ...")
    parser.add_argument("--no-compress", action="store_true", help="no pruning, QAT or export")
    args = parser.parse_args(argv)
    config = config_lib.from_dict(ClassifyConfig, overrides(args))

    pool = f", unlabelled pool {args.unlabeled}" if args.unlabeled else ", labelled only"
    print(f"== shapes ({args.per_class} per class{pool}), seeds {args.seeds} ==", flush=True)
    start = time.perf_counter()
    report = run_pipeline(prepare(ClassificationTask, config))
    seconds = time.perf_counter() - start

    columns = [
        ("model", "model", ""),
        ("accuracy", "accuracy", ".3f"),
        ("accuracy_std", "± std", ".3f"),
        ("params", "params", ","),
        ("seeds", "seeds", ""),
    ]
    rows = [{"seeds": 1, **row} for row in report["rows"]]
    print(format_table(rows, columns))
    gains = report.get("kd_gain", {})
    if not gains:
        print("(one seed: no paired interval; pass --seeds with at least 2, 5 for a claim)")
    for line in kd_gain_lines(gains):
        print(line)
    against_plain = method_differences(report)
    for label, difference in against_plain.items():
        print(f"{label} − plain KD, accuracy: {interval_text(difference)}")
    teacher, scratch = rows[0], next(row for row in rows if row["model"] == "student (scratch)")
    print(
        f"teacher/student parameters: {teacher['params'] / scratch['params']:.1f}x "
        f"({teacher['params']:,} / {scratch['params']:,})"
    )
    print(f"(pipeline wall clock {seconds:.0f} s)")

    atomic_write_json(
        Path(args.output_dir) / "benchmark.json",
        {
            "config": overrides(args),
            "rows": rows,
            "kd_gain": gains,
            "method_minus_plain_kd": against_plain,
            "seconds": seconds,
        },
    )
    print(f"written {Path(args.output_dir) / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
