"""Detection benchmark: input pipeline vs training speed, LiteRT latency, and the KD ablation.

    python benchmarks/detection_kd.py [--seeds 0 1 2] [--epochs 30] [--skip-ablation]
    python benchmarks/detection_kd.py --seeds 0 1 2 3 4 --skip-components --unlabeled builtin
    python benchmarks/detection_kd.py ... --set epochs=60     # any config key

The teacher is the shipped one when it fits the config (`--teacher null` trains one on the
first seed); every seed distils from that one teacher.

(1) Images/s of the tf.data pipeline alone (read, augment, encode targets) against images/s of a
    training step (scratch student, and the distiller with the teacher's forward pass), measured in
    the same process; the pipeline must run at least 2x faster than the fastest step.
(2) LiteRT single-image latency of the int8 student against the float32 teacher (one thread).
(3) The ablation on the built-in dataset, per seed: scratch student, student + each KD component
    (heatmap, box, hint; not with --skip-components), full KD, teacher and int8 student, all on
    COCOeval AP; then the mean and spread of (full KD − scratch) over seeds and of (int8 − float
    student). Within a seed every student starts from the same weights and sees the same
    batches, so the per-seed margins are paired.
Prints the figures and ratios; writes `<output>/benchmark.json`. Not a test; never run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pipeline_vs_training(config, batches: int = 20) -> dict:
    import tensorflow as tf
    import tf_keras as keras

    from detection.centernet import CenterNetDistiller, CenterNetLoss, build_centernet
    from detection.data import detection_dataset, load_data
    from detection.distillation import detection_kd_terms

    train, _, _ = load_data(config)
    size = (config.image_size, config.image_size)
    dataset = detection_dataset(train, size, config.batch_size, training=True, seed=0).repeat()
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    start = time.perf_counter()
    for _ in range(3 * batches):
        next(iterator)
    pipeline = 3 * batches * config.batch_size / (time.perf_counter() - start)
    del iterator  # stop its parallel workers before training is timed

    # Training speed on batches already in memory, so the step alone is timed.
    cached = list(dataset.take(4))
    images = tf.stack([batch[0] for batch in cached])
    targets = tuple(tf.stack([batch[1][i] for batch in cached]) for i in range(3))
    memory = tf.data.Dataset.from_tensor_slices((images, targets)).repeat()

    def build(role, size_config):
        return build_centernet(
            (*size, 3), train.num_classes, size_config.backbone, size_config.width,
            size_config.depth, name=role,
        )  # fmt: skip

    def images_per_second(fit) -> float:
        fit(memory.take(3))
        start = time.perf_counter()
        fit(memory.take(batches))
        return batches * config.batch_size / (time.perf_counter() - start)

    steps = {}
    teacher = build("teacher", config.teacher_model)
    student = build("student", config.student_model)
    for name, model in (("teacher", teacher), ("student (scratch)", student)):
        losses, weights = CenterNetLoss().per_head_losses()
        model.compile(keras.optimizers.Adam(1e-3), losses, loss_weights=weights)
        steps[name] = images_per_second(lambda d, m=model: m.fit(d, verbose=0))
    terms, weights = detection_kd_terms(config.distill, 1000)
    distiller = CenterNetDistiller(teacher, build("student_kd", config.student_model),
                                          terms, weights)  # fmt: skip
    distiller.compile(keras.optimizers.Adam(1e-3))
    steps["student (distilled)"] = images_per_second(lambda d: distiller.fit(d, verbose=0))
    fastest = max(steps.values())
    return {
        "pipeline_images_per_s": round(pipeline, 1),
        "train_images_per_s": {k: round(v, 1) for k, v in steps.items()},
        "pipeline_over_fastest_step": round(pipeline / fastest, 2),
    }


def ablation(config, seeds, output: Path, components: bool = True) -> dict:
    from detection.config import DetectConfig
    from detection.task import DetectionTask
    from kd_keras import config as config_lib
    from kd_keras import stats
    from kd_keras.pipeline import prepare, run_pipeline

    runs = []
    teacher_path = config.teacher
    for seed in seeds:
        run_config = config_lib.from_dict(
            DetectConfig,
            {
                **config_lib.to_dict(config),
                "seed": seed,
                "ablation": components,
                "teacher": teacher_path,
                "output_dir": str(output / f"seed{seed}"),
            },
        )
        report = run_pipeline(prepare(DetectionTask, run_config))
        if teacher_path in (None, "auto"):  # trained (or the built-in one): every seed shares it
            teacher_path = report["artifacts"]["teacher"]
        runs.append({row["model"]: row for row in report["rows"]})
        print(f"seed {seed}: " + ", ".join(f"{k} AP {v['AP']:.3f}" for k, v in runs[-1].items()))
    names = list(runs[0])
    table = {}
    for name in names:
        values = [run[name]["AP"] for run in runs]
        table[name] = {
            "AP_mean": statistics.fmean(values),
            "AP_std": statistics.pstdev(values),
            "AP": values,
            "AP50_mean": statistics.fmean(run[name]["AP50"] for run in runs),
        }
    distilled = [r["student (distilled)"]["AP"] for r in runs]
    scratch = [r["student (scratch)"]["AP"] for r in runs]
    margins = [d - s for d, s in zip(distilled, scratch)]
    teachers = [r["teacher"]["AP"] for r in runs]
    gain = stats.kd_gain(distilled, scratch, teachers) if len(runs) >= 2 else {}
    int8 = [r["student (int8 TFLite, LiteRT)"]["AP"] - r["student (distilled)"]["AP"] for r in runs]
    return {
        "seeds": list(seeds),
        "table": table,
        "full_kd_minus_scratch_AP": margins,
        "kd_gain": gain,
        "int8_minus_float_AP": int8,
        "latency_ms": {
            "teacher float32": runs[0]["teacher"]["latency_ms"],
            "student int8": runs[0]["student (int8 TFLite, LiteRT)"]["latency_ms"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="student and teacher epochs")
    parser.add_argument("--skip-ablation", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument(
        "--skip-components",
        action="store_true",
        help="per seed, train only the scratch and the fully distilled students",
    )
    parser.add_argument(
        "--teacher",
        default="auto",
        help="saved .keras teacher for the ablation, or null to train one (default auto: the "
        "shipped teacher when it fits the config)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=V")
    parser.add_argument("--output", default="runs/benchmark_detection")
    parser.add_argument(
        "--unlabeled",
        help="unlabelled images the distilled students also learn from: a folder, or builtin",
    )
    parser.add_argument("--unlabeled-ratio", type=float, default=1.0)
    args = parser.parse_args()

    from detection.config import DetectConfig
    from kd_keras import config as config_lib
    from kd_keras.stats import interval_text

    teacher = None if args.teacher in ("null", "none") else args.teacher
    overrides = {"tracking": {"enabled": False}, "teacher": teacher}
    if args.epochs is not None:
        overrides.update(epochs=args.epochs, teacher_epochs=args.epochs)
    if args.unlabeled:
        overrides.update(unlabeled_data=args.unlabeled, unlabeled_ratio=args.unlabeled_ratio)
    overrides = config_lib.apply_overrides(overrides, args.overrides)
    config = config_lib.from_dict(DetectConfig, overrides)
    output = Path(args.output)
    result = {}
    if not args.skip_speed:
        result["speed"] = speed = pipeline_vs_training(config)
        print(f"input pipeline: {speed['pipeline_images_per_s']} images/s")
        for name, value in speed["train_images_per_s"].items():
            print(f"training step, {name}: {value} images/s")
        print(
            f"pipeline / fastest training step: {speed['pipeline_over_fastest_step']}x (want >= 2)"
        )
    if not args.skip_ablation:
        result["ablation"] = ablation(config, args.seeds, output, not args.skip_components)
        table = result["ablation"]["table"]
        print("\nAP on the built-in validation set (mean ± std over seeds):")
        for name, row in table.items():
            print(f"  {name:34s} {row['AP_mean']:.3f} ± {row['AP_std']:.3f}")
        margins = result["ablation"]["full_kd_minus_scratch_AP"]
        print(
            f"full KD − scratch AP per seed (same initialisation and batches): "
            f"{[round(m, 3) for m in margins]}; mean {statistics.fmean(margins):+.3f}, "
            f"KD ahead on {sum(m > 0 for m in margins)} of {len(margins)} seeds"
        )
        gain = result["ablation"]["kd_gain"]
        if gain:
            print(f"full KD − scratch AP, paired: {interval_text(gain['difference'])}")
            if "gap_closed" in gain:
                print(f"teacher–scratch gap closed: {interval_text(gain['gap_closed'])}")
        else:
            print("(one seed: no paired interval; pass --seeds with at least 2, 5 for a claim)")
        int8 = result["ablation"]["int8_minus_float_AP"]
        print(f"int8 − float student AP: {[round(m, 3) for m in int8]}")
        latency = result["ablation"]["latency_ms"]
        print(
            f"LiteRT latency: int8 student {latency['student int8']:.2f} ms, float teacher "
            f"{latency['teacher float32']:.2f} ms "
            f"({latency['teacher float32'] / latency['student int8']:.1f}x faster)"
        )
    output.mkdir(parents=True, exist_ok=True)
    (output / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
