"""`python -m recipes.classify`: teacher, scratch student and distilled student, side by side.

With no arguments it runs on scikit-learn's bundled digits. `--data DIR` takes an image folder
with one subfolder per class; `--teacher PATH` a saved `.keras` teacher; `--classes 0,3,7` trains
a student for a subset of the teacher's classes; `--offline` distills from cached teacher outputs.
The distilled student is then compressed for the robot: `--prune SPARSITY|auto` (TF-MOT magnitude
pruning, `auto` picks the knee of the accuracy-vs-sparsity curve), `--qat` (quantization-aware
training), both fine-tuned with the teacher, and `--export float32|float16|dynamic|int8` writes a
`.tflite` that is measured in LiteRT. The run is recorded in MLflow (`--tracking-uri`, default
`sqlite:///mlflow.db` in the working directory) and the `.tflite` student is registered as a new
version of `tracking.register_as` with alias `challenger`. Every option is also a config key
(`--config FILE`, `--set key=value`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pydantic
import tf_keras as keras
import yaml
from pydantic import Field

from kd_keras import compress, export, offline
from kd_keras import config as config_lib
from kd_keras import data as data_lib
from kd_keras import settings as shared
from kd_keras.config import ConfigModel
from kd_keras.distiller import Distiller
from kd_keras.io import atomic_write_bytes, atomic_write_json
from kd_keras.models import build_cnn_classifier, load_model_file
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
from kd_keras.subset import ClassSubset, parse_classes, save_class_mapping
from kd_keras.terms import FeatureDistillation, LogitsDistillation
from recipes.common import (
    add_run_arguments,
    config_from_args,
    parse_and_run,
    print_artifacts,
    print_tracking,
    run_summary,
    tracking_session,
)

ExportMode = Literal["float32", "float16", "dynamic", "int8"]


class ModelSettings(shared.ModelSettings):
    """The CNN classifier's size; `dropout` before its classifier."""

    dropout: float = Field(0.0, ge=0, lt=1)


class DistillSettings(shared.DistillSettings):
    """How the student learns from the teacher.

    `temperature` is the starting temperature; with a `schedule` other than constant it moves to
    `final_temperature` over the whole training. The loss is
    `student_loss_weight·CE + logits_weight·T²·KD` (Hinton et al. use 0.1 and 0.9).
    `hint_weight > 0` adds a FitNet hint on the `features` layer.
    """

    student_loss_weight: float = Field(0.1, ge=0)
    logits_weight: float = Field(0.9, ge=0)
    loss: Literal["kl", "soft_ce"] = "kl"
    hint_weight: float = Field(0.0, ge=0)
    hint_loss: Literal["l2", "cross_entropy"] = "l2"


class CompressSettings(shared.CompressSettings):
    """How the distilled student becomes the file that ships.

    `sparsity` is the final sparsity of every Conv/Dense kernel (0 = no pruning; `auto` = the
    knee of the accuracy-vs-sparsity curve over `candidates`, after adaptive BN, or the highest
    candidate within `max_drop` of the unpruned accuracy). Pruning ramps up along a polynomial
    schedule during `prune_epochs` epochs of distillation from the teacher; `qat_epochs` of
    quantization-aware distillation follow (sparsity-preserving after pruning; 0 = none).
    `keep_dense` names layers left unpruned: by default the first conv, whose few weights
    (3·3·channels per filter) carry most of the accuracy lost when pruning it. `export` writes
    `student_<mode>.tflite`, measured in LiteRT.
    """

    sparsity: float | Literal["auto"] = 0.5
    prune_epochs: int = Field(8, ge=1)
    qat_epochs: int = Field(8, ge=0)
    learning_rate: float = Field(0.001, gt=0)
    calibration_images: int = Field(256, ge=1)
    export: ExportMode | None = "int8"
    keep_dense: tuple[str, ...] = ("stage1_block1_conv",)
    candidates: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    max_drop: float | None = Field(None, ge=0)
    int8_io: bool = False

    @pydantic.model_validator(mode="after")
    def _check(self):
        if self.sparsity != "auto":
            config_lib.check(
                0 <= self.sparsity < 1, "compress.sparsity", "in [0, 1) or auto", self.sparsity
            )
        config_lib.check(
            len(self.candidates) >= 2 and all(0 < c < 1 for c in self.candidates),
            "compress.candidates",
            "to hold at least two sparsities in (0, 1)",
            self.candidates,
        )
        if self.qat_epochs > 0 and self.export not in ("int8", None):
            raise config_lib.ConfigError(
                "compress.qat_epochs > 0 trains the student for int8 inference, so it exports as "
                "int8. Use export=int8, or qat_epochs=0 for a float16/dynamic/float32 file. "
                f"Received: qat_epochs={self.qat_epochs}, export={self.export!r}."
            )
        if self.int8_io and self.export != "int8":
            raise config_lib.ConfigError(
                "compress.int8_io=true needs export=int8. "
                f"Received: int8_io=True, export={self.export!r}."
            )
        return self

    @property
    def prune_to(self) -> float | Literal["auto"] | None:
        """The sparsity to prune to, `"auto"`, or None when pruning is off."""
        return None if self.sparsity == 0 else self.sparsity

    @property
    def qat(self) -> bool:
        return self.qat_epochs > 0


