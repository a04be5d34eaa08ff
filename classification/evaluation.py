"""Classification metrics: top-1 accuracy and, when robust KD is measured, PGD accuracy.

A teacher that predicts more classes than the student is scored on the student's subset:
`class_indices` picks its logits in the student's label order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tf_keras as keras

from classification.config import ClassifyConfig
from kd_keras.methods import ROBUST
from kd_keras.methods.adversarial import adversarial_accuracy

#: Steps of the PGD attack that scores robustness (training uses `distill.adversarial_steps`).
PGD_STEPS = 10


def top1_accuracy(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    class_indices: Sequence[int] | None = None,
) -> float:
    """The fraction of `x` whose largest logit is the label.

    Args:
        model: a classifier returning logits, `[batch, classes]`.
        x: images, `[examples, h, w, c]`.
        y: integer labels, `[examples]`, indexing `class_indices` when given.
        class_indices: the model's output columns the labels refer to, in label order; `None`
            for all columns.

    Returns:
        The accuracy, a float in [0, 1].
    """
    logits = model.predict(x, batch_size=256, verbose=0)
    if class_indices is not None:
        logits = logits[:, list(class_indices)]
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def robustness_measured(config: ClassifyConfig) -> bool:
    """Whether the rows report PGD accuracy: robust KD ships, or the `robust` method runs."""
    return config.distill.robust or ROBUST.name in config.methods


def pgd_accuracy(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    epsilon: float,
    class_indices: Sequence[int] | None = None,
) -> float:
    """Top-1 accuracy under a `PGD_STEPS`-step PGD attack of L∞ radius `epsilon`.

    Args:
        model: a classifier returning logits, `[batch, classes]`.
        x: images in [0, 1], `[examples, h, w, c]`.
        y: integer labels, `[examples]`, indexing `class_indices` when given.
        epsilon: the attack's L∞ radius.
        class_indices: the model's output columns the labels refer to; `None` for all.

    Returns:
        The adversarial accuracy, a float in [0, 1] (`kd_keras.methods.adversarial_accuracy`).
    """
    return adversarial_accuracy(
        model,
        x,
        y,
        epsilon,
        steps=PGD_STEPS,
        class_indices=None if class_indices is None else list(class_indices),
    )


def evaluate_classifier(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    config: ClassifyConfig,
    class_indices: Sequence[int] | None = None,
) -> dict[str, float]:
    """A row's metrics: `accuracy`, plus `pgd_accuracy` when `robustness_measured(config)`.

    Args:
        model: a classifier returning logits.
        x: test images.
        y: integer test labels.
        config: the run's settings (`distill.adversarial_epsilon` is the attack's radius).
        class_indices: the model's output columns the labels refer to; `None` for all.

    Returns:
        `{"accuracy": ...}`, with `"pgd_accuracy"` when robustness is measured.
    """
    metrics = {"accuracy": top1_accuracy(model, x, y, class_indices)}
    if robustness_measured(config):
        epsilon = config.distill.adversarial_epsilon
        metrics["pgd_accuracy"] = pgd_accuracy(model, x, y, epsilon, class_indices)
    return metrics
