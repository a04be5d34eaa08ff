"""Temperature and weight schedules: small serializable callables of the training step.

A schedule maps the optimizer step to a float tensor. The Distiller evaluates it in-graph from a
step variable that the `UpdateDistillationStep` callback advances (the TF-MOT `UpdatePruningStep`
pattern), so `train_step` keeps no Python-side state and runs under any `tf.distribute` strategy.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

_PACKAGE = "kd_keras"


class Schedule:
    """Base class: `schedule(step) -> float32 tensor`. Subclasses validate in `__init__`."""

    def __call__(self, step) -> tf.Tensor:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> Schedule:
        return cls(**config)

    def value_at(self, step: int) -> float:
        """The schedule's value at `step` as a Python float (for logs and tests)."""
        return float(self(tf.constant(step, tf.int64)))


def _progress(step, begin_step: int, decay_steps: int) -> tf.Tensor:
    """Fraction of the schedule done at `step`, clipped to [0, 1]."""
    step = tf.cast(step, tf.float32)
    return tf.clip_by_value((step - begin_step) / float(decay_steps), 0.0, 1.0)


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"Expected {name} > 0. Received: {name}={value!r}.")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Constant(Schedule):
    """The same value at every step."""

    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, step) -> tf.Tensor:
        return tf.constant(self.value, tf.float32)

    def get_config(self) -> dict:
        return {"value": self.value}


class _Interpolating(Schedule):
    """Goes from `initial_value` to `final_value` over `decay_steps` starting at `begin_step`."""

    def __init__(
        self, initial_value: float, final_value: float, decay_steps: int, begin_step: int = 0
    ):
        _check_positive("decay_steps", decay_steps)
        if begin_step < 0:
            raise ValueError(f"Expected begin_step >= 0. Received: begin_step={begin_step!r}.")
        self.initial_value = float(initial_value)
        self.final_value = float(final_value)
        self.decay_steps = int(decay_steps)
        self.begin_step = int(begin_step)

    def get_config(self) -> dict:
        return {
            "initial_value": self.initial_value,
            "final_value": self.final_value,
            "decay_steps": self.decay_steps,
            "begin_step": self.begin_step,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Linear(_Interpolating):
    """Linear ramp: `v0 + (v1 − v0)·t`, with `t = clip((step − begin) / decay_steps, 0, 1)`."""

    def __call__(self, step) -> tf.Tensor:
        t = _progress(step, self.begin_step, self.decay_steps)
        return self.initial_value + (self.final_value - self.initial_value) * t


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Cosine(_Interpolating):
    """Half-cosine ramp: `v1 + (v0 − v1)·(1 + cos(π·t)) / 2`."""

    def __call__(self, step) -> tf.Tensor:
        t = _progress(step, self.begin_step, self.decay_steps)
        cosine = 0.5 * (1.0 + tf.cos(math.pi * t))
        return self.final_value + (self.initial_value - self.final_value) * cosine


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Exponential(_Interpolating):
    """Geometric ramp: `v0 · (v1 / v0)^t`; both values must be > 0."""

    def __init__(
        self, initial_value: float, final_value: float, decay_steps: int, begin_step: int = 0
    ):
        _check_positive("initial_value", initial_value)
        _check_positive("final_value", final_value)
        super().__init__(initial_value, final_value, decay_steps, begin_step)

    def __call__(self, step) -> tf.Tensor:
        t = _progress(step, self.begin_step, self.decay_steps)
        return self.initial_value * tf.pow(self.final_value / self.initial_value, t)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Step(Schedule):
    """Piecewise constant: `values[i]` for `boundaries[i-1] <= step < boundaries[i]`."""

    def __init__(self, boundaries: list[int], values: list[float]):
        boundaries = [int(b) for b in boundaries]
        values = [float(v) for v in values]
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                "Expected len(values) == len(boundaries) + 1. "
                f"Received: boundaries={boundaries}, values={values}."
            )
        if boundaries != sorted(set(boundaries)):
            raise ValueError(
                f"Expected strictly increasing boundaries. Received: boundaries={boundaries}."
            )
        self.boundaries = boundaries
        self.values = values

    def __call__(self, step) -> tf.Tensor:
        step = tf.cast(step, tf.int64)
        index = tf.reduce_sum(tf.cast(step >= tf.constant(self.boundaries, tf.int64), tf.int32))
        return tf.gather(tf.constant(self.values, tf.float32), index)

    def get_config(self) -> dict:
        return {"boundaries": list(self.boundaries), "values": list(self.values)}


SCHEDULES = {
    "constant": Constant,
    "linear": Linear,
    "cosine": Cosine,
    "exponential": Exponential,
    "step": Step,
}


def get(identifier) -> Schedule:
    """A `Schedule` from a number, a schedule, or a `{"class_name": ..., "config": ...}` dict."""
    if isinstance(identifier, Schedule):
        return identifier
    if isinstance(identifier, bool):
        raise TypeError(f"Expected a number or a Schedule. Received: {identifier!r}.")
    if isinstance(identifier, int | float):
        return Constant(identifier)
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    raise TypeError(
        "Expected a number, a kd_keras.schedules.Schedule or a serialized schedule dict. "
        f"Received: {identifier!r}."
    )


def serialize(schedule: Schedule) -> dict:
    return keras.saving.serialize_keras_object(schedule)


class UpdateDistillationStep(keras.callbacks.Callback):
    """Copies the optimizer step into the model's `distillation_step` before each batch.

    `Distiller.fit` adds this callback itself when it is missing, as TF-MOT's `UpdatePruningStep`
    must be added for pruning. Schedules read the step in-graph.
    """

    def on_train_batch_begin(self, batch, logs=None):
        self.model.distillation_step.assign(self.model.optimizer.iterations)
