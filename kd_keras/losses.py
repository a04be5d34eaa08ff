"""Distillation losses: pure functions on tensors plus thin `keras.losses.Loss` wrappers.

Every function returns one value per example (shape `[batch]`), so callers choose the reduction;
under a `tf.distribute` strategy the Distiller averages them over the global batch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

_LOG_EPSILON = 1e-12
OUTPUT_KINDS = ("logits", "probabilities")


def _as_log_probs(outputs: tf.Tensor, kind: str, temperature: tf.Tensor) -> tf.Tensor:
    """Log of the softened distribution `softmax(z / T)` for logits or probabilities.

    Probabilities are turned back into logits with `log(p)`, so a probability teacher softened with
    temperature `T` gives `p^(1/T) / sum(p^(1/T))`, the same distribution as its logits would.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"Expected outputs kind in {OUTPUT_KINDS}. Received: kind={kind!r}.")
    outputs = tf.cast(outputs, tf.float32)
    if kind == "probabilities":
        outputs = tf.math.log(tf.maximum(outputs, _LOG_EPSILON))
    return tf.nn.log_softmax(outputs / temperature, axis=-1)


def _softened(
    teacher_outputs: tf.Tensor, student_logits: tf.Tensor, temperature, teacher_kind: str
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """`(T, log softmax(z_t / T), log softmax(z_s / T))`, T as a float32 tensor."""
    temperature = tf.cast(temperature, tf.float32)
    log_p_teacher = _as_log_probs(teacher_outputs, teacher_kind, temperature)
    return temperature, log_p_teacher, _as_log_probs(student_logits, "logits", temperature)


def soft_target_kl(
    teacher_outputs: tf.Tensor,
    student_logits: tf.Tensor,
    temperature: float | tf.Tensor = 1.0,
    teacher_kind: str = "logits",
) -> tf.Tensor:
    """Hinton soft-target KL divergence, scaled by T².

    Formula:
        p_t = softmax(z_t / T),  log p_s = log_softmax(z_s / T)
        loss = T² · Σ_k p_t[k] · (log p_t[k] − log p_s[k])

    The T² factor keeps the gradient magnitude of the soft term independent of T (Hinton, Vinyals
    and Dean, "Distilling the Knowledge in a Neural Network", 2015). Log-probabilities come from
    `log_softmax`, so logits of ±1e4 and large T stay finite.

    Args:
        teacher_outputs: `[batch, classes]` teacher logits, or probabilities if
            `teacher_kind="probabilities"`.
        student_logits: `[batch, classes]` student logits.
        temperature: softening temperature T > 0.
        teacher_kind: `"logits"` or `"probabilities"`.

    Returns:
        `[batch]` loss per example.

    Example:
        >>> soft_target_kl(tf.constant([[2.0, 0.0]]), tf.constant([[2.0, 0.0]]), 4.0)  # -> [0.]
    """
    temperature, log_p_teacher, log_p_student = _softened(
        teacher_outputs, student_logits, temperature, teacher_kind
    )
    p_teacher = tf.exp(log_p_teacher)
    kl = tf.reduce_sum(p_teacher * (log_p_teacher - log_p_student), axis=-1)
    return temperature**2 * kl


def soft_target_cross_entropy(
    teacher_outputs: tf.Tensor,
    student_logits: tf.Tensor,
    temperature: float | tf.Tensor = 1.0,
    teacher_kind: str = "logits",
) -> tf.Tensor:
    """Soft-target cross-entropy, scaled by T².

    Formula:
        loss = −T² · Σ_k softmax(z_t / T)[k] · log_softmax(z_s / T)[k]

    Equals `soft_target_kl` plus T² times the teacher's entropy, which does not depend on the
    student: the gradients are the same, the reported value is offset (Hinton et al., 2015).

    Args:
        teacher_outputs: `[batch, classes]` teacher logits or probabilities.
        student_logits: `[batch, classes]` student logits.
        temperature: softening temperature T > 0.
        teacher_kind: `"logits"` or `"probabilities"`.

    Returns:
        `[batch]` loss per example.
    """
    temperature, log_p_teacher, log_p_student = _softened(
        teacher_outputs, student_logits, temperature, teacher_kind
    )
    return -(temperature**2) * tf.reduce_sum(tf.exp(log_p_teacher) * log_p_student, axis=-1)


def decoupled_kd(
    teacher_outputs: tf.Tensor,
    student_logits: tf.Tensor,
    temperature: float | tf.Tensor = 1.0,
    teacher_kind: str = "logits",
    target_weight: float = 1.0,
    non_target_weight: float = 8.0,
) -> tf.Tensor:
    """Decoupled KD (DKD; Zhao, Cui, Song, Qiu and Liang, "Decoupled Knowledge Distillation",
    CVPR 2022): the soft-target KL split into a target and a non-target part, weighted apart.

    Formula, with `t` the teacher's top class:
        p = softmax(z / T),  b = [p[t], 1 − p[t]]          (the target against the rest)
        p̂[k] = p[k] / (1 − p[t])  for k ≠ t               (the non-target classes among themselves)
        TCKD = Σ b_teacher · (log b_teacher − log b_student)
        NCKD = Σ_{k≠t} p̂_teacher[k] · (log p̂_teacher[k] − log p̂_student[k])
        loss = T² · (α · TCKD + β · NCKD)

    The Hinton KL equals `TCKD + (1 − p_teacher[t]) · NCKD`, so a confident teacher silences its
    non-target knowledge; DKD gives it the fixed weight β instead. The paper takes `t` from the
    label; the teacher's top class needs none, so the term also teaches on unlabelled images and
    from an offline cache, and it is the label wherever the teacher is right.

    Args:
        teacher_outputs: `[batch, classes]` teacher logits, or probabilities if
            `teacher_kind="probabilities"`.
        student_logits: `[batch, classes]` student logits.
        temperature: softening temperature T > 0.
        teacher_kind: `"logits"` or `"probabilities"`.
        target_weight: α, the weight of TCKD.
        non_target_weight: β, the weight of NCKD (8 in the paper's CIFAR-100 runs).

    Returns:
        `[batch]` loss per example.
    """
    temperature, log_p_teacher, log_p_student = _softened(
        teacher_outputs, student_logits, temperature, teacher_kind
    )
    is_target = tf.one_hot(tf.argmax(log_p_teacher, axis=-1), tf.shape(log_p_teacher)[-1]) > 0

    def split(log_p):
        """`(log b, log p̂)`: the binary target/rest split and the non-target distribution."""
        log_target = tf.reduce_sum(tf.where(is_target, log_p, 0.0), axis=-1)
        log_rest = tf.reduce_logsumexp(tf.where(is_target, -np.inf, log_p), axis=-1)
        log_binary = tf.stack([log_target, log_rest], axis=-1)
        log_non_target = tf.where(is_target, 0.0, log_p - log_rest[:, None])
        return log_binary, log_non_target

    binary_teacher, non_target_teacher = split(log_p_teacher)
    binary_student, non_target_student = split(log_p_student)
    tckd = tf.reduce_sum(tf.exp(binary_teacher) * (binary_teacher - binary_student), axis=-1)
    non_target_kl = tf.exp(non_target_teacher) * (non_target_teacher - non_target_student)
    nckd = tf.reduce_sum(tf.where(is_target, 0.0, non_target_kl), axis=-1)
    return temperature**2 * (target_weight * tckd + non_target_weight * nckd)


def binary_soft_target_kl(
    teacher_logits: tf.Tensor,
    student_logits: tf.Tensor,
    temperature: float | tf.Tensor = 1.0,
) -> tf.Tensor:
    """Per-element binary (sigmoid) KD, scaled by T² and averaged over all non-batch axes.

    Formula:
        q_t = σ(z_t / T),  q_s = σ(z_s / T)
        loss = T² · mean_i [ q_t·(log q_t − log q_s) + (1 − q_t)·(log(1 − q_t) − log(1 − q_s)) ]

    Each output (a heatmap pixel and class, or a multi-label class) is its own Bernoulli
    distribution; softening the logits before the sigmoid is the "early distribution softening" of
    heatmap KD. With T = 1 it is the plain binary KL between teacher and student sigmoids.

    Args:
        teacher_logits: teacher pre-sigmoid outputs, any shape `[batch, ...]`.
        student_logits: student pre-sigmoid outputs, same shape.
        temperature: softening temperature T > 0.

    Returns:
        `[batch]` loss per example.
    """
    temperature = tf.cast(temperature, tf.float32)
    zt = tf.cast(teacher_logits, tf.float32) / temperature
    zs = tf.cast(student_logits, tf.float32) / temperature
    q_teacher = tf.sigmoid(zt)
    # log σ(z) = −softplus(−z), log(1 − σ(z)) = −softplus(z): finite for any z.
    kl = q_teacher * (tf.nn.softplus(-zs) - tf.nn.softplus(-zt)) + (1.0 - q_teacher) * (
        tf.nn.softplus(zs) - tf.nn.softplus(zt)
    )
    return temperature**2 * _mean_over_non_batch_axes(kl)


def hint_l2(teacher_features: tf.Tensor, student_features: tf.Tensor) -> tf.Tensor:
    """FitNet hint loss: mean squared distance between (adapted) student and teacher features.

    Formula:
        loss = mean_i (f_s[i] − f_t[i])²

    The student features are expected to be already mapped to the teacher's width by an adapter
    (Romero et al., "FitNets: Hints for Thin Deep Nets", 2015).

    Returns:
        `[batch]` loss per example.
    """
    diff = tf.cast(student_features, tf.float32) - tf.cast(teacher_features, tf.float32)
    return _mean_over_non_batch_axes(tf.square(diff))


def hint_cross_entropy(
    teacher_features: tf.Tensor,
    student_features: tf.Tensor,
    temperature: float | tf.Tensor = 1.0,
) -> tf.Tensor:
    """Knowledge pre-regression: cross-entropy between channel-softmax-normalised features.

    Formula:
        p_t = softmax(f_t / T) over channels,  log p_s = log_softmax(f_s / T) over channels
        loss = −T² · mean_positions Σ_c p_t[c] · log p_s[c]

    Normalising both feature maps with a softmax over the channel axis makes the hint insensitive
    to the feature scale of each network (the cross-entropy "pre-regression" variant of hint
    learning). Positions are every index of the non-batch, non-channel axes.

    Returns:
        `[batch]` loss per example.
    """
    temperature = tf.cast(temperature, tf.float32)
    p_teacher = tf.nn.softmax(tf.cast(teacher_features, tf.float32) / temperature, axis=-1)
    log_p_student = tf.nn.log_softmax(tf.cast(student_features, tf.float32) / temperature, axis=-1)
    per_position = -tf.reduce_sum(p_teacher * log_p_student, axis=-1, keepdims=True)
    return temperature**2 * _mean_over_non_batch_axes(per_position)


def _mean_over_non_batch_axes(values: tf.Tensor) -> tf.Tensor:
    rank = values.shape.rank
    if rank is not None and rank <= 1:
        return values
    return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=-1)


