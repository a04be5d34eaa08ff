"""Budgeted students: per-layer widths learned with KD so the student fits a FLOPs or params budget.

Network slimming (Liu et al., "Learning Efficient Convolutional Networks through Network
Slimming", 2017) driven by a budget and by distillation:

1. `add_scaling_penalty`: the BatchNorm scale γ after each prunable conv is its channels'
   scaling factor. A student whose prunable convs are wider than the budget allows
   (`with_widths`) is distilled with the penalty

       λ · Σ_l w_l · Σ_c |γ_l,c|,    w_l = (cost of one channel of layer l) / mean_l(same)

   so channels that cost more FLOPs (or parameters) are pushed towards zero harder.
2. `choose_widths`: one global threshold on |γ|, the lowest that brings the network within the
   budget (bisection, the cost measured on the narrowed network itself), gives each layer's width.
3. `slim`: a copy of the network keeping chosen channels of chosen layers, with their trained
   weights (and the matching input channels of the layers that read them). Cutting one layer at a
   time, each cut recovered by distillation, then a fine-tune, ends inside the budget.

Prunable convs are `Conv2D` layers followed by `BatchNormalization` whose output reaches only
convs and dense layers through channelwise layers (BN, activations, pooling, dropout, depthwise
convs): every conv of a plain chain; in a residual network the inner convs of each block (the
block outputs, tied together by the additions, keep their width).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kd_keras.methods.base import Method
from kd_keras.models.graph import consumers, inbound_layers, source_layer
from kd_keras.models.lma import LMA
from kd_keras.profile import count_flops

if TYPE_CHECKING:
    from kd_keras.pipeline.task import Phases, Stage, Student, Task

MEASURES = ("flops", "params")

# Layers whose output channel c depends only on input channel c.
_CHANNELWISE = (
    keras.layers.BatchNormalization,
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Dropout,
    keras.layers.UpSampling2D,
    keras.layers.DepthwiseConv2D,
    LMA,
)
# Layers that read every input channel and whose own output channels are unaffected by a cut.
_READERS = (keras.layers.Conv2D, keras.layers.Dense)


def cost(model: keras.Model, measure: str) -> int:
    """The network's `flops` (one single-example pass) or `params`."""
    if measure not in MEASURES:
        raise ValueError(f"Expected measure in {MEASURES}. Received: measure={measure!r}.")
    return int(model.count_params()) if measure == "params" else count_flops(model)


def prunable_convs(model: keras.Model, include: Callable[[str], bool] | None = None) -> list[str]:
    """Names of the convs whose output channels can be removed, in graph order.

    `include(name)` narrows the search (e.g. to a detector's backbone).
    """
    names = []
    for layer in model.layers:
        if type(layer) is not keras.layers.Conv2D or (include and not include(layer.name)):
            continue
        readers = consumers(layer)
        if len(readers) != 1 or not isinstance(readers[0], keras.layers.BatchNormalization):
            continue
        if _reaches_only_readers(model, readers[0]):
            names.append(layer.name)
    return names


def scale_layer(model: keras.Model, conv: str) -> keras.layers.BatchNormalization:
    """The BatchNorm whose γ scales `conv`'s channels."""
    return consumers(model.get_layer(conv))[0]


def scaling_factors(model: keras.Model, convs: Sequence[str]) -> dict[str, np.ndarray]:
    """`|γ|` of each conv's BatchNorm."""
    return {name: np.abs(scale_layer(model, name).gamma.numpy()) for name in convs}


def channel_costs(model: keras.Model, convs: Sequence[str], measure: str) -> dict[str, int]:
    """What removing one channel of each conv saves, in `measure`."""
    full = cost(model, measure)
    saved = {}
    for name in convs:
        channels = model.get_layer(name).filters
        if channels < 2:
            saved[name] = 0
            continue
        saved[name] = full - cost(with_widths(model, {name: channels - 1}), measure)
    return saved


def add_scaling_penalty(
    model: keras.Model, convs: Sequence[str], strength: float, weights: Mapping[str, float]
) -> None:
    """Adds `strength · Σ_l weights[l] · Σ_c |γ_l,c|` to `model.losses` (see the module doc)."""
    for name in convs:
        gamma, weight = scale_layer(model, name).gamma, float(strength * weights[name])
        model.add_loss(lambda gamma=gamma, weight=weight: weight * tf.reduce_sum(tf.abs(gamma)))


