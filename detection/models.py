"""Detection models: the teacher's and the student's CenterNets from `DetectConfig`.

Both are `detection.centernet.build_centernet` detectors, sized by `teacher_model` or
`student_model`; progressive KD pairs their backbone stages, and the budgeted student narrows
the backbone only.
"""

from __future__ import annotations

import tf_keras as keras

from detection.centernet import build_centernet
from detection.config import DetectConfig


def build_detector(config: DetectConfig, role: str, num_classes: int, name: str) -> keras.Model:
    """The CenterNet of a role, sized by `config.teacher_model` or `config.student_model`.

    Args:
        config: the run's settings (`image_size` gives the square RGB input).
        role: `"teacher"` for `teacher_model`; any other role takes `student_model`.
        num_classes: object classes.
        name: model name.

    Returns:
        An uncompiled CenterNet with `heatmap`, `size` and `offset` outputs.
    """
    size = config.teacher_model if role == "teacher" else config.student_model
    return build_centernet(
        (config.image_size, config.image_size, 3),
        num_classes,
        size.backbone,
        size.width,
        size.depth,
        name=name,
        weights=size.weights,
    )


def stage_boundaries() -> list[tuple[str, str]]:
    """The backbone's stem and its stride-4, 8 and 16 stages, as `(teacher, student)` layers.

    Every CenterNet backbone names these layers alike, so each pair holds one name twice.
    """
    return [("stem_relu", "stem_relu")] + [
        (f"stage{index}_out", f"stage{index}_out") for index in (1, 2, 3)
    ]


def in_backbone(layer_name: str) -> bool:
    """Whether a CenterNet layer is in the backbone (stem and stages), not the neck or heads."""
    return layer_name.startswith(("stem", "stage"))