@keras.saving.register_keras_serializable(package="kd_keras")
class SoftTargetKL(keras.losses.Loss):
    """`keras.losses.Loss` around `soft_target_kl`; `y_true` holds the teacher's outputs."""

    def __init__(
        self,
        temperature: float = 1.0,
        teacher_kind: str = "logits",
        reduction: str = keras.losses.Reduction.AUTO,
        name: str = "soft_target_kl",
    ):
        super().__init__(reduction=reduction, name=name)
        self.temperature = temperature
        self.teacher_kind = teacher_kind

    def call(self, y_true, y_pred):
        return soft_target_kl(y_true, y_pred, self.temperature, self.teacher_kind)

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "teacher_kind": self.teacher_kind,
        }


@keras.saving.register_keras_serializable(package="kd_keras")
class BinarySoftTargetKL(keras.losses.Loss):
    """`keras.losses.Loss` around `binary_soft_target_kl`; `y_true` holds the teacher's logits."""

    def __init__(
        self,
        temperature: float = 1.0,
        reduction: str = keras.losses.Reduction.AUTO,
        name: str = "binary_soft_target_kl",
    ):
        super().__init__(reduction=reduction, name=name)
        self.temperature = temperature

    def call(self, y_true, y_pred):
        return binary_soft_target_kl(y_true, y_pred, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def global_batch_mean(values: tf.Tensor) -> tf.Tensor:
    """`Σ values / N`, N the number of values in the global batch (over every replica).

    This replica's share of the global mean: summed over the replicas, as their gradients are,
    it is the mean of the whole batch, also when the replicas hold unequal shares of it (the
    last, partial batch of an epoch). `tf.nn.compute_average_loss` divides by this replica's
    count times the replica count instead, which weighs a short share's examples more. With one
    replica it is `tf.nn.compute_average_loss`: the plain mean.
    """
    values = tf.cast(values, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(values), _global_count(values))


def _global_count(values: tf.Tensor) -> tf.Tensor:
    """The number of `values` over every replica of the step (this replica's alone outside one)."""
    count = tf.cast(tf.size(values), values.dtype)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return count


@keras.saving.register_keras_serializable(package="kd_keras")
class GlobalBatchMean(keras.losses.Loss):
    """`loss` averaged over the global batch under several replicas (`global_batch_mean`).

    Keras averages a compiled loss over each replica's share of the batch and divides by the
    replica count R, so a partial batch split unequally is weighed unlike one process weighs it.
    This loss has reduction SUM and returns, for each of a replica's n examples,

        v_i = ℓ_i / N + stop_gradient(ℓ_i / (R n) − ℓ_i / N)     (N: the global count)

    Its gradient is that of `Σ_i ℓ_i / N`, which the replicas' summed gradients turn into the
    global mean; its value is Keras's own `Σ_i ℓ_i / (R n)`, so Keras's loss metric (the value
    times R, weighted by n) stays the exact global mean. Use `global_batch_loss`, which keeps
    `loss` itself on one replica.
    """

    def __init__(self, loss: keras.losses.Loss, name: str | None = None):
        super().__init__(reduction=keras.losses.Reduction.SUM, name=name or loss.name)
        self.loss = loss

    def call(self, y_true, y_pred):
        per_example = self.loss.call(y_true, y_pred)
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        count = tf.cast(tf.size(per_example), per_example.dtype)
        share = tf.math.divide_no_nan(per_example, _global_count(per_example))
        as_keras = tf.math.divide_no_nan(per_example, replicas * count)
        return share + tf.stop_gradient(as_keras - share)

    def get_config(self):
        return {"name": self.name, "loss": keras.losses.serialize(self.loss)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.losses.deserialize(config["loss"]), name=config.get("name"))


def global_batch_loss(loss: keras.losses.Loss) -> keras.losses.Loss:
    """`loss` for `compile`: wrapped in `GlobalBatchMean` when built under a strategy with
    several replicas (`--strategy mirrored` or `multiworker`), `loss` itself otherwise (the
    arithmetic of one device unchanged, like `models.layers.batch_norm`)."""
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return GlobalBatchMean(loss)
    return loss
