"""`python -m recipes.reid`: person re-identification teacher, students, KD, compression, int8.

With no arguments it writes the built-in Market-1501-layout dataset (if absent), trains a teacher,
a scratch student, a constant-temperature KD student and a dynamic-temperature KD student on the
same budget, prunes and quantization-aware fine-tunes the dynamic-T student with the teacher,
exports its embedding model to int8 TFLite and evaluates everything (Keras and LiteRT) under the
Market-1501 protocol in one table. `--data DIR` takes a real Market-1501 folder. Every option is
also a config key (`--config FILE`, `--set key=value`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import tf_keras as keras
import yaml

from kd_keras import compress
from kd_keras import config as config_lib
from kd_keras.distiller import Distiller
from kd_keras.export import tflite_latency, tflite_predict, to_tflite
from kd_keras.io import (
    atomic_save_model,
    atomic_save_weights,
    atomic_write_bytes,
    atomic_write_json,
)
from kd_keras.models import load_model_file
from kd_keras.profile import profile_model
from kd_keras.report import format_table
from kd_keras.run_state import RunState
from kd_keras.terms import LogitsDistillation
from recipes.common import (
    add_run_arguments,
    config_from_args,
    fit_resumable,
    parse_and_run,
    print_artifacts,
    print_tracking,
    reuse_or_train,
    run_state,
    run_summary,
    tracking_session,
    training_record,
)
from reid.distillation import ProjectionDistillation, SimilarityDistillation, dynamic_temperature
from reid.evaluation import evaluate_dataset, keras_embedder
from reid.losses import IdentityLoss, ReIDLoss, TripletLoss
from reid.market1501 import Market1501, load_market1501
from reid.models import build_reid_model, embedding_model, fold_bnneck
from reid.sampler import PKSampler, pk_dataset
from reid.synthetic import SyntheticConfig, ensure_synthetic_market1501

ScheduleName = Literal["linear", "cosine", "exponential", "step"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    backbone: Literal["resnet", "mobile"] = "resnet"
    width: float = 0.5
    embedding_dim: int = 64
    blocks_per_stage: int = 1

    def __post_init__(self):
        config_lib.check(self.width > 0, "width", "> 0", self.width)
        config_lib.check(self.embedding_dim >= 2, "embedding_dim", ">= 2", self.embedding_dim)
        config_lib.check(
            self.blocks_per_stage >= 1, "blocks_per_stage", ">= 1", self.blocks_per_stage
        )


@dataclasses.dataclass(frozen=True)
class DistillSettings:
    """KD on the identity logits (temperature from `temperature` down to 1) and the embedding.

    `schedule` is the dynamic-temperature schedule; with `compare_constant` a second student is
    distilled at the constant `temperature` on the same budget. `embedding_kd` adds a term on the
    embeddings (sizes may differ): `similarity` (batch similarity structure), `projection`
    (learned projection, cosine) or `none`.
    """

    temperature: float = 8.0
    schedule: ScheduleName = "exponential"
    compare_constant: bool = True
    logits_weight: float = 0.25
    student_weight: float = 1.0
    embedding_kd: Literal["similarity", "projection", "none"] = "similarity"
    embedding_weight: float = 10.0

    def __post_init__(self):
        config_lib.check(self.temperature >= 1, "distill.temperature", ">= 1", self.temperature)
        for key in ("logits_weight", "student_weight", "embedding_weight"):
            value = getattr(self, key)
            config_lib.check(value >= 0, f"distill.{key}", ">= 0", value)


@dataclasses.dataclass(frozen=True)
class CompressSettings:
    """Pruning (polynomial ramp to `sparsity`) then QAT, each fine-tuned with the teacher."""

    enabled: bool = True
    sparsity: float = 0.3
    prune_steps: int = 300
    qat_steps: int = 300
    learning_rate: float = 0.0005

    def __post_init__(self):
        config_lib.check(0 <= self.sparsity < 1, "compress.sparsity", "in [0, 1)", self.sparsity)
        config_lib.check(self.prune_steps >= 0, "compress.prune_steps", ">= 0", self.prune_steps)
        config_lib.check(self.qat_steps >= 1, "compress.qat_steps", ">= 1", self.qat_steps)
        config_lib.check(
            self.learning_rate > 0, "compress.learning_rate", "> 0", self.learning_rate
        )


@dataclasses.dataclass(frozen=True)
class ReIDConfig:
    """Everything `recipes.reid` does; defaults reproduce the built-in run (< 10 min, 2 cores)."""

    data: str | None = None
    image_height: int = 64
    image_width: int = 32
    teacher: str | None = None
    p: int = 8
    k: int = 4
    epochs: int = 30
    steps_per_epoch: int = 60
    teacher_epochs: int = 10
    teacher_steps_per_epoch: int = 100
    learning_rate: float = 0.003
    label_smoothing: float = 0.1
    margin: float = 0.3
    augment: bool = True
    seeds: tuple[int, ...] = (0,)
    output_dir: str = "runs/reid"
    latency_runs: int = 100
    track: bool = True
    tracking_uri: str | None = None
    experiment: str = "kd-keras-reid"
    register_as: str | None = "reid-student"
    restart: bool = False
    teacher_model: ModelSpec = ModelSpec("resnet", 0.5, 64)
    student_model: ModelSpec = ModelSpec("mobile", 0.5, 32)
    distill: DistillSettings = DistillSettings()
    compress: CompressSettings = CompressSettings()

    def __post_init__(self):
        for key in ("epochs", "steps_per_epoch", "teacher_epochs", "teacher_steps_per_epoch"):
            config_lib.check(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        config_lib.check(self.p >= 2, "p", ">= 2", self.p)
        config_lib.check(self.k >= 2, "k", ">= 2", self.k)
        config_lib.check(self.learning_rate > 0, "learning_rate", "> 0", self.learning_rate)
        config_lib.check(
            0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)", self.label_smoothing
        )
        config_lib.check(self.margin >= 0, "margin", ">= 0", self.margin)
        config_lib.check(self.image_height >= 16, "image_height", ">= 16", self.image_height)
        config_lib.check(self.image_width >= 8, "image_width", ">= 8", self.image_width)
        config_lib.check(len(self.seeds) >= 1, "seeds", "to list at least one seed", self.seeds)
        config_lib.check(self.latency_runs >= 1, "latency_runs", ">= 1", self.latency_runs)

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.image_height, self.image_width)


def parse_config(argv: list[str] | None = None) -> ReIDConfig:
    """Command line to a validated config: YAML file, then `--set`, then the named options."""
    parser = argparse.ArgumentParser(prog="python -m recipes.reid", description=__doc__)
    add_run_arguments(parser, "ReIDConfig")
    parser.add_argument("--data", help="Market-1501 folder (default: the built-in dataset)")
    parser.add_argument("--teacher", help="saved .keras ReID teacher (default: train one)")
    parser.add_argument("--temperature", type=float, help="starting KD temperature")
    parser.add_argument("--schedule", help="linear, cosine, exponential or step")
    parser.add_argument("--seeds", help="comma-separated student seeds, e.g. 0,1,2")
    parser.add_argument("--epochs", type=int)
    args = parser.parse_args(argv)
    named = {
        "data": args.data,
        "teacher": args.teacher,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "distill.temperature": args.temperature,
        "distill.schedule": args.schedule,
    }
    return config_from_args(ReIDConfig, args, named)


# === Stages ===


def load_data(config: ReIDConfig) -> tuple[Market1501, str]:
    """The user's Market-1501 folder, or the built-in one (written on first use)."""
    if config.data is not None:
        return load_market1501(config.data, config.image_size), config.data
    root = Path(config.output_dir) / "market1501_synthetic"
    synthetic = SyntheticConfig(image_size=config.image_size)
    ensure_synthetic_market1501(root, synthetic)
    return load_market1501(root, config.image_size), f"built-in synthetic ({root})"


