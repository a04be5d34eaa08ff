"""Temperature and weight schedules: small serializable callables of the training step.

A schedule maps the optimizer step to a float tensor. The Distiller evaluates it in-graph from a
step variable that the `UpdateDistillationStep` callback advances (the TF-MOT `UpdatePruningStep`
pattern), so `train_step` keeps no Python-side state and runs under any `tf.distribute` strategy.

`Linear`, `Cosine`, `Exponential` and `Step` subclass the tf_keras learning-rate schedule that
computes their formula (`PolynomialDecay`, `CosineDecay`, `ExponentialDecay`,
`PiecewiseConstantDecay`), so the formula lives in tf_keras; these classes add validation, a
flat config of their own arguments, `begin_step` and exact endpoints. `from_name` builds a
schedule for a whole training run from a kind name with one endpoint rule.
"""

from __future__ import annotations

import math
import numbers

import tensorflow as tf
import tf_keras as keras

__all__ = [
    "SCHEDULES",
    "Constant",
    "Cosine",
    "Exponential",
    "Linear",
    "Schedule",
    "Step",
    "UpdateDistillationStep",
    "from_name",
    "get",
    "serialize",
]

_PACKAGE = "kd_keras"
_tf_schedules = keras.optimizers.schedules


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


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"Expected {name} > 0. Received: {name}={value!r}.")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Constant(Schedule):
    """The same value at every step (no tf_keras schedule is a constant)."""

    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, step) -> tf.Tensor:
        return tf.constant(self.value, tf.float32)

    def get_config(self) -> dict:
        return {"value": self.value}


class _Interpolating(Schedule):
    """Goes from `initial_value` to `final_value` over `decay_steps` starting at `begin_step`.

    The value is exactly `initial_value` up to `begin_step` and exactly `final_value` from
    `begin_step + decay_steps` on. In between, `_ramp` applies the subclass's tf_keras formula to
    the steps since `begin_step`. The endpoints are pinned because float32 rounding in those
    formulas (e.g. `(v0 − v1)·1 + v1`) can miss `v0` or `v1` by one ulp.
    """

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

    def _ramp(self, steps_done: tf.Tensor) -> tf.Tensor:
        """The value after `steps_done` (float32, in [0, decay_steps]) steps of the ramp."""
        raise NotImplementedError

    def __call__(self, step) -> tf.Tensor:
        steps_done = tf.clip_by_value(
            tf.cast(step, tf.float32) - self.begin_step, 0.0, float(self.decay_steps)
        )
        value = tf.cast(self._ramp(steps_done), tf.float32)
        value = tf.where(steps_done <= 0.0, self.initial_value, value)
        return tf.where(steps_done >= self.decay_steps, self.final_value, value)

    def get_config(self) -> dict:
        return {
            "initial_value": self.initial_value,
            "final_value": self.final_value,
            "decay_steps": self.decay_steps,
            "begin_step": self.begin_step,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Linear(_Interpolating, _tf_schedules.PolynomialDecay):
    """Linear ramp: `v0 + (v1 − v0)·t`, with `t = clip((step − begin) / decay_steps, 0, 1)`.

    The formula is tf_keras `PolynomialDecay(v0, decay_steps, end_learning_rate=v1, power=1)`,
    `(v0 − v1)·(1 − t) + v1`, which also ramps up when `v1 > v0`.
    """

    def __init__(
        self, initial_value: float, final_value: float, decay_steps: int, begin_step: int = 0
    ):
        super().__init__(initial_value, final_value, decay_steps, begin_step)
        _tf_schedules.PolynomialDecay.__init__(
            self, self.initial_value, self.decay_steps, end_learning_rate=self.final_value
        )

    def _ramp(self, steps_done):
        return _tf_schedules.PolynomialDecay.__call__(self, steps_done)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Cosine(_Interpolating, _tf_schedules.CosineDecay):
    """Half-cosine ramp: `v1 + (v0 − v1)·c`, with `c = (1 + cos(π·t)) / 2` going from 1 to 0.

    `c` is tf_keras `CosineDecay(1.0, decay_steps)` of the steps since `begin_step`. Scaling it
    onto [v1, v0] here, rather than through `CosineDecay(v0, alpha=v1 / v0)`, keeps
    `initial_value = 0` valid (e.g. a loss weight rising from 0).
    """

    def __init__(
        self, initial_value: float, final_value: float, decay_steps: int, begin_step: int = 0
    ):
        super().__init__(initial_value, final_value, decay_steps, begin_step)
        _tf_schedules.CosineDecay.__init__(self, 1.0, self.decay_steps)

    def _ramp(self, steps_done):
        cosine = _tf_schedules.CosineDecay.__call__(self, steps_done)
        return self.final_value + (self.initial_value - self.final_value) * cosine


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Exponential(_Interpolating, _tf_schedules.ExponentialDecay):
    """Geometric ramp: `v0 · (v1 / v0)^t`; both values must be > 0.

    The formula is tf_keras `ExponentialDecay(v0, decay_steps, decay_rate=v1 / v0)` read at the
    steps since `begin_step`, clipped to `decay_steps` so the value stops at `v1` (tf_keras
    alone would keep decaying past it).
    """

    def __init__(
        self, initial_value: float, final_value: float, decay_steps: int, begin_step: int = 0
    ):
        _check_positive("initial_value", initial_value)
        _check_positive("final_value", final_value)
        super().__init__(initial_value, final_value, decay_steps, begin_step)
        _tf_schedules.ExponentialDecay.__init__(
            self,
            self.initial_value,
            self.decay_steps,
            decay_rate=self.final_value / self.initial_value,
        )

    def _ramp(self, steps_done):
        return _tf_schedules.ExponentialDecay.__call__(self, steps_done)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Step(Schedule, _tf_schedules.PiecewiseConstantDecay):
    """Piecewise constant: `values[i]` for `boundaries[i-1] <= step < boundaries[i]`.

    The value changes *at* each boundary. tf_keras `PiecewiseConstantDecay` changes just after it
    (`values[i]` for `boundaries[i-1] < step <= boundaries[i]`), so it is read at `step + 1`,
    which for integer steps is the same rule.
    """

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
        _tf_schedules.PiecewiseConstantDecay.__init__(self, boundaries, values)

    def __call__(self, step) -> tf.Tensor:
        if not self.boundaries:  # tf_keras needs at least one boundary
            return tf.constant(self.values[0], tf.float32)
        step = tf.cast(step, tf.int64)
        value = _tf_schedules.PiecewiseConstantDecay.__call__(self, step + 1)
        return tf.cast(value, tf.float32)

    def get_config(self) -> dict:
        return {"boundaries": list(self.boundaries), "values": list(self.values)}


SCHEDULES = {
    "constant": Constant,
    "linear": Linear,
    "cosine": Cosine,
    "exponential": Exponential,
    "step": Step,
}


def _check_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"Expected a finite number for {name}. Received: {name}={value!r}.")


