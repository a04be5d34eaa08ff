"""Classification KD terms: Hinton soft targets, plus a FitNet hint on `features`.

The terms go to `kd_keras.distiller.Distiller` (or its adversarial and offline variants) with
the weights returned beside them.
"""

from __future__ import annotations

from collections.abc import Sequence

import tf_keras as keras

from classification.config import ClassifyConfig
from kd_keras import compress
from kd_keras.methods import Method
from kd_keras.terms import FeatureDistillation, LogitsDistillation

#: A student distilled with decoupled KD (`loss: dkd`) whatever `distill.loss` says.
DKD_METHOD = Method("dkd", "decoupled KD")


def classification_kd_terms(
    config: ClassifyConfig,
    total_steps: int,
    student: keras.Model,
    class_indices: Sequence[int] | None = None,
    lowrank: bool = False,
    loss: str | None = None,
) -> tuple[list, list]:
    """The KD terms and weights of `config.distill`.

    `LogitsDistillation` on the teacher's logits (restricted to `class_indices` for a student
    of a class subset), plus a `FeatureDistillation` hint on `features` when `hint_weight > 0`.
    While a factored student recovers (`lowrank`), the hint is a cross-entropy one at
    `compress.lowrank_hint_weight` (knowledge pre-regression).

    Args:
        config: the run's settings.
        total_steps: training steps of the stage, over which the temperature schedule runs.
        student: the student, possibly wrapped for pruning or QAT (its hint layer is found by
            name in the wrapped model).
        class_indices: the teacher class of each student class; `None` when both have the same.
        lowrank: the stage recovers a factored student.
        loss: the soft-target loss instead of `distill.loss` (`"dkd"` for the `dkd` method).

    Returns:
        `(terms, weights)`: the KD terms and their loss weights, in the same order.
    """
    settings = config.distill
    terms = [
        LogitsDistillation(
            temperature=settings.temperature_schedule(total_steps),
            loss=loss or settings.loss,
            teacher_outputs=settings.teacher_outputs,
            teacher_class_indices=class_indices,
            dkd_weights=(settings.dkd_target_weight, settings.dkd_non_target_weight),
            name="logits_kd",
        )
    ]
    weights = [settings.logits_weight]
    hint_weight, hint_loss = settings.hint_weight, settings.hint_loss
    if lowrank:
        hint_weight, hint_loss = config.compress.lowrank_hint_weight, "cross_entropy"
    if hint_weight > 0:
        student_layer = compress.wrapped_layer_name(student, "features")
        terms.append(FeatureDistillation("features", student_layer, loss=hint_loss, name="hint"))
        weights.append(hint_weight)
    return terms, weights