def load_teacher(path: str, data: Market1501, identities: int) -> keras.Model:
    """Loads a `.keras` ReID training model in safe mode and checks it fits the data."""
    teacher = load_model_file(path, option="teacher")
    if len(teacher.outputs) != 2 or tuple(teacher.input_shape[1:]) != data.input_shape:
        raise ValueError(
            "Expected a two-output ReID model from reid.models.build_reid_model taking "
            f"{data.input_shape} images. Received: teacher={path} with input shape "
            f"{teacher.input_shape} and {len(teacher.outputs)} output(s)."
        )
    if teacher.output_shape[1][-1] != identities:
        raise ValueError(
            f"The teacher classifies {teacher.output_shape[1][-1]} identities but the training "
            f"split has {identities}. Received: teacher={path}."
        )
    return teacher


def _optimizer(learning_rate: float, steps: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps))


def _train_plain(
    model, dataset, epochs, steps, config, checkpoint_dir, callbacks=()
) -> tuple[float, dict]:
    model.compile(
        _optimizer(config.learning_rate, epochs * steps),
        loss=[TripletLoss(config.margin), IdentityLoss(config.label_smoothing)],
    )
    return _fit(model, dataset, epochs, steps, checkpoint_dir, callbacks)


def _fit(model, dataset, epochs, steps, checkpoint_dir, callbacks=()) -> tuple[float, dict]:
    seconds, history = fit_resumable(model, dataset, epochs, checkpoint_dir, callbacks, steps)
    return round(seconds, 2), history


