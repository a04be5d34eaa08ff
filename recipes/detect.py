"""`python -m recipes.detect`: CenterNet teacher, scratch and distilled students, int8, COCOeval.

With no arguments it generates the built-in shapes-on-photos COCO dataset (if absent), trains a
teacher, a student from scratch and a distilled student with the same budget, optionally prunes
and quantization-aware fine-tunes the distilled student (still distilling; `compress.*`), exports
it to full-int8 TFLite, scores everything with COCOeval (the int8 model running in LiteRT) and
prints the table.
`--data DIR --annotations FILE` trains on a real COCO-format dataset; `--teacher PATH` reuses a
saved teacher. Every option is also a config key (`--config FILE`, `--set key=value`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pydantic
import tensorflow as tf
import tf_keras as keras
import yaml
from pydantic import Field

from detection.centernet import CenterNetLoss, build_centernet
from detection.centernet.centernet_distiller import (
    CenterNetDistiller,
    centernet_distillation_terms,
)
from detection.data import (
    CocoDataset,
    DatasetError,
    detection_dataset,
    ensure_shapes_dataset,
    load_coco_dataset,
    load_images,
)
from detection.evaluation import evaluate_detector, keras_predictor
from detection.litert import LiteRTDetector
from detection.visualize import detection_pictures
from kd_keras import compress
from kd_keras import config as config_lib
from kd_keras import settings as shared
from kd_keras.config import ConfigModel
from kd_keras.export import tflite_latency, tflite_size, to_tflite
from kd_keras.io import atomic_write_bytes, atomic_write_json
from kd_keras.models import load_model_file
from kd_keras.pipeline import (
    check_batch_size,
    fit_resumable,
    reuse_or_train,
    run_state,
    training_record,
)
from kd_keras.profile import profile_model
from kd_keras.report import format_table
from kd_keras.run_state import RunState
from recipes.common import (
    add_run_arguments,
    config_from_args,
    parse_and_run,
    print_artifacts,
    print_tracking,
    run_summary,
    tracking_session,
)


class DistillSettings(shared.DistillSettings):
    """Detection KD components; a weight of 0 switches a component off.

    `temperature` softens the heatmap logits of both networks (T² scale); with a `schedule` other
    than constant it moves to `final_temperature` over training. `positive_retaining` keeps the
    labelled centres (and, with `core_threshold`, the Gaussian cores) as hard positives. Box KD
    (`size_weight`, `offset_weight`) is off by default: it gave no reliable gain in the built-in
    ablation.
    """

    temperature: float = Field(2.0, gt=0)
    heatmap_weight: float = Field(0.005, ge=0)
    positive_retaining: bool = True
    core_threshold: float | None = Field(None, gt=0, le=1)
    size_weight: float = Field(0.0, ge=0)
    offset_weight: float = Field(0.0, ge=0)
    box_region: Literal["gaussian", "centres"] = "gaussian"
    hint_weight: float = Field(0.5, ge=0)
    hint_object_weight: float = 1.0

    def terms(self, total_steps: int, student_layer_name=None, only: str | None = None):
        """The KD terms and weights; `only` trains one component (`heatmap`, `box` or `hint`)."""
        weights = {
            "heatmap_weight": self.heatmap_weight,
            "size_weight": self.size_weight,
            "offset_weight": self.offset_weight,
            "hint_weight": self.hint_weight,
        }
        if only is not None:
            # One component alone, at its configured weight or, when it is off, a standard one.
            keep = {"heatmap": ("heatmap_weight",), "box": ("size_weight", "offset_weight")}
            keep["hint"] = ("hint_weight",)
            standard = {"heatmap_weight": 0.005, "size_weight": 0.1, "offset_weight": 1.0}
            standard["hint_weight"] = 0.5
            weights = {
                k: ((v or standard[k]) if k in keep[only] else 0.0) for k, v in weights.items()
            }
        return centernet_distillation_terms(
            temperature=self.temperature_schedule(total_steps),
            positive_retaining=self.positive_retaining,
            core_threshold=self.core_threshold,
            box_region=self.box_region,
            hint_object_weight=self.hint_object_weight,
            student_layer_name=student_layer_name,
            **weights,
        )


class CompressSettings(shared.CompressSettings):
    """Pruning (skipped at sparsity 0) then QAT (skipped at 0 epochs), both while distilling.

    QAT starts from activation ranges calibrated on `calibration_images` training images (TF-MOT's
    own start, [-6, 6] moved 0.1% per step, would clip the box sizes for the whole short run);
    with `qat_epochs: 0` the same images calibrate post-training full-int8 instead.
    """


class DetectConfig(ConfigModel):
    """Everything `recipes.detect` does; defaults reproduce the built-in run."""

    data: str | None = None
    annotations: str | None = None
    val_data: str | None = None
    val_annotations: str | None = None
    val_fraction: float = Field(0.2, gt=0, lt=1)
    on_bad_annotations: Literal["raise", "skip"] = "raise"
    builtin_dir: str = "runs/detect_data/shapes"
    builtin_train: int = Field(480, ge=1)
    builtin_val: int = Field(120, ge=1)
    image_size: int = 128
    augment: bool = True
    teacher: str | None = None
    teacher_epochs: int = Field(30, ge=1)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(0.004, gt=0)
    seed: int = 0
    ablation: bool = False
    latency_runs: int = Field(100, ge=1)
    output_dir: str = "runs/detect"
    restart: bool = False
    tracking: shared.TrackingSettings = shared.TrackingSettings(
        experiment="kd-keras-detection", register_as="detect-student"
    )
    teacher_model: shared.BackboneSettings = shared.BackboneSettings(width=1.0, depth=2)
    student_model: shared.BackboneSettings = shared.BackboneSettings(width=0.5, depth=1)
    distill: DistillSettings = DistillSettings()
    compress: CompressSettings = CompressSettings()

    @pydantic.model_validator(mode="after")
    def _check(self):
        config_lib.check(
            self.image_size >= 32 and self.image_size % 16 == 0,
            "image_size",
            "a multiple of 16, at least 32",
            self.image_size,
        )
        if (self.data is None) != (self.annotations is None):
            raise config_lib.ConfigError(
                "A real dataset needs both --data DIR (images) and --annotations FILE (COCO "
                f"JSON). Received: data={self.data!r}, annotations={self.annotations!r}."
            )
        if (self.val_data is None) != (self.val_annotations is None):
            raise config_lib.ConfigError(
                "A validation set needs both val_data and val_annotations. Received: "
                f"val_data={self.val_data!r}, val_annotations={self.val_annotations!r}."
            )
        return self


def parse_config(argv: list[str] | None = None) -> DetectConfig:
    """Command line to a validated config: YAML file, then `--set`, then the named options."""
    parser = argparse.ArgumentParser(prog="python -m recipes.detect", description=__doc__)
    add_run_arguments(parser, "DetectConfig")
    parser.add_argument("--data", help="COCO images folder (default: the built-in dataset)")
    parser.add_argument("--annotations", help="COCO instances JSON for --data")
    parser.add_argument("--teacher", help="saved .keras CenterNet teacher (default: train one)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--ablation", action="store_true", default=None)
    args = parser.parse_args(argv)
    named = {
        "data": args.data,
        "annotations": args.annotations,
        "teacher": args.teacher,
        "epochs": args.epochs,
        "ablation": args.ablation,
        "distill.temperature": args.temperature,
    }
    return config_from_args(DetectConfig, args, named)


# === Stages ===


def load_data(config: DetectConfig) -> tuple[CocoDataset, CocoDataset, str]:
    """Train and validation sets (generating the built-in one if needed) and a description."""
    on_error = config.on_bad_annotations
    if config.data is None:
        paths = ensure_shapes_dataset(
            config.builtin_dir,
            num_train=config.builtin_train,
            num_val=config.builtin_val,
            image_size=config.image_size,
            seed=0,
        )
        train = load_coco_dataset(*paths["train"], on_error=on_error)
        val = load_coco_dataset(*paths["val"], on_error=on_error)
        return train, val, f"built-in shapes on photos ({config.builtin_dir})"
    train = load_coco_dataset(config.data, config.annotations, on_error=on_error)
    if config.val_data is not None:
        val = load_coco_dataset(config.val_data, config.val_annotations, on_error=on_error)
        val = val.aligned_to(train)  # class index i means the same category in both
    else:
        train, val = _split(train, config.val_fraction, config.seed)
    if val.num_boxes == 0:
        raise DatasetError(
            f"The validation split ({len(val)} images) has no boxes, so AP is undefined. Pass "
            "val_data/val_annotations with labelled images, or raise val_fraction. "
            f"Received: val_fraction={config.val_fraction}."
        )
    return train, val, f"{config.data} ({config.annotations})"


def _split(dataset: CocoDataset, fraction: float, seed: int) -> tuple[CocoDataset, CocoDataset]:
    """Splits images (not boxes) at random into train and validation sets."""
    order = np.random.default_rng(seed).permutation(len(dataset.records))
    count = max(1, int(round(len(order) * fraction)))
    return dataset.select(sorted(order[count:])), dataset.select(sorted(order[:count]))


def load_teacher(path: str, config: DetectConfig, num_classes: int) -> keras.Model:
    """Loads a `.keras` CenterNet teacher in safe mode and checks it fits the data."""
    teacher = load_model_file(path, option="teacher")
    expected = (config.image_size, config.image_size, 3)
    names = [layer.name for layer in teacher.layers]
    if tuple(teacher.input_shape[1:]) != expected or "heatmap" not in names:
        raise ValueError(
            f"Expected a CenterNet teacher (detection.centernet.build_centernet) with input "
            f"{expected}. Set image_size to match. Received: teacher={path} with input "
            f"{tuple(teacher.input_shape[1:])}."
        )
    if teacher.get_layer("heatmap").output.shape[-1] != num_classes:
        raise ValueError(
            f"The teacher predicts {teacher.get_layer('heatmap').output.shape[-1]} classes but "
            f"the data has {num_classes}. Received: teacher={path}."
        )
    return teacher


@dataclasses.dataclass
class Inputs:
    """What `prepare` checked before training: the data, a given teacher, the run folder."""

    train: CocoDataset
    val: CocoDataset
    description: str
    teacher: keras.Model | None
    state: RunState


def prepare(config: DetectConfig) -> Inputs:
    """Loads and checks everything the run needs; every input error is raised here."""
    train, val, description = load_data(config)
    check_batch_size(config.batch_size, len(train), "training images")
    teacher = load_teacher(config.teacher, config, train.num_classes) if config.teacher else None
    return Inputs(train, val, description, teacher, run_state(config))


def _optimizer(learning_rate: float, steps: int) -> keras.optimizers.Optimizer:
    decay = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, steps), alpha=0.05)
    return keras.optimizers.Adam(decay)


def _fit(model, dataset, epochs: int, checkpoint_dir: Path, callbacks=()) -> dict:
    return training_record(*fit_resumable(model, dataset, epochs, checkpoint_dir, callbacks))


def train_plain(
    model, train_ds, epochs, learning_rate, steps_per_epoch, checkpoint_dir, callbacks=()
) -> dict:
    losses, weights = CenterNetLoss().per_head_losses()
    model.compile(_optimizer(learning_rate, epochs * steps_per_epoch), losses, loss_weights=weights)
    return _fit(model, train_ds, epochs, checkpoint_dir, callbacks)


def _record(session, config, report, val_images, description, pictures) -> dict:
    """Logs the finished run and registers the int8 student (never raises on store errors)."""
    shipped = report["rows"][-1]
    record = session.finish(
        config_lib.to_dict(config),
        report,
        {**report["artifacts"], "config": Path(config.output_dir) / "config.yaml"},
        tflite_path=report["artifacts"]["student_int8"],
        register_as=config.tracking.register_as,
        input_example=val_images[:1],
        calibration={
            "dataset": description,
            "split": "train",
            "preprocessing": "same resize and normalisation as training, no augmentation",
            "examples": config.compress.calibration_images,
            "quantize_aware": config.compress.qat_epochs > 0,
        },
        tflite_metrics={
            "AP": shipped["AP"],
            "AP50": shipped["AP50"],
            "latency_ms": shipped["latency_ms"],
        },
        headline="AP",
        images=pictures,
    )
    return run_summary(record)


def train_distilled(
    teacher,
    student,
    settings: DistillSettings,
    train_ds,
    epochs,
    learning_rate,
    steps_per_epoch,
    checkpoint_dir,
    only=None,
    callbacks=(),
    constant_lr=False,
) -> dict:
    steps = epochs * steps_per_epoch
    rename = None
    if compress.is_pruned(student) or compress.is_quantize_aware(student):

        def rename(name):
            return compress.wrapped_layer_name(student, name)

    terms, weights = settings.terms(steps, rename, only)
    distiller = CenterNetDistiller(
        teacher, student, terms, weights, student_loss_weight=settings.student_loss_weight
    )
    optimizer = (
        keras.optimizers.Adam(learning_rate) if constant_lr else _optimizer(learning_rate, steps)
    )
    distiller.compile(optimizer)
    return _fit(distiller, train_ds, epochs, checkpoint_dir, callbacks)


def run(config: DetectConfig, inputs: Inputs | None = None) -> dict:
    """Runs the recipe; returns the report (also written to `output_dir/report.json`).

    Stages finished by an earlier run in `output_dir` (with the same config) are reused; an
    interrupted one resumes from its last finished epoch.
    """
    inputs = inputs or prepare(config)
    train, val, description, state = inputs.train, inputs.val, inputs.description, inputs.state
    output = Path(config.output_dir)
    keras.utils.set_random_seed(config.seed)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output / "config.yaml", yaml.safe_dump(config_lib.to_dict(config)).encode())
    session = tracking_session(config, "detection")

    def logged(stage: str) -> list:
        return [] if session is None else [session.callback(stage)]

    size = (config.image_size, config.image_size)

    def train_ds() -> tf.data.Dataset:
        # A new dataset per training: every student sees the same batches in the same order.
        return detection_dataset(
            train, size, config.batch_size, training=True, augment=config.augment, seed=config.seed
        )

    steps = max(1, len(train) // config.batch_size)
    val_images = load_images(val, size)
    checkpoints = output / "checkpoints"

    def evaluate(predictor) -> dict:
        return evaluate_detector(predictor, val, size, images=val_images)

    def row(name, model, trained=None, **extra) -> dict:
        profile = profile_model(model)
        trained = trained or {}
        return {
            "model": name,
            **evaluate(keras_predictor(model)),
            "params": profile.params,
            "flops": profile.flops,
            "size_bytes": profile.size_bytes,
            "train_seconds": trained.get("seconds"),
            "train_loss": trained.get("loss"),
            **extra,
        }

    def build(role: str, model_size: shared.BackboneSettings) -> keras.Model:
        return build_centernet(
            (*size, 3),
            train.num_classes,
            model_size.backbone,
            model_size.width,
            model_size.depth,
            name=role,
        )

    def plain(role: str, model_size: shared.BackboneSettings, epochs: int, stage: str):
        def train_model():
            model = build(role, model_size)
            trained = train_plain(
                model,
                train_ds(),
                epochs,
                config.learning_rate,
                steps,
                checkpoints / stage,
                logged(stage),
            )
            return model, trained

        return train_model

    def distilled(role: str, stage: str, only=None, log=True):
        def train_model():
            keras.utils.set_random_seed(config.seed + 1)
            student = build(role, config.student_model)
            trained = train_distilled(
                teacher,
                student,
                config.distill,
                train_ds(),
                config.epochs,
                config.learning_rate,
                steps,
                checkpoints / stage,
                only=only,
                callbacks=logged("distilled") if log else (),
            )
            return student, trained

        return train_model

    rows = []
    teacher, teacher_trained = inputs.teacher, None
    if teacher is None:
        teacher, teacher_trained = reuse_or_train(
            state,
            "teacher",
            output / "teacher.keras",
            plain("teacher", config.teacher_model, config.teacher_epochs, "teacher"),
        )
    teacher_tflite = output / "teacher_float32.tflite"
    to_tflite(teacher, "float32", path=teacher_tflite)
    rows.append(
        row(
            "teacher",
            teacher,
            teacher_trained,
            latency_ms=tflite_latency(teacher_tflite, runs=config.latency_runs),
        )
    )

    keras.utils.set_random_seed(config.seed + 1)
    scratch, trained = reuse_or_train(
        state,
        "scratch",
        output / "student_scratch.keras",
        plain("student_scratch", config.student_model, config.epochs, "scratch"),
    )
    rows.append(row("student (scratch)", scratch, trained))

    if config.ablation:
        for only in ("heatmap", "box", "hint"):
            stage = f"student_{only}"
            student, trained = reuse_or_train(
                state, stage, output / f"{stage}.keras", distilled(stage, stage, only, log=False)
            )
            rows.append(row(f"student + {only} KD", student, trained))

    student, trained = reuse_or_train(
        state, "student", output / "student.keras", distilled("student", "student")
    )
    rows.append(row("student (distilled)", student, trained))

    compress_report = compress_and_export(
        config, teacher, student, train, train_ds, steps, output, state
    )
    int8_path = output / "student_int8.tflite"
    int8_row = {
        "model": "student (distilled, int8 LiteRT)",
        **evaluate(LiteRTDetector(int8_path)),
        "params": rows[-1]["params"],
        "flops": rows[-1]["flops"],
        "size_bytes": tflite_size(int8_path)["bytes"],
        "train_seconds": compress_report["seconds"],
        "latency_ms": tflite_latency(int8_path, runs=config.latency_runs),
    }
    rows.append(int8_row)

    report = {
        "task": "detection",
        "data": description,
        "classes": list(train.class_names),
        "train_images": len(train),
        "val_images": len(val),
        "skipped_annotations": len(train.issues) + len(val.issues),
        "rows": rows,
        "compression": compress_report,
        "reused_stages": state.reused,
        "artifacts": {
            "teacher": str(output / "teacher.keras") if config.teacher is None else config.teacher,
            "teacher_tflite": str(teacher_tflite),
            "student": str(output / "student.keras"),
            "student_scratch": str(output / "student_scratch.keras"),
            "student_int8": str(int8_path),
        },
    }
    # The report is on disk before tracking runs: a store failure cannot cost it.
    atomic_write_json(output / "report.json", report)
    if session is not None:
        predictors = {
            "teacher": keras_predictor(teacher),
            "student": keras_predictor(student),
            "int8": LiteRTDetector(int8_path),
        }
        try:
            pictures = detection_pictures(output / "pictures", predictors, val, val_images, size)
        except Exception as error:  # noqa: BLE001 - a picture never costs the run
            warnings.warn(f"Validation pictures not drawn: {error}", stacklevel=2)
            pictures = {}
        report["mlflow"] = _record(session, config, report, val_images, description, pictures)
        atomic_write_json(output / "report.json", report)
    return report


def compress_and_export(config, teacher, student, train, train_ds, steps, output, state) -> dict:
    """Prune and QAT the distilled student while distilling, then export full-int8 TFLite.

    Each step is a stage of `state`: the pruned student is saved as `student_pruned.keras`, and
    the QAT fine-tune ends in `student_int8.tflite`; a rerun reuses what finished.
    """
    settings = config.compress
    size = (config.image_size, config.image_size)
    model = student
    report = {"prune_sparsity": 0.0, "qat": False, "seconds": 0.0}
    if settings.sparsity > 0 and settings.prune_epochs > 0:

        def prune():
            # Mask updates every few steps, at least twice an epoch on small datasets.
            frequency = max(1, min(10, steps // 2))
            pruned = compress.prune(student, settings.sparsity, frequency=frequency)
            trained = train_distilled(
                teacher,
                pruned,
                config.distill,
                train_ds(),
                settings.prune_epochs,
                settings.learning_rate,
                steps,
                output / "checkpoints" / "student_pruned",
                callbacks=[compress.UpdatePruningStep()],
                constant_lr=True,
            )
            return compress.strip(pruned), trained

        model, trained = reuse_or_train(state, "pruned", output / "student_pruned.keras", prune)
        report["prune_sparsity"] = round(compress.sparsity_report(model)["total"], 4)
        report["seconds"] += trained["seconds"]
    int8_path = output / "student_int8.tflite"
    done = state.done("int8")
    if done is not None:
        report["qat"] = settings.qat_epochs > 0
        report["seconds"] = round(report["seconds"] + done["seconds"], 1)
        report["qat_loss"] = done.get("loss")
        return report
    start = time.perf_counter()
    # Activation ranges from training images (not the validation set), for QAT or post-training.
    calibration = load_images(train.subset(settings.calibration_images), size) / 255.0
    if settings.qat_epochs > 0:
        batches = tf.data.Dataset.from_tensor_slices(calibration).batch(config.batch_size)
        model = compress.quantize_aware(model, calibration_data=batches)
        qat_loss = train_distilled(
            teacher,
            model,
            config.distill,
            train_ds(),
            settings.qat_epochs,
            settings.learning_rate,
            steps,
            output / "checkpoints" / "student_qat",
            constant_lr=True,
        )
        report["qat"] = True
        report["qat_loss"] = qat_loss["loss"]
    if compress.is_quantize_aware(model):
        calibration = None  # QAT learned the ranges
    to_tflite(model, "int8", representative_data=calibration, path=int8_path)
    seconds = round(time.perf_counter() - start, 1)
    state.finish("int8", file=int8_path, seconds=seconds, loss=report.get("qat_loss"))
    report["seconds"] = round(report["seconds"] + seconds, 1)
    return report


COLUMNS = [
    ("model", "model", ""),
    ("AP", "AP", ".3f"),
    ("AP50", "AP50", ".3f"),
    ("AP75", "AP75", ".3f"),
    ("params", "params", ","),
    ("flops", "FLOPs", ","),
    ("size_bytes", "size (bytes)", ","),
    ("latency_ms", "LiteRT (ms)", ".2f"),
    ("train_seconds", "train (s)", ".0f"),
]


def main(argv: list[str] | None = None) -> int:
    # A bad dataset raises AnnotationError, a ValueError: reported like a bad option.
    outcome = parse_and_run(parse_config, prepare, run, argv)
    if outcome is None:
        return 2
    config, report = outcome
    print(format_table(report["rows"], COLUMNS))
    if report["skipped_annotations"]:
        print(f"\nskipped {report['skipped_annotations']} bad annotation(s) or image(s)")
    print_artifacts(config.output_dir, report)
    print_tracking(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
