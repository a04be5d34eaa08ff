"""Classification models: the teacher's and the student's CNN classifiers from `ClassifyConfig`.

Both are `kd_keras.models.build_cnn_classifier` networks, sized by `teacher_model` or
`student_model`; progressive KD pairs their stages one for one.
"""

from __future__ import annotations

from collections.abc import Sequence

import tf_keras as keras

from classification.config import ClassifyConfig
from kd_keras.models import build_cnn_classifier, stage_outputs
from kd_keras.models.applications import application_features, is_application


def build_classifier(
    config: ClassifyConfig,
    role: str,
    input_shape: Sequence[int],
    num_classes: int,
    name: str,
    activation: str | None = None,
) -> keras.Model:
    """The CNN classifier of a role, sized by `config.teacher_model` or `config.student_model`.

    Args:
        config: the run's settings.
        role: `"teacher"` for `teacher_model`; any other role takes `student_model`.
        input_shape: `(height, width, channels)` of the images.
        num_classes: number of output logits.
        name: model name.
        activation: the blocks' activation (`"relu"` or `"lma"`); None takes the size's own.

    Returns:
        An uncompiled `keras.Model` that outputs logits.
    """
    size = config.teacher_model if role == "teacher" else config.student_model
    if is_application(size.backbone):
        return _application_classifier(size, input_shape, num_classes, name)
    return build_cnn_classifier(
        input_shape,
        num_classes,
        size.width,
        size.depth,
        dropout=size.dropout,
        name=name,
        activation=size.activation if activation is None else activation,
    )


def _application_classifier(size, input_shape, num_classes: int, name: str) -> keras.Model:
    """A `tf_keras.applications` backbone, then the CNN's own head: `features` (global average
    pool), dropout and `logits`."""
    inputs = keras.Input(tuple(input_shape), name="image")
    features = application_features(inputs, size.backbone, size.width, size.weights)[32]
    x = keras.layers.GlobalAveragePooling2D(name="features")(features)
    if size.dropout:
        x = keras.layers.Dropout(size.dropout, name="dropout")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def stage_boundaries(teacher: keras.Model, student: keras.Model) -> list[tuple[str, str]]:
    """The stages' ends (`stage<i>_pool`) of both networks, paired teacher-to-student.

    Args:
        teacher: a classifier from `build_cnn_classifier`.
        student: a classifier from `build_cnn_classifier` with the same base filters.

    Returns:
        `(teacher_layer, student_layer)` name pairs, one per stage, in order.

    Raises:
        ValueError: the networks have different numbers of stages, or the student has none.
    """
    ends = stage_outputs(teacher), stage_outputs(student)
    if len(ends[0]) != len(ends[1]) or not ends[1]:
        raise ValueError(
            "Progressive KD replaces teacher stages by student stages one for one, but the "
            f"teacher's stages end at {ends[0]} and the student's at {ends[1]}. Use a teacher "
            "built by kd_keras.models.build_cnn_classifier with the same base_filters."
        )
    return list(zip(*ends, strict=True))