class ClassifyConfig(ConfigModel):
    """Everything `recipes.classify` does; defaults reproduce the built-in digits run."""

    data: str | None = None
    image_size: int = Field(32, ge=8)
    channels: Literal[1, 3] = 3
    teacher: str | None = None
    classes: tuple[int, ...] | None = None
    offline: bool = False
    augment: bool = False
    epochs: int = Field(30, ge=1)
    teacher_epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.002, gt=0)
    test_fraction: float = Field(0.25, gt=0, lt=1)
    seed: int = 0
    latency_runs: int = Field(200, ge=1)
    output_dir: str = "runs/classify"
    restart: bool = False
    tracking: shared.TrackingSettings = shared.TrackingSettings(
        experiment="kd-keras-classification", register_as="classify-student"
    )
    teacher_model: ModelSettings = ModelSettings(width=2.0, depth=1, dropout=0.3)
    student_model: ModelSettings = ModelSettings(width=0.25, depth=1)
    distill: DistillSettings = DistillSettings()
    compress: CompressSettings = CompressSettings()

    @pydantic.model_validator(mode="after")
    def _check(self):
        if self.offline and self.augment:
            raise config_lib.ConfigError(
                "offline=true cannot be combined with augment=true: the cached teacher outputs "
                "describe un-augmented images, so they would be stale. Drop one of them. "
                "Received: offline=True, augment=True."
            )
        return self


def parse_config(argv: list[str] | None = None) -> ClassifyConfig:
    """Command line to a validated config: YAML file, then `--set`, then the named options."""
    parser = argparse.ArgumentParser(prog="python -m recipes.classify", description=__doc__)
    add_run_arguments(parser, "ClassifyConfig")
    parser.add_argument("--data", help="image folder, one subfolder per class (default: digits)")
    parser.add_argument("--teacher", help="saved .keras teacher (default: train one)")
    parser.add_argument("--classes", help="teacher classes for the student, e.g. 0,3,7")
    parser.add_argument("--offline", action="store_true", default=None, help="cache the teacher")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--schedule", help="constant, linear, cosine, exponential or step")
    parser.add_argument("--epochs", type=int)
    parser.add_argument(
        "--prune", metavar="SPARSITY|auto", help="final sparsity in [0, 1), 0 = off, or auto"
    )
    parser.add_argument(
        "--qat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="quantization-aware distillation before export (--no-qat: qat_epochs=0)",
    )
    parser.add_argument(
        "--export", choices=["float32", "float16", "dynamic", "int8", "none"], help="TFLite file"
    )
    args = parser.parse_args(argv)
    named = {
        "data": args.data,
        "teacher": args.teacher,
        "classes": None if args.classes is None else list(parse_classes(args.classes)),
        "offline": args.offline,
        "epochs": args.epochs,
        "distill.temperature": args.temperature,
        "distill.schedule": args.schedule,
        "compress.sparsity": _prune_value(args.prune),
        "compress.qat_epochs": None if args.qat in (None, True) else 0,
        "compress.export": args.export,
    }
    return config_from_args(ClassifyConfig, args, named)


def _prune_value(text: str | None):
    """`--prune 0.5` -> 0.5, `--prune auto` -> "auto"; anything else is left to validation."""
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        return text


# === Stages ===


def load_data(config: ClassifyConfig) -> tuple[data_lib.ImageDataset, data_lib.ImageDataset]:
    if config.data is None:
        dataset = data_lib.load_digits()
    else:
        dataset = data_lib.load_image_folder(config.data, config.image_size, config.channels)
    train, test = dataset.split(config.test_fraction, config.seed)
    return train, test


