"""Students trained in phases, for any task: a budgeted structure and progressive blockwise KD.

`Task.train_student` runs these for students whose `kd` is `"budget"` or `"progressive"`; the
task's config has a `budget` (`kd_keras.settings.BudgetSettings`) and a `progressive`
(`ProgressiveSettings`) section. Every phase goes through `Phases.fit`, so an interrupted run
resumes at the phase it was in. The final phase is the task's usual distillation (its default
terms), as long as every other student's.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import tf_keras as keras

from kd_keras import budget as budget_lib
from kd_keras import progressive

if TYPE_CHECKING:
    from kd_keras.pipeline.task import Phases, Stage, Student, Task

#: `student (distilled, <label>)` rows.
LABELS = {"budget": "budgeted widths", "progressive": "progressive blockwise"}


def train_budgeted(
    task: Task, teacher: keras.Model, student: Student, stage: Stage, phases: Phases
) -> keras.Model:
    """The student with its prunable convs `start_width` times wider, slimmed to
    `config.budget` by KD (see `kd_keras.budget`).

    Phases: `<stage>_search` (KD + scaling penalty), `<stage>_cut<i>` (the i-th conv narrowed,
    then KD; skipped when it keeps every channel), then `<stage>` (KD). The budget, the cost
    achieved, the widths and the epochs of all phases are noted in the student's record.
    """
    settings = task.config.budget
    stage = dataclasses.replace(stage, kd=None)
    built = task.build("student", Path(student.file).stem, student)
    uniform = task.deployable(built)
    target = settings.target or budget_lib.cost(uniform, settings.measure)
    convs = budget_lib.prunable_convs(built, task.budget_scope)
    if not convs:
        raise ValueError(
            f"{type(task).__name__}'s student has no conv whose channels can be cut (a Conv2D "
            "followed by BatchNorm, read only by convs or dense layers); the budget method "
            "needs one."
        )
    wide = budget_lib.with_widths(
        built,
        {conv: math.ceil(built.get_layer(conv).filters * settings.start_width) for conv in convs},
    )
    costs = budget_lib.channel_costs(wide, convs, settings.measure)
    budget_lib.add_scaling_penalty(wide, convs, settings.penalty, budget_lib.cost_weights(costs))
    search = dataclasses.replace(stage, name=f"{stage.name}_search", epochs=settings.search_epochs)
    phases.fit(wide, task.distilled(teacher, wide, search), search)
    widths = budget_lib.choose_widths(
        task.deployable(wide), convs, target, settings.measure, settings.min_channels
    )
    model, epochs = wide, search.epochs + stage.epochs
    for index, conv in enumerate(convs):
        if widths[conv] == model.get_layer(conv).filters:
            continue
        model = budget_lib.slim(model, budget_lib.strongest_channels(model, {conv: widths[conv]}))
        if settings.cut_epochs > 0:
            cut = dataclasses.replace(
                stage, name=f"{stage.name}_cut{index + 1}", epochs=settings.cut_epochs
            )
            phases.fit(model, task.distilled(teacher, model, cut), cut)
            epochs += cut.epochs
    phases.fit(model, task.distilled(teacher, model, stage), stage)
    phases.note(
        epochs=epochs,
        measure=settings.measure,
        target=int(target),
        achieved=budget_lib.cost(task.deployable(model), settings.measure),
        uniform=budget_lib.cost(uniform, settings.measure),
        widths={conv: int(widths[conv]) for conv in convs},
        uniform_widths={conv: int(uniform.get_layer(conv).filters) for conv in convs},
    )
    return model


def train_progressive(
    task: Task, teacher: keras.Model, student: Student, stage: Stage, phases: Phases
) -> keras.Model:
    """Blockwise KD at `task.block_boundaries`, then end-to-end KD (`kd_keras.progressive`).

    Phases: `<stage>_block<i>` for each block, then `<stage>`.
    """
    settings = task.config.progressive
    stage = dataclasses.replace(stage, kd=None)
    model = task.build("student", Path(student.file).stem, student)
    boundaries = task.block_boundaries(teacher, model)
    for index, distiller in enumerate(progressive.block_distillers(teacher, model, boundaries)):
        block = dataclasses.replace(
            stage, name=f"{stage.name}_block{index + 1}", epochs=settings.block_epochs
        )
        training = task.distilled(teacher, model, block)
        distiller.compile(keras.optimizers.Adam(stage.learning_rate))
        phases.fit(model, dataclasses.replace(training, model=distiller), block)
    phases.fit(model, task.distilled(teacher, model, stage), stage)
    phases.note(blocks=[list(pair) for pair in boundaries])
    return model


#: The training of each phased method, by its `Student.kd`.
PHASED = {"budget": train_budgeted, "progressive": train_progressive}

__all__ = ["LABELS", "PHASED", "train_budgeted", "train_progressive"]