def cost_weights(costs: Mapping[str, int]) -> dict[str, float]:
    """Per-channel costs relative to their mean (all 1 when nothing costs anything)."""
    mean = float(np.mean(list(costs.values()))) if costs else 0.0
    return {name: (value / mean if mean > 0 else 1.0) for name, value in costs.items()}


def choose_widths(
    model: keras.Model,
    convs: Sequence[str],
    budget: int,
    measure: str = "flops",
    min_channels: int = 1,
) -> dict[str, int]:
    """Each conv's width under the lowest global |γ| threshold that fits `budget`.

    A conv keeps its channels with `|γ| ≥ threshold`, at least `min_channels`. Raises
    `ValueError` when even `min_channels` everywhere is over budget.
    """
    factors = scaling_factors(model, convs)

    def widths_at(threshold: float) -> dict[str, int]:
        return {
            name: int(max(min_channels, min(len(g), np.sum(g >= threshold))))
            for name, g in factors.items()
        }

    def fits(widths: dict[str, int]) -> bool:
        return cost(with_widths(model, widths), measure) <= budget

    thresholds = np.unique(np.concatenate([*factors.values(), [np.inf]]))
    if fits(widths_at(thresholds[0])):
        return widths_at(thresholds[0])
    if not fits(widths_at(np.inf)):
        smallest = cost(with_widths(model, widths_at(np.inf)), measure)
        raise ValueError(
            f"A {measure} budget of {budget:,} cannot be met: with {min_channels} channel(s) in "
            f"each of {list(convs)} the network still has {smallest:,}. Raise the budget or "
            f"lower min_channels. Received: budget={budget}."
        )
    low, high = 0, len(thresholds) - 1  # widths_at(thresholds[high]) fits, [low] does not
    while high - low > 1:
        middle = (low + high) // 2
        if fits(widths_at(thresholds[middle])):
            high = middle
        else:
            low = middle
    return widths_at(thresholds[high])


def strongest_channels(model: keras.Model, widths: Mapping[str, int]) -> dict[str, np.ndarray]:
    """For each conv of `widths`, the indices (ascending) of its `width` largest |γ|."""
    kept = {}
    for name, width in widths.items():
        factors = scaling_factors(model, [name])[name]
        kept[name] = np.sort(np.argsort(-factors, kind="stable")[:width])
    return kept


def with_widths(model: keras.Model, widths: Mapping[str, int]) -> keras.Model:
    """A new, freshly initialized copy of `model` with `widths[name]` filters in each named conv.

    Wider or narrower: `with_widths(student, {conv: 2 * filters ...})` is the wide start of a
    budgeted student.
    """

    def clone(layer):
        config = layer.get_config()
        if layer.name in widths:
            config["filters"] = int(widths[layer.name])
        return type(layer).from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def slim(model: keras.Model, kept: Mapping[str, Sequence[int]]) -> keras.Model:
    """`model` keeping only channels `kept[name]` of each named conv, with trained weights.

    The convs must be `prunable_convs` of `model`; every other layer keeps its weights, sliced to
    the input channels that remain.
    """
    unknown = sorted(set(kept) - set(prunable_convs(model)))
    if unknown:
        raise ValueError(
            f"Only prunable convs (a Conv2D followed by BatchNorm, read only by convs or dense "
            f"layers) can lose channels: {unknown} cannot. Received: kept={sorted(kept)}."
        )
    kept = {name: np.asarray(indices, dtype=int) for name, indices in kept.items()}
    target = with_widths(model, {name: len(indices) for name, indices in kept.items()})
    selection: dict[str, np.ndarray | None] = {}
    for layer in model.layers:
        inbound = inbound_layers(layer)
        selected = None if not inbound else selection[inbound[0].name]
        if len(inbound) > 1 and any(selection[i.name] is not None for i in inbound):
            raise ValueError(f"Layer {layer.name!r} merges tensors whose channels were cut.")
        if layer.name in kept:
            selection[layer.name] = kept[layer.name]
        elif isinstance(layer, _READERS):  # (DepthwiseConv2D is not a Conv2D: channelwise)
            selection[layer.name] = None
        else:
            selection[layer.name] = selected
        weights = [
            _sliced(layer, weight, selected, kept.get(layer.name)) for weight in layer.weights
        ]
        target.get_layer(layer.name).set_weights(weights)
    return target


