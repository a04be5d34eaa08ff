"""Distillation terms: the composable pieces a `Distiller` sums into its distillation loss.

A term declares what it needs through attributes of the common base class, so the Distiller never
inspects subclasses:

- `teacher_layer` / `student_layer`: name of the layer whose output the term reads, or `None`
  for the model's final output;
- `temperature`: a `Schedule` the Distiller evaluates and logs, or `None`.

`compute(teacher_output, student_output, labels, temperature)` returns one loss per example.
Terms are Keras layers so that their adapters (learned maps from student to teacher shape) are
trained, checkpointed and serialized with the Distiller.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tf_keras as keras

from kd_keras import losses, schedules
from kd_keras.models.inspect import final_activation

_PACKAGE = "kd_keras"


class DistillationTerm(keras.layers.Layer):
    """Base class of distillation terms.

    Args:
        teacher_layer: layer of the teacher to read, `None` for its final output.
        student_layer: layer of the student to read, `None` for its final output.
        temperature: number or `Schedule`, or `None` for terms without a temperature.
    """

    def __init__(
        self,
        teacher_layer: str | None = None,
        student_layer: str | None = None,
        temperature: float | schedules.Schedule | dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.temperature = None if temperature is None else schedules.get(temperature)

    def build_for(
        self,
        teacher_shape: tf.TensorShape,
        student_shape: tf.TensorShape,
        teacher_source: keras.layers.Layer | None,
        student_source: keras.layers.Layer | None,
    ) -> None:
        """Checks the two outputs fit together and creates adapters. Called once by the Distiller.

        `*_source` is the layer that produces the output (`None` when the teacher outputs come from
        an offline cache), so terms can refuse e.g. a softmax declared as logits.
        """
        self.built = True

    def compute(self, teacher_output, student_output, labels, temperature):
        """Loss per example, shape `[batch]`."""
        raise NotImplementedError

    def get_config(self):
        config = {
            **super().get_config(),
            "teacher_layer": self.teacher_layer,
            "student_layer": self.student_layer,
        }
        # Terms without a temperature need not accept the argument.
        if self.temperature is not None:
            config["temperature"] = schedules.serialize(self.temperature)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LogitsDistillation(DistillationTerm):
    """Response-based KD on class scores (Hinton et al., 2015).

    Formula (`loss="kl"`):
        T² · KL(softmax(z_t[S] / T) ‖ softmax(z_s / T))
    Formula (`loss="soft_ce"`):
        −T² · Σ softmax(z_t[S] / T) · log_softmax(z_s / T)
    Formula (`loss="dkd"`, decoupled KD, Zhao et al. 2022; see `kd_keras.losses.decoupled_kd`):
        T² · (α · TCKD + β · NCKD)   (the target-vs-rest and the non-target parts of the KL)

    where `S` is `teacher_class_indices` (all teacher classes by default): task-specified KD
    restricts the teacher to the subset of classes the student predicts, in the student's order.

    Args:
        temperature: number or `Schedule` (e.g. a dynamic temperature that decays to 1).
        loss: `"kl"`, `"soft_ce"` or `"dkd"`.
        dkd_weights: `(α, β)` of `loss="dkd"`: the target and the non-target weights.
        teacher_outputs: `"logits"` or `"probabilities"`: what the teacher's output holds. A
            teacher whose last activation is a softmax declared as logits (or the reverse) is
            refused.
        teacher_class_indices: teacher classes the student predicts, in student order.

    Example:
        >>> term = LogitsDistillation(temperature=4.0)
        >>> distiller = Distiller(teacher, student, [term], distillation_loss_weights=[0.9])
    """

    LOSSES = ("kl", "soft_ce", "dkd")

    def __init__(
        self,
        temperature: float | schedules.Schedule | dict = 1.0,
        loss: str = "kl",
        teacher_outputs: str = "logits",
        teacher_class_indices: Sequence[int] | None = None,
        teacher_layer: str | None = None,
        student_layer: str | None = None,
        dkd_weights: Sequence[float] = (1.0, 8.0),
        **kwargs,
    ):
        if loss not in self.LOSSES:
            raise ValueError(f"Expected loss in {self.LOSSES}. Received: loss={loss!r}.")
        if teacher_outputs not in losses.OUTPUT_KINDS:
            raise ValueError(
                f"Expected teacher_outputs in {losses.OUTPUT_KINDS}. "
                f"Received: teacher_outputs={teacher_outputs!r}."
            )
        super().__init__(teacher_layer, student_layer, temperature, **kwargs)
        self.loss = loss
        self.teacher_outputs = teacher_outputs
        self.dkd_weights = tuple(float(w) for w in dkd_weights)
        self.teacher_class_indices = (
            None if teacher_class_indices is None else [int(i) for i in teacher_class_indices]
        )

    def build_for(self, teacher_shape, student_shape, teacher_source, student_source):
        _check_declared_kind("teacher", teacher_source, self.teacher_outputs)
        _check_declared_kind("student", student_source, "logits")
        teacher_classes = teacher_shape[-1]
        if self.teacher_class_indices is not None:
            bad = [i for i in self.teacher_class_indices if not 0 <= i < teacher_classes]
            if bad:
                raise ValueError(
                    f"teacher_class_indices must lie in [0, {teacher_classes}) for a teacher with "
                    f"{teacher_classes} classes. Received: teacher_class_indices="
                    f"{self.teacher_class_indices}."
                )
            teacher_classes = len(self.teacher_class_indices)
        if teacher_classes != student_shape[-1]:
            raise ValueError(
                f"The teacher gives {teacher_classes} classes but the student predicts "
                f"{student_shape[-1]}. Build the student with {teacher_classes} outputs, or pass "
                "teacher_class_indices=[...] to distill a subset of the teacher's classes. "
                f"Received: teacher output shape={tuple(teacher_shape)}, student output "
                f"shape={tuple(student_shape)}."
            )
        super().build_for(teacher_shape, student_shape, teacher_source, student_source)

    def compute(self, teacher_output, student_output, labels, temperature):
        if self.teacher_class_indices is not None:
            teacher_output = tf.gather(teacher_output, self.teacher_class_indices, axis=-1)
        if self.loss == "dkd":
            alpha, beta = self.dkd_weights
            return losses.decoupled_kd(
                teacher_output, student_output, temperature, self.teacher_outputs, alpha, beta
            )
        loss_fn = losses.soft_target_kl if self.loss == "kl" else losses.soft_target_cross_entropy
        return loss_fn(teacher_output, student_output, temperature, self.teacher_outputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            loss=self.loss,
            teacher_outputs=self.teacher_outputs,
            teacher_class_indices=self.teacher_class_indices,
            dkd_weights=list(self.dkd_weights),
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FeatureDistillation(DistillationTerm):
    """FitNet hint: the student's features, mapped by a learned adapter, imitate the teacher's.

    Formula (`loss="l2"`):
        mean (A(f_s) − f_t)²
    Formula (`loss="cross_entropy"`, knowledge pre-regression):
        −T² · mean_positions Σ_c softmax(f_t / T)[c] · log_softmax(A(f_s) / T)[c]

    `A` is a 1×1 convolution for feature maps (`[b, h, w, c]`) or a dense layer for vectors, created
    when the student's width differs from the teacher's (or always, with `adapter="always"`). The
    spatial sizes must match. (Romero et al., "FitNets: Hints for Thin Deep Nets", 2015.)

    Args:
        teacher_layer: name of the teacher layer giving the hint.
        student_layer: name of the student layer being guided.
        loss: `"l2"` or `"cross_entropy"`.
        adapter: `"auto"` (only when widths differ), `"always"` or `"none"`.
        temperature: used by `"cross_entropy"` only.
    """

    LOSSES = ("l2", "cross_entropy")
    ADAPTERS = ("auto", "always", "none")

    def __init__(
        self,
        teacher_layer: str | None = None,
        student_layer: str | None = None,
        loss: str = "l2",
        adapter: str = "auto",
        temperature: float | schedules.Schedule | dict | None = None,
        **kwargs,
    ):
        if loss not in self.LOSSES:
            raise ValueError(f"Expected loss in {self.LOSSES}. Received: loss={loss!r}.")
        if adapter not in self.ADAPTERS:
            raise ValueError(f"Expected adapter in {self.ADAPTERS}. Received: adapter={adapter!r}.")
        if temperature is None and loss == "cross_entropy":
            temperature = 1.0
        super().__init__(teacher_layer, student_layer, temperature, **kwargs)
        self.loss = loss
        self.adapter = adapter
        self.projection = None

    def build_for(self, teacher_shape, student_shape, teacher_source, student_source):
        if teacher_shape.rank != student_shape.rank or teacher_shape[1:-1] != student_shape[1:-1]:
            raise ValueError(
                "Teacher and student features must have the same rank and spatial size; only the "
                f"channel width may differ. Received: teacher {self.teacher_layer!r} shape="
                f"{tuple(teacher_shape)}, student {self.student_layer!r} shape="
                f"{tuple(student_shape)}."
            )
        needs_adapter = self.adapter == "always" or (
            self.adapter == "auto" and teacher_shape[-1] != student_shape[-1]
        )
        if self.adapter == "none" and teacher_shape[-1] != student_shape[-1]:
            raise ValueError(
                f"Feature widths differ ({student_shape[-1]} vs {teacher_shape[-1]}) and "
                "adapter='none'. Use adapter='auto'. "
                f"Received: adapter={self.adapter!r}."
            )
        if needs_adapter:
            if student_shape.rank == 4:
                self.projection = keras.layers.Conv2D(
                    teacher_shape[-1], 1, name=f"{self.name}_adapter"
                )
            else:
                self.projection = keras.layers.Dense(teacher_shape[-1], name=f"{self.name}_adapter")
            self.projection.build(student_shape)
        super().build_for(teacher_shape, student_shape, teacher_source, student_source)

    def compute(self, teacher_output, student_output, labels, temperature):
        if self.projection is not None:
            student_output = self.projection(student_output)
        if self.loss == "l2":
            return losses.hint_l2(teacher_output, student_output)
        return losses.hint_cross_entropy(teacher_output, student_output, temperature)

    def get_config(self):
        config = super().get_config()
        config.update(loss=self.loss, adapter=self.adapter)
        return config


def _check_declared_kind(role: str, source: keras.layers.Layer | None, declared: str) -> None:
    """Refuses a softmax output declared as logits and a linear one declared as probabilities."""
    if source is None:
        return
    activation = final_activation(source)
    if activation == "softmax" and declared == "logits":
        raise ValueError(
            f"The {role}'s output layer {source.name!r} ends in a softmax, but its outputs were "
            "declared as logits. Pass teacher_outputs='probabilities' for a teacher, or remove the "
            f"softmax from a student. Received: {role} outputs={declared!r}."
        )
    if activation == "linear" and declared == "probabilities":
        raise ValueError(
            f"The {role}'s output layer {source.name!r} has no softmax, but its outputs were "
            "declared as probabilities. Pass teacher_outputs='logits'. "
            f"Received: {role} outputs={declared!r}."
        )
