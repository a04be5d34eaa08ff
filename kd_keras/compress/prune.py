"""Magnitude pruning with TF-MOT, usable on a student inside a Distiller.

`prune` wraps a functional model's layers for magnitude pruning (constant or polynomial-decay
schedule, optionally 2:4 structured), `UpdatePruningStep` advances the pruning step while it trains
(on its own or as the student of a `Distiller`), and `strip` removes the wrappers for export.
Fine-tune the pruned student with the teacher:

    pruned = prune(distiller.student, sparsity=0.5, end_step=steps)
    kd = Distiller(teacher, pruned, LogitsDistillation(temperature=4.0), 0.9, 0.1)
    kd.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    kd.fit(data, epochs=2, callbacks=[UpdatePruningStep()])
    student = strip(kd)          # plain tf_keras model, zeros kept
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from kd_keras.compat import prune_registry, pruning_wrapper
from kd_keras.models.graph import check_functional, describe_layers

_sparsity = tfmot.sparsity.keras

ScheduleName = Literal["constant", "polynomial"]


def pruning_schedule(
    sparsity: float,
    schedule: ScheduleName = "constant",
    begin_step: int = 0,
    end_step: int | None = None,
    initial_sparsity: float = 0.0,
    frequency: int = 10,
) -> _sparsity.PruningSchedule:
    """A TF-MOT pruning schedule.

    `constant` prunes to `sparsity` from `begin_step` on. `polynomial` raises the sparsity from
    `initial_sparsity` to `sparsity` along a cubic decay between `begin_step` and `end_step`
    (Zhu & Gupta, 2017, "To prune, or not to prune"). Masks are updated every `frequency` steps.

    Raises:
        ValueError: a sparsity outside [0, 1), or a polynomial schedule without `end_step`.
    """
    for key, value in (("sparsity", sparsity), ("initial_sparsity", initial_sparsity)):
        if not 0 <= value < 1:
            raise ValueError(f"Expected {key} in [0, 1). Received: {key}={value!r}.")
    if frequency < 1:
        raise ValueError(f"Expected frequency >= 1. Received: frequency={frequency!r}.")
    if schedule == "constant":
        return _sparsity.ConstantSparsity(sparsity, begin_step, frequency=frequency)
    if schedule == "polynomial":
        if end_step is None or end_step <= begin_step:
            raise ValueError(
                "A polynomial schedule needs end_step > begin_step (the step at which the "
                "final sparsity is reached, e.g. epochs * steps_per_epoch). "
                f"Received: begin_step={begin_step}, end_step={end_step}."
            )
        return _sparsity.PolynomialDecay(
            initial_sparsity, sparsity, begin_step, end_step, frequency=frequency
        )
    raise ValueError(
        f"Expected schedule 'constant' or 'polynomial'. Received: schedule={schedule!r}."
    )


def prune(
    model: keras.Model,
    sparsity: float = 0.5,
    schedule: ScheduleName = "constant",
    *,
    begin_step: int = 0,
    end_step: int | None = None,
    initial_sparsity: float = 0.0,
    frequency: int = 10,
    m_by_n: tuple[int, int] | None = None,
    exclude: Sequence[str] = (),
) -> keras.Model:
    """Wraps `model` for magnitude pruning (TF-MOT `prune_low_magnitude`); weights are kept.

    Conv and Dense kernels lose their smallest-magnitude weights, layer by layer, up to `sparsity`
    following the schedule (see `pruning_schedule`). With `m_by_n=(2, 4)` every block of 4
    consecutive input-channel weights keeps at most 2 non-zeros instead (structured sparsity that
    sparse kernels can exploit); `sparsity` is then ignored. Train with `UpdatePruningStep()`.

    Args:
        model: a functional or Sequential tf_keras model (e.g. `distiller.student`).
        sparsity: the final fraction of zeros in each pruned kernel, in [0, 1).
        schedule: `"constant"` or `"polynomial"`.
        begin_step: first training step that prunes.
        end_step: last step of the polynomial ramp.
        initial_sparsity: starting sparsity of the polynomial ramp.
        frequency: steps between mask updates.
        m_by_n: `(m, n)`: m zeros in every n consecutive weights, e.g. `(2, 4)`.
        exclude: names of layers left dense, e.g. a first conv with very few weights.

    Returns:
        A new functional model with pruning wrappers, sharing no state with `model`.

    Raises:
        TypeError: `model` is not a functional/Sequential tf_keras model.
    """
    check_functional(model, "model to prune")
    if m_by_n is not None:
        if len(m_by_n) != 2 or not 0 < m_by_n[0] < m_by_n[1]:
            raise ValueError(
                f"Expected m_by_n=(m, n) with 0 < m < n, e.g. (2, 4). Received: m_by_n={m_by_n!r}."
            )
        sparsity = 0.0 if sparsity is None else sparsity
    schedule_object = pruning_schedule(
        sparsity, schedule, begin_step, end_step, initial_sparsity, frequency
    )
    check_exclude(model, exclude)
    # A private copy: TF-MOT's wrappers share the weights of the layers they wrap.
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    kwargs = {
        "pruning_schedule": schedule_object,
        "sparsity_m_by_n": None if m_by_n is None else tuple(m_by_n),
    }
    left_alone = set(exclude) | {layer.name for layer in _weightless_unknown(model)}
    if not left_alone:
        return _sparsity.prune_low_magnitude(copy, **kwargs)

    def wrap(layer):
        if layer.name in left_alone or isinstance(layer, keras.layers.InputLayer):
            return layer
        return _sparsity.prune_low_magnitude(layer, **kwargs)

    return keras.models.clone_model(copy, clone_function=wrap)


def _weightless_unknown(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers TF-MOT cannot wrap for pruning that have no weights to prune (left as they are).

    E.g. the `TFOpLambda`, `Rescaling` and `Normalization` layers of `tf_keras.applications`
    networks. A layer with trainable weights TF-MOT does not know is refused, by name.
    """
    weightless, refused = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer | _sparsity.PrunableLayer):
            continue
        if prune_registry.PruneRegistry.supports(layer):
            continue
        (refused if layer.trainable_weights else weightless).append(layer)
    if refused:
        described = describe_layers(refused)
        raise ValueError(
            f"TF-MOT cannot prune layer(s) {described}: they have weights but no pruning rule. "
            "Make each a tfmot.sparsity.keras.PrunableLayer (get_prunable_weights), or flatten "
            f"a nested model into one functional model. Received: model={model.name!r}."
        )
    return weightless


