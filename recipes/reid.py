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
from pydantic import Field

from kd_keras import compress
from kd_keras import config as config_lib
from kd_keras import settings as shared
from kd_keras.config import ConfigModel
from kd_keras.distiller import Distiller
from kd_keras.export import tflite_latency, tflite_predict, to_tflite
from kd_keras.io import (
    atomic_save_model,
    atomic_write_bytes,
    atomic_write_json,
)
from kd_keras.models import load_model_file
from kd_keras.pipeline import (
    fit_resumable,
    reuse_or_train,
    reuse_or_train_weights,
    run_state,
    training_record,
)
from kd_keras.profile import profile_model
from kd_keras.report import format_table
from kd_keras.run_state import RunState
from kd_keras.terms import LogitsDistillation
from recipes.common import (
    add_run_arguments,
    config_from_args,
    parse_and_run,
    print_artifacts,
    print_tracking,
    run_summary,
    tracking_session,
)
from reid.distillation import ProjectionDistillation, SimilarityDistillation, dynamic_temperature
from reid.evaluation import evaluate_dataset, keras_embedder
from reid.losses import IdentityLoss, ReIDLoss, TripletLoss
from reid.market1501 import Market1501, load_market1501
from reid.models import build_reid_model, embedding_model, fold_bnneck
from reid.sampler import PKSampler, pk_dataset
from reid.synthetic import SyntheticConfig, ensure_synthetic_market1501

ScheduleName = Literal["linear", "cosine", "exponential", "step"]


class ModelSettings(shared.BackboneSettings):
    """A ReID network: backbone, width, `depth` blocks per stage and the embedding size."""

    width: float = Field(0.5, gt=0)
    embedding_dim: int = Field(64, ge=2)


class DistillSettings(shared.DistillSettings):
    """KD on the identity logits (temperature from `temperature` down to `final_temperature`).

    `schedule` is the dynamic-temperature schedule; with `compare_constant` a second student is
    distilled at the constant `temperature` on the same budget. `embedding_kd` adds a term on the
    embeddings (sizes may differ): `similarity` (batch similarity structure), `projection`
    (learned projection, cosine) or `none`. The loss is `student_loss_weight·(ID + triplet) +
    logits_weight·T²·KL + embedding_weight·embedding KD`.
    """

    temperature: float = Field(8.0, ge=1)
    schedule: ScheduleName = "exponential"
    compare_constant: bool = True
    logits_weight: float = Field(0.25, ge=0)
    embedding_kd: Literal["similarity", "projection", "none"] = "similarity"
    embedding_weight: float = Field(10.0, ge=0)


class CompressSettings(shared.CompressSettings):
    """Pruning (polynomial ramp to `sparsity`) then QAT, each fine-tuned with the teacher.

    Epochs have `steps_per_epoch` P×K batches. `qat_epochs: 0` ships the post-training int8
    model of the float student instead (no pruning).
    """

    prune_epochs: int = Field(5, ge=0)
    qat_epochs: int = Field(5, ge=0)
    calibration_images: int = Field(256, ge=1)


class ReIDConfig(ConfigModel):
    """Everything `recipes.reid` does; defaults reproduce the built-in run (< 10 min, 2 cores)."""

    data: str | None = None
    image_height: int = Field(64, ge=16)
    image_width: int = Field(32, ge=8)
    teacher: str | None = None
    p: int = Field(8, ge=2)
    k: int = Field(4, ge=2)
    epochs: int = Field(30, ge=1)
    steps_per_epoch: int = Field(60, ge=1)
    teacher_epochs: int = Field(10, ge=1)
    teacher_steps_per_epoch: int = Field(100, ge=1)
    learning_rate: float = Field(0.003, gt=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    margin: float = Field(0.3, ge=0)
    augment: bool = True
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    output_dir: str = "runs/reid"
    latency_runs: int = Field(100, ge=1)
    restart: bool = False
    tracking: shared.TrackingSettings = shared.TrackingSettings(
        experiment="kd-keras-reid", register_as="reid-student"
    )
    teacher_model: ModelSettings = ModelSettings(backbone="resnet", width=0.5, embedding_dim=64)
    student_model: ModelSettings = ModelSettings(backbone="mobilenet", width=0.5, embedding_dim=32)
    distill: DistillSettings = DistillSettings()
    compress: CompressSettings = CompressSettings()

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
    distiller = Distiller(teacher, student, terms, weights, config.distill.student_loss_weight)
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

    def new_model(spec: ModelSettings, name: str) -> keras.Model:
        return build_reid_model(
            data.input_shape,
            identities,
            spec.backbone,
            spec.width,
            spec.embedding_dim,
            spec.depth,
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
    # (stage name, table label, temperature schedule or None for the scratch student)
    variants = [("scratch", "scratch", None)]
    if settings.compare_constant:
        constant = dynamic_temperature("constant", settings.temperature, total)
        variants.append(("KD_constant_T", "KD constant T", constant))
    dynamic = dynamic_temperature(
        settings.schedule, settings.temperature, total, settings.final_temperature
    )
    variants.append(("KD_dynamic_T", f"KD dynamic T, {settings.schedule}", dynamic))
    distilled = distilled_with = None
    for seed in config.seeds:
        for tag, label, temperature in variants:
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
                if temperature is dynamic:
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
    if config.compress.qat_epochs > 0:
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
        register_as=config.tracking.register_as,
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
    steps = config.steps_per_epoch
    if settings.prune_epochs > 0 and settings.sparsity > 0:
        prune_steps = settings.prune_epochs * steps

        def prune():
            pruned = compress.prune(
                folded,
                settings.sparsity,
                "polynomial",
                end_step=max(1, prune_steps * 2 // 3),
                frequency=max(1, prune_steps // 10),
            )
            spent, history, _ = _distill(
                config,
                teacher,
                pruned,
                temperature,
                dataset(prune_steps, seed),
                steps,
                settings.prune_epochs,
                output / "checkpoints/prune",
                settings.learning_rate,
                callbacks=[compress.UpdatePruningStep()],
            )
            return compress.strip(pruned), training_record(spent, history)

        model, trained = reuse_or_train(state, "pruned", output / "student_pruned.keras", prune)
        seconds += trained["seconds"]
        sparsity = compress.sparsity_report(model)["total"]
    calibration = np.array_split(images[: settings.calibration_images], 8)
    qat = compress.quantize_aware(model, calibration_data=calibration)

    def fine_tune():
        spent, history, _ = _distill(
            config,
            teacher,
            qat,
            temperature,
            dataset(settings.qat_epochs * steps, seed + 1),
            steps,
            settings.qat_epochs,
            output / "checkpoints/qat",
            settings.learning_rate,
        )
        return training_record(spent, history)

    weights = output / "student_qat.weights.h5"
    trained = reuse_or_train_weights(state, "qat", qat, weights, fine_tune)
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
