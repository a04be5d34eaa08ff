"""Classification benchmark: does the distilled student beat the same student trained alone?

    python benchmarks/classification_kd.py                        # seeds 0-4, labelled shapes only
    python benchmarks/classification_kd.py --unlabeled builtin    # + 3,000 unlabelled shapes
    python benchmarks/classification_kd.py --methods dkd          # + a decoupled-KD row
    python benchmarks/classification_kd.py --unlabeled builtin --mixup 1 \
        --teachers-from runs/classification_benchmark --compare-with runs/classification_benchmark \
        --output-dir runs/classification_benchmark_mixup      # function matching on the pool

The classification pipeline (`classification.task.ClassificationTask`) on the built-in `shapes`
task (6 shapes on photo backgrounds, 32 px; `--per-class` labelled images of each), with every
seed (one pipeline each, in `<output-dir>/seed<n>`; the seed also draws the train/test split,
so each seed trains its own teacher, or reuses an earlier run's with `--teachers-from`): the
scratch and the distilled students start from the same weights and see the same labelled
batches. Prints each row's accuracy (mean ± std over the seeds), the distilled − scratch
difference paired by seed with its 95% interval, the fraction of the teacher–scratch gap the
distilled student closes (against each seed's teacher), each `--methods` row minus the plain
distilled student (paired the same way), with `--compare-with` each row minus the same row of
an earlier run on the same seeds, the teacher/student size ratio and the wall clock.
`--no-compress` skips pruning, QAT and the int8 export (the KD figures do not depend on them).
Writes `<output-dir>/benchmark.json`. Not a test; never run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from classification.config import ClassifyConfig
from classification.task import ClassificationTask
from kd_keras.config import from_dict
from kd_keras.io import atomic_write_json
from kd_keras.pipeline import prepare, run_pipeline
from kd_keras.pipeline.reporting import format_table, kd_gains, with_seed_means
from kd_keras.stats import interval_text, kd_gain_lines, paired_difference


def overrides(args: argparse.Namespace) -> dict:
    """The config of every seed's run: the built-in shapes, tracking off."""
    settings: dict = {
        "builtin": "shapes",
        "builtin_per_class": args.per_class,
        "builtin_dir": str(Path(args.output_dir) / "shapes"),
        "tracking": {"enabled": False},
        "restart": True,
    }
    if args.methods:
        settings["methods"] = tuple(args.methods.split(","))
    if args.unlabeled:
        settings.update(unlabeled_data=args.unlabeled, unlabeled_ratio=args.unlabeled_ratio)
        settings.update(unlabeled_mixup=args.mixup)
    if args.no_compress:
        settings.update(compress={"sparsity": 0.0, "qat_epochs": 0, "export": None})
        settings.update(int8_costs=False, latency_runs=1)
    return settings


def run_seeds(
    settings: dict, seeds: list[int], output: Path, teachers: Path | None = None
) -> tuple[list[dict], list[dict]]:
    """One pipeline per seed in `output/seed<n>`, each with its own teacher (the split of the
    labelled set follows the seed), or the one in `teachers/seed<n>/teacher.keras`.

    Returns `(rows, runs)`: the first seed's report rows, and every row of every seed with its
    `seed` and whether it was `distilled` (`kd_keras.pipeline.reporting` reads both).
    """
    rows, runs = [], []
    for seed in seeds:
        teacher = None if teachers is None else str(teachers / f"seed{seed}" / "teacher.keras")
        run_settings = {**settings, "seed": seed, "teacher": teacher}
        run_settings["output_dir"] = str(output / f"seed{seed}")
        report = run_pipeline(prepare(ClassificationTask, from_dict(ClassifyConfig, run_settings)))
        rows = rows or report["rows"]
        for row in report["rows"]:
            distilled = row["model"].startswith("student (distilled")
            runs.append({**row, "seed": seed, "distilled": distilled})
        accuracies = ", ".join(f"{row['model']} {row['accuracy']:.3f}" for row in report["rows"])
        print(f"seed {seed}: {accuracies}", flush=True)
    return rows, runs