def load_teacher(path: str, dataset: data_lib.ImageDataset) -> keras.Model:
    """Loads a `.keras` teacher in safe mode and checks it fits the data."""
    teacher = load_model_file(path, option="teacher")
    expected = tuple(teacher.input_shape[1:])
    if expected != dataset.input_shape:
        raise ValueError(
            f"The teacher expects inputs of shape {expected} but the data has "
            f"{dataset.input_shape}. Set image_size/channels to match. Received: teacher={path}."
        )
    return teacher


@dataclasses.dataclass
class Inputs:
    """What `prepare` checked before training: the data, a given teacher, the run folder."""

    train: data_lib.ImageDataset
    test: data_lib.ImageDataset
    teacher: keras.Model | None
    subset: ClassSubset | None
    state: RunState


def prepare(config: ClassifyConfig) -> Inputs:
    """Loads and checks everything the run needs; every input error is raised here."""
    train, test = load_data(config)
    teacher = load_teacher(config.teacher, train) if config.teacher else None
    teacher_classes = teacher.output_shape[-1] if teacher is not None else train.num_classes
    subset = None
    if config.classes is not None:
        subset = ClassSubset(config.classes, tuple(train.class_names))
        if max(subset.class_indices) >= teacher_classes:
            raise ValueError(
                f"--classes asks for class {max(subset.class_indices)}, but the teacher has "
                f"{teacher_classes} classes. Received: classes={list(config.classes)}."
            )
    elif teacher is not None and teacher_classes != train.num_classes:
        raise ValueError(
            f"The teacher predicts {teacher_classes} classes but the data has "
            f"{train.num_classes} ({', '.join(train.class_names)}). Pass --classes to distill "
            f"a subset, or a teacher trained on these classes. Received: teacher={config.teacher}."
        )
    return Inputs(train, test, teacher, subset, run_state(config))


