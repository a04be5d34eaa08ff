"""Re-identification losses: identity cross-entropy with label smoothing, batch-hard triplet.

Both reduce to one value per example (per anchor for the triplet loss), so the Distiller and
`tf.distribute` average them over the global batch. The triplet loss compares examples within the
batch it sees (per replica under a distribution strategy).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

_PACKAGE = "reid"


def identity_cross_entropy(labels, logits, label_smoothing: float = 0.1) -> tf.Tensor:
    """Cross-entropy on identity logits against label-smoothed one-hot targets, per example.

    Formula:
        q = (1 − ε)·onehot(y) + ε / N
        loss = −Σ_c q[c] · log_softmax(z)[c]

    (Szegedy et al., "Rethinking the Inception Architecture", 2016; used for ReID by Luo et al.,
    "Bag of Tricks", 2019.)

    Args:
        labels: integer identity labels, shape `[b]` or `[b, 1]`.
        logits: `[b, N]` identity scores.
        label_smoothing: ε in [0, 1).

    Returns:
        `[b]` losses.
    """
    logits = tf.convert_to_tensor(logits)
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    classes = tf.shape(logits)[-1]
    targets = tf.one_hot(labels, classes, dtype=logits.dtype)
    targets = (1.0 - label_smoothing) * targets + label_smoothing / tf.cast(classes, logits.dtype)
    return -tf.reduce_sum(targets * tf.nn.log_softmax(logits, axis=-1), axis=-1)


def pairwise_euclidean(embeddings) -> tf.Tensor:
    """`[b, b]` Euclidean distances with a gradient-safe square root (zero on the diagonal)."""
    embeddings = tf.convert_to_tensor(embeddings)
    squared = tf.reduce_sum(tf.square(embeddings), axis=-1)
    distances = (
        squared[:, None] - 2.0 * tf.matmul(embeddings, embeddings, transpose_b=True) + squared[None]
    )
    distances = tf.maximum(distances, 0.0)
    zero = tf.cast(tf.equal(distances, 0.0), distances.dtype)
    return tf.sqrt(distances + zero * 1e-12) * (1.0 - zero)


def batch_hard_triplet(labels, embeddings, margin: float | None = 0.3) -> tf.Tensor:
    """Batch-hard triplet loss: each anchor against its hardest positive and hardest negative.

    Formula (margin m; `margin=None` gives the soft margin):
        d⁺_a = max_{p: y_p = y_a, p ≠ a} ‖f_a − f_p‖,   d⁻_a = min_{n: y_n ≠ y_a} ‖f_a − f_n‖
        loss_a = max(0, m + d⁺_a − d⁻_a)     or     log(1 + exp(d⁺_a − d⁻_a))

    Anchors without a positive or a negative in the batch get loss 0; a P×K batch
    (`reid.sampler`) gives every anchor both. (Hermans et al., "In Defense of the Triplet Loss
    for Person Re-Identification", 2017.)

    Args:
        labels: identity labels, shape `[b]` or `[b, 1]`.
        embeddings: `[b, d]` features.
        margin: m ≥ 0, or `None` for the soft margin.

    Returns:
        `[b]` losses, one per anchor.
    """
    embeddings = tf.convert_to_tensor(embeddings)
    labels = tf.reshape(labels, [-1])
    distances = pairwise_euclidean(embeddings)
    same = tf.equal(labels[:, None], labels[None])
    not_self = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    positive = tf.cast(tf.logical_and(same, not_self), distances.dtype)
    negative = tf.cast(tf.logical_not(same), distances.dtype)
    hardest_positive = tf.reduce_max(distances * positive, axis=1)
    far = tf.reduce_max(distances) + 1.0
    hardest_negative = tf.reduce_min(distances + (1.0 - negative) * far, axis=1)
    gap = hardest_positive - hardest_negative
    loss = tf.nn.softplus(gap) if margin is None else tf.nn.relu(gap + margin)
    valid = tf.reduce_max(positive, axis=1) * tf.reduce_max(negative, axis=1)
    return loss * valid


@keras.saving.register_keras_serializable(package=_PACKAGE)
class IdentityLoss(keras.losses.Loss):
    """`identity_cross_entropy` as a Keras loss on `(labels, logits)`."""

    def __init__(self, label_smoothing: float = 0.1, name: str = "identity_loss", **kwargs):
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"Expected label_smoothing in [0, 1). Received: {label_smoothing=}.")
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        return identity_cross_entropy(y_true, y_pred, self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TripletLoss(keras.losses.Loss):
    """`batch_hard_triplet` as a Keras loss on `(labels, embeddings)`."""

    def __init__(self, margin: float | None = 0.3, name: str = "triplet_loss", **kwargs):
        if margin is not None and margin < 0:
            raise ValueError(f"Expected margin >= 0 or None. Received: {margin=}.")
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        return batch_hard_triplet(y_true, y_pred, self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ReIDLoss(keras.losses.Loss):
    """The task loss of a two-output ReID model, `[features, logits]`, as one Keras loss.

    Formula:
        loss = w_id · identity_cross_entropy(y, logits) + w_tri · batch_hard_triplet(y, features)

    It is the student loss given to `Distiller.compile` (which passes the student's list of
    outputs); a plain model can compile the two terms per output instead.
    """

    def __init__(
        self,
        label_smoothing: float = 0.1,
        margin: float | None = 0.3,
        identity_weight: float = 1.0,
        triplet_weight: float = 1.0,
        name: str = "reid_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.margin = margin
        self.identity_weight = identity_weight
        self.triplet_weight = triplet_weight

    def call(self, y_true, y_pred):
        if not isinstance(y_pred, list | tuple) or len(y_pred) != 2:
            raise ValueError(
                "ReIDLoss expects the two outputs [features, logits] of a model from "
                f"reid.models.build_reid_model. Received: y_pred={y_pred!r}."
            )
        features, logits = y_pred
        return self.identity_weight * identity_cross_entropy(
            y_true, logits, self.label_smoothing
        ) + self.triplet_weight * batch_hard_triplet(y_true, features, self.margin)

    def get_config(self):
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "margin": self.margin,
            "identity_weight": self.identity_weight,
            "triplet_weight": self.triplet_weight,
        }