def _terms(config: ReIDConfig, temperature, teacher, student) -> tuple[list, list]:
    """Logits KD (+ embedding KD) terms, finding layers by name in possibly wrapped models."""
    settings = config.distill

    def name(model, layer):
        return compress.wrapped_layer_name(model, layer)

    terms = [
        LogitsDistillation(
            temperature=temperature,
            teacher_layer=name(teacher, "logits"),
            student_layer=name(student, "logits"),
            name="logits_kd",
        )
    ]
    weights = [settings.logits_weight]
    if settings.embedding_kd != "none" and settings.embedding_weight > 0:
        term = (
            SimilarityDistillation
            if settings.embedding_kd == "similarity"
            else (ProjectionDistillation)
        )
        terms.append(
            term(name(teacher, "embedding"), name(student, "embedding"), name="embedding_kd")
        )
        weights.append(settings.embedding_weight)
    return terms, weights


def _distiller(config, teacher, student, temperature, steps, epochs, lr) -> Distiller:
    terms, weights = _terms(config, temperature, teacher, student)
    distiller = Distiller(teacher, student, terms, weights, config.distill.student_weight)
    distiller.compile(
        _optimizer(lr, epochs * steps),
        loss=ReIDLoss(config.label_smoothing, config.margin),
    )
    return distiller


def _distill(
    config, teacher, student, temperature, dataset, steps, epochs, checkpoint, lr, callbacks=()
):
    distiller = _distiller(config, teacher, student, temperature, steps, epochs, lr)
    seconds, history = _fit(distiller, dataset, epochs, steps, checkpoint, callbacks)
    return seconds, history, distiller


def _keras_row(name, model, data, seconds, tflite_latency_ms, tflite_bytes) -> dict:
    encoder = embedding_model(model)
    result = evaluate_dataset(keras_embedder(encoder), data)
    profile = profile_model(encoder)
    return {
        "model": name,
        **result.as_dict(),
        "params": profile.params,
        "flops": profile.flops,
        "size_bytes": tflite_bytes,
        "latency_ms": tflite_latency_ms,
        "train_seconds": seconds,
        "runtime": "keras",
    }


def _float_tflite(model, config) -> tuple[float, int]:
    flatbuffer = to_tflite(embedding_model(model), "float32")
    return round(tflite_latency(flatbuffer, runs=config.latency_runs), 4), len(flatbuffer)


@dataclasses.dataclass
class Inputs:
    """What `prepare` checked before training: the data, a given teacher, the run folder."""

    data: Market1501
    source: str
    teacher: keras.Model | None
    state: RunState


def prepare(config: ReIDConfig) -> Inputs:
    """Loads and checks everything the run needs; every input error is raised here."""
    data, source = load_data(config)
    identities = len(data.train.labels()[1])
    if identities < config.p:
        raise ValueError(
            f"p={config.p} identities per batch, but the training split has only {identities}. "
            f"Lower p. Received: p={config.p}."
        )
    teacher = load_teacher(config.teacher, data, identities) if config.teacher else None
    return Inputs(data, source, teacher, run_state(config))


