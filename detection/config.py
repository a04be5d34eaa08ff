"""`recipes.detect`'s config: the shared sections plus detection's own keys.

`DetectConfig()` is the built-in shapes run; `kd_keras.config.from_dict` validates a YAML file
or overrides into it (unknown keys and out-of-range values are refused, naming the key).
"""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import Field

from kd_keras import config as config_lib
from kd_keras.models.applications import is_application
from kd_keras.pipeline import settings as shared

MODEL_KEYS = ("teacher_model", "student_model")


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


class CompressSettings(shared.CompressSettings):
    """Pruning (skipped at sparsity 0) then QAT (skipped at 0 epochs), both while distilling.

    QAT starts from activation ranges calibrated on `calibration_images` training images (TF-MOT's
    own start, [-6, 6] moved 0.1% per step, would clip the box sizes for the whole short run);
    with `qat_epochs: 0` the same images calibrate post-training full-int8 instead.
    """


class DetectConfig(shared.RunConfig):
    """Everything `recipes.detect` does; defaults reproduce the built-in run.

    `data` + `annotations` are a COCO images folder and instances JSON (null: the built-in
    shapes, `builtin_train` + `builtin_val` images written to `builtin_dir`; with
    `unlabeled_data: builtin` also `builtin_unlabeled` images without annotations).
    `builtin_mode: small_dense` writes 200 px images with 6 to 14 boxes of about 40 px each,
    like a small set of real photos of packed parts (with e.g. `builtin_train: 104`).
    Each of `methods` adds a student row distilled with that compact-student method: `budget`
    (per-conv backbone widths learned to fit `budget`) or `progressive` (the backbone's stages
    learn the teacher's one at a time, see `progressive`).
    A teacher or student trains for at least `min_steps` steps: on a small set, where `epochs`
    passes would give fewer, each epoch takes more passes over the images (the built-in set's
    30 batches per epoch reach 900 in 30 epochs). The learning rate rises linearly from 0 over
    `warmup_steps`, then follows a cosine decay to 5% of `learning_rate`. The built-in teacher
    trains 60 epochs with 150 warmup steps: without the warmup, or in 30 epochs, its AP depends
    on the seed (`benchmarks/teacher_convergence.py detect`). The students train 60 epochs too:
    at 30, scratch and distilled students alike were far from converged.
    """

    annotations: str | None = None
    val_data: str | None = None
    val_annotations: str | None = None
    val_fraction: float = Field(0.2, gt=0, lt=1)
    on_bad_annotations: Literal["raise", "skip"] = "raise"
    builtin_dir: str = "runs/detect_data/shapes"
    builtin_train: int = Field(480, ge=1)
    builtin_val: int = Field(120, ge=1)
    builtin_unlabeled: int = Field(1440, ge=1)
    builtin_mode: Literal["standard", "small_dense"] = "standard"
    image_size: int = 128
    augment: bool = True
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(0.004, gt=0)
    teacher_epochs: int = Field(60, ge=1)
    epochs: int = Field(60, ge=1)
    min_steps: int = Field(900, ge=0)
    warmup_steps: int = Field(150, ge=0)
    seed: int = Field(0, ge=0, lt=2**31)
    ablation: bool = False
    methods: tuple[Literal["budget", "progressive"], ...] = ()
    latency_runs: int = Field(100, ge=1)
    output_dir: str = "runs/detect"
    tracking: shared.TrackingSettings = shared.TrackingSettings(
        experiment="kd-keras-detection", register_as="detect-student"
    )
    teacher_model: shared.BackboneSettings = shared.BackboneSettings(width=1.0, depth=2)
    student_model: shared.BackboneSettings = shared.BackboneSettings(width=0.5, depth=1)
    distill: DistillSettings = DistillSettings()
    compress: CompressSettings = CompressSettings()
    budget: shared.BudgetSettings = shared.BudgetSettings()
    progressive: shared.ProgressiveSettings = shared.ProgressiveSettings()

    @pydantic.model_validator(mode="after")
    def _check(self):
        config_lib.check(
            self.image_size >= 32 and self.image_size % 16 == 0,
            "image_size",
            "a multiple of 16, at least 32",
            self.image_size,
        )
        for key in MODEL_KEYS:
            shared.check_backbone(getattr(self, key), key, self.image_size, self.image_size)
        refused = [
            (method, key)
            for method, keys in (("budget", ("student_model",)), ("progressive", MODEL_KEYS))
            if method in self.methods
            for key in keys
            if is_application(getattr(self, key).backbone)
        ]
        if refused:
            method, key = refused[0]
            raise config_lib.ConfigError(
                f"methods: [{method}] reshapes kd-keras's own backbones (budget narrows the "
                "student's convs, progressive pairs the teacher's stages with the student's); "
                f"{key}.backbone={getattr(self, key).backbone!r} is a tf_keras.applications "
                f"network. Use backbone: resnet or mobilenet there, or drop {method}."
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
