"""Keypoint (CenterNet-style) detection KD as a `kd_keras.pipeline.Task`.

`DetectionTask(config)` loads a COCO dataset (the built-in shapes on photos, generated on first
use, or the user's images and instances JSON) and gives the pipeline CenterNet models, the
focal + box losses, the heatmap / box / hint KD terms (`CenterNetDistiller`), COCOeval AP in
Keras and LiteRT, and pictures of each model's detections for MLflow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import tf_keras as keras

from detection import data as data_lib
from detection import distillation, models
from detection.centernet import OUTPUT_STRIDE, CenterNetDistiller, CenterNetLoss
from detection.data import detection_dataset, load_images
from detection.data.synthetic_shapes import UNLABELED
from detection.evaluation import evaluate_detector, keras_predictor
from detection.litert import HEAD_ROLES, LiteRTDetector
from detection.visualize import detection_pictures
from kd_keras import compress
from kd_keras.images import read_image
from kd_keras.losses import global_batch_loss
from kd_keras.methods import BUDGET, PROGRESSIVE
from kd_keras.pipeline import (
    DeploySpec,
    Stage,
    Student,
    Task,
    Training,
    check_batch_size,
    table_columns,
)
from kd_keras.pipeline.fingerprint import file_digest, file_listing
from kd_keras.pipeline.progress import log

#: Boxes a robot keeps by default (`bundle.json` decoder; `Detector(score_threshold=...)` and
#: the runtime command line override it). COCOeval scores every box above 0.01 instead.
DEPLOY_SCORE_THRESHOLD = 0.3


class DetectionTask(Task):
    """Detection for the shared pipeline; `config` is a `detection.config.DetectConfig`."""

    name = "detection"
    headline = "AP"
    metric_keys = ("AP", "AP50")
    columns = table_columns(("AP", "AP50", "AP75"))
    methods = (BUDGET, PROGRESSIVE)
    # `python -m recipes.teacher detect` makes it: the recipe's teacher from seed 0.
    builtin_teacher_dir = Path(__file__).parent / "teachers"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.train, self.val, self._description = data_lib.load_data(config)
        check_batch_size(config.batch_size, len(self.train), "training images")
        self.size = (config.image_size, config.image_size)
        self.val_images = load_images(self.val, self.size)
        self.steps_per_epoch = max(1, len(self.train) // config.batch_size)
        warning = data_lib.small_object_warning(self.train, config.image_size, OUTPUT_STRIDE)
        if warning is not None:
            log.warning(warning)

    def read_unlabeled(self, path: Path) -> np.ndarray:
        """An unlabelled image as the training inputs: resized to `image_size`², in [0, 1]."""
        image = read_image(path)
        if image.shape[:2] != self.size:
            image = cv2.resize(image, self.size[::-1], interpolation=cv2.INTER_AREA)
        return image.astype(np.float32) / 255.0

    def builtin_unlabeled(self) -> Path:
        """The built-in shapes' `unlabeled/` images."""
        if self.config.data is not None:
            return super().builtin_unlabeled()
        return Path(self.config.builtin_dir) / UNLABELED

    @property
    def description(self) -> str:
        return self._description

    def summary(self) -> dict:
        return {
            "classes": list(self.train.class_names),
            "train_images": len(self.train),
            "val_images": len(self.val),
            "skipped_annotations": len(self.train.issues) + len(self.val.issues),
        }

    def data_fingerprint(self) -> dict:
        config = self.config
        if config.data is None:
            marker = Path(config.builtin_dir) / "dataset.json"
            return {"generator": json.loads(marker.read_text())}
        fingerprint = {"annotations": file_digest(config.annotations)}
        records = self.train.records + ([] if config.val_data else self.val.records)
        fingerprint["images"] = file_listing([r.path for r in records], config.data)
        if config.val_data is not None:
            fingerprint["val_annotations"] = file_digest(config.val_annotations)
            paths = [r.path for r in self.val.records]
            fingerprint["val_images"] = file_listing(paths, config.val_data)
        return fingerprint

    def check_teacher(self, teacher: keras.Model, path: str) -> None:
        expected = (*self.size, 3)
        names = [layer.name for layer in teacher.layers]
        if tuple(teacher.input_shape[1:]) != expected or "heatmap" not in names:
            raise ValueError(
                f"Expected a CenterNet teacher (detection.centernet.build_centernet) with input "
                f"{expected}. Set image_size to match. Received: teacher={path} with input "
                f"{tuple(teacher.input_shape[1:])}."
            )
        classes = teacher.get_layer("heatmap").output.shape[-1]
        if classes != self.train.num_classes:
            raise ValueError(
                f"The teacher predicts {classes} classes but the data has "
                f"{self.train.num_classes}. Received: teacher={path}."
            )

    def build(self, role: str, name: str, student: Student | None = None) -> keras.Model:
        return models.build_detector(self.config, role, self.train.num_classes, name)

    def students(self) -> list[Student]:
        """The default students, with one per KD part (`ablation`) before the distilled one."""
        scratch, distilled, *compact = super().students()
        ablation = [
            Student(
                f"student_{only}",
                f"{only} KD only",
                f"student_{only}.keras",
                variant=only,
                seed=self.config.seed,
            )
            for only in (distillation.ABLATION if self.config.ablation else ())
        ]
        return [scratch, *ablation, distilled, *compact]

    def block_boundaries(self, teacher: keras.Model, student: keras.Model):
        """The backbone's stem and its stride-4, 8 and 16 stages."""
        return models.stage_boundaries()

    def budget_scope(self, layer_name: str) -> bool:
        """The budget applies to the backbone (stem and stages), not the neck or heads."""
        return models.in_backbone(layer_name)

    # --- training ---

    def labelled_steps(self, stage: Stage) -> int:
        """Labelled batches per epoch: one pass over the training images, or more passes
        when `epochs` of them would give a teacher or student fewer than `min_steps`."""
        if stage.compressing:
            return self.steps_per_epoch
        return max(self.steps_per_epoch, math.ceil(self.config.min_steps / stage.epochs))

    def _data(self, stage: Stage):
        """`(dataset, steps_per_epoch)`: one pass per epoch (`None` steps), or with `min_steps`
        a stream the epochs share, `labelled_steps` batches each."""
        # A new dataset per training: every student sees the same batches in the same order.
        config = self.config
        data = detection_dataset(
            self.train,
            self.size,
            config.batch_size,
            training=True,
            augment=config.augment,
            seed=config.seed,
        )
        steps = self.labelled_steps(stage)
        if steps == self.steps_per_epoch:
            return data, None
        return data.repeat(), steps

    def _decaying(self, learning_rate: float, steps: int) -> keras.optimizers.Optimizer:
        """Cosine decay to 5% over `steps`, after `warmup_steps` of linear warmup from 0."""
        warmup = min(self.config.warmup_steps, steps // 2)
        decay = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else learning_rate,
            max(1, steps - warmup),
            alpha=0.05,
            warmup_target=learning_rate if warmup else None,
            warmup_steps=warmup,
        )
        return keras.optimizers.Adam(decay)

    def plain(self, model: keras.Model, stage: Stage) -> Training:
        losses, weights = CenterNetLoss().per_head_losses()
        losses = [global_batch_loss(loss) for loss in losses]
        optimizer = self._decaying(stage.learning_rate, stage.epochs * self.labelled_steps(stage))
        model.compile(optimizer, losses, loss_weights=weights)
        return Training(model, *self._data(stage))

    def kd_terms(self, stage: Stage, student: keras.Model) -> tuple[list, list]:
        """Heatmap, box and hint KD (`distill.*`); an ablation student keeps one part."""
        steps = stage.epochs * self.batches_per_epoch(self.labelled_steps(stage))
        rename = distillation.student_layer_name(student)
        return distillation.detection_kd_terms(self.config.distill, steps, rename, stage.variant)

    def data(self, stage: Stage):
        return self._data(stage)

    def distilled(self, teacher: keras.Model, student: keras.Model, stage: Stage) -> Training:
        """Decaying learning rate for the students, constant while compressing; the unlabelled
        pool's batches mixed among the labelled ones."""
        settings = self.config.distill
        terms, weights = self.kd_terms(stage, student)
        distiller = CenterNetDistiller(
            teacher, student, terms, weights, student_loss_weight=settings.student_loss_weight
        )
        labelled = self.labelled_steps(stage)
        if stage.compressing:
            distiller.compile(keras.optimizers.Adam(stage.learning_rate))
        else:
            steps = stage.epochs * self.batches_per_epoch(labelled)
            distiller.compile(self._decaying(stage.learning_rate, steps))
        data, steps_per_epoch = self._data(stage)
        if self.unlabeled is None:
            return Training(distiller, data, steps_per_epoch)
        # A stream shared by the epochs gets each epoch's mix; one pass per epoch gets one.
        epochs = 1 if steps_per_epoch is None else stage.epochs
        mixed = self.with_unlabeled(data, stage, labelled, epochs=epochs)
        return Training(
            distiller, mixed, None if steps_per_epoch is None else self.batches_per_epoch(labelled)
        )

    # --- evaluation ---

    def _evaluate(self, predictor) -> dict:
        return evaluate_detector(predictor, self.val, self.size, images=self.val_images)

    def evaluate(self, model: keras.Model) -> dict:
        return self._evaluate(keras_predictor(model))

    def deploy_spec(self) -> DeploySpec:
        """CenterNet heads; boxes above `DEPLOY_SCORE_THRESHOLD`, at most 100 per frame."""
        return DeploySpec(
            task="detection",
            classes=tuple(self.train.class_names),
            heads=HEAD_ROLES,
            decoder={
                "stride": OUTPUT_STRIDE,
                "top_k": 100,
                "score_threshold": DEPLOY_SCORE_THRESHOLD,
            },
        )

    def evaluate_tflite(self, path: Path) -> dict:
        return self._evaluate(LiteRTDetector(path))

    # --- compression ---

    def prune(self, student: keras.Model, sparsity: float) -> keras.Model:
        """Constant sparsity; masks update every few steps, at least twice an epoch."""
        frequency = max(1, min(10, self.steps_per_epoch // 2))
        return compress.prune(student, sparsity, frequency=frequency)

    def calibration_images(self) -> np.ndarray:
        # Activation ranges from training images (not the validation set).
        subset = self.train.subset(self.config.compress.calibration_images)
        return load_images(subset, self.size) / 255.0

    # --- report ---

    def input_example(self) -> np.ndarray:
        return (self.val_images[:1] / 255.0).astype(np.float32)

    def pictures(self, folder: Path, models) -> dict[str, Path]:
        predictors = {
            "teacher": keras_predictor(models["teacher"]),
            "student": keras_predictor(models["student"]),
        }
        if models.get("tflite"):
            predictors["int8"] = LiteRTDetector(models["tflite"])
        return detection_pictures(folder, predictors, self.val, self.val_images, self.size)
