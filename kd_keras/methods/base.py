"""What a student is trained with: a named KD method, and its trainer when it needs phases."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import tf_keras as keras

    from kd_keras.pipeline.task import Phases, Stage, Student, Task


class Trainer(Protocol):
    """Builds and trains one student, every training through `phases.fit`; returns it."""

    def __call__(
        self,
        task: Task,
        teacher: keras.Model,
        student: Student,
        stage: Stage,
        phases: Phases,
    ) -> keras.Model: ...


@dataclasses.dataclass(frozen=True)
class Method:
    """A KD method beyond the task's plain distillation, as a student of the pipeline uses it.

    Attributes:
        name: short name: the config value (`methods: [budget]`), the student's stage
            (`student_<name>`) and its MLflow prefix.
        label: the table row reads `student (distilled, <label>)`.
        trainer: trains the student in several phases (a `Trainer`). `None`: one training
            with the task's `distilled` set-up, which reads `stage.method` to choose its terms.

    Example:
        >>> ROBUST = Method("robust", "robust KD")
        >>> stage.method == ROBUST  # in a task's `distilled`
    """

    name: str
    label: str
    trainer: Trainer | None = dataclasses.field(default=None, compare=False, repr=False)


__all__ = ["Method", "Trainer"]