def _compile(model: keras.Model, config: ClassifyConfig, loss=True, learning_rate=None) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate or config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True) if loss else None,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def _fit(model, dataset, epochs: int, checkpoint_dir: Path, callbacks=()) -> dict:
    return training_record(*fit_resumable(model, dataset, epochs, checkpoint_dir, callbacks))


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, subset=None) -> float:
    logits = model.predict(x, batch_size=256, verbose=0)
    if subset is not None:
        logits = logits[:, list(subset.class_indices)]
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def run(config: ClassifyConfig, inputs: Inputs | None = None) -> dict:
    """Runs the recipe; returns the report (also written to `output_dir/report.json`).

    Stages finished by an earlier run in `output_dir` (with the same config) are reused; an
    interrupted one resumes from its last finished epoch.
    """
    inputs = inputs or prepare(config)
    train, test, teacher, subset, state = (
        inputs.train,
        inputs.test,
        inputs.teacher,
        inputs.subset,
        inputs.state,
    )
    output = Path(config.output_dir)
    keras.utils.set_random_seed(config.seed)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output / "config.yaml", yaml.safe_dump(config_lib.to_dict(config)).encode())
    session = tracking_session(config, "classification")

    def logged(stage: str) -> list:
        return [] if session is None else [session.callback(stage)]

    augmentation = data_lib.random_shift(1, config.seed) if config.augment else None
    rows = []
    teacher_trained = None
    if teacher is None:

        def train_teacher():
            model = build_cnn_classifier(
                train.input_shape,
                train.num_classes,
                config.teacher_model.width,
                config.teacher_model.depth,
                dropout=config.teacher_model.dropout,
                name="teacher",
            )
            _compile(model, config)
            full = data_lib.training_dataset(
                train.x, train.y, config.batch_size, config.seed, augmentation
            )
            return model, _fit(
                model,
                full,
                config.teacher_epochs,
                output / "checkpoints/teacher",
                logged("teacher"),
            )

        teacher, teacher_trained = reuse_or_train(
            state, "teacher", output / "teacher.keras", train_teacher
        )

    x_train, y_train, x_test, y_test = train.x, train.y, test.x, test.y
    if subset is not None:
        x_train, y_train = subset.select(train.x, train.y)
        x_test, y_test = subset.select(test.x, test.y)
    num_classes = subset.num_classes if subset else train.num_classes
    rows.append(_row("teacher", teacher, x_test, y_test, teacher_trained, subset))

    def new_student(name: str) -> keras.Model:
        size = config.student_model
        return build_cnn_classifier(
            train.input_shape, num_classes, size.width, size.depth, dropout=size.dropout, name=name
        )

    def train_scratch():
        keras.utils.set_random_seed(config.seed + 1)
        model = new_student("student_scratch")
        _compile(model, config)
        labelled = data_lib.training_dataset(
            x_train, y_train, config.batch_size, config.seed, augmentation
        )
        return model, _fit(
            model,
            labelled,
            config.epochs,
            output / "checkpoints/student_scratch",
            logged("scratch"),
        )

    scratch, trained = reuse_or_train(
        state, "scratch", output / "student_scratch.keras", train_scratch
    )
    rows.append(_row("student (scratch)", scratch, x_test, y_test, trained))

    keras.utils.set_random_seed(config.seed + 1)
    student = new_student("student")
    distiller, dataset = _distiller(
        config, teacher, student, subset, x_train, y_train, augmentation, output
    )

    def train_student():
        checkpoint = output / "checkpoints/student_distilled"
        return student, _fit(distiller, dataset, config.epochs, checkpoint, logged("distilled"))

    student_path = output / "student.keras"
    student, trained = reuse_or_train(state, "student", student_path, train_student)
    if subset is not None:
        save_class_mapping(student_path, subset)
    rows.append(_row("student (distilled)", student, x_test, y_test, trained))

    compression = None
    settings = config.compress
    if settings.prune_to is not None or settings.qat or settings.export is not None:
        keras.utils.set_random_seed(config.seed + 2)
        compression, compressed_rows = compress_student(
            config,
            teacher,
            student,
            subset,
            (x_train, y_train),
            (x_test, y_test),
            output,
            state,
            logged,
        )
        rows.extend(compressed_rows)

    report = {
        "task": "classification",
        "data": config.data or "sklearn digits (built-in)",
        "classes": None if subset is None else subset.to_json(),
        "train_examples": int(len(x_train)),
        "test_examples": int(len(x_test)),
        "rows": rows,
        "artifacts": {
            "teacher": str(output / "teacher.keras") if config.teacher is None else config.teacher,
            "student": str(student_path),
            "student_scratch": str(output / "student_scratch.keras"),
            **({} if compression is None else compression.pop("artifacts")),
        },
        "compression": compression,
    }
    # The report is on disk before tracking runs: a store failure cannot cost it.
    atomic_write_json(output / "report.json", report)
    if session is not None:
        report["mlflow"] = _record(session, config, report, distiller, x_train, x_test)
        atomic_write_json(output / "report.json", report)
    return report


def _record(session, config, report, distiller, x_train, x_test) -> dict:
    """Logs the finished run and registers the shipped `.tflite` (never raises on store errors)."""
    from kd_keras import tracking

    artifacts = {**report["artifacts"], "config": Path(config.output_dir) / "config.yaml"}
    tflite_path = report["artifacts"].get("student_tflite")
    tflite_row = report["rows"][-1] if tflite_path else {}
    exported = (report["compression"] or {}).get("export") or {}
    parity = (exported.get("parity") or {}).get("top1_agreement")
    tflite_metrics = {
        key: value
        for key, value in {
            "accuracy": tflite_row.get("accuracy"),
            "latency_ms": tflite_row.get("latency_ms"),
            "parity": parity,
        }.items()
        if value is not None
    }
    calibration = None
    if exported.get("mode") == "int8":
        calibration = {
            "dataset": report["data"],
            "split": "train",
            "examples": int(len(x_train)),
            "preprocessing": "same as training, no augmentation",
            "quantize_aware": bool(config.compress.qat),
        }
    record = session.finish(
        config_lib.to_dict(config),
        report,
        artifacts,
        tflite_path=tflite_path,
        register_as=config.tracking.register_as if tflite_path else None,
        input_example=x_test[:2],
        calibration=calibration,
        tflite_metrics=tflite_metrics,
        params={"distiller": tracking.describe_distiller(distiller)},
    )
    return run_summary(record)


