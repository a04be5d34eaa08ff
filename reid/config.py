"""`recipes.reid`'s config: the shared sections plus re-identification's own keys.

`ReIDConfig()` is the built-in synthetic Market-1501 run; `kd_keras.config.from_dict` validates
a YAML file or overrides into it (unknown keys and out-of-range values are refused, naming the
key).
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic
from pydantic import Field

from kd_keras.pipeline import settings as shared

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
    logits_weight·T²·KL + embedding_weight·embedding KD`; compression fine-tunes at T = 1.
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
    model instead.
    """

    prune_epochs: int = Field(5, ge=0)
    qat_epochs: int = Field(5, ge=0)
    calibration_images: int = Field(256, ge=1)


class ReIDConfig(shared.RunConfig):
    """Everything `recipes.reid` does; defaults reproduce the built-in run (< 10 min, 2 cores).

    `data` is a Market-1501 folder (null: the built-in synthetic one, written in `output_dir`).
    Each of `seeds` trains its own students; the teacher and compression use the first.
    """

    image_height: int = Field(64, ge=16)
    image_width: int = Field(32, ge=8)
    p: int = Field(8, ge=2)
    k: int = Field(4, ge=2)
    steps_per_epoch: int = Field(60, ge=1)
    teacher_epochs: int = Field(10, ge=1)
    teacher_steps_per_epoch: int = Field(100, ge=1)
    learning_rate: float = Field(0.003, gt=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    margin: float = Field(0.3, ge=0)
    augment: bool = True
    seeds: tuple[Annotated[int, Field(ge=0, lt=2**31)], ...] = Field((0,), min_length=1)
    output_dir: str = "runs/reid"
    tracking: shared.TrackingSettings = shared.TrackingSettings(
        experiment="kd-keras-reid", register_as="reid-student"
    )
    teacher_model: ModelSettings = ModelSettings(backbone="resnet", width=0.5, embedding_dim=64)
    student_model: ModelSettings = ModelSettings(backbone="mobilenet", width=0.5, embedding_dim=32)
    distill: DistillSettings = DistillSettings()
    compress: CompressSettings = CompressSettings()

    @pydantic.model_validator(mode="after")
    def _check(self):
        for key in ("teacher_model", "student_model"):
            shared.check_backbone(getattr(self, key), key, self.image_height, self.image_width)
        return self

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.image_height, self.image_width)

    @property
    def seed(self) -> int:
        """The seed of the teacher and of compression: the first of `seeds`."""
        return self.seeds[0]