def run(config: ReIDConfig, inputs: Inputs | None = None) -> dict:
    """Runs the recipe; returns the report (also written to `output_dir/report.json`).

    Stages finished by an earlier run in `output_dir` (with the same config) are reused; an
    interrupted one resumes from its last finished epoch.
    """
    inputs = inputs or prepare(config)
    data, source, teacher, state = inputs.data, inputs.source, inputs.teacher, inputs.state
    output = Path(config.output_dir)
    labels, person_ids = data.train.labels()
    identities = len(person_ids)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output / "config.yaml", yaml.safe_dump(config_lib.to_dict(config)).encode())
    session = tracking_session(config, "reid")

    def logged(prefix: str) -> list:
        return [] if session is None else [session.callback(prefix)]

    def dataset(steps: int, seed: int):
        sampler = PKSampler(labels, config.p, config.k, seed=seed)
        return pk_dataset(data.train.images, labels, sampler, steps, config.augment, seed)

    def new_model(spec: ModelSpec, name: str) -> keras.Model:
        return build_reid_model(
            data.input_shape,
            identities,
            spec.backbone,
            spec.width,
            spec.embedding_dim,
            spec.blocks_per_stage,
            name=name,
        )

    rows, temperatures, runs = [], {}, []
    teacher_seconds = None
    if teacher is None:

        def train_teacher():
            keras.utils.set_random_seed(config.seeds[0])
            model = new_model(config.teacher_model, "teacher")
            steps, epochs = config.teacher_steps_per_epoch, config.teacher_epochs
            trained = _train_plain(
                model,
                dataset(steps * epochs, config.seeds[0]),
                epochs,
                steps,
                config,
                output / "checkpoints/teacher",
                logged("teacher"),
            )
            return model, training_record(*trained)

        teacher, trained = reuse_or_train(state, "teacher", output / "teacher.keras", train_teacher)
        teacher_seconds = trained["seconds"]
    rows.append(
        _keras_row("teacher", teacher, data, teacher_seconds, *_float_tflite(teacher, config))
    )

    steps, epochs = config.steps_per_epoch, config.epochs
    total = steps * epochs
    settings = config.distill
    variants = [("scratch", None)]
    if settings.compare_constant:
        variants.append(
            ("KD constant T", dynamic_temperature("constant", settings.temperature, total))
        )
    variants.append(
        (
            f"KD dynamic T, {settings.schedule}",
            dynamic_temperature(settings.schedule, settings.temperature, total),
        )
    )
    distilled = distilled_with = None
    for seed in config.seeds:
        for label, temperature in variants:
            tag = label.split(",")[0].replace(" ", "_")
            stage = f"{tag}_{seed}"

            def train_student(seed=seed, temperature=temperature, stage=stage):
                keras.utils.set_random_seed(seed + 1)
                student = new_model(config.student_model, "student")
                checkpoint = output / "checkpoints" / stage
                if temperature is None:
                    seconds, history = _train_plain(
                        student,
                        dataset(total, seed + 1),
                        epochs,
                        steps,
                        config,
                        checkpoint,
                        logged(stage),
                    )
                    return student, training_record(seconds, history)
                seconds, history, _ = _distill(
                    config,
                    teacher,
                    student,
                    temperature,
                    dataset(total, seed + 1),
                    steps,
                    epochs,
                    checkpoint,
                    config.learning_rate,
                    logged(stage),
                )
                used = [round(float(t), 4) for t in history["logits_kd_temperature"]]
                return student, {**training_record(seconds, history), "temperatures": used}

            student, trained = reuse_or_train(
                state, stage, output / "students" / f"{stage}.keras", train_student
            )
            if temperature is not None:
                temperatures[label] = trained["temperatures"]
            row = _keras_row(f"student ({label})", student, data, trained["seconds"], None, None)
            runs.append({"seed": seed, **row})
            if seed == config.seeds[0]:
                if label.startswith("KD dynamic"):
                    distilled = student
                    distilled_with = _distiller(
                        config, teacher, student, temperature, steps, epochs, config.learning_rate
                    )
                latency, size = _float_tflite(student, config)
                rows.append({**row, "latency_ms": latency, "size_bytes": size})
    if len(config.seeds) > 1:
        rows = _with_seed_means(rows, runs)
    atomic_save_model(distilled, output / "student.keras")

    artifacts = {
        "teacher": str(output / "teacher.keras") if config.teacher is None else config.teacher,
        "student": str(output / "student.keras"),
    }
    # Post-training int8 of the float distilled student: the reference for the QAT model.
    folded = fold_bnneck(distilled, name="student_folded")
    ptq_path = output / "student_ptq_int8.tflite"
    ptq = to_tflite(
        embedding_model(folded), "int8", representative_data=data.train.images, path=ptq_path
    )
    rows.append(_tflite_row("student (KD dynamic T, int8 PTQ)", ptq, folded, data, config, None))
    artifacts["student_ptq_int8"] = str(ptq_path)
    shipped, parity = ptq_path, None
    if config.compress.enabled:
        compressed, seconds, sparsity = _compress(
            config, teacher, folded, dataset, data.train.images, output, state
        )
        encoder = embedding_model(compressed, name="student_embedding")
        int8_path = output / "student_int8.tflite"
        int8 = to_tflite(encoder, "int8", path=int8_path)
        pruned = f"pruned {config.compress.sparsity:.0%} + " if sparsity > 0 else ""
        name = f"student (KD dynamic T, {pruned}QAT, int8)"
        rows.append(
            {**_tflite_row(name, int8, folded, data, config, seconds), "sparsity": sparsity}
        )
        parity = _parity(encoder, int8, data)
        artifacts["student_int8"] = str(int8_path)
        shipped = int8_path

    report = {
        "task": "reid",
        "data": source,
        "train_images": len(data.train),
        "train_identities": identities,
        "query_images": len(data.query),
        "gallery_images": len(data.gallery),
        "rows": rows,
        "seed_runs": runs,
        "temperatures_per_epoch": temperatures,
        "int8_parity": parity,
        "artifacts": artifacts,
    }
    # The report is on disk before tracking runs: a store failure cannot cost it.
    atomic_write_json(output / "report.json", report)
    if session is not None:
        described = {"distiller": _describe(distilled_with)}
        report["mlflow"] = _record(session, config, report, artifacts, shipped, data, described)
        atomic_write_json(output / "report.json", report)
    return report


