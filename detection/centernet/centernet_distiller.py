"""Detection distillation for CenterNet: heatmap, box and hint terms, and `CenterNetDistiller`.

The terms are ordinary `kd_keras.DistillationTerm`s that read named layers of the teacher and the
student and use the label targets (`y`, the dict of `encode_targets`) for positive-sample
retaining and object-region masks, so the core `Distiller` needs no detection code at all.
`CenterNetDistiller` only chooses the default terms and the default student loss.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tf_keras as keras

from detection.centernet.centernet_losses import CenterNetLoss, retained_binary_kd, weighted_l1
from detection.centernet.centernet_targets import as_target_dict
from kd_keras import schedules
from kd_keras.distiller import Distiller
from kd_keras.terms import DistillationTerm, FeatureDistillation

_PACKAGE = "detection"
REGIONS = ("gaussian", "centres")


def _check_same_shape(term, teacher_shape, student_shape):
    if teacher_shape[1:] != student_shape[1:]:
        raise ValueError(
            f"Term {term.name!r} needs teacher and student outputs of the same shape (same classes "
            "and output stride). Build both with the same num_classes and input size. Received: "
            f"teacher {term.teacher_layer!r} shape={tuple(teacher_shape)}, student "
            f"{term.student_layer!r} shape={tuple(student_shape)}."
        )


def _labels(term, labels) -> dict:
    try:
        return as_target_dict(labels)
    except ValueError as error:
        raise ValueError(f"Term {term.name!r} reads the label targets. {error}") from None


def object_region(labels, kind: str = "gaussian") -> tf.Tensor:
    """Where objects are, `[batch, H, W, 1]`: the label Gaussians (max over classes) or centres."""
    labels = as_target_dict(labels)
    if kind == "gaussian":
        return tf.reduce_max(tf.cast(labels["heatmap"], tf.float32), axis=-1, keepdims=True)
    return tf.cast(labels["size"][..., -1:], tf.float32)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HeatmapDistillation(DistillationTerm):
    """Binary (sigmoid) heatmap KD with early softening and positive-sample retaining.

    See `retained_binary_kd` for the formula. The temperature (number or `Schedule`) softens the
    logits of both networks before the sigmoid; the loss carries the T² factor.

    Args:
        temperature: T, a number or a `Schedule` (e.g. `Linear(4, 1, steps)`).
        positive_retaining: labelled centres keep target 1 whatever the teacher says.
        core_threshold: also retain the Gaussian cores (label ≥ this), or `None`.
        normalize: `"objects"` or `"mean"`.
        teacher_layer, student_layer: the heatmap-logit layers (default `"heatmap"`).
    """

    def __init__(
        self,
        temperature: float | schedules.Schedule | dict = 1.0,
        positive_retaining: bool = True,
        core_threshold: float | None = None,
        normalize: str = "objects",
        teacher_layer: str = "heatmap",
        student_layer: str = "heatmap",
        **kwargs,
    ):
        if core_threshold is not None and not 0 < core_threshold <= 1:
            raise ValueError(
                f"Expected core_threshold in (0, 1] or None. Received: {core_threshold=}."
            )
        if normalize not in ("objects", "mean"):
            raise ValueError(f"Expected normalize in ('objects', 'mean'). Received: {normalize=}.")
        super().__init__(teacher_layer, student_layer, temperature, **kwargs)
        self.positive_retaining = positive_retaining
        self.core_threshold = core_threshold
        self.normalize = normalize

    def build_for(self, teacher_shape, student_shape, teacher_source, student_source):
        _check_same_shape(self, teacher_shape, student_shape)
        super().build_for(teacher_shape, student_shape, teacher_source, student_source)

    def compute(self, teacher_output, student_output, labels, temperature):
        needs_labels = self.positive_retaining or self.normalize == "objects"
        heatmap = _labels(self, labels)["heatmap"] if needs_labels else None
        return retained_binary_kd(
            teacher_output,
            student_output,
            heatmap,
            temperature,
            self.positive_retaining,
            self.core_threshold,
            self.normalize,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            positive_retaining=self.positive_retaining,
            core_threshold=self.core_threshold,
            normalize=self.normalize,
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BoxDistillation(DistillationTerm):
    """Size or offset KD, masked to object regions: the student copies the teacher's regression.

    Formula (w the object region of the labels):
        loss = Σ_pixels w · Σ_c |s_c − t_c| / Σ_pixels w

    With `region="gaussian"`, `w` is the label Gaussian (max over classes): the teacher also
    teaches the regression around each centre, where the label gives none; `region="centres"`
    restricts it to the centres.

    Args:
        teacher_layer, student_layer: `"size"` or `"offset"` (the same layer name in both).
        region: `"gaussian"` or `"centres"`.
    """

    def __init__(
        self,
        teacher_layer: str = "size",
        student_layer: str | None = None,
        region: str = "gaussian",
        **kwargs,
    ):
        if region not in REGIONS:
            raise ValueError(f"Expected region in {REGIONS}. Received: region={region!r}.")
        super().__init__(teacher_layer, student_layer or teacher_layer, None, **kwargs)
        self.region = region

    def build_for(self, teacher_shape, student_shape, teacher_source, student_source):
        _check_same_shape(self, teacher_shape, student_shape)
        super().build_for(teacher_shape, student_shape, teacher_source, student_source)

    def compute(self, teacher_output, student_output, labels, temperature):
        region = object_region(_labels(self, labels), self.region)
        return weighted_l1(teacher_output, student_output, region)

    def get_config(self):
        config = super().get_config()
        config["region"] = self.region
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ObjectHintDistillation(FeatureDistillation):
    """FitNet hint on the neck, weighted toward object regions.

    Formula (A a learned 1×1 conv adapter, r the label Gaussian resized to the feature map):
        e = mean_c (A(f_s) − f_t)²,   w = 1 + object_weight · r
        loss = Σ_pixels w · e / Σ_pixels w

    `object_weight=0` is the plain FitNet L2 hint (Romero et al., 2015); larger values focus the
    imitation on the objects, as in fine-grained feature imitation for detectors (Wang et al.,
    "Distilling Object Detectors with Fine-grained Feature Imitation", 2019).
    """

    def __init__(
        self,
        teacher_layer: str = "neck",
        student_layer: str = "neck",
        object_weight: float = 1.0,
        adapter: str = "always",
        loss: str = "l2",
        **kwargs,
    ):
        if loss != "l2":
            raise ValueError(f"ObjectHintDistillation supports loss='l2'. Received: {loss=}.")
        if object_weight < 0:
            raise ValueError(f"Expected object_weight >= 0. Received: {object_weight=}.")
        super().__init__(teacher_layer, student_layer, loss=loss, adapter=adapter, **kwargs)
        self.object_weight = object_weight

    def compute(self, teacher_output, student_output, labels, temperature):
        if self.projection is not None:
            student_output = self.projection(student_output)
        error = tf.reduce_mean(
            tf.square(tf.cast(student_output, tf.float32) - tf.cast(teacher_output, tf.float32)),
            axis=-1,
            keepdims=True,
        )
        weights = tf.ones_like(error)
        if self.object_weight > 0:
            region = object_region(_labels(self, labels))
            if region.shape[1:3] != error.shape[1:3]:
                region = tf.image.resize(region, tf.shape(error)[1:3])
            weights = weights + self.object_weight * region
        return tf.reduce_sum(error * weights, axis=[1, 2, 3]) / tf.reduce_sum(
            weights, axis=[1, 2, 3]
        )

    def get_config(self):
        config = super().get_config()
        config["object_weight"] = self.object_weight
        return config


def centernet_distillation_terms(
    heatmap_weight: float = 0.005,
    temperature: float | schedules.Schedule = 2.0,
    positive_retaining: bool = True,
    core_threshold: float | None = None,
    size_weight: float = 0.0,
    offset_weight: float = 0.0,
    box_region: str = "gaussian",
    hint_weight: float = 0.5,
    hint_object_weight: float = 1.0,
    student_layer_name: Callable[[str], str] | None = None,
) -> tuple[list[DistillationTerm], list[float]]:
    """The detection KD terms whose weight is > 0, with their weights (an ablation switch each).

    The heatmap term sums its binary KL over every location and class, divided by the number of
    objects; unlike the focal loss nothing down-weights the many easy background locations, so
    its weight is small (0.005 keeps it near the focal loss's scale at 128×128 inputs). Box KD is
    off by default: the teacher's size/offset maps are only trained at centres, and imitating them
    over the Gaussian regions gave no reliable AP gain in the built-in ablation.

    Every term reads the same layer (`heatmap`, `size`, `offset`, `neck`) in teacher and student;
    `student_layer_name` maps a name to the student's when TF-MOT has renamed its layers (e.g.
    `lambda name: kd_keras.compress.wrapped_layer_name(qat_student, name)`).
    """
    rename = student_layer_name or (lambda name: name)
    candidates = [
        (
            heatmap_weight,
            lambda: HeatmapDistillation(
                temperature,
                positive_retaining,
                core_threshold,
                student_layer=rename("heatmap"),
                name="heatmap_kd",
            ),
        ),
        (size_weight, lambda: BoxDistillation("size", rename("size"), box_region, name="size_kd")),
        (
            offset_weight,
            lambda: BoxDistillation("offset", rename("offset"), box_region, name="offset_kd"),
        ),
        (
            hint_weight,
            lambda: ObjectHintDistillation(
                "neck", rename("neck"), object_weight=hint_object_weight, name="hint"
            ),
        ),
    ]
    terms, weights = [], []
    for weight, make in candidates:
        if weight < 0:
            raise ValueError(f"Expected distillation weights >= 0. Received: {weight=}.")
        if weight > 0:
            terms.append(make())
            weights.append(float(weight))
    return terms, weights


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CenterNetDistiller(Distiller):
    """A `Distiller` with CenterNet defaults: the detection KD terms and `CenterNetLoss`.

    Training data yields `(images, targets)` with the target dict of `encode_targets`; the terms
    read the label heatmap from it (a dict or the `(heatmap, size, offset)` tuple the input
    pipeline yields). Everything else (teacher frozen, schedules, metrics,
    distribution) is the core Distiller's.

    Example:
        >>> terms, weights = centernet_distillation_terms(temperature=2.0, hint_weight=0.5)
        >>> distiller = CenterNetDistiller(teacher, student, terms, weights)
        >>> distiller.compile(keras.optimizers.Adam(1e-3))  # student loss: CenterNetLoss()
        >>> distiller.fit(detection_dataset(train, (128, 128), 16), epochs=10)
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=1.0,
        name: str = "centernet_distiller",
        **kwargs,
    ):
        if distillation_losses is None:
            distillation_losses, distillation_loss_weights = centernet_distillation_terms()
        super().__init__(
            teacher,
            student,
            distillation_losses,
            distillation_loss_weights,
            student_loss_weight,
            name=name,
            **kwargs,
        )

    def compile(self, optimizer="rmsprop", loss="default", metrics=None, **kwargs):
        """As `Distiller.compile`; the student loss defaults to `CenterNetLoss()`."""
        super().compile(
            optimizer, CenterNetLoss() if loss == "default" else loss, metrics, **kwargs
        )
