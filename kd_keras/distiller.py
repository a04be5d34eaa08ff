"""The Distiller: a frozen teacher, a student and composable distillation terms, as a Keras model.

Formula:
    loss = w_student · L_task(y, s(x)) + Σ_i w_i(step) · L_i(t_i(x), s_i(x), y, T_i(step))

Each `L_i` is a `DistillationTerm` (T² scaling lives inside the terms that soften), `t_i`/`s_i` are
the teacher/student outputs the term declares, and weights and temperatures may be schedules. With
`w_student = 1 − α` and a single term of weight `α` this is Hinton's `(1−α)·task + α·T²·KD`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import tensorflow as tf
import tf_keras as keras

from kd_keras import losses, schedules
from kd_keras.models import graph
from kd_keras.terms import DistillationTerm

__all__ = ["BatchLosses", "Distiller", "as_float32"]

_PACKAGE = "kd_keras"


class BatchLosses(NamedTuple):
    """The losses of one batch, as `Distiller.batch_losses` returns them (unweighted, per example).

    Attributes:
        prediction: the student's output on the batch (what the compiled metrics score).
        student_loss: `[batch]` float32 task loss, or `None` without a task loss or labels.
        term_losses: one `[batch]` float32 loss per distillation term, in the terms' order.
        temperatures: one temperature per term at the current step (`None` for terms without).
    """

    prediction: tf.Tensor
    student_loss: tf.Tensor | None
    term_losses: list
    temperatures: list


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Distiller(keras.Model):
    """Trains `student` to match `teacher` through distillation terms, and to fit the labels.

    The API mirrors Keras 3's `keras.distillation.Distiller` on tf_keras, so the student can go
    straight to TF-MOT. `call` returns the student's output; `distiller.student` is the deployable
    model. The teacher is frozen here and always runs in inference mode; its weights never change.

    Args:
        teacher: a functional or sequential tf_keras model, or `None` for offline KD, where each
            training example carries the teacher's cached outputs: `(x, y, teacher_outputs)`.
        student: the tf_keras model being trained (functional for pruning/QAT later).
        distillation_losses: one `DistillationTerm` or a list of them.
        distillation_loss_weights: one weight (number or `Schedule`) per term; default 1 each.
        student_loss_weight: weight (number or `Schedule`) of the task loss given to `compile`.
        teacher_output_shape: offline only: shape of one cached teacher output, without the batch.

    Data: `x`, `(x, y)` or `(x, y, weight)`; offline `(x, y, teacher_outputs[, weight])`.
    `weight` (`[batch]`) weighs each example's task loss and metrics, never the KD terms: an
    unlabelled example (weight 0, any stand-in label) learns from the teacher alone
    (`kd_keras.unlabeled`).

    Metrics: `student_loss`, `distillation_loss`, `total_loss` (alias `loss`), one
    `<term>_loss` per term when there are several, and `<term>_temperature` for terms with one.

    Subclassing: a KD method that changes what the student learns from on a batch overrides the
    step hook `batch_losses` (the unweighted losses of one batch, given the teacher's outputs),
    not `train_step`; see `kd_keras.methods.adversarial.AdversarialDistiller`.

    Example:
        >>> distiller = Distiller(teacher, student, LogitsDistillation(temperature=4.0),
        ...                       distillation_loss_weights=0.9, student_loss_weight=0.1)
        >>> distiller.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(True),
        ...                   metrics=["accuracy"])
        >>> distiller.fit(x, y, epochs=3)
        >>> distiller.student.save("student.keras")
    """

    def __init__(
        self,
        teacher: keras.Model | None,
        student: keras.Model,
        distillation_losses: DistillationTerm | Sequence[DistillationTerm],
        distillation_loss_weights: Sequence[float | schedules.Schedule] | float | None = None,
        student_loss_weight: float | schedules.Schedule = 0.5,
        teacher_output_shape: Sequence[int | None] | None = None,
        name: str = "distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        terms = (
            [distillation_losses]
            if isinstance(distillation_losses, DistillationTerm)
            else list(distillation_losses)
        )
        if not terms:
            raise ValueError("Expected at least one distillation term. Received: [].")
        for term in terms:
            if not isinstance(term, DistillationTerm):
                raise TypeError(
                    "Expected each distillation loss to be a kd_keras DistillationTerm. "
                    f"Received: {term!r}."
                )
        if len({term.name for term in terms}) != len(terms):
            raise ValueError(
                "Distillation terms need distinct names. "
                f"Received: names={[term.name for term in terms]}."
            )
        weights = _as_weight_list(distillation_loss_weights, len(terms))
        graph.check_functional(student, "student")
        if teacher is not None:
            graph.check_functional(teacher, "teacher")
            teacher.trainable = False
        elif teacher_output_shape is None:
            raise ValueError(
                "Offline distillation (teacher=None) needs the shape of the cached teacher "
                "outputs, "
                "e.g. teacher_output_shape=cache.output_shape. Received: teacher_output_shape=None."
            )

        self.teacher = teacher
        self.student = student
        self.distillation_losses = terms
        self.distillation_loss_weights = weights
        self.student_loss_weight = schedules.get(student_loss_weight)
        self.teacher_output_shape = (
            None if teacher_output_shape is None else tf.TensorShape([None, *teacher_output_shape])
        )
        self.student_loss = None
        self._student_loss_argument = None
        self.distillation_step = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="distillation_step"
        )
        self._student_features = _feature_model(student, [t.student_layer for t in terms])
        self._teacher_features = (
            None if teacher is None else _feature_model(teacher, [t.teacher_layer for t in terms])
        )
        self._build_terms()
        # The student's inputs define the Distiller's; its weights all exist now.
        self.built = True

        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.term_loss_trackers = (
            [keras.metrics.Mean(name=f"{t.name}_loss") for t in terms] if len(terms) > 1 else []
        )
        self.temperature_trackers = [
            keras.metrics.Mean(name=f"{t.name}_temperature") if t.temperature is not None else None
            for t in terms
        ]
        # The trackers' results are already global (their variables sum over every replica when
        # read), so Keras must not add them up once more per worker, as its multi-worker
        # default does.
        self.distribute_reduction_method = "first"

    # === Set-up ===

    def _build_terms(self) -> None:
        names = [t.student_layer for t in self.distillation_losses]
        student_shapes = self._student_features.output_shape
        student_sources = _sources(self.student, names)
        for index, term in enumerate(self.distillation_losses):
            if self.teacher is None:
                if term.teacher_layer is not None:
                    raise ValueError(
                        f"Term {term.name!r} reads teacher layer {term.teacher_layer!r}, which an "
                        "offline cache of final teacher outputs cannot provide. Pass the teacher "
                        "model, or use only final-output terms. Received: teacher=None."
                    )
                teacher_shape, teacher_source = self.teacher_output_shape, None
            else:
                teacher_shape = tf.TensorShape(self._teacher_features.output_shape[index])
                teacher_source = _sources(self.teacher, [term.teacher_layer])[0]
            term.build_for(
                teacher_shape,
                tf.TensorShape(student_shapes[index]),
                teacher_source,
                student_sources[index],
            )

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """As `keras.Model.compile`; `loss` is the student's task loss on `(y, student(x))`.

        `loss=None` trains on the distillation terms only (the student weight is then ignored).
        Metrics are computed on the student's predictions, weighted by the examples' weights
        (so an unlabelled example counts in none of them).
        """
        if metrics is not None and kwargs.get("weighted_metrics") is None:
            kwargs["weighted_metrics"], metrics = metrics, None
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.student_loss = None if loss is None else _per_example_loss(loss)
        self._student_loss_argument = loss

    def get_compile_config(self):
        config = super().get_compile_config() or {}
        config["loss"] = keras.saving.serialize_keras_object(self._student_loss_argument)
        return config

    def compile_from_config(self, config):
        """Recompiles a loaded Distiller with its optimizer, student loss and metrics."""
        deserialize = keras.saving.deserialize_keras_object
        self.compile(**{key: deserialize(value) for key, value in config.items()})
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # === Forward ===

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def batch_losses(self, x, y, teacher_outputs: list, training: bool) -> BatchLosses:
        """The step hook: the student's prediction and unweighted losses on one batch.

        `train_step` calls it inside its gradient tape (`training=True`) and `test_step` without
        one (`training=False`); both then weight and sum the losses (the formula in the module
        docstring), average them over the global batch, and update the metrics. A KD method
        that changes what the student learns from on a batch (e.g. `AdversarialDistiller`, which
        trains on adversarial inputs) overrides this method only, and calls
        `super().batch_losses` for the losses of the inputs it chooses.

        Args:
            x: the batch's inputs.
            y: its labels, or `None` (then there is no task loss).
            teacher_outputs: one teacher output per term, on the clean `x` (from one
                inference-mode teacher pass, or from the offline cache). No gradient flows to them.
            training: whether the student runs in training mode.

        Returns:
            A `BatchLosses`: `[batch]` float32 losses, unweighted.
        """
        student_outputs = _as_list(self._student_features(x, training=training))
        step = self.distillation_step
        # The feature model's last output is the student's full output (a list for several heads).
        prediction = student_outputs[-1]
        term_losses, temperatures = [], []
        for index, term in enumerate(self.distillation_losses):
            temperature = None if term.temperature is None else term.temperature(step)
            teacher_out = tf.stop_gradient(teacher_outputs[index])
            term_loss = term.compute(teacher_out, student_outputs[index], y, temperature)
            term_losses.append(tf.cast(term_loss, tf.float32))
            temperatures.append(temperature)
        student_loss = None
        if self.student_loss is not None and y is not None:
            student_loss = _reduce_to_batch(self.student_loss(y, as_float32(prediction)))
        return BatchLosses(prediction, student_loss, term_losses, temperatures)

    def _teacher_outputs(self, x, cached=None) -> list:
        """One teacher output per term: from the cache offline, else one inference-mode pass."""
        if cached is not None:
            return [cached] * len(self.distillation_losses)
        return _as_list(self._teacher_features(x, training=False))

    def _combined(self, student_loss, term_losses, weight=None):
        """Per-example `(total, distillation)`; `weight` weighs the task loss of each example."""
        step = self.distillation_step
        distillation = tf.add_n(
            [w(step) * loss for w, loss in zip(self.distillation_loss_weights, term_losses)]
        )
        if student_loss is None:
            return distillation, distillation
        if weight is not None:
            student_loss = tf.cast(weight, tf.float32) * student_loss
        return self.student_loss_weight(step) * student_loss + distillation, distillation

    def _batch_loss(self, total):
        """The scalar to minimise: per-example `total` over the global batch, plus regularization.

        Called inside the training tape, so the student's regularization losses are recorded.
        """
        # Average over the global batch so gradients summed across replicas are the mean.
        loss = losses.global_batch_mean(total)
        if self.student.losses:
            regularization = tf.add_n([tf.cast(r, tf.float32) for r in self.student.losses])
            loss += tf.nn.scale_regularization_loss(regularization)
        return loss

    def train_step(self, data):
        x, y, teacher_outputs, weight = self._unpack(data)
        # The frozen teacher runs outside the tape: nothing of it is recorded for backprop.
        teacher_outputs = self._teacher_outputs(x, teacher_outputs)
        with tf.GradientTape() as tape:
            prediction, student_loss, term_losses, temperatures = self.batch_losses(
                x, y, teacher_outputs, training=True
            )
            total, distillation = self._combined(student_loss, term_losses, weight)
            loss = self._batch_loss(total)
        # `minimize` lets a `LossScaleOptimizer` (mixed precision) scale the loss before the
        # gradient and unscale the gradients after it; other optimizers just apply the gradients.
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self._update_metrics(
            y, prediction, student_loss, term_losses, temperatures, total, distillation, weight
        )

    def test_step(self, data):
        x, y, teacher_outputs, weight = self._unpack(data)
        teacher_outputs = self._teacher_outputs(x, teacher_outputs)
        prediction, student_loss, term_losses, temperatures = self.batch_losses(
            x, y, teacher_outputs, training=False
        )
        total, distillation = self._combined(student_loss, term_losses, weight)
        return self._update_metrics(
            y, prediction, student_loss, term_losses, temperatures, total, distillation, weight
        )

    def predict_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self.student(x, training=False)

    def _unpack(self, data):
        """`(x, y, teacher_outputs, weight)` of one batch; absent parts are `None`."""
        if not isinstance(data, tuple):
            data = (data,)
        if self.teacher is None:
            if len(data) not in (3, 4):
                raise ValueError(
                    "A Distiller without a teacher trains offline: each element must be "
                    "(x, y, teacher_outputs) or (x, y, teacher_outputs, weight), e.g. from "
                    "kd_keras.methods.offline.offline_dataset. "
                    f"Received: an element with {len(data)} parts."
                )
            return data if len(data) == 4 else (*data, None)
        if len(data) > 3:
            raise ValueError(
                "With a teacher each element must be x, (x, y) or (x, y, weight). "
                f"Received: an element with {len(data)} parts."
            )
        x, y, weight = (*data, None, None)[:3]
        return x, y, None, weight

    def _update_metrics(
        self, y, prediction, student_loss, term_losses, temperatures, total, distillation, weight
    ):
        self.total_loss_tracker.update_state(total)
        self.distillation_loss_tracker.update_state(distillation)
        if student_loss is not None:
            self.student_loss_tracker.update_state(student_loss, sample_weight=weight)
        for tracker, loss in zip(self.term_loss_trackers, term_losses):
            tracker.update_state(loss)
        for tracker, temperature in zip(self.temperature_trackers, temperatures):
            if tracker is not None:
                tracker.update_state(temperature)
        if y is not None:
            self.compiled_metrics.update_state(y, prediction, sample_weight=weight)
        results = {m.name: m.result() for m in self.metrics}
        results["loss"] = results["total_loss"]
        return results

    @property
    def metrics(self):
        trackers = [self.total_loss_tracker, self.student_loss_tracker]
        trackers += [self.distillation_loss_tracker, *self.term_loss_trackers]
        trackers += [t for t in self.temperature_trackers if t is not None]
        compiled = self.compiled_metrics.metrics if self.compiled_metrics is not None else []
        return trackers + list(compiled)

    def fit(self, *args, callbacks=None, **kwargs):
        """As `keras.Model.fit`; adds `UpdateDistillationStep` when missing, for the schedules."""
        callbacks = list(callbacks or [])
        if not any(isinstance(c, schedules.UpdateDistillationStep) for c in callbacks):
            callbacks.insert(0, schedules.UpdateDistillationStep())
        return super().fit(*args, callbacks=callbacks, **kwargs)

    # === Config ===

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "teacher": None if self.teacher is None else serialize(self.teacher),
            "student": serialize(self.student),
            "distillation_losses": [serialize(t) for t in self.distillation_losses],
            "distillation_loss_weights": [
                schedules.serialize(w) for w in self.distillation_loss_weights
            ],
            "student_loss_weight": schedules.serialize(self.student_loss_weight),
            "teacher_output_shape": None
            if self.teacher_output_shape is None
            else self.teacher_output_shape.as_list()[1:],
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        deserialize = keras.saving.deserialize_keras_object
        config = dict(config)
        for key in ("teacher", "student"):
            if config.get(key) is not None:
                config[key] = deserialize(config[key], custom_objects=custom_objects)
        config["distillation_losses"] = [
            deserialize(t, custom_objects=custom_objects) for t in config["distillation_losses"]
        ]
        config["distillation_loss_weights"] = [
            schedules.get(w) for w in config["distillation_loss_weights"]
        ]
        config["student_loss_weight"] = schedules.get(config["student_loss_weight"])
        return cls(**config)


def _layer(model: keras.Model, layer_name: str) -> keras.layers.Layer:
    try:
        return model.get_layer(layer_name)
    except ValueError:
        names = [layer.name for layer in model.layers]
        raise ValueError(
            f"Model {model.name!r} has no layer {layer_name!r}. Its layers are: {names}. "
            f"Received: layer_name={layer_name!r}."
        ) from None


def _sources(model: keras.Model, layer_names: Sequence[str | None]) -> list:
    """The layer producing each requested output (the model's last layer for `None`)."""
    sources = []
    for name in layer_names:
        if name is not None:
            sources.append(_layer(model, name))
        else:
            sources.append(graph.output_layer(model))
    return sources


def _feature_model(model: keras.Model, layer_names: Sequence[str | None]) -> keras.Model:
    """A model sharing `model`'s weights that returns each named layer's output, then the output."""
    if len(model.outputs) != 1 and any(name is None for name in layer_names):
        raise ValueError(
            f"Model {model.name!r} has {len(model.outputs)} outputs; name the layer each term "
            "reads "
            "with teacher_layer=/student_layer=. Received: a term with layer None."
        )
    outputs = [
        model.outputs[0] if name is None else _layer(model, name).output for name in layer_names
    ]
    outputs.append(model.outputs[0] if len(model.outputs) == 1 else model.outputs)
    return keras.Model(model.inputs, outputs, name=f"{model.name}_features")


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def as_float32(outputs):
    """Casts the floating tensors of `outputs` (a tensor or a nest of them) to float32.

    Use it on a model's outputs before a loss: under the `mixed_float16` policy a model outputs
    float16, and its task loss (softmax, log) and the loss scale applied to it would overflow or
    underflow in half precision. Integer tensors are returned unchanged.

    Args:
        outputs: a tensor, or a nest (list, tuple, dict) of tensors.

    Returns:
        The same structure, floating tensors cast to float32.

    Example:
        >>> as_float32(tf.constant([1.0], tf.float16)).dtype  # -> tf.float32
    """
    return tf.nest.map_structure(
        lambda t: tf.cast(t, tf.float32) if t.dtype.is_floating else t, outputs
    )


def _as_weight_list(weights, count: int) -> list[schedules.Schedule]:
    if weights is None:
        return [schedules.Constant(1.0)] * count
    if not isinstance(weights, list | tuple):
        weights = [weights]
    if len(weights) != count:
        raise ValueError(
            f"Expected one distillation weight per term ({count}). "
            f"Received: distillation_loss_weights={weights!r}."
        )
    return [schedules.get(w) for w in weights]


def _per_example_loss(loss):
    """A callable `(y, y_pred) -> per-example loss` from a Loss object, a function or a name."""
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        config["reduction"] = keras.losses.Reduction.NONE
        return type(loss).from_config(config)
    if isinstance(loss, str) or callable(loss):
        return keras.losses.get(loss)
    raise TypeError(f"Expected a Keras loss, a loss function or its name. Received: loss={loss!r}.")


def _reduce_to_batch(values: tf.Tensor) -> tf.Tensor:
    if values.shape.rank is not None and values.shape.rank > 1:
        return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=-1)
    return values