def from_name(kind: str, initial: float, final: float, total_steps: int) -> Schedule:
    """A schedule named `kind` from `initial` to `final` over a run of `total_steps` steps.

    The one endpoint rule for schedules built from a name: the value is `initial` at step 0 and
    exactly `final` at step `total_steps − 1`, the step the last training batch sees, and at every
    step after. Per kind, with `N = total_steps`:

    - `"linear"`, `"cosine"`, `"exponential"`: ramp over `N − 1` steps (`decay_steps = N − 1`).
    - `"step"`: `initial` for steps `< N // 2`, `final` from step `N // 2` on, so the first
      `⌊N/2⌋` steps see `initial` and the last `⌈N/2⌉` see `final`.
    - `"constant"`: `initial` at every step; `final` is ignored.

    With `N = 1` the only step is also the last, so it sees `final`: the ramps return
    `Constant(final)` and `"step"` switches at step 0.

    Args:
        kind: one of `"constant"`, `"linear"`, `"cosine"`, `"exponential"`, `"step"`.
        initial: value at step 0.
        final: value at step `total_steps − 1` and after; both must be > 0 for `"exponential"`.
        total_steps: number of training steps (batches) in the run, `>= 1`.

    Returns:
        A `Schedule`: `Constant`, `Linear`, `Cosine`, `Exponential` or `Step`.

    Raises:
        ValueError: unknown kind, non-finite values, non-positive values for `"exponential"`,
            or `total_steps` not an integer `>= 1`.

    Example:
        >>> schedule = from_name("linear", 4.0, 1.0, total_steps=3)
        >>> [schedule.value_at(step) for step in range(3)]
        [4.0, 2.5, 1.0]
    """
    if kind not in SCHEDULES:
        raise ValueError(f"Expected kind in {tuple(SCHEDULES)}. Received: kind={kind!r}.")
    _check_number("initial", initial)
    _check_number("final", final)
    if (
        isinstance(total_steps, bool)
        or not isinstance(total_steps, numbers.Integral)
        or total_steps < 1
    ):
        raise ValueError(
            f"Expected an integer total_steps >= 1. Received: total_steps={total_steps!r}."
        )
    if kind == "exponential" and not (initial > 0 and final > 0):
        raise ValueError(
            "Expected initial > 0 and final > 0 for kind='exponential'. "
            f"Received: initial={initial!r}, final={final!r}."
        )
    if kind == "constant":
        return Constant(initial)
    if kind == "step":
        return Step([total_steps // 2], [initial, final])
    if total_steps == 1:
        return Constant(final)
    return SCHEDULES[kind](initial, final, total_steps - 1)


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
    """The `{"class_name": ..., "config": ...}` dict that `get` turns back into `schedule`."""
    return keras.saving.serialize_keras_object(schedule)


class UpdateDistillationStep(keras.callbacks.Callback):
    """Copies the optimizer step into the model's `distillation_step` before each batch.

    `Distiller.fit` adds this callback itself when it is missing, as TF-MOT's `UpdatePruningStep`
    must be added for pruning. Schedules read the step in-graph.
    """

    def on_train_batch_begin(self, batch, logs=None):
        self.model.distillation_step.assign(self.model.optimizer.iterations)
