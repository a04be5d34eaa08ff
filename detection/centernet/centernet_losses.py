"""CenterNet losses: penalty-reduced focal loss on the heatmap and masked L1 on size and offset.

Pure functions on tensors returning one value per image (`[batch]`), plus thin `keras.losses.Loss`
classes. Each head's target carries what its loss needs (the regression targets end with a mask
channel), so the per-head losses also work in a plain `model.compile(loss={...})`.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

_PACKAGE = "detection"


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

    `y_true` is the target dict of `encode_targets` (batched); `y_pred` the model's outputs as a
    list `[heatmap, size, offset]` or a dict with those keys. CenterNet's weights are 1, 0.1, 1.
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
        if not isinstance(y_pred, dict):
            y_pred = dict(zip(("heatmap", "size", "offset"), y_pred))
        return (
            self.heatmap_weight * heatmap_focal_loss(y_true["heatmap"], y_pred["heatmap"])
            + self.size_weight * masked_l1_loss(y_true["size"], y_pred["size"])
            + self.offset_weight * masked_l1_loss(y_true["offset"], y_pred["offset"])
        )

    def per_head_losses(self) -> tuple[dict, dict]:
        """`(loss, loss_weights)` dicts for `model.compile` on a plain CenterNet model."""
        losses = {"heatmap": HeatmapFocalLoss(), "size": MaskedL1Loss(), "offset": MaskedL1Loss()}
        weights = {
            "heatmap": self.heatmap_weight,
            "size": self.size_weight,
            "offset": self.offset_weight,
        }
        return losses, weights

    def get_config(self):
        return {
            **super().get_config(),
            "heatmap_weight": self.heatmap_weight,
            "size_weight": self.size_weight,
            "offset_weight": self.offset_weight,
        }
