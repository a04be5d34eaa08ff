"""Task-specified KD: a student for a subset of the teacher's classes.

The student predicts `len(class_indices)` classes; student class `j` is teacher class
`class_indices[j]`. `LogitsDistillation(teacher_class_indices=...)` restricts the teacher's logits
to the subset, and the mapping is saved beside the student so predictions can be read back in the
teacher's label space.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kd_keras.io import atomic_write_json


@dataclasses.dataclass(frozen=True)
class ClassSubset:
    """An ordered subset of the teacher's classes.

    Attributes:
        class_indices: teacher class of each student class.
        class_names: optional names of the teacher classes, in teacher order.
    """

    class_indices: tuple[int, ...]
    class_names: tuple[str, ...] | None = None

    def __post_init__(self):
        indices = tuple(int(i) for i in self.class_indices)
        if not indices:
            raise ValueError(
                "Expected at least one class in the subset. Received: class_indices=[]."
            )
        if len(set(indices)) != len(indices):
            raise ValueError(f"Expected distinct classes. Received: class_indices={list(indices)}.")
        if min(indices) < 0:
            raise ValueError(f"Expected classes >= 0. Received: class_indices={list(indices)}.")
        if self.class_names is not None and max(indices) >= len(self.class_names):
            raise ValueError(
                f"Class {max(indices)} does not exist: the teacher has {len(self.class_names)} "
                f"classes. Received: class_indices={list(indices)}."
            )
        object.__setattr__(self, "class_indices", indices)

    @property
    def num_classes(self) -> int:
        return len(self.class_indices)

    def select(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keeps the examples of the subset's classes and remaps their labels to 0..k−1."""
        y = np.asarray(y)
        keep = np.isin(y, self.class_indices)
        if not keep.any():
            raise ValueError(
                f"No example has a label in {list(self.class_indices)}; the subset would be empty."
            )
        return x[keep], self.to_student_labels(y[keep])

    def to_student_labels(self, teacher_labels: np.ndarray) -> np.ndarray:
        """Teacher labels (all inside the subset) to student labels."""
        lookup = {teacher: student for student, teacher in enumerate(self.class_indices)}
        try:
            return np.array([lookup[int(label)] for label in teacher_labels], dtype=np.int64)
        except KeyError as error:
            raise ValueError(
                f"Label {error.args[0]} is not in the subset {list(self.class_indices)}."
            ) from None

    def to_teacher_labels(self, student_labels: np.ndarray) -> np.ndarray:
        """Student predictions back to the teacher's label space."""
        return np.asarray(self.class_indices, dtype=np.int64)[np.asarray(student_labels)]

    def to_json(self) -> dict:
        names = None
        if self.class_names is not None:
            names = [self.class_names[i] for i in self.class_indices]
        return {"teacher_class_indices": list(self.class_indices), "class_names": names}


def mapping_path(model_path: str | os.PathLike) -> Path:
    """Where the class mapping of a saved student lives: `<model>.classes.json`."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".classes.json")


def save_class_mapping(model_path: str | os.PathLike, subset: ClassSubset) -> Path:
    """Writes the mapping beside the student saved at `model_path`."""
    return atomic_write_json(mapping_path(model_path), subset.to_json())


def load_class_mapping(model_path: str | os.PathLike) -> ClassSubset | None:
    """The mapping saved beside a student, or `None` if it predicts all the teacher's classes."""
    path = mapping_path(model_path)
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    return ClassSubset(tuple(payload["teacher_class_indices"]))


def parse_classes(text: str | Sequence[int]) -> tuple[int, ...]:
    """`"0,3,7"` (or a list) to `(0, 3, 7)`, with an error naming the bad item."""
    if not isinstance(text, str):
        return tuple(int(i) for i in text)
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return tuple(int(item) for item in items)
    except ValueError:
        raise ValueError(
            f"Expected comma-separated class indices such as 0,3,7. Received: classes={text!r}."
        ) from None
