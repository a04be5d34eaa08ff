"""Choosing how much to prune: adaptive-BN evaluation of candidate sparsities and the knee.

For each candidate sparsity the model is pruned once by magnitude, its BatchNorm statistics are
re-estimated on a few training batches ("adaptive BN": pruning shifts every activation's mean and
variance, and stale statistics would hide how good the pruned weights are), and it is evaluated.
The chosen sparsity is the knee of the accuracy-vs-sparsity curve (Kneedle: Satopää et al., 2011,
through the `kneed` package), or the highest sparsity whose accuracy drop stays within a budget.
This is the selection step of Combine-Net-style pruning pipelines.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import tf_keras as keras

from kd_keras.compress.prune import zero_smallest
from kd_keras.io import atomic_write_bytes, atomic_write_json
from kd_keras.models.graph import check_functional


@dataclasses.dataclass(frozen=True)
class SparsityCurve:
    """Accuracy after one-shot pruning (and adaptive BN) at each sparsity.

    Attributes:
        sparsities: increasing candidate sparsities (0 = the unpruned model).
        accuracies: the score at each sparsity (higher is better).
        chosen: the selected sparsity.
        method: `"knee"` or `"max_drop"`.
    """

    sparsities: tuple[float, ...]
    accuracies: tuple[float, ...]
    chosen: float
    method: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def adapt_batchnorm(model: keras.Model, batches: Iterable) -> keras.Model:
    """Re-estimates every BatchNorm layer's moving statistics on `batches`, in place.

    The statistics become the plain average over the batches of each batch's mean and variance
    (cumulative averaging, not the exponential momentum of training); no weight changes.

    Args:
        model: a functional tf_keras model.
        batches: an iterable of input batches `x` (or `(x, y)` tuples; `y` is ignored).

    Returns:
        `model`, for chaining.
    """
    norms = [
        layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not norms:
        return model
    saved = [(layer.momentum, layer.trainable) for layer in norms]
    try:
        for layer in norms:
            layer.trainable = True
        count = 0
        for batch in batches:
            x = batch[0] if isinstance(batch, tuple | list) else batch
            count += 1
            # moving = m·moving + (1 − m)·batch with m = (k−1)/k: the mean over k batches.
            for layer in norms:
                layer.momentum = (count - 1) / count
            model(x, training=True)
        if count == 0:
            raise ValueError("adapt_batchnorm needs at least one batch. Received: 0 batches.")
    finally:
        for layer, (momentum, trainable) in zip(norms, saved):
            layer.momentum = momentum
            layer.trainable = trainable
    return model


def sparsity_curve(
    model: keras.Model,
    sparsities: Sequence[float],
    evaluate: Callable[[keras.Model], float],
    calibration: Iterable | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scores a one-shot magnitude-pruned copy of `model` at each sparsity.

    Args:
        model: the trained functional model (left unchanged).
        sparsities: candidate sparsities in [0, 1); 0 is added when missing, as the reference.
        evaluate: `model -> score` (e.g. accuracy on held-out training data).
        calibration: input batches for adaptive BN; `None` skips it. Must be re-iterable.

    Returns:
        `(sparsities, scores)`, sorted by sparsity.
    """
    check_functional(model, "model to measure")
    grid = sorted({0.0, *(float(s) for s in sparsities)})
    scores = []
    for sparsity in grid:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        if sparsity > 0:
            zero_smallest(copy, sparsity)
            if calibration is not None:
                adapt_batchnorm(copy, calibration)
        scores.append(float(evaluate(copy)))
    return tuple(grid), tuple(scores)


def choose_sparsity(
    sparsities: Sequence[float], accuracies: Sequence[float], max_drop: float | None = None
) -> SparsityCurve:
    """The sparsity to prune to: the knee of the curve, or the highest within `max_drop`.

    Kneedle looks for the point of the (decreasing, concave) accuracy-vs-sparsity curve farthest
    from the line joining its ends: beyond it, each extra bit of sparsity costs much more
    accuracy. With `max_drop` it is instead the highest sparsity whose accuracy is at least
    `accuracies[0] − max_drop` (the first point is the reference).

    Raises:
        ValueError: fewer than three points, mismatched lengths or an unsorted grid.
    """
    x = np.asarray(sparsities, dtype=float)
    y = np.asarray(accuracies, dtype=float)
    if x.shape != y.shape or x.size < 3:
        raise ValueError(
            "Expected at least three (sparsity, accuracy) points of equal length. "
            f"Received: {x.size} sparsities and {y.size} accuracies."
        )
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"Expected increasing sparsities. Received: sparsities={list(x)}.")
    if max_drop is not None:
        if max_drop < 0:
            raise ValueError(f"Expected max_drop >= 0. Received: max_drop={max_drop!r}.")
        within = np.nonzero(y >= y[0] - max_drop)[0]
        chosen = float(x[within.max()])
        return SparsityCurve(tuple(x.tolist()), tuple(y.tolist()), chosen, "max_drop")
    from kneed import KneeLocator

    locator = KneeLocator(x, y, curve="concave", direction="decreasing")
    knee = locator.knee
    # A curve without a knee (flat, or straight) gives no point: keep the reference, unpruned.
    chosen = float(x[0]) if knee is None else float(knee)
    return SparsityCurve(tuple(x.tolist()), tuple(y.tolist()), chosen, "knee")


def save_curve(curve: SparsityCurve, directory: str | os.PathLike, name: str = "sparsity") -> dict:
    """Writes `<name>_curve.json` and `<name>_curve.png` (accuracy vs sparsity, chosen marked).

    Returns:
        `{"json": path, "plot": path}`.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directory = Path(directory)
    json_path = atomic_write_json(directory / f"{name}_curve.json", curve.as_dict())
    figure = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(figure)  # its own canvas: pyplot and the global backend stay untouched
    axes = figure.subplots()
    axes.plot(curve.sparsities, curve.accuracies, marker="o", label="after adaptive BN")
    index = curve.sparsities.index(curve.chosen)
    axes.scatter(
        [curve.chosen], [curve.accuracies[index]], color="red", zorder=3, label=curve.method
    )
    axes.set_xlabel("sparsity")
    axes.set_ylabel("accuracy")
    axes.set_title(f"chosen sparsity {curve.chosen:.2f} ({curve.method})")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plot_path = atomic_write_bytes(directory / f"{name}_curve.png", buffer.getvalue())
    return {"json": str(json_path), "plot": str(plot_path)}


def _all_layers(model: keras.Model) -> list:
    layers = []
    for layer in model.layers:
        layers.extend(_all_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return layers