def _describe(distiller) -> dict:
    from kd_keras.tracking import describe_distiller

    return describe_distiller(distiller)


def _record(session, config, report, artifacts, shipped, data, params) -> dict:
    """Logs the run (config, report, models) and registers the shipped int8 embedding model."""
    shipped_row = report["rows"][-1]
    record = session.finish(
        config_lib.to_dict(config),
        {key: value for key, value in report.items() if key != "seed_runs"},
        artifacts,
        tflite_path=shipped,
        register_as=config.register_as,
        input_example=data.query.images[:2],
        calibration={
            "dataset": report["data"],
            "split": "bounding_box_train",
            "examples": min(100, len(data.train)),
        },
        tflite_metrics={
            "rank1": shipped_row["rank1"],
            "mAP": shipped_row["mAP"],
            "latency_ms": shipped_row["latency_ms"],
            **(
                {}
                if report["int8_parity"] is None
                else {"parity": report["int8_parity"]["mean_cosine"]}
            ),
        },
        params=params,
        headline="mAP",
    )
    return run_summary(record)


def _compress(config, teacher, folded, dataset, images, output, state):
    """Prune (polynomial ramp) and QAT-fine-tune the folded student with the teacher.

    Both are stages of `state`: the pruned student is saved as `student_pruned.keras`, the QAT
    weights as `student_qat.weights.h5`; a rerun reuses them.
    """
    settings = config.compress
    temperature = 1.0
    seed = config.seeds[0] + 100
    model, seconds = folded, 0.0
    sparsity = 0.0
    if settings.prune_steps > 0 and settings.sparsity > 0:

        def prune():
            pruned = compress.prune(
                folded,
                settings.sparsity,
                "polynomial",
                end_step=max(1, settings.prune_steps * 2 // 3),
                frequency=max(1, settings.prune_steps // 10),
            )
            spent, history, _ = _distill(
                config,
                teacher,
                pruned,
                temperature,
                dataset(settings.prune_steps, seed),
                settings.prune_steps,
                1,
                output / "checkpoints/prune",
                settings.learning_rate,
                callbacks=[compress.UpdatePruningStep()],
            )
            return compress.strip(pruned), training_record(spent, history)

        model, trained = reuse_or_train(state, "pruned", output / "student_pruned.keras", prune)
        seconds += trained["seconds"]
        sparsity = compress.sparsity_report(model)["total"]
    qat = compress.quantize_aware(model, calibration_data=np.array_split(images[:256], 8))
    weights = output / "student_qat.weights.h5"
    trained = state.done("qat")
    if trained is None:
        spent, history, _ = _distill(
            config,
            teacher,
            qat,
            temperature,
            dataset(settings.qat_steps, seed + 1),
            settings.qat_steps,
            1,
            output / "checkpoints/qat",
            settings.learning_rate,
        )
        trained = training_record(spent, history)
        atomic_save_weights(qat, weights)
        state.finish("qat", file=weights, **trained)
    else:
        qat.load_weights(weights)
    return qat, round(seconds + trained["seconds"], 2), sparsity


def _tflite_row(name, flatbuffer, reference, data, config, seconds) -> dict:
    result = evaluate_dataset(lambda images: tflite_predict(flatbuffer, images), data)
    profile = profile_model(embedding_model(reference))
    return {
        "model": name,
        **result.as_dict(),
        "params": profile.params,
        "flops": profile.flops,
        "size_bytes": len(flatbuffer),
        "latency_ms": round(tflite_latency(flatbuffer, runs=config.latency_runs), 4),
        "train_seconds": seconds,
        "runtime": "litert int8",
    }


def _parity(encoder, flatbuffer, data) -> dict:
    expected = np.asarray(encoder.predict(data.query.images, verbose=0))
    actual = tflite_predict(flatbuffer, data.query.images)
    cosine = np.sum(expected * actual, 1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1) + 1e-12
    )
    return {
        "mean_cosine": float(cosine.mean()),
        "min_cosine": float(cosine.min()),
        "max_abs_diff": float(np.abs(expected - actual).max()),
        "examples": len(expected),
    }


def _with_seed_means(rows: list[dict], runs: list[dict]) -> list[dict]:
    """Student rows get the mean and standard deviation of rank-1 and mAP over the seeds."""
    result = []
    for row in rows:
        seeds = [r for r in runs if r["model"] == row["model"]]
        if seeds:
            row = dict(row)
            for key in ("rank1", "mAP"):
                values = np.array([r[key] for r in seeds])
                row[key], row[f"{key}_std"] = float(values.mean()), float(values.std())
            row["seeds"] = len(seeds)
        result.append(row)
    return result


COLUMNS = [
    ("model", "model", ""),
    ("rank1", "rank-1", ".3f"),
    ("rank5", "rank-5", ".3f"),
    ("mAP", "mAP", ".3f"),
    ("params", "params", ","),
    ("flops", "FLOPs", ","),
    ("size_bytes", "tflite (bytes)", ","),
    ("latency_ms", "LiteRT (ms)", ".3f"),
    ("train_seconds", "train (s)", ".1f"),
]


def main(argv: list[str] | None = None) -> int:
    outcome = parse_and_run(parse_config, prepare, run, argv)
    if outcome is None:
        return 2
    config, report = outcome
    print(format_table(report["rows"], COLUMNS))
    for label, values in report["temperatures_per_epoch"].items():
        print(f"{label}: temperature per epoch {values}")
    if report["int8_parity"]:
        print(f"int8 vs Keras embedding cosine: mean {report['int8_parity']['mean_cosine']:.4f}")
    print_artifacts(config.output_dir, report)
    print_tracking(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
