"""CenterNet losses: penalty-reduced focal loss on the heatmap and masked L1 on size and offset.

Pure functions on tensors returning one value per image (`[batch]`), plus thin `keras.losses.Loss`
classes. Each head's target carries what its loss needs (the regression targets end with a mask
channel), so the per-head losses also work in a plain `model.compile(loss={...})`.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from detection.centernet.centernet_targets import as_target_dict
from kd_keras import losses as kd_losses

_PACKAGE = "detection"


#: The score from which a heatmap peak counts as an object (`teacher_peaks`).
PEAK_THRESHOLD = 0.3


def _count_per_image(mask: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.reshape(mask, [tf.shape(mask)[0], -1]), axis=-1)


def heatmap_focal_loss(
    heatmap_true: tf.Tensor, heatmap_logits: tf.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> tf.Tensor:
    """Penalty-reduced pixel-wise focal loss (Zhou et al., "Objects as Points", 2019).

    Formula (p = σ(z), y the Gaussian target, N the number of centres y = 1 in the image):
        loss = −1/max(1, N) · Σ_pixels,classes { (1 − p)^α · log p                 if y = 1
                                                 (1 − y)^β · p^α · log(1 − p)        otherwise }

    The `(1 − y)^β` factor reduces the penalty near a centre, where the Gaussian is high. Logs are
    computed from logits (`log σ(z) = −softplus(−z)`), so they stay finite.

    Args:
        heatmap_true: `[batch, H, W, classes]` targets in [0, 1], exactly 1 at centres.
        heatmap_logits: `[batch, H, W, classes]` predicted logits.
        alpha: focusing exponent.
        beta: penalty-reduction exponent.

    Returns:
        `[batch]` loss per image.
    """
    y = tf.cast(heatmap_true, tf.float32)
    z = tf.cast(heatmap_logits, tf.float32)
    p = tf.sigmoid(z)
    positive = tf.cast(tf.equal(y, 1.0), tf.float32)
    positive_term = tf.pow(1.0 - p, alpha) * -tf.nn.softplus(-z)
    negative_term = tf.pow(1.0 - y, beta) * tf.pow(p, alpha) * -tf.nn.softplus(z)
    per_pixel = -(positive * positive_term + (1.0 - positive) * negative_term)
    total = _count_per_image(per_pixel)
    return total / tf.maximum(1.0, _count_per_image(positive))


def masked_l1_loss(target_and_mask: tf.Tensor, prediction: tf.Tensor) -> tf.Tensor:
    """L1 regression at object centres only.

    Formula (m the mask channel of the target, t the other channels):
        loss = Σ_pixels m · Σ_c |ŷ_c − t_c| / max(1, Σ_pixels m)

    Args:
        target_and_mask: `[batch, H, W, k + 1]`: `k` target channels then the 0/1 mask.
        prediction: `[batch, H, W, k]`.

    Returns:
        `[batch]` loss per image.
    """
    target_and_mask = tf.cast(target_and_mask, tf.float32)
    target, mask = target_and_mask[..., :-1], target_and_mask[..., -1:]
    error = tf.abs(tf.cast(prediction, tf.float32) - target) * mask
    return _count_per_image(error) / tf.maximum(1.0, _count_per_image(mask))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HeatmapFocalLoss(keras.losses.Loss):
    """`keras.losses.Loss` around `heatmap_focal_loss`."""

    def __init__(self, alpha=2.0, beta=4.0, reduction=keras.losses.Reduction.AUTO, name="focal"):
        super().__init__(reduction=reduction, name=name)
        self.alpha = alpha
        self.beta = beta

    def call(self, y_true, y_pred):
        return heatmap_focal_loss(y_true, y_pred, self.alpha, self.beta)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedL1Loss(keras.losses.Loss):
    """`keras.losses.Loss` around `masked_l1_loss`; `y_true` ends with the mask channel."""

    def __init__(self, reduction=keras.losses.Reduction.AUTO, name="masked_l1"):
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true, y_pred):
        return masked_l1_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CenterNetLoss(keras.losses.Loss):
    """The whole CenterNet task loss on a `(targets, outputs)` pair.

    Formula:
        loss = w_hm · focal(heatmap) + w_size · L1(size) + w_off · L1(offset)

    `y_true` holds the batched targets of `encode_targets` (the dict, or the tuple
    `(heatmap, size, offset)`); `y_pred` the model's outputs `[heatmap, size, offset]` (or a
    dict). CenterNet's weights are 1, 0.1, 1.
    This is the student loss given to a `Distiller`; a plain model can equally be compiled with
    `per_head_losses()`.
    """

    def __init__(
        self,
        heatmap_weight: float = 1.0,
        size_weight: float = 0.1,
        offset_weight: float = 1.0,
        reduction=keras.losses.Reduction.AUTO,
        name="centernet_loss",
    ):
        super().__init__(reduction=reduction, name=name)
        self.heatmap_weight = heatmap_weight
        self.size_weight = size_weight
        self.offset_weight = offset_weight

    def call(self, y_true, y_pred):
        y_true, y_pred = as_target_dict(y_true), as_target_dict(y_pred)
        return (
            self.heatmap_weight * heatmap_focal_loss(y_true["heatmap"], y_pred["heatmap"])
            + self.size_weight * masked_l1_loss(y_true["size"], y_pred["size"])
            + self.offset_weight * masked_l1_loss(y_true["offset"], y_pred["offset"])
        )

    def per_head_losses(self) -> tuple[list, list]:
        """`(loss, loss_weights)` lists, in output order, for `model.compile` on a plain model.

        Lists (not dicts keyed by layer name) keep working after TF-MOT renames the output
        layers (`quant_heatmap`); train on `(images, (heatmap, size, offset))`.
        """
        losses = [HeatmapFocalLoss(), MaskedL1Loss(name="size_l1"), MaskedL1Loss(name="offset_l1")]
        return losses, [self.heatmap_weight, self.size_weight, self.offset_weight]

    def get_config(self):
        return {
            **super().get_config(),
            "heatmap_weight": self.heatmap_weight,
            "size_weight": self.size_weight,
            "offset_weight": self.offset_weight,
        }


def retained_binary_kd(
    teacher_logits: tf.Tensor,
    student_logits: tf.Tensor,
    label_heatmap: tf.Tensor | None = None,
    temperature: float | tf.Tensor = 1.0,
    positive_retaining: bool = True,
    core_threshold: float | None = None,
    normalize: str = "objects",
) -> tf.Tensor:
    """Heatmap distillation: per-pixel, per-class binary KD with positive-sample retaining.

    Formula (z logits, T the temperature, y the label heatmap):
        q_t = σ(z_t / T),  q_s = σ(z_s / T)
        p   = max(q_t, y)  on retained locations R,  q_t elsewhere
        R   = {y = 1} (object centres)  ∪  {y ≥ core_threshold} (Gaussian cores, optional)
        loss = T² · Σ_pixels,classes [ p·(log p − log q_s) + (1 − p)·(log(1 − p) − log(1 − q_s)) ]
               / D,   D = max(1, number of centres) ("objects") or H·W·classes ("mean")

    An image without labelled centres (an unlabelled one, `kd_keras.unlabeled`) counts the
    teacher's peaks instead: locations with σ(z_t) ≥ 0.3 that are the maximum of their 3×3
    neighbourhood, as the decoder would report them. Its loss then has the scale of a
    labelled image's with as many objects.

    Each heatmap location is its own Bernoulli variable, so the KD is binary (sigmoid), not a
    softmax over classes. *Early distribution softening*: T divides the logits of both networks
    before the sigmoid, and T² keeps the gradient scale. *Positive-sample retaining*: at the
    labelled centres (and cores) the teacher can only raise the target, so an under-confident
    teacher peak never demotes a true positive (a centre keeps target 1); everywhere else the
    teacher's soft heatmap is the target. Without retained locations and with
    `normalize="mean"` this is exactly `kd_keras.losses.binary_soft_target_kl`.
    (Hinton et al., 2015; Zhou et al., "Objects as Points", 2019.)

    Args:
        teacher_logits: `[batch, H, W, classes]` teacher heatmap logits.
        student_logits: `[batch, H, W, classes]` student heatmap logits.
        label_heatmap: `[batch, H, W, classes]` Gaussian targets; needed for retaining and for
            `normalize="objects"`.
        temperature: T > 0.
        positive_retaining: keep the label's positives as hard targets.
        core_threshold: also retain locations whose label is at least this (e.g. 0.8).
        normalize: `"objects"` (sum divided by the number of centres, like the focal loss) or
            `"mean"` (average over locations and classes).

    Returns:
        `[batch]` loss per image.
    """
    if normalize not in ("objects", "mean"):
        raise ValueError(
            f"Expected normalize in ('objects', 'mean'). Received: normalize={normalize!r}."
        )
    temperature = tf.cast(temperature, tf.float32)
    retain = positive_retaining and label_heatmap is not None
    if not retain:
        kl = kd_losses.binary_soft_target_kl(teacher_logits, student_logits, temperature)
    else:
        y = tf.cast(label_heatmap, tf.float32)
        zs = tf.cast(student_logits, tf.float32) / temperature
        q_teacher = tf.sigmoid(tf.cast(teacher_logits, tf.float32) / temperature)
        retained = tf.equal(y, 1.0)
        if core_threshold is not None:
            retained = tf.logical_or(retained, y >= core_threshold)
        p = tf.where(retained, tf.maximum(q_teacher, y), q_teacher)
        per_location = (
            tf.math.xlogy(p, p)
            + tf.math.xlogy(1.0 - p, 1.0 - p)
            + p * tf.nn.softplus(-zs)
            + (1.0 - p) * tf.nn.softplus(zs)
        )
        kl = temperature**2 * tf.reduce_mean(
            tf.reshape(per_location, [tf.shape(per_location)[0], -1]), axis=-1
        )
    if normalize == "mean":
        return kl
    if label_heatmap is None:
        raise ValueError(
            "normalize='objects' divides by the number of object centres, so it needs the "
            "label heatmap. Pass label_heatmap or use normalize='mean'. "
            "Received: label_heatmap=None."
        )
    elements = tf.cast(tf.reduce_prod(tf.shape(student_logits)[1:]), tf.float32)
    centres = _count_per_image(
        tf.cast(tf.equal(tf.cast(label_heatmap, tf.float32), 1.0), tf.float32)
    )
    centres = tf.where(centres > 0, centres, teacher_peaks(teacher_logits))
    return kl * elements / tf.maximum(1.0, centres)


def teacher_peaks(logits: tf.Tensor, threshold: float = PEAK_THRESHOLD) -> tf.Tensor:
    """`[batch]` count of the heatmap's peaks: σ(z) ≥ `threshold` and the 3×3 maximum."""
    scores = tf.sigmoid(tf.cast(logits, tf.float32))
    pooled = tf.nn.max_pool2d(scores, 3, 1, "SAME")
    peaks = tf.logical_and(tf.equal(scores, pooled), scores >= threshold)
    return _count_per_image(tf.cast(peaks, tf.float32))


def weighted_l1(target: tf.Tensor, prediction: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """L1 between two maps, weighted per location.

    Formula:
        loss = Σ_pixels w · Σ_c |ŷ_c − t_c| / max(ε, Σ_pixels w)

    Returns:
        `[batch]` loss per image (0 for an image with no weight).
    """
    weights = tf.cast(weights, tf.float32)
    error = tf.abs(tf.cast(prediction, tf.float32) - tf.cast(target, tf.float32)) * weights
    return _count_per_image(error) / tf.maximum(1e-6, _count_per_image(weights))