class UpdatePruningStep(_sparsity.UpdatePruningStep):
    """TF-MOT's pruning-step callback, for a pruned model or a Distiller holding one.

    TF-MOT collects the wrappers from `model.layers`; a Distiller also tracks the student's feature
    model, which shares the same wrappers, so they are collected from `model.student` once each.
    """

    def on_train_begin(self, logs=None):
        self.prunable_layers = pruned_layers(self.model)
        # `get_value` reads a plain or a distributed (mirrored) step variable alike.
        step = self.prunable_layers and keras.backend.get_value(
            self.prunable_layers[0].pruning_step
        )
        if self.prunable_layers and int(step) == -1:
            keras.backend.batch_set_value(
                [(layer.pruning_step, 0) for layer in self.prunable_layers]
            )


def check_exclude(model: keras.Model, exclude: Sequence[str]) -> None:
    """Refuses `exclude` names that are not layers of `model`, listing the layers it has."""
    names = [layer.name for layer in model.layers]
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise ValueError(
            f"Cannot exclude layers that model {model.name!r} does not have. Its layers are: "
            f"{names}. Received: exclude={list(exclude)}."
        )


def pruned_layers(model: keras.Model) -> list:
    """The distinct pruning wrappers of `model`, or of `model.student` for a Distiller."""
    root = _deployable(model)
    seen, layers = set(), []
    for layer in pruning_wrapper.collect_prunable_layers(root):
        if id(layer) not in seen:
            seen.add(id(layer))
            layers.append(layer)
    return layers


def is_pruned(model: keras.Model) -> bool:
    """Whether `model` (or a Distiller's student) carries pruning wrappers."""
    return bool(pruned_layers(model))


def strip(model: keras.Model) -> keras.Model:
    """Removes pruning wrappers and returns the plain model with its zeros (for export).

    Accepts a pruned model or a Distiller whose student is pruned (the stripped student is
    returned). A model without wrappers is returned unchanged.
    """
    root = _deployable(model)
    if not is_pruned(root):
        return root
    return _sparsity.strip_pruning(root)


def sparsity_report(model: keras.Model) -> dict[str, float]:
    """Fraction of exact zeros in each Conv/Dense kernel, keyed by layer name, plus `"total"`.

    Counts the weights as they are (call `strip` first on a pruned model so masks are applied).
    """
    report, zeros, total = {}, 0, 0
    for layer in _deployable(model).layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None and isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = layer.depthwise_kernel
        if kernel is None:
            continue
        values = np.asarray(kernel.numpy())
        report[layer.name] = float(np.mean(values == 0))
        zeros += int(np.sum(values == 0))
        total += values.size
    report["total"] = zeros / total if total else 0.0
    return report


def wrapped_layer_name(model: keras.Model, name: str | None) -> str | None:
    """The name, in a pruned or quantized copy, of the layer that was called `name`.

    Distillation terms name layers (`FeatureDistillation("features", "features")`); TF-MOT renames
    wrapped layers (`prune_low_magnitude_features`, `quant_features`), so terms for fine-tuning
    use this to find them. `None` (the final output) stays `None`.
    """
    if name is None:
        return None
    names = [layer.name for layer in model.layers]
    for candidate in (name, f"prune_low_magnitude_{name}", f"quant_{name}"):
        if candidate in names:
            return candidate
    raise ValueError(
        f"Model {model.name!r} has no layer that was called {name!r}. Its layers are: {names}. "
        f"Received: name={name!r}."
    )


def _deployable(model: keras.Model) -> keras.Model:
    """A Distiller's student, or the model itself."""
    student = getattr(model, "student", None)
    return student if isinstance(student, keras.Model) else model


def zero_smallest(model: keras.Model, sparsity: float, layer_names: Sequence[str] | None = None):
    """Sets the smallest-magnitude `sparsity` fraction of each Conv/Dense kernel to zero, in place.

    One-shot magnitude pruning with the same per-layer criterion as TF-MOT, without wrappers: used
    to scan candidate sparsities quickly before choosing one to fine-tune at.
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"Expected sparsity in [0, 1). Received: sparsity={sparsity!r}.")
    for layer in model.layers:
        if layer_names is not None and layer.name not in layer_names:
            continue
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            continue
        kernel = layer.kernel.numpy()
        count = int(round(sparsity * kernel.size))
        if count == 0:
            continue
        order = np.argsort(np.abs(kernel), axis=None, kind="stable")
        flat = kernel.reshape(-1).copy()
        flat[order[:count]] = 0.0
        layer.kernel.assign(flat.reshape(kernel.shape))
    return model
