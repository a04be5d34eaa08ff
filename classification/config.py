"""`recipes.classify`'s config: the shared sections plus classification's own keys.

`ClassifyConfig()` is the built-in digits run; `kd_keras.config.from_dict` validates a YAML file
or overrides into it (unknown keys and out-of-range values are refused, naming the key).
"""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import Field

from kd_keras import config as config_lib
from kd_keras.pipeline import settings as shared

Method = Literal["lma", "robust", "okddip", "budget", "progressive", "dkd"]


class ModelSettings(shared.ModelSettings):
    """The classifier: `backbone` `cnn` (kd-keras's VGG-like CNN, sized by `width` and `depth`)
    or a `tf_keras.applications` network (see `shared.BackboneSettings`: `mobilenet_v2` and
    `mobilenet_v3_small` with `width` as alpha, `resnet50`, `efficientnet_b0`; `weights`).
    `dropout` before its classifier; `activation` of the CNN's blocks (`relu`, or `lma`: a
    learnable piecewise-linear `kd_keras.models.LMA` that starts as ReLU)."""

    backbone: Literal["cnn", shared.ApplicationBackbone] = "cnn"
    weights: str | None = None
    dropout: float = Field(0.0, ge=0, lt=1)
    activation: Literal["relu", "lma"] = "relu"


class DistillSettings(shared.DistillSettings):
    """How the student learns from the teacher.

    `temperature` is the starting temperature; with a `schedule` other than constant it moves to
    `final_temperature` over the whole training. The loss is
    `student_loss_weight·CE + logits_weight·T²·KD` (Hinton et al. use 0.1 and 0.9).
    `hint_weight > 0` adds a FitNet hint on the `features` layer. `teacher_outputs` says what
    a given teacher's last layer gives: `logits`, or `probabilities` for a teacher ending in a
    softmax (the usual Keras classifier); the soft targets are then taken from its
    probabilities (`kd_keras.terms.LogitsDistillation`).

    Robust KD (`robust: true` for the shipped student and its pruning and QAT, or the `robust`
    method for one more row): the student trains on PGD examples of L∞ radius
    `adversarial_epsilon` (`adversarial_steps` steps) built against itself while the teacher
    sees the clean images, the loss mixing clean and adversarial as
    `(1 − adversarial_weight)·L(x) + adversarial_weight·L(x')`
    (`kd_keras.methods.AdversarialDistiller`). Every row then also reports its accuracy under
    a 10-step PGD attack of the same radius.

    The `okddip` method trains its student with `peers` more students of the same size and no
    teacher (online KD with diverse peers, `kd_keras.methods.OnlineDistiller`).

    `loss: dkd` (or the `dkd` method, for one more row) is decoupled KD (Zhao et al. 2022,
    `kd_keras.losses.decoupled_kd`): the soft-target KL split into its target part, weighted
    `dkd_target_weight`, and its non-target part, weighted `dkd_non_target_weight`.
    """

    student_loss_weight: float = Field(0.1, ge=0)
    logits_weight: float = Field(0.9, ge=0)
    loss: Literal["kl", "soft_ce", "dkd"] = "kl"
    dkd_target_weight: float = Field(1.0, ge=0)
    dkd_non_target_weight: float = Field(8.0, ge=0)
    teacher_outputs: Literal["logits", "probabilities"] = "logits"
    hint_weight: float = Field(0.0, ge=0)
    hint_loss: Literal["l2", "cross_entropy"] = "l2"
    robust: bool = False
    adversarial_epsilon: float = Field(0.1, gt=0)
    adversarial_steps: int = Field(5, ge=1)
    adversarial_weight: float = Field(0.5, ge=0, le=1)
    peers: int = Field(3, ge=2)


class CompressSettings(shared.CompressSettings):
    """How the distilled student becomes the file that ships.

    `sparsity` is the final sparsity of every Conv/Dense kernel (0 = no pruning; `auto` = the
    knee of the accuracy-vs-sparsity curve over `candidates`, after adaptive BN, or the highest
    candidate within `max_drop` of the unpruned accuracy). Pruning ramps up along a polynomial
    schedule during `prune_epochs` epochs of distillation from the teacher; `qat_epochs` of
    quantization-aware distillation follow (sparsity-preserving after pruning; 0 = none).
    `keep_dense` names layers left unpruned: by default the first conv, whose few weights
    (3·3·channels per filter) carry most of the accuracy lost when pruning it. With `lowrank`,
    the factored student recovers with a cross-entropy hint on `features` (knowledge
    pre-regression) of `lowrank_hint_weight` beside the logits KD.
    """

    sparsity: float | Literal["auto"] = 0.5
    prune_epochs: int = Field(8, ge=1)
    qat_epochs: int = Field(8, ge=0)
    learning_rate: float = Field(0.001, gt=0)
    calibration_images: int = Field(256, ge=1)
    keep_dense: tuple[str, ...] = ("stage1_block1_conv",)
    candidates: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    max_drop: float | None = Field(None, ge=0)
    lowrank_hint_weight: float = Field(1.0, ge=0)

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
        return self


