"""Adversarial examples (FGSM, PGD) and adversarially robust distillation (ARD).

`fgsm` and `pgd` build L∞-bounded adversarial inputs against a model and a loss; they are plain
TensorFlow ops, usable eagerly or inside a `tf.function` / `train_step`. `adversarial_accuracy`
measures a classifier's top-1 accuracy under attack. `AdversarialDistiller` is a `Distiller` whose
student trains on adversarial examples built against itself while the teacher sees the clean
inputs (Goldblum et al., "Adversarially Robust Distillation", AAAI 2020).

Formula (PGD, Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", 2018):
    x⁰ = x + U(−ε, ε)  (random start; x⁰ = x without it)
    xᵏ⁺¹ = Π(xᵏ + a · sign(∇ₓ L(y, f(xᵏ))))
    Π(v) = clip(clip(v, x − ε, x + ε), lo, hi)

FGSM (Goodfellow et al., "Explaining and Harnessing Adversarial Examples", 2015) is one step of
size a = ε from x⁰ = x.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kd_keras import schedules
from kd_keras.distiller import BatchLosses, Distiller
from kd_keras.methods.base import Method
from kd_keras.terms import DistillationTerm

__all__ = ["ROBUST", "AdversarialDistiller", "adversarial_accuracy", "fgsm", "pgd"]

_PACKAGE = "kd_keras"
ATTACKS = ("pgd", "fgsm")

Attack = Literal["pgd", "fgsm"]
Clip = tuple[float, float] | None
LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def fgsm(
    model: keras.Model,
    x,
    y,
    loss_fn: LossFn,
    epsilon: float,
    clip: Clip = (0.0, 1.0),
) -> tf.Tensor:
    """Fast gradient sign method: one signed-gradient step of size ε that raises the loss.

    Formula:
        x' = clip(clip(x + ε · sign(∇ₓ loss_fn(y, model(x))), x − ε, x + ε), lo, hi)

    (Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial Examples", 2015.)
    The model runs with `training=False`. `x` should lie in `clip`.

    Args:
        model: a callable `model(x, training=False)`, e.g. a tf_keras classifier of logits.
        x: a floating-point batch of inputs.
        y: the targets `loss_fn` compares the outputs with.
        loss_fn: `(y, outputs) -> loss` (per example or reduced; its sum is maximised), e.g.
            `keras.losses.sparse_categorical_crossentropy` with `from_logits=True`.
        epsilon: radius ε ≥ 0 of the L∞ ball around `x`.
        clip: `(lo, hi)` range of valid inputs, or `None` for no range.

    Returns:
        The adversarial batch, same shape and dtype as `x`, without gradient to the model.

    Raises:
        ValueError: a negative `epsilon` or an empty `clip` range.

    Example:
        >>> ce = lambda y, z: keras.losses.sparse_categorical_crossentropy(y, z, from_logits=True)
        >>> x_adv = fgsm(model, x, y, ce, epsilon=8 / 255)
    """
    _check_attack_arguments(epsilon, 1, None, clip)
    return _perturb(
        _model_loss(model, y, loss_fn), x, float(epsilon), float(epsilon), 1, False, None, clip
    )


def pgd(
    model: keras.Model,
    x,
    y,
    loss_fn: LossFn,
    epsilon: float,
    step_size: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    seed: int | None = None,
    clip: Clip = (0.0, 1.0),
) -> tf.Tensor:
    """Projected gradient descent (ascent on the loss) inside the L∞ ball of radius ε around x.

    Formula:
        x⁰ = x + U(−ε, ε) with `random_start`, else x
        xᵏ⁺¹ = Π(xᵏ + a · sign(∇ₓ loss_fn(y, model(xᵏ)))),   k = 0 … steps − 1
        Π(v) = clip(clip(v, x − ε, x + ε), lo, hi),   a = step_size, by default 2.5 · ε / steps

    (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", 2018.) The
    model runs with `training=False`; the steps are unrolled, so the function is graph-compatible.
    `x` should lie in `clip`.

    Args:
        model: a callable `model(x, training=False)`.
        x: a floating-point batch of inputs.
        y: the targets `loss_fn` compares the outputs with.
        loss_fn: `(y, outputs) -> loss` (per example or reduced; its sum is maximised).
        epsilon: radius ε ≥ 0 of the L∞ ball around `x`.
        step_size: step a > 0; `None` for 2.5 · ε / steps.
        steps: number of steps, ≥ 1.
        random_start: start from a uniform point of the ball rather than from `x`.
        seed: seed of the random start (stateless, so the same seed gives the same start); `None`
            draws from TensorFlow's global generator.
        clip: `(lo, hi)` range of valid inputs, or `None` for no range.

    Returns:
        The adversarial batch, same shape and dtype as `x`, without gradient to the model.

    Raises:
        ValueError: a negative `epsilon` or `step_size`, `steps` < 1, or an empty `clip` range.

    Example:
        >>> ce = lambda y, z: keras.losses.sparse_categorical_crossentropy(y, z, from_logits=True)
        >>> x_adv = pgd(model, x, y, ce, epsilon=8 / 255, steps=10, seed=0)
    """
    _check_attack_arguments(epsilon, steps, step_size, clip)
    step_size = _default_step_size(epsilon, steps, step_size)
    stateless_seed = None if seed is None else tf.constant([int(seed), 0], tf.int64)
    return _perturb(
        _model_loss(model, y, loss_fn),
        x,
        float(epsilon),
        step_size,
        int(steps),
        random_start,
        stateless_seed,
        clip,
    )


def adversarial_accuracy(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    epsilon: float,
    steps: int = 10,
    attack: Attack = "pgd",
    batch_size: int = 256,
    seed: int = 0,
    class_indices: Sequence[int] | None = None,
    step_size: float | None = None,
    clip: Clip = (0.0, 1.0),
) -> float:
    """Top-1 accuracy of a logits classifier on adversarial examples built against itself.

    Formula:
        acc = mean_i [argmax z(x'_i) = y_i],   x'_i = attack(z, x_i, y_i, CE, ε),
        z(x) = model(x)[:, class_indices]

    The attack (PGD with a random start, or FGSM) maximises the sparse categorical cross-entropy of
    the restricted logits `z`, batch by batch; batch `b` uses the stateless seed `(seed, b)`, so
    the number is reproducible. With ε = 0 the inputs are unchanged and this is the clean accuracy.

    Args:
        model: a classifier returning logits, `[batch, classes]`.
        x: inputs in `clip`, `[examples, ...]`.
        y: integer labels, `[examples]`, indexing `class_indices` when given.
        epsilon: L∞ radius ε ≥ 0.
        steps: PGD steps (ignored by FGSM).
        attack: `"pgd"` or `"fgsm"`.
        batch_size: examples per attacked batch.
        seed: seed of the PGD random starts.
        class_indices: the model's output columns the labels refer to, in label order, e.g. the
            student's classes for a teacher that predicts more; `None` for all columns.
        step_size: PGD step; `None` for 2.5 · ε / steps.
        clip: `(lo, hi)` range of valid inputs, or `None`.

    Returns:
        The adversarial accuracy, a float in [0, 1].

    Raises:
        ValueError: bad `epsilon`, `steps`, `attack`, `batch_size`, `class_indices`, or `x` and `y`
            of different lengths.

    Example:
        >>> adversarial_accuracy(student, x_test, y_test, epsilon=0.1, steps=10)
    """
    _check_attack(attack)
    _check_attack_arguments(epsilon, steps, step_size, clip)
    if batch_size < 1:
        raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size!r}.")
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if len(x) != len(y):
        raise ValueError(
            f"Expected as many labels as inputs. Received: {len(x)} inputs and {len(y)} labels."
        )
    if len(x) == 0:
        raise ValueError("Expected at least one example. Received: x with 0 examples.")
    indices = None
    if class_indices is not None:
        indices = [int(i) for i in class_indices]
        if not indices or min(indices) < 0:
            raise ValueError(
                "Expected class_indices to be a non-empty list of output columns. "
                f"Received: class_indices={class_indices!r}."
            )
    epsilon = float(epsilon)
    if attack == "fgsm":
        step_size, steps, random_start = epsilon, 1, False
    else:
        step_size, random_start = _default_step_size(epsilon, steps, step_size), True

    def logits(inputs):
        outputs = tf.cast(model(inputs, training=False), tf.float32)
        return outputs if indices is None else tf.gather(outputs, indices, axis=-1)

    @tf.function(reduce_retracing=True)
    def correct(inputs, labels, batch_seed):
        def loss_of(candidate):
            return keras.losses.sparse_categorical_crossentropy(
                labels, logits(candidate), from_logits=True
            )

        adversarial = _perturb(
            loss_of, inputs, epsilon, step_size, int(steps), random_start, batch_seed, clip
        )
        predictions = tf.argmax(logits(adversarial), axis=-1, output_type=tf.int64)
        return tf.reduce_sum(tf.cast(predictions == labels, tf.int64))

    total = 0
    for batch, start in enumerate(range(0, len(x), batch_size)):
        inputs = tf.convert_to_tensor(x[start : start + batch_size])
        labels = tf.convert_to_tensor(y[start : start + batch_size].astype(np.int64))
        total += int(correct(inputs, labels, tf.constant([seed, batch], tf.int64)))
    return total / len(x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AdversarialDistiller(Distiller):
    """A `Distiller` whose student trains on adversarial examples; the teacher sees clean inputs.

    Adversarially robust distillation (ARD, Goldblum et al., "Adversarially Robust Distillation",
    AAAI 2020): the adversarial example is built against the *student*, by maximising the
    distillation loss between the teacher's outputs on the clean input and the student's outputs
    on the perturbed one; the student then minimises the Distiller's whole loss with its own
    inputs replaced by the adversarial ones.

    Formula (one `LogitsDistillation(T)` term of weight α, `student_loss_weight = 1 − α`):
        x' = argmax_{‖x' − x‖∞ ≤ ε} KL(softmax(t(x)/T) ‖ softmax(s(x')/T))        (PGD or FGSM)
        L_adv = α · T² · KL(softmax(t(x)/T) ‖ softmax(s(x')/T)) + (1 − α) · CE(y, s(x'))
        L = (1 − w) · L_clean + w · L_adv,   w = adversarial_weight

    In general the attack maximises the Distiller's weighted distillation loss
    `Σ_i w_i(step) · L_i(t_i(x), s_i(x'), y, T_i(step))` (the student in inference mode), and
    `L_adv` is the Distiller's loss `w_student · L_task(y, s(x')) + Σ_i w_i · L_i(t_i(x), s_i(x'))`,
    so temperatures and weight schedules apply to both. `L_clean` is the same with `s(x)`; it is
    only computed when `w < 1`. The original ARD attack maximises CE(y, s(x')) and keeps the task
    term on clean inputs; here the attack targets the teacher's soft labels and the task term sees
    `x'`, as written above. With ε = 0 (or w = 0) a step is exactly a `Distiller` step.

    ARD changes only what the student learns from, so this class overrides only the Distiller's
    step hook, `batch_losses`; the Distiller's `train_step` weights, averages and applies them.

    Training metrics (`loss`, `student_loss`, per-term losses, temperatures, compiled metrics) are
    the Distiller's, on the mixed loss; compiled metrics use the student's predictions on `x'`.
    `evaluate` reports clean losses; measure robustness with `adversarial_accuracy`.

    Offline KD (teacher=None) is supported: the cached teacher outputs are those on the clean,
    un-augmented inputs, which is what ARD needs.

    Args:
        teacher, student, distillation_losses, distillation_loss_weights, student_loss_weight,
        teacher_output_shape, name: as for `Distiller`.
        epsilon: L∞ radius ε ≥ 0 of the perturbation, in input units.
        steps: PGD steps per training step (≥ 1; FGSM takes one).
        attack: `"pgd"` (with a random start) or `"fgsm"`.
        step_size: PGD step; `None` for 2.5 · ε / steps.
        adversarial_weight: w in [0, 1], the share of the loss computed on adversarial inputs.
        clip: `(lo, hi)` range of valid inputs, or `None`.

    Raises:
        ValueError: bad `epsilon`, `steps`, `attack`, `step_size`, `adversarial_weight` or `clip`.

    Example:
        >>> distiller = AdversarialDistiller(teacher, student, LogitsDistillation(temperature=4.0),
        ...                                  distillation_loss_weights=0.9,
        ...                                  student_loss_weight=0.1, epsilon=8 / 255, steps=5)
        >>> distiller.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
        >>> distiller.fit(x, y, epochs=3)
        >>> adversarial_accuracy(distiller.student, x_test, y_test, epsilon=8 / 255)
    """

    def __init__(
        self,
        teacher: keras.Model | None,
        student: keras.Model,
        distillation_losses: DistillationTerm | Sequence[DistillationTerm],
        distillation_loss_weights: Sequence[float | schedules.Schedule] | float | None = None,
        student_loss_weight: float | schedules.Schedule = 0.5,
        teacher_output_shape: Sequence[int | None] | None = None,
        name: str = "adversarial_distiller",
        *,
        epsilon: float,
        steps: int = 5,
        attack: Attack = "pgd",
        step_size: float | None = None,
        adversarial_weight: float = 1.0,
        clip: Clip = (0.0, 1.0),
        **kwargs,
    ):
        _check_attack(attack)
        _check_attack_arguments(epsilon, steps, step_size, clip)
        if not 0 <= adversarial_weight <= 1:
            raise ValueError(
                "Expected adversarial_weight in [0, 1]. "
                f"Received: adversarial_weight={adversarial_weight!r}."
            )
        super().__init__(
            teacher,
            student,
            distillation_losses,
            distillation_loss_weights,
            student_loss_weight,
            teacher_output_shape,
            name=name,
            **kwargs,
        )
        self.epsilon = float(epsilon)
        self.steps = int(steps)
        self.attack = attack
        self.step_size = None if step_size is None else float(step_size)
        self.adversarial_weight = float(adversarial_weight)
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))

    # === Training ===

    def _adversarial_inputs(self, x, y, teacher_outputs: list) -> tf.Tensor:
        """`x'`: the attack on the student's weighted distillation loss, teacher outputs fixed.

        `teacher_outputs` is one teacher output per term on the clean `x` (from the teacher or the
        offline cache). Returns `x` itself when ε = 0.
        """
        if self.epsilon == 0:
            return x

        def distillation_loss(candidate):
            losses = super(AdversarialDistiller, self).batch_losses(
                candidate, y, teacher_outputs, training=False
            )
            return self._combined(None, losses.term_losses)[1]

        if self.attack == "fgsm":
            step_size, steps, random_start = self.epsilon, 1, False
        else:
            step_size = _default_step_size(self.epsilon, self.steps, self.step_size)
            steps, random_start = self.steps, True
        return _perturb(
            distillation_loss, x, self.epsilon, step_size, steps, random_start, None, self.clip
        )

    def batch_losses(self, x, y, teacher_outputs: list, training: bool) -> BatchLosses:
        """The Distiller's losses on `x'` in training, mixed with those on `x` when 0 < w < 1.

        Evaluation (`training=False`) and ε = 0 or w = 0 give the Distiller's clean losses.
        """
        weight = 0.0 if self.epsilon == 0 or not training else self.adversarial_weight
        if weight == 0:
            return super().batch_losses(x, y, teacher_outputs, training)
        # `_perturb` returns a stop-gradient tensor, so although this runs inside the training
        # tape, the update differentiates only the losses on x' (and x), never the attack.
        adversarial = self._adversarial_inputs(x, y, teacher_outputs)
        losses = super().batch_losses(adversarial, y, teacher_outputs, training)
        if weight < 1:
            clean = super().batch_losses(x, y, teacher_outputs, training)
            losses = _mix(clean, losses, weight)
        return losses

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.update(
            epsilon=self.epsilon,
            steps=self.steps,
            attack=self.attack,
            step_size=self.step_size,
            adversarial_weight=self.adversarial_weight,
            clip=None if self.clip is None else list(self.clip),
        )
        return config


def _mix(clean: BatchLosses, adversarial: BatchLosses, weight: float) -> BatchLosses:
    """`(1 − w) · clean + w · adversarial` for the losses; the adversarial prediction is kept."""
    student_loss = adversarial.student_loss
    if student_loss is not None:
        student_loss = (1 - weight) * clean.student_loss + weight * student_loss
    term_losses = [
        (1 - weight) * c + weight * a for c, a in zip(clean.term_losses, adversarial.term_losses)
    ]
    return adversarial._replace(student_loss=student_loss, term_losses=term_losses)


def _model_loss(model, y, loss_fn: LossFn) -> Callable[[tf.Tensor], tf.Tensor]:
    return lambda candidate: loss_fn(y, model(candidate, training=False))


def _perturb(
    loss_of: Callable[[tf.Tensor], tf.Tensor],
    x,
    epsilon: float,
    step_size: float,
    steps: int,
    random_start: bool,
    seed: tf.Tensor | None,
    clip: Clip,
) -> tf.Tensor:
    """Signed-gradient ascent on `sum(loss_of(x'))`, projected on the ε-ball and `clip`."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(
            "Expected floating-point inputs, scaled to the clip range, to perturb. "
            f"Received: x of dtype {x.dtype.name}."
        )
    x = tf.stop_gradient(x)
    if epsilon == 0:
        # Nothing can move; only the range projection applies (a no-op for x inside it).
        return _project(x, x, epsilon, clip)

    adversarial = x
    if random_start:
        shape = tf.shape(x)
        if seed is None:
            noise = tf.random.uniform(shape, -epsilon, epsilon, dtype=x.dtype)
        else:
            noise = tf.random.stateless_uniform(shape, seed, -epsilon, epsilon, dtype=x.dtype)
        adversarial = _project(x + noise, x, epsilon, clip)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(adversarial)
            # The sum gives each example the gradient of its own loss (a mean would only scale it).
            loss = tf.reduce_sum(tf.cast(loss_of(adversarial), tf.float32))
        gradient = tape.gradient(loss, adversarial)
        if gradient is None:
            raise ValueError(
                "Expected the attacked loss to depend on the inputs. Received: a loss with no "
                "gradient with respect to x."
            )
        adversarial = _project(adversarial + step_size * tf.sign(gradient), x, epsilon, clip)
    return tf.stop_gradient(adversarial)


def _project(candidate: tf.Tensor, x: tf.Tensor, epsilon: float, clip: Clip) -> tf.Tensor:
    candidate = tf.clip_by_value(candidate, x - epsilon, x + epsilon)
    if clip is not None:
        candidate = tf.clip_by_value(candidate, clip[0], clip[1])
    return candidate


def _default_step_size(epsilon: float, steps: int, step_size: float | None) -> float:
    """Madry et al.'s 2.5 · ε / steps: enough to reach the ball's surface from any start."""
    return 2.5 * float(epsilon) / int(steps) if step_size is None else float(step_size)


def _check_attack(attack: str) -> None:
    if attack not in ATTACKS:
        raise ValueError(f"Expected attack in {ATTACKS}. Received: attack={attack!r}.")


def _check_attack_arguments(epsilon, steps, step_size, clip) -> None:
    if not isinstance(epsilon, numbers.Real) or isinstance(epsilon, bool) or not epsilon >= 0:
        raise ValueError(f"Expected epsilon >= 0 (a number). Received: epsilon={epsilon!r}.")
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"Expected steps >= 1 (an integer). Received: steps={steps!r}.")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"Expected step_size > 0 or None. Received: step_size={step_size!r}.")
    if clip is not None and (len(clip) != 2 or not clip[0] < clip[1]):
        raise ValueError(f"Expected clip=(lo, hi) with lo < hi, or None. Received: clip={clip!r}.")


#: A student distilled with `AdversarialDistiller` (its task reads `stage.method`).
ROBUST = Method("robust", "robust KD (PGD)")
