"""The config sections every recipe shares, with one set of key names.

`recipes/configs/*.yaml` all have `teacher_model` / `student_model` (`ModelSettings`), `distill`
(`DistillSettings`), `compress` (`CompressSettings`) and `tracking` (`TrackingSettings`); each
task subclasses a section to add its own keys, never to rename a shared one.
"""

from __future__ import annotations

from typing import Literal, get_args

import pydantic
from pydantic import Field

from kd_keras import schedules
from kd_keras.config import ConfigError, ConfigModel

ScheduleName = Literal["constant", "linear", "cosine", "exponential", "step"]
#: kd-keras's own small backbones, then the `tf_keras.applications` ones
#: (`kd_keras.models.applications`).
ApplicationBackbone = Literal["mobilenet_v2", "mobilenet_v3_small", "resnet50", "efficientnet_b0"]
Backbone = Literal["resnet", "mobilenet", ApplicationBackbone]
ExportMode = Literal["float32", "float16", "dynamic", "int8"]


class ModelSettings(ConfigModel):
    """Size of a network: `width` multiplies every layer's channels, `depth` blocks per stage."""

    width: float = Field(1.0, gt=0)
    depth: int = Field(1, ge=1)


class BackboneSettings(ModelSettings):
    """A network with a choice of backbone.

    `resnet` and `mobilenet` are kd-keras's own small backbones (`width` and `depth` apply).
    `mobilenet_v2` and `mobilenet_v3_small` (students; `width` is their alpha) and `resnet50`
    and `efficientnet_b0` (teachers; width 1) are the `tf_keras.applications` networks
    (`depth` does not apply), with `weights`: `imagenet` (Keras downloads them on first use),
    null (random) or the path of a weights file of the headless network.
    """

    backbone: Backbone = "resnet"
    weights: str | None = None


def check_backbone(settings: ModelSettings, key: str, height: int, width: int, channels: int = 3):
    """Raises `ConfigError` for a backbone setting that could not build, before any training.

    Args:
        settings: a `teacher_model` or `student_model` section.
        key: its name in the config, used in the message.
        height: input height in pixels.
        width: input width in pixels.
        channels: input channels.
    """
    from kd_keras.models.applications import check_application, is_application

    backbone = getattr(settings, "backbone", None)
    weights = getattr(settings, "weights", None)
    if backbone is None or not is_application(backbone):
        if weights is not None:
            raise ConfigError(
                f"{key}.weights loads a tf_keras.applications backbone; {key}.backbone="
                f"{backbone!r} starts from random weights. Drop {key}.weights or choose a "
                f"backbone among {', '.join(get_args(ApplicationBackbone))}. "
                f"Received: {key}.weights={weights!r}."
            )
        return
    try:
        check_application(backbone, settings.width, weights, key)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if height % 32 or width % 32 or channels != 3:
        raise ConfigError(
            f"{key}.backbone={backbone!r} takes RGB images whose height and width are multiples "
            f"of 32 (its stride). Received: {height}x{width} with {channels} channel(s)."
        )


class DistillSettings(ConfigModel):
    """How the student learns from the teacher; the KD term weights are the task's.

    `temperature` is the starting temperature; a `schedule` other than constant moves it to
    `final_temperature` by the last training step (`kd_keras.schedules.from_name`).
    `student_loss_weight` weighs the student's own task loss.
    """

    temperature: float = Field(4.0, gt=0)
    final_temperature: float = Field(1.0, gt=0)
    schedule: ScheduleName = "constant"
    student_loss_weight: float = Field(1.0, ge=0)

    def temperature_schedule(self, total_steps: int) -> schedules.Schedule:
        """`temperature` at the first step to `final_temperature` at the last."""
        return schedules.from_name(
            self.schedule, self.temperature, self.final_temperature, total_steps
        )


class CompressSettings(ConfigModel):
    """Pruning to `sparsity` (0 = off) then QAT, each fine-tuned while distilling.

    `prune_epochs` and `qat_epochs` are the fine-tuning budgets (`qat_epochs: 0` exports with
    post-training int8 instead); `calibration_images` training images set the int8 ranges.
    `export` writes `student_<mode>.tflite`, measured in LiteRT (`null`: no file); `int8_io`
    makes an int8 file take and return int8 tensors; `camera_input` makes it take uint8 pixels
    as the camera gives them (no float preprocessing on the robot), with a float-input file
    measured beside it.
    `lowrank > 0` first factors every k×k conv into a k×1 and a 1×k conv of rank
    `lowrank · channels` (`kd_keras.compress.decompose`, exact SVD start; only where it saves
    parameters), then recovers for `lowrank_epochs` while distilling.
    """

    lowrank: float = Field(0.0, ge=0, le=1)
    lowrank_epochs: int = Field(2, ge=0)
    sparsity: float = Field(0.3, ge=0, lt=1)
    prune_epochs: int = Field(2, ge=0)
    qat_epochs: int = Field(2, ge=0)
    learning_rate: float = Field(0.0005, gt=0)
    calibration_images: int = Field(64, ge=1)
    export: ExportMode | None = "int8"
    int8_io: bool = False
    camera_input: bool = False

    @pydantic.model_validator(mode="after")
    def _check_export(self):
        if self.int8_io and self.export != "int8":
            raise ConfigError(
                "compress.int8_io=true needs export=int8. "
                f"Received: int8_io=True, export={self.export!r}."
            )
        if self.camera_input and self.export != "int8":
            raise ConfigError(
                "compress.camera_input=true makes a full-integer file take uint8 pixels, so it "
                f"needs export=int8. Received: camera_input=True, export={self.export!r}."
            )
        if self.qat_epochs > 0 and self.export not in ("int8", None):
            raise ConfigError(
                "compress.qat_epochs > 0 trains the student for int8 inference, so it exports as "
                "int8. Use export=int8, or qat_epochs=0 for a float16/dynamic/float32 file. "
                f"Received: qat_epochs={self.qat_epochs}, export={self.export!r}."
            )
        return self