class ClassifyConfig(shared.RunConfig):
    """Everything `recipes.classify` does; defaults reproduce the built-in digits run.

    `data` is an image folder (one subfolder per class) read at `image_size` with `channels`;
    null means the `builtin` set: scikit-learn's digits, or `shapes` (`classification.synthetic`:
    `builtin_per_class` images of each of 6 shapes on photos, written to `builtin_dir`, and
    with `unlabeled_data: builtin` `builtin_unlabeled` more without labels), a task where a
    small student trails the teacher. Each of `methods` adds a row: a student distilled on the
    same budget with that compact-student method (`lma`: LMA activations; `robust`: robust KD on
    PGD examples; `okddip`: online KD among peers, no teacher; see `DistillSettings`;
    `budget`: per-conv widths learned to fit `budget`; `progressive`: blockwise KD, see
    `progressive`; `dkd`: decoupled KD, see `DistillSettings`).
    """

    builtin: Literal["digits", "shapes"] = "digits"
    builtin_dir: str = "runs/classify_data/shapes"
    builtin_per_class: int = Field(1000, ge=2)
    builtin_unlabeled: int = Field(3000, ge=1)
    image_size: int = Field(32, ge=8)
    channels: Literal[1, 3] = 3
    methods: tuple[Method, ...] = ()
    classes: tuple[int, ...] | None = None
    offline: bool = False
    augment: bool = False
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.002, gt=0)
    test_fraction: float = Field(0.25, gt=0, lt=1)
    seed: int = Field(0, ge=0, lt=2**31)
    latency_runs: int = Field(200, ge=1)
    output_dir: str = "runs/classify"
    tracking: shared.TrackingSettings = shared.TrackingSettings(
        experiment="kd-keras-classification", register_as="classify-student"
    )
    teacher_model: ModelSettings = ModelSettings(width=2.0, depth=1, dropout=0.3)
    student_model: ModelSettings = ModelSettings(width=0.25, depth=1)
    distill: DistillSettings = DistillSettings()
    compress: CompressSettings = CompressSettings()
    budget: shared.BudgetSettings = shared.BudgetSettings()
    progressive: shared.ProgressiveSettings = shared.ProgressiveSettings()

    @pydantic.model_validator(mode="after")
    def _check(self):
        digits = self.data is None and self.builtin == "digits"
        side, channels = (8, 1) if digits else (self.image_size, self.channels)
        for key in ("teacher_model", "student_model"):
            try:
                shared.check_backbone(getattr(self, key), key, side, side, channels)
            except config_lib.ConfigError as error:
                if not digits:
                    raise
                raise config_lib.ConfigError(
                    f"{error} The built-in digits are 8x8 grey images: use builtin: shapes "
                    "(RGB, image_size 32) or an image folder."
                ) from None
        own = [m for m in ("lma", "budget", "progressive") if m in self.methods]
        if self.student_model.backbone != "cnn" and (own or self.student_model.activation == "lma"):
            raise config_lib.ConfigError(
                f"methods {own or ['lma']} (and student_model.activation: lma) reshape kd-keras's "
                f"own CNN; student_model.backbone={self.student_model.backbone!r} is a "
                "tf_keras.applications network. Use backbone: cnn for them, or drop them."
            )
        if self.teacher_model.backbone != "cnn" and "progressive" in self.methods:
            raise config_lib.ConfigError(
                "methods: [progressive] pairs the teacher's CNN stages with the student's; "
                f"teacher_model.backbone={self.teacher_model.backbone!r} has other stages. Use "
                "backbone: cnn for both, or drop progressive."
            )
        if self.offline and self.unlabeled_mixup:
            raise config_lib.ConfigError(
                "offline=true cannot be combined with unlabeled_mixup > 0: the cached teacher "
                "outputs describe the unmixed images. Drop one of them. "
                f"Received: offline=True, unlabeled_mixup={self.unlabeled_mixup}."
            )
        if self.offline and self.augment:
            raise config_lib.ConfigError(
                "offline=true cannot be combined with augment=true: the cached teacher outputs "
                "describe un-augmented images, so they would be stale. Drop one of them. "
                "Received: offline=True, augment=True."
            )
        if self.offline and (self.distill.robust or "robust" in self.methods):
            raise config_lib.ConfigError(
                "offline=true cannot be combined with robust KD (distill.robust or methods: "
                "[robust]): its adversarial examples need the student online. Drop one of them."
            )
        if self.offline and "progressive" in self.methods:
            raise config_lib.ConfigError(
                "offline=true cannot be combined with methods: [progressive]: its blocks learn "
                "the teacher's intermediate outputs, which a cache of final outputs does not hold. "
                "Drop one of them."
            )
        return self
