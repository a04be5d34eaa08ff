"""Progressive blockwise KD: student blocks learn the teacher's blocks one at a time.

Wang et al., "Progressive Blockwise Knowledge Distillation for Neural Network Acceleration"
(IJCAI 2018). The student is cut at `boundaries` (pairs of a teacher layer and the student layer
where the same block ends, at the same spatial size). Block i of the student, fed by its blocks
1..i−1 (already trained, now frozen), learns to reproduce the teacher's block-i output through a
learned 1×1 adapter A_i:

    L_i = mean (A_i(s_i(s_<i(x))) − t_i(t_<i(x)))²

Then the whole student is fine-tuned end to end with the usual KD terms (the caller's part).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import tf_keras as keras

from kd_keras.distiller import Distiller
from kd_keras.methods.base import Method
from kd_keras.terms import FeatureDistillation

if TYPE_CHECKING:
    from kd_keras.pipeline.task import Phases, Stage, Student, Task


def check_boundaries(
    teacher: keras.Model, student: keras.Model, boundaries: Sequence[tuple[str, str]]
) -> None:
    """Refuses boundaries that name missing layers or whose spatial sizes differ."""
    if not boundaries:
        raise ValueError("Progressive KD needs at least one (teacher, student) block boundary.")
    for teacher_layer, student_layer in boundaries:
        shapes = []
        for role, model, name in (
            ("teacher", teacher, teacher_layer),
            ("student", student, student_layer),
        ):
            names = [layer.name for layer in model.layers]
            if name not in names:
                raise ValueError(
                    f"The {role} has no layer {name!r} to end a block at. "
                    f"Received: boundaries={list(boundaries)}."
                )
            shapes.append(tuple(model.get_layer(name).output.shape[1:-1]))
        if shapes[0] != shapes[1]:
            raise ValueError(
                f"Block boundary ({teacher_layer!r}, {student_layer!r}) joins outputs of spatial "
                f"sizes {shapes[0]} and {shapes[1]}; pick layers at the same resolution."
            )


def block_distillers(
    teacher: keras.Model, student: keras.Model, boundaries: Sequence[tuple[str, str]]
) -> Iterator[Distiller]:
    """One uncompiled `Distiller` per block, in order; train each before taking the next.

    The i-th trains the student up to `boundaries[i][1]` on the loss above, with the layers of
    earlier blocks frozen (BatchNorm in inference mode). When the iteration ends (or stops), every
    student layer is trainable again, ready for the end-to-end fine-tune.
    """
    check_boundaries(teacher, student, boundaries)
    trainable = {layer.name: layer.trainable for layer in student.layers}
    frozen: set[str] = set()
    try:
        for index, (teacher_layer, student_layer) in enumerate(boundaries):
            prefix = keras.Model(
                student.inputs,
                student.get_layer(student_layer).output,
                name=f"{student.name}_block{index + 1}",
            )
            for layer in prefix.layers:
                layer.trainable = layer.name not in frozen and trainable[layer.name]
            term = FeatureDistillation(
                teacher_layer, None, loss="l2", adapter="always", name=f"block{index + 1}"
            )
            yield Distiller(teacher, prefix, term, 1.0, student_loss_weight=0.0)
            frozen.update(layer.name for layer in prefix.layers)
    finally:
        for layer in student.layers:
            layer.trainable = trainable[layer.name]


# === The pipeline method ===


def train_progressive(
    task: Task, teacher: keras.Model, student: Student, stage: Stage, phases: Phases
) -> keras.Model:
    """Blockwise KD at `task.block_boundaries`, then end-to-end KD (`block_distillers` above).

    Phases: `<stage>_block<i>` for each block, then `<stage>`.
    """
    from kd_keras.pipeline.task import Training  # the pipeline imports this package first

    settings = task.config.progressive
    stage = dataclasses.replace(stage, method=None)  # each phase: the task's usual KD
    model = task.build("student", Path(student.file).stem, student)
    boundaries = task.block_boundaries(teacher, model)
    for index, distiller in enumerate(block_distillers(teacher, model, boundaries)):
        block = stage.phase(f"block{index + 1}", settings.block_epochs)
        data, steps = task.data(block)
        distiller.compile(keras.optimizers.Adam(stage.learning_rate))
        phases.fit(model, Training(distiller, data, steps), block)
    phases.fit(model, task.distilled(teacher, model, stage), stage)
    phases.note(blocks=[list(pair) for pair in boundaries])
    return model


PROGRESSIVE = Method("progressive", "progressive blockwise", train_progressive)

__all__ = ["block_distillers", "check_boundaries", "PROGRESSIVE", "train_progressive"]