class BudgetSettings(ConfigModel):
    """The `budget` student (`kd_keras.methods.budget`): per-conv widths learned to fit a budget.

    `student_model` with every prunable conv `start_width` times wider (in a residual backbone:
    the inner convs of each block) is distilled for `search_epochs` with a cost-weighted L1
    penalty of strength `penalty` on its BatchNorm scales; one global
    threshold on those scales then gives every prunable conv a width (at least `min_channels`)
    so the student costs at most `target` `measure` (`flops` or `params`; null: what the
    uniform-width `student_model` costs). The convs are cut one at a time, each cut followed by
    `cut_epochs` of distillation, and the student is then distilled for `epochs` like the others.
    """

    measure: Literal["flops", "params"] = "flops"
    target: int | None = Field(None, ge=1)
    start_width: float = Field(2.0, gt=1)
    penalty: float = Field(1e-3, ge=0)
    search_epochs: int = Field(10, ge=1)
    cut_epochs: int = Field(1, ge=0)
    min_channels: int = Field(2, ge=1)


class ProgressiveSettings(ConfigModel):
    """The `progressive` student (`kd_keras.methods.progressive`): blockwise, then end to end.

    Each student block learns to reproduce its teacher block's output for `block_epochs`, the
    blocks before it frozen, before `epochs` of distillation of the whole student.
    """

    block_epochs: int = Field(2, ge=1)


class TrackingSettings(ConfigModel):
    """The MLflow run: `uri` null means `MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db`."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "kd-keras"
    register_as: str | None = None


#: the `teacher` value that picks the task's shipped teacher when it fits the run, else trains one
AUTO = "auto"


def teacher_file(config) -> str | None:
    """The saved teacher `config.teacher` names, or `None` (`null` or `auto`: none given)."""
    return None if config.teacher in (None, "", AUTO) else config.teacher


class RunConfig(ConfigModel):
    """The keys `kd_keras.pipeline.run_pipeline` reads, the same in every recipe's config
    (each task's config also has `seed`, or `seeds` and the first as `seed`; its `distill` and
    `compress` sections extend the shared ones).

    `teacher` is a saved `.keras` teacher, `null` (train one for `teacher_epochs`) or `auto`:
    the task's shipped teacher when the run's teacher settings are those it was made with, else
    train one (`kd_keras.pipeline.builtin_teacher`); every
    student trains for `epochs` at `learning_rate`. A rerun in `output_dir` reuses the finished
    stages (`restart: true` trains everything again). `latency_runs` LiteRT inferences time each
    model; with `int8_costs` each trained network's row also gets the size and latency of its
    post-training full-int8 file (`int8_bytes`, `int8_latency_ms`). `strategy` spreads each
    training step over devices or worker processes (`kd_keras.pipeline.distribute`: `none`,
    `mirrored`, `multiworker` with `TF_CONFIG`). A `multiworker` worker waits `worker_timeout`
    seconds for the others to start, then stops with an error naming those that did not.
    `deterministic` runs TensorFlow's deterministic kernels, so the same config and seed give
    the same `report.json` on the same machine (`kd_keras.pipeline.determinism`).
    `unlabeled_data` is a folder of unlabelled images (subfolders read too), or `builtin` for
    the pool the task's built-in data generator writes; distilled students (never the scratch
    baseline) also train on it, `unlabeled_ratio` of its batches per labelled batch, each
    teaching through the KD terms alone (`kd_keras.unlabeled`). `unlabeled_mixup > 0` mixes
    each unlabelled batch pairwise with Beta(α, α) weights of that α before the teacher and
    the student see it (function matching; `kd_keras.unlabeled.mixup_batch`).
    """

    data: str | None = None
    unlabeled_data: str | None = None
    unlabeled_ratio: float = Field(1.0, gt=0)
    unlabeled_mixup: float = Field(0.0, ge=0)
    teacher: str | None = AUTO
    teacher_epochs: int = Field(30, ge=1)
    epochs: int = Field(30, ge=1)
    learning_rate: float = Field(0.001, gt=0)
    latency_runs: int = Field(100, ge=1)
    int8_costs: bool = True
    output_dir: str = "runs/kd"
    restart: bool = False
    strategy: Literal["none", "mirrored", "multiworker"] = "none"
    distill: DistillSettings = DistillSettings()
    compress: CompressSettings = CompressSettings()
    worker_timeout: float = Field(120.0, gt=0)
    deterministic: bool = True
    tracking: TrackingSettings = TrackingSettings()


__all__ = [
    "AUTO",
    "ApplicationBackbone",
    "Backbone",
    "BackboneSettings",
    "BudgetSettings",
    "CompressSettings",
    "DistillSettings",
    "ExportMode",
    "ModelSettings",
    "ProgressiveSettings",
    "RunConfig",
    "ScheduleName",
    "TrackingSettings",
    "check_backbone",
    "teacher_file",
]
