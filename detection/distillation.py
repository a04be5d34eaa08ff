"""Detection KD terms from `DetectConfig.distill`: heatmap, box and neck-hint KD.

The terms themselves are `detection.centernet`'s; this module picks them and their weights for
a stage, with one part at a time for the ablation students (`ABLATION`).
"""

from __future__ import annotations

from collections.abc import Callable

import tf_keras as keras

from detection.centernet import centernet_distillation_terms
from detection.config import DistillSettings
from kd_keras import compress

#: The KD parts an ablation student keeps one of (`detection_kd_terms(only=...)`).
ABLATION = ("heatmap", "box", "hint")


def detection_kd_terms(
    settings: DistillSettings,
    total_steps: int,
    student_layer_name: Callable[[str], str] | None = None,
    only: str | None = None,
) -> tuple[list, list]:
    """The KD terms and weights of `settings` (`distill.*`).

    `only` keeps one component (`heatmap`, `box` or `hint`), at its configured weight or, when
    that is off, a standard one.

    Args:
        settings: the run's `distill` section.
        total_steps: training steps of the stage, over which the temperature schedule runs.
        student_layer_name: maps a layer name to the student's (see `student_layer_name`);
            None when the student's layers keep their names.
        only: one of `ABLATION`, or None for every component with a weight > 0.

    Returns:
        `(terms, weights)`: the KD terms and their loss weights, in the same order.
    """
    weights = {
        "heatmap_weight": settings.heatmap_weight,
        "size_weight": settings.size_weight,
        "offset_weight": settings.offset_weight,
        "hint_weight": settings.hint_weight,
    }
    if only is not None:
        keep = {"heatmap": ("heatmap_weight",), "box": ("size_weight", "offset_weight")}
        keep["hint"] = ("hint_weight",)
        standard = {"heatmap_weight": 0.005, "size_weight": 0.1, "offset_weight": 1.0}
        standard["hint_weight"] = 0.5
        weights = {k: ((v or standard[k]) if k in keep[only] else 0.0) for k, v in weights.items()}
    return centernet_distillation_terms(
        temperature=settings.temperature_schedule(total_steps),
        positive_retaining=settings.positive_retaining,
        core_threshold=settings.core_threshold,
        box_region=settings.box_region,
        hint_object_weight=settings.hint_object_weight,
        student_layer_name=student_layer_name,
        **weights,
    )


def student_layer_name(student: keras.Model) -> Callable[[str], str] | None:
    """How the KD terms find a layer in `student`: by its wrapped name once pruned or QAT.

    Returns:
        A map from a layer name to the student's, or None for an unwrapped student.
    """
    if not (compress.is_pruned(student) or compress.is_quantize_aware(student)):
        return None

    def rename(name: str) -> str:
        return compress.wrapped_layer_name(student, name)

    return rename
