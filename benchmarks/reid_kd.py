"""ReID benchmark: evaluation throughput, LiteRT embedding latency, and the KD ablation over seeds.

    python benchmarks/reid_kd.py                      # seeds 0,1,2 on the built-in dataset
    python benchmarks/reid_kd.py --seeds 0 --queries 3368 --gallery 15913   # Market-1501 sizes
    python benchmarks/reid_kd.py --seeds 0,1,2,3,4 --unlabeled builtin  # + the unlabelled pool

1. Evaluation throughput: query×gallery cosine distances plus Market-1501 ranking (CMC + mAP)
   on random embeddings of the student's and the teacher's sizes, queries per second and ratio.
2. The ablation: the ReID pipeline (`reid.task.ReIDTask`) with every seed (scratch, constant-T
   KD, dynamic-T KD students on the same budget, one teacher, the pruned + QAT int8 student);
   mean ± std of rank-1 and mAP.
3. LiteRT latency of one embedding: int8 student vs float32 teacher, measured in this process.

Prints absolute figures beside the ratios and writes `<output-dir>/benchmark.json`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tf_keras as keras

from kd_keras import config as config_lib
from kd_keras.export import tflite_latency, to_tflite
from kd_keras.io import atomic_write_json
from kd_keras.pipeline import prepare, run_pipeline
from kd_keras.pipeline.reporting import format_table
from kd_keras.stats import kd_gain_lines
from reid.config import ReIDConfig
from reid.evaluation import evaluate_ranking, pairwise_distances
from reid.models import embedding_model
from reid.task import ReIDTask


def evaluation_throughput(queries: int, gallery: int, dim: int, repeats: int = 3) -> dict:
    """Seconds (best of `repeats`) to score `queries` against `gallery` random embeddings."""
    rng = np.random.default_rng(0)
    identities = max(2, queries // 4)
    query_ids = rng.integers(1, identities + 1, queries)
    gallery_ids = np.concatenate([query_ids, rng.integers(0, identities + 1, gallery - queries)])
    query_cams, gallery_cams = rng.integers(1, 7, queries), rng.integers(1, 7, gallery)
    q = rng.normal(size=(queries, dim)).astype(np.float32)
    g = rng.normal(size=(gallery, dim)).astype(np.float32)
    best_distance, best_total = np.inf, np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        distances = pairwise_distances(q, g)
        middle = time.perf_counter()
        evaluate_ranking(distances, query_ids, query_cams, gallery_ids, gallery_cams)
        end = time.perf_counter()
        best_distance = min(best_distance, middle - start)
        best_total = min(best_total, end - start)
    return {
        "dim": dim,
        "distance_seconds": best_distance,
        "total_seconds": best_total,
        "queries_per_second": queries / best_total,
    }


def _ablation(report: dict) -> list[dict]:
    rows = []
    for row in report["rows"]:
        runs = [r for r in report.get("seed_runs", ()) if r["model"] == row["model"]]
        entry = {"model": row["model"], "seeds": max(1, len(runs))}
        for key in ("rank1", "mAP"):
            values = np.array([r[key] for r in runs] or [row[key]])
            entry[key] = float(values.mean())
            entry[f"{key}_std"] = float(values.std())
            entry[f"{key}_per_seed"] = [round(float(v), 4) for v in values]
        rows.append(entry)
    return rows


def print_kd_gains(report: dict) -> None:
    """Each distilled student minus scratch on mAP, paired by seed, and the gap it closes."""
    gains = report.get("kd_gain", {})
    if not gains:
        print("(one seed: no paired interval; pass --seeds with at least 2, 5 for a claim)")
    for line in kd_gain_lines(gains):
        print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output-dir", default="runs/reid_benchmark")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--gallery", type=int, default=5000)
    parser.add_argument("--latency-runs", type=int, default=300)
    parser.add_argument(
        "--unlabeled",
        help="unlabelled images the distilled students also learn from: a folder, or builtin",
    )
    parser.add_argument("--unlabeled-ratio", type=float, default=1.0)
    args = parser.parse_args(argv)
    output = Path(args.output_dir)

    seeds = tuple(int(seed) for seed in args.seeds.split(","))
    overrides = {"seeds": seeds, "output_dir": str(output), "tracking": {"enabled": False}}
    if args.unlabeled:
        overrides.update(unlabeled_data=args.unlabeled, unlabeled_ratio=args.unlabeled_ratio)
    config = config_lib.from_dict(ReIDConfig, overrides)
    student_dim = config.student_model.embedding_dim
    teacher_dim = config.teacher_model.embedding_dim

    print(f"== Evaluation throughput ({args.queries} queries x {args.gallery} gallery) ==")
    student_eval = evaluation_throughput(args.queries, args.gallery, student_dim)
    teacher_eval = evaluation_throughput(args.queries, args.gallery, teacher_dim)
    for name, result in (("student", student_eval), ("teacher", teacher_eval)):
        print(
            f"{name} ({result['dim']}-d): distances {result['distance_seconds'] * 1000:.1f} ms, "
            f"distances + ranking {result['total_seconds'] * 1000:.1f} ms, "
            f"{result['queries_per_second']:.0f} queries/s"
        )
    print(
        "ratio student/teacher time: "
        f"{student_eval['total_seconds'] / teacher_eval['total_seconds']:.2f}x"
    )

    print(f"\n== Ablation: the reid pipeline with seeds {args.seeds} ==", flush=True)
    start = time.perf_counter()
    report = run_pipeline(prepare(ReIDTask, config))
    recipe_seconds = time.perf_counter() - start
    ablation = _ablation(report)
    columns = [
        ("model", "model", ""),
        ("rank1", "rank-1 mean", ".3f"),
        ("rank1_std", "± std", ".3f"),
        ("mAP", "mAP mean", ".3f"),
        ("mAP_std", "± std", ".3f"),
        ("seeds", "seeds", "d"),
        ("per_seed", "rank-1 / mAP per seed", ""),
    ]
    for row in ablation:
        row["per_seed"] = "  ".join(
            f"{r:.3f}/{m:.3f}" for r, m in zip(row["rank1_per_seed"], row["mAP_per_seed"])
        )
    print(format_table(ablation, columns))
    by_name = {row["model"]: row for row in ablation}
    scratch = by_name["student (scratch)"]
    constant = by_name["student (KD constant T)"]
    dynamic = by_name[f"student (KD dynamic T, {config.distill.schedule})"]
    int8 = ablation[-1]
    ptq = by_name["student (int8 PTQ TFLite, LiteRT)"]
    float_rank1, float_map = dynamic["rank1_per_seed"][0], dynamic["mAP_per_seed"][0]
    checks = {
        "dynamic >= constant (rank-1)": dynamic["rank1"] >= constant["rank1"],
        "dynamic >= constant (mAP)": dynamic["mAP"] >= constant["mAP"],
        "constant >= scratch (rank-1)": constant["rank1"] >= scratch["rank1"],
        "constant >= scratch (mAP)": constant["mAP"] >= scratch["mAP"],
        # The shipped int8 model (pruned + QAT, fine-tuned further with the teacher).
        "int8 QAT no more than 1 point below the float student (rank-1)": (
            float_rank1 - int8["rank1"] <= 0.01
        ),
        "int8 QAT no more than 1 point below the float student (mAP)": (
            float_map - int8["mAP"] <= 0.01
        ),
        # Post-training int8 of the same float student: the quantization error alone.
        "int8 PTQ within 1 point of the float student (rank-1)": (
            abs(float_rank1 - ptq["rank1"]) <= 0.01
        ),
        "int8 PTQ within 1 point of the float student (mAP)": abs(float_map - ptq["mAP"]) <= 0.01,
    }
    for name, passed in checks.items():
        print(f"  {'PASS' if passed else 'MISS'}  {name}")
    print_kd_gains(report)
    print(f"(recipe wall clock {recipe_seconds:.0f} s)")

    print("\n== LiteRT embedding latency (1 image, 1 thread) ==")
    teacher = keras.models.load_model(output / "teacher.keras", compile=False)
    teacher_tflite = to_tflite(embedding_model(teacher), "float32")
    student_path = Path(report["artifacts"]["student_tflite"])
    teacher_ms = tflite_latency(teacher_tflite, runs=args.latency_runs)
    student_ms = tflite_latency(student_path, runs=args.latency_runs)
    print(f"float32 teacher: {teacher_ms:.3f} ms, {len(teacher_tflite):,} bytes")
    print(f"int8 student:    {student_ms:.3f} ms, {student_path.stat().st_size:,} bytes")
    print(
        f"ratio teacher/student: latency {teacher_ms / student_ms:.2f}x, "
        f"size {len(teacher_tflite) / student_path.stat().st_size:.2f}x"
    )

    atomic_write_json(
        output / "benchmark.json",
        {
            "evaluation": {"student": student_eval, "teacher": teacher_eval},
            "ablation": ablation,
            "checks": checks,
            "latency_ms": {"teacher_float32": teacher_ms, "student_int8": student_ms},
            "size_bytes": {
                "teacher_float32": len(teacher_tflite),
                "student_int8": student_path.stat().st_size,
            },
            "recipe_seconds": recipe_seconds,
            "int8_parity": report["compression"]["export"]["parity"],
        },
    )
    print(f"\nwritten {output / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