def _distiller(
    config, teacher, student, subset, x_train, y_train, augmentation, output, epochs=None
):
    settings = config.distill
    epochs = config.epochs if epochs is None else epochs
    steps = epochs * int(np.ceil(len(x_train) / config.batch_size))
    terms = [
        LogitsDistillation(
            temperature=settings.temperature_schedule(steps),
            loss=settings.loss,
            teacher_class_indices=None if subset is None else subset.class_indices,
            name="logits_kd",
        )
    ]
    weights = [settings.logits_weight]
    if settings.hint_weight > 0:
        terms.append(
            FeatureDistillation(
                "features",
                compress.wrapped_layer_name(student, "features"),
                loss=settings.hint_loss,
                name="hint",
            )
        )
        weights.append(settings.hint_weight)
    if config.offline:
        cache = offline.compute_teacher_outputs(teacher, x_train)
        if not (output / "teacher_cache").exists():
            offline.save_teacher_cache(cache, output / "teacher_cache")
        distiller = Distiller(
            None,
            student,
            terms,
            weights,
            settings.student_loss_weight,
            teacher_output_shape=cache.output_shape,
        )
        dataset = offline.offline_dataset(
            x_train, y_train, cache, config.batch_size, seed=config.seed
        )
    else:
        distiller = Distiller(teacher, student, terms, weights, settings.student_loss_weight)
        dataset = data_lib.training_dataset(
            x_train, y_train, config.batch_size, config.seed, augmentation
        )
    _compile(distiller, config)
    return distiller, dataset


# === Compression ===