def _accuracies(runs: list[dict]) -> dict[str, dict[int, float]]:
    """`{model: {seed: accuracy}}` of `runs`."""
    by_model: dict[str, dict[int, float]] = {}
    for run in runs:
        by_model.setdefault(run["model"], {})[run["seed"]] = run["accuracy"]
    return by_model


def _paired(treated: dict[int, float], baseline: dict[int, float]) -> dict | None:
    """`treated − baseline` over the seeds both have, or `None` for fewer than two."""
    seeds = sorted(set(treated) & set(baseline))
    if len(seeds) < 2:
        return None
    values = ([treated[seed] for seed in seeds], [baseline[seed] for seed in seeds])
    return paired_difference(*values).as_dict()


def method_differences(runs: list[dict]) -> dict[str, dict]:
    """Each method's student minus the plain distilled student on accuracy, paired by seed."""
    by_model = _accuracies(runs)
    plain = by_model.get("student (distilled)", {})
    differences = {
        model: _paired(values, plain)
        for model, values in by_model.items()
        if model.startswith("student (distilled, ")
    }
    return {model: value for model, value in differences.items() if value is not None}


def run_differences(runs: list[dict], earlier: list[dict]) -> dict[str, dict]:
    """Each row of `runs` minus the same row of `earlier` on accuracy, paired by seed."""
    before = _accuracies(earlier)
    differences = {
        model: _paired(values, before.get(model, {})) for model, values in _accuracies(runs).items()
    }
    return {model: value for model, value in differences.items() if value is not None}


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
    parser.add_argument("--mixup", type=float, default=0.0, help="unlabeled_mixup: Beta(a, a)")
    parser.add_argument("--methods", help="more students, comma-separated: dkd, lma, robust, ...")
    parser.add_argument(
        "--teachers-from",
        type=Path,
        help="an earlier benchmark's --output-dir: reuse its teacher of each seed",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        help="an earlier benchmark's --output-dir on the same seeds: each row minus its own",
    )
    parser.add_argument("--no-compress", action="store_true", help="no pruning, QAT or export")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    output = Path(args.output_dir)

    pool = f", unlabelled pool {args.unlabeled}" if args.unlabeled else ", labelled only"
    print(f"== shapes ({args.per_class} per class{pool}), seeds {args.seeds} ==", flush=True)
    start = time.perf_counter()
    first_rows, runs = run_seeds(overrides(args), seeds, output, args.teachers_from)
    seconds = time.perf_counter() - start

    rows = with_seed_means(first_rows, runs, ("accuracy",))
    columns = [
        ("model", "model", ""),
        ("accuracy", "accuracy", ".3f"),
        ("accuracy_std", "± std", ".3f"),
        ("params", "params", ","),
        ("seeds", "seeds", ""),
    ]
    print(format_table([{"seeds": 1, **row} for row in rows], columns))
    gains = kd_gains(runs, rows[0], "student (scratch)", "accuracy")
    if not gains:
        print("(one seed: no paired interval; pass --seeds with at least 2, 5 for a claim)")
    for line in kd_gain_lines(gains):
        print(line)
    against_plain = method_differences(runs)
    for label, difference in against_plain.items():
        print(f"{label} − plain KD, accuracy: {interval_text(difference)}")
    against_earlier = {}
    if args.compare_with:
        earlier = json.loads((args.compare_with / "benchmark.json").read_text())["seed_runs"]
        against_earlier = run_differences(runs, earlier)
        for label, difference in against_earlier.items():
            print(f"{label} − the same in {args.compare_with}: {interval_text(difference)}")
    teacher, scratch = rows[0], rows[1]
    print(
        f"teacher/student parameters: {teacher['params'] / scratch['params']:.1f}x "
        f"({teacher['params']:,} / {scratch['params']:,})"
    )
    print(f"(wall clock {seconds:.0f} s for {len(seeds)} seeds)")

    atomic_write_json(
        output / "benchmark.json",
        {
            "config": overrides(args),
            "seeds": seeds,
            "rows": rows,
            "seed_runs": runs,
            "kd_gain": gains,
            "method_minus_plain_kd": against_plain,
            "minus_compared_run": against_earlier,
            "seconds": seconds,
        },
    )
    print(f"written {output / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