def _sliced(layer, weight, inputs: np.ndarray | None, outputs: np.ndarray | None) -> np.ndarray:
    value = weight.numpy()
    is_kernel = weight.name.split("/")[-1].startswith(("kernel", "depthwise_kernel"))
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return value if inputs is None else (value[:, :, inputs] if is_kernel else value[inputs])
    if isinstance(layer, keras.layers.Conv2D):
        if is_kernel:
            value = value if inputs is None else value[:, :, inputs, :]
            return value if outputs is None else value[..., outputs]
        return value if outputs is None else value[outputs]
    if isinstance(layer, keras.layers.Dense):
        return value if inputs is None or not is_kernel else value[inputs]
    # A channelwise layer: its per-channel weights run along the last axis.
    return value if inputs is None else value[..., inputs]


def _reaches_only_readers(model: keras.Model, layer) -> bool:
    outputs = {source_layer(tensor).name for tensor in model.outputs}
    members = {inner.name for inner in model.layers}
    pending = [layer]
    while pending:
        current = pending.pop()
        if current.name in outputs:
            return False
        for consumer in consumers(current):
            if consumer.name not in members:  # a node of another model built on this one
                continue
            if isinstance(consumer, _CHANNELWISE):
                pending.append(consumer)
            elif not isinstance(consumer, _READERS):
                return False
    return True


# === The pipeline method ===


def train_budgeted(
    task: Task, teacher: keras.Model, student: Student, stage: Stage, phases: Phases
) -> keras.Model:
    """The student with its prunable convs `start_width` times wider, slimmed to
    `config.budget` by KD (the functions above).

    Phases: `<stage>_search` (KD + scaling penalty), `<stage>_cut<i>` (the i-th conv narrowed,
    then KD; skipped when it keeps every channel), then `<stage>` (KD). The budget, the cost
    achieved, the widths and the epochs of all phases are noted in the student's record.
    """
    settings = task.config.budget
    stage = dataclasses.replace(stage, method=None)  # each phase: the task's usual KD
    built = task.build("student", Path(student.file).stem, student)
    uniform = task.deployable(built)
    target = settings.target or cost(uniform, settings.measure)
    convs = prunable_convs(built, task.budget_scope)
    if not convs:
        raise ValueError(
            f"{type(task).__name__}'s student has no conv whose channels can be cut (a Conv2D "
            "followed by BatchNorm, read only by convs or dense layers); the budget method "
            "needs one."
        )
    wide = with_widths(
        built,
        {conv: math.ceil(built.get_layer(conv).filters * settings.start_width) for conv in convs},
    )
    costs = channel_costs(wide, convs, settings.measure)
    add_scaling_penalty(wide, convs, settings.penalty, cost_weights(costs))
    search = stage.phase("search", settings.search_epochs)
    phases.fit(wide, task.distilled(teacher, wide, search), search)
    widths = choose_widths(
        task.deployable(wide), convs, target, settings.measure, settings.min_channels
    )
    model, epochs = wide, search.epochs + stage.epochs
    for index, conv in enumerate(convs):
        if widths[conv] == model.get_layer(conv).filters:
            continue
        model = slim(model, strongest_channels(model, {conv: widths[conv]}))
        if settings.cut_epochs > 0:
            cut = stage.phase(f"cut{index + 1}", settings.cut_epochs)
            phases.fit(model, task.distilled(teacher, model, cut), cut)
            epochs += cut.epochs
    phases.fit(model, task.distilled(teacher, model, stage), stage)
    phases.note(
        epochs=epochs,
        measure=settings.measure,
        target=int(target),
        achieved=cost(task.deployable(model), settings.measure),
        uniform=cost(uniform, settings.measure),
        widths={conv: int(widths[conv]) for conv in convs},
        uniform_widths={conv: int(uniform.get_layer(conv).filters) for conv in convs},
    )
    return model


BUDGET = Method("budget", "budgeted widths", train_budgeted)

__all__ = [
    "MEASURES",
    "add_scaling_penalty",
    "channel_costs",
    "choose_widths",
    "cost",
    "cost_weights",
    "prunable_convs",
    "scale_layer",
    "scaling_factors",
    "slim",
    "strongest_channels",
    "with_widths",
    "BUDGET",
    "train_budgeted",
]