def compress_student(config, teacher, student, subset, train, test, output, state, logged=None):
    """Prunes and/or quantizes the distilled student with the teacher, then exports it.

    Pruning and QAT are stages of `state`: the pruned student is saved as
    `student_pruned.keras`, the QAT weights as `student_qat.weights.h5`; a rerun reuses them.

    Returns `(details, rows)`: what was done (chosen sparsity, curve, parity, I/O parameters,
    artifacts) and the table rows of the compressed Keras student and of the `.tflite` in LiteRT.
    """
    (x_train, y_train), (x_test, y_test) = train, test
    settings = config.compress
    details: dict = {"artifacts": {}}
    rows = []
    model, name_parts, seconds = student, [], 0.0
    steps_per_epoch = int(np.ceil(len(x_train) / config.batch_size))
    sparsity = settings.prune_to
    if sparsity == "auto":
        curve = _choose_sparsity(config, student, x_train, y_train)
        details["sparsity_curve"] = curve.as_dict()
        details["artifacts"].update(
            {f"sparsity_curve_{k}": v for k, v in compress.save_curve(curve, output).items()}
        )
        sparsity = curve.chosen if curve.chosen > 0 else None
    if sparsity is not None:
        # Polynomial ramp over the first 60% of fine-tuning; the rest recovers at full sparsity.
        frequency = max(1, int(0.6 * settings.prune_epochs * steps_per_epoch) // 10)
        pruned = compress.prune(
            model,
            sparsity,
            "polynomial",
            end_step=10 * frequency,
            frequency=frequency,
            exclude=settings.keep_dense,
        )

        def prune():
            trained = _fine_tune(
                config, teacher, pruned, subset, x_train, y_train, output, "pruned", logged
            )
            return compress.strip(pruned), trained

        model, trained = reuse_or_train(state, "pruned", output / "student_pruned.keras", prune)
        seconds += trained["seconds"]
        details["sparsity"] = compress.sparsity_report(model)
        name_parts.append(f"pruned {sparsity:.0%}")
    if settings.qat:
        qat = compress.quantize_aware(
            model,
            preserve_sparsity=sparsity is not None,
            calibration_data=np.array_split(x_train[: settings.calibration_images], 8),
        )
        trained = reuse_or_train_weights(
            state,
            "qat",
            qat,
            output / "student_qat.weights.h5",
            lambda: _fine_tune(
                config, teacher, qat, subset, x_train, y_train, output, "qat", logged
            ),
        )
        seconds += trained["seconds"]
        model = qat
        name_parts.append("QAT")
    if name_parts:
        name = f"student ({', '.join(name_parts)})"
        row = _row(name, model, x_test, y_test, {"seconds": seconds}, profiled=student)
        row["sparsity"] = _kernel_sparsity(model)
        row["size_bytes"] = None  # fake-quantized Keras model: its deployable size is the .tflite
        rows.append(row)
    if settings.export is not None:
        rows.append(_export(config, model, x_train, x_test, y_test, output, details))
    return details, rows


def _choose_sparsity(config, student, x_train, y_train) -> compress.SparsityCurve:
    """One-shot prune at each candidate, adaptive BN on 4 training batches, pick the knee.

    Scored on the training examples: the test set stays untouched for the final report.
    """
    settings = config.compress
    calibration = [
        x_train[i : i + config.batch_size]
        for i in range(0, min(len(x_train), 4 * config.batch_size), config.batch_size)
    ]
    sparsities, accuracies = compress.sparsity_curve(
        student,
        settings.candidates,
        lambda model: _accuracy(model, x_train, y_train),
        calibration,
    )
    return compress.choose_sparsity(sparsities, accuracies, settings.max_drop)


def _fine_tune(
    config, teacher, model, subset, x_train, y_train, output, stage: str, logged=None
) -> dict:
    """Distills into the compressed `model` (pruning step advanced when pruned)."""
    settings = config.compress
    epochs = settings.qat_epochs if stage == "qat" else settings.prune_epochs
    distiller, dataset = _distiller(
        config,
        teacher,
        model,
        subset,
        x_train,
        y_train,
        None,
        output,
        epochs=epochs,
    )
    _compile(distiller, config, learning_rate=settings.learning_rate)
    callbacks = [compress.UpdatePruningStep()] if compress.is_pruned(model) else []
    callbacks += [] if logged is None else logged(stage)
    return _fit(
        distiller,
        dataset,
        epochs,
        output / f"checkpoints/student_{stage}",
        callbacks,
    )


def _kernel_sparsity(model: keras.Model) -> float:
    """Fraction of zeros over the Conv/Dense kernels of a plain or quantization-aware model."""
    kernels = compress.quantized_kernels(model)
    if not kernels:
        return compress.sparsity_report(model)["total"]
    values = np.concatenate([k.numpy().reshape(-1) for k in kernels.values()])
    return float(np.mean(values == 0))


def _export(config, model, x_train, x_test, y_test, output, details) -> dict:
    """Writes `student_<mode>.tflite` (+ `.io.json`) and measures it in LiteRT."""
    settings = config.compress
    mode = settings.export
    path = output / f"student_{mode}.tflite"
    needs_calibration = mode == "int8" and not compress.is_quantize_aware(model)
    export.to_tflite(
        model,
        mode,
        # Calibration images go through the training preprocessing (no augmentation).
        representative_data=(x_train[: settings.calibration_images] if needs_calibration else None),
        int8_io=settings.int8_io,
        path=path,
    )
    size = export.tflite_size(path)
    details["export"] = {
        "mode": mode,
        "io": json.loads(export.io_json_path(path).read_text()),
        "parity": export.parity_report(model, path, x_test),
    }
    details["artifacts"]["student_tflite"] = str(path)
    details["artifacts"]["student_tflite_io"] = str(export.io_json_path(path))
    return {
        "model": f"student ({mode} TFLite, LiteRT)",
        "accuracy": export.evaluate_tflite(path, x_test, y_test),
        "size_bytes": size["bytes"],
        "gzip_bytes": size["gzip_bytes"],
        "latency_ms": export.tflite_latency(path, runs=config.latency_runs),
        "sparsity": _kernel_sparsity(model),
    }


def _row(name, model, x, y, trained, subset=None, profiled=None) -> dict:
    """A table row; `profiled` is the float model whose cost is reported (default `model`).

    `trained` is the stage's `training_record` (or `None` for a given teacher).
    """
    profile = profile_model(model if profiled is None else profiled)
    seconds = (trained or {}).get("seconds")
    return {
        "model": name,
        "accuracy": _accuracy(model, x, y, subset),
        "params": profile.params,
        "flops": profile.flops,
        "size_bytes": profile.size_bytes,
        "train_seconds": None if seconds is None else round(seconds, 2),
    }


COLUMNS = [
    ("model", "model", ""),
    ("accuracy", "accuracy", ".4f"),
    ("params", "params", ","),
    ("flops", "FLOPs", ","),
    ("size_bytes", "size (bytes)", ","),
    ("gzip_bytes", "gzip (bytes)", ","),
    ("sparsity", "sparsity", ".2f"),
    ("latency_ms", "LiteRT (ms)", ".4f"),
    ("train_seconds", "train (s)", ".1f"),
]


def main(argv: list[str] | None = None) -> int:
    outcome = parse_and_run(parse_config, prepare, run, argv)
    if outcome is None:
        return 2
    config, report = outcome
    print(format_table(report["rows"], COLUMNS))
    print_artifacts(config.output_dir, report)
    print_tracking(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
