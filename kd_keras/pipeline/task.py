"""What a task tells the shared stage sequence: its models, losses, data, metrics and runtime.

`kd_keras.pipeline.run_pipeline` trains a teacher, students on the same budget, compresses and
exports one of them and records the run, whatever the task. A `Task` fills in the task-specific
parts; `classification`, `detection` and `reid` each have one. Nothing here imports them.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tf_keras as keras

from kd_keras.methods.base import Method
from kd_keras.pipeline.fingerprint import file_listing
from kd_keras.unlabeled import (
    UnlabeledPool,
    mix_unlabeled,
    mixing_order,
    read_unlabeled_folder,
)


class Role(enum.Enum):
    """What a training is for in the stage sequence."""

    TEACHER = "teacher"
    STUDENT = "student"  # a student's own (last) training
    PHASE = "phase"  # a training of a student before its last one (`Stage.phase`)
    LOWRANK = "lowrank"  # the factored shipped student recovering while distilling
    PRUNED = "pruned"
    QAT = "qat"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training in the sequence, as the task sees it when setting it up.

    Attributes:
        name: the run-state stage and checkpoint folder (`teacher`, `scratch`, `pruned`, ...).
        role: what the training is for (`Role`); tasks choose data and terms by it.
        epochs: epochs to train.
        learning_rate: the peak learning rate (`compress.learning_rate` while compressing).
        seed: seeds the data order of tasks that sample per stage.
        method: the student's KD method (`None`: the task's plain distillation).
        variant: the student's task-private variant (`Student.variant`).
    """

    name: str
    role: Role
    epochs: int
    learning_rate: float
    seed: int = 0
    method: Method | None = None
    variant: Any = None

    @property
    def compressing(self) -> bool:
        """The student is being factored, pruned or trained quantization-aware."""
        return self.role in (Role.LOWRANK, Role.PRUNED, Role.QAT)

    def phase(self, suffix: str, epochs: int) -> Stage:
        """A training of this student before its last one: stage `<name>_<suffix>`."""
        return dataclasses.replace(
            self, name=f"{self.name}_{suffix}", role=Role.PHASE, epochs=epochs
        )


@dataclasses.dataclass(frozen=True)
class Student:
    """A student trained on the same budget as the others: from scratch or distilled.

    Attributes:
        stage: the run-state stage and checkpoint folder.
        label: the table row is `student (<label>)`.
        file: where the trained model is saved, relative to the output folder.
        distilled: learn from the teacher (`False`: the task loss alone).
        method: the KD method beyond the task's plain distillation (`kd_keras.methods.Method`);
            one with a `trainer` trains the student in phases.
        variant: anything else the task varies between its students (an ablation part, a
            temperature schedule), passed as `Stage.variant`.
        seed: initial weights (and the data order of tasks that sample per stage).
        ships: the student that is compressed, exported and registered (exactly one).
        tabled: a row in the table; a `False` student (another seed) only counts in the
            seed means.
        logged_as: MLflow metric prefix of its training (`None`: not logged).
    """

    stage: str
    label: str
    file: str
    distilled: bool = True
    method: Method | None = None
    variant: Any = None
    seed: int = 0
    ships: bool = False
    tabled: bool = True
    logged_as: str | None = None

    @classmethod
    def distilled_with(cls, method: Method, seed: int = 0) -> Student:
        """A tabled student distilled with `method`: `student (distilled, <label>)`, stage and
        MLflow prefix `student_<name>`, saved as `student_<name>.keras`."""
        return cls(
            f"student_{method.name}",
            f"distilled, {method.label}",
            f"student_{method.name}.keras",
            method=method,
            seed=seed,
            logged_as=method.name,
        )


@dataclasses.dataclass
class Training:
    """A compiled model (plain or `Distiller`) and the data to fit it on."""

    model: keras.Model
    data: Any
    steps_per_epoch: int | None = None


class Phases(Protocol):
    """Runs the trainings of one student for `Task.train_student`."""

    def fit(self, model: keras.Model, training: Training, stage: Stage) -> None:
        """Fits `training` for `stage.epochs`; `model` is the network it trains.

        The student's own stage is its last training (resumed from a checkpoint when
        interrupted). A `Role.PHASE` stage (`Stage.phase`) is a training before it: once
        finished, `model`'s weights are saved and a rerun loads them instead of training again.
        """

    def note(self, **details) -> None:
        """Keeps `details` (JSON-able) with the student's record; the report lists them under
        `report["student_details"][<label>]`."""


@dataclasses.dataclass(frozen=True)
class DeploySpec:
    """A task's part of the deploy bundle (`kd_runtime.bundle.write_bundle`).

    `heads` maps each output layer name of the deployable model to its bundle role; the
    exported signature keeps those names, or prefixes them (`quant_heatmap` after QAT).
    `normalization` is `{"mean": m, "std": s}`: the model sees `(pixel − m) / s`.
    """

    task: str
    classes: tuple[str, ...]
    heads: Mapping[str, str]
    decoder: Mapping[str, object]
    normalization: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"mean": 0.0, "std": 255.0}
    )
    color: str = "RGB"
    resize: str = "stretch"


class Task(abc.ABC):
    """The task-specific half of a recipe; the config is the recipe's, validated.

    The config must have the shared keys read by `run_pipeline` (those of
    `kd_keras.pipeline.settings.RunConfig`, plus `seed`, `distill` and `compress`). A task loads and
    checks its data when it is built, so every data error is raised before training.
    """

    #: `report["task"]` and the MLflow task tag.
    name: str
    #: the row key plotted against size and gated on at promotion.
    headline: str
    #: row keys of the LiteRT model logged as `tflite_<key>` metrics (and averaged over seeds).
    metric_keys: Sequence[str]
    #: the table `(key, heading, format)` columns (default: `table_columns(metric_keys)`).
    columns: Sequence[tuple[str, str, str]] = ()
    #: the methods `config.methods` may name, each adding a student (`default_students`).
    methods: Sequence[Method] = ()
    #: the data split the int8 ranges are calibrated on.
    calibration_split: str = "train"
    #: also export the uncompressed student with post-training int8, as a reference row.
    ptq_reference: bool = False
    #: the folder of the teacher the task ships for its built-in data (`teacher: auto`), if any.
    builtin_teacher_dir: Path | None = None

    def __init__(self, config) -> None:
        self.config = config

    # --- data and models ---

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.columns and getattr(cls, "metric_keys", None):
            cls.columns = table_columns(cls.metric_keys)

    @property
    def description(self) -> str:
        """The data, as `report["data"]` says it (default: `config.data`, or built-in)."""
        return str(getattr(self.config, "data", None) or "built-in")

    def summary(self) -> dict:
        """Data sizes (and classes) for the report (default: none)."""
        return {}

    def data_fingerprint(self) -> dict:
        """What the data is, for reruns (`kd_keras.pipeline.fingerprint`): annotation digests, image
        listings, built-in generator settings. A rerun with another fingerprint is refused."""
        return {}

    # --- unlabelled images ---

    #: The unlabelled pool distilled students also train on (`load_unlabeled`), or `None`.
    unlabeled: UnlabeledPool | None = None

    def read_unlabeled(self, path: Path) -> np.ndarray:
        """One unlabelled image file as a training input, preprocessed like the labelled ones."""
        raise NotImplementedError(f"{type(self).__name__} does not read unlabelled images.")

    def builtin_unlabeled(self) -> Path:
        """The folder of unlabelled images the built-in data generator writes."""
        raise ValueError(
            "unlabeled_data: builtin is the pool of a built-in data generator, and this "
            f"{self.name} run's data ({self.description}) has none; set unlabeled_data to a "
            "folder of images. Received: unlabeled_data='builtin'."
        )

    def load_unlabeled(self) -> UnlabeledPool | None:
        """`config.unlabeled_data` read and checked (`kd_keras.unlabeled`), or `None` unset.

        `prepare` sets `unlabeled` from it once the task has loaded its labelled data, so a bad
        folder stops the run before any training.
        """
        source = getattr(self.config, "unlabeled_data", None)
        if source is None:
            return None
        folder = self.builtin_unlabeled() if source == "builtin" else Path(source)
        config = self.config
        return read_unlabeled_folder(
            folder, self.read_unlabeled, config.unlabeled_ratio, config.unlabeled_mixup
        )

    def with_unlabeled(
        self,
        labelled,
        stage: Stage,
        labelled_batches: int | None = None,
        teacher_outputs: np.ndarray | None = None,
        batch_size: int | None = None,
        epochs: int = 1,
    ):
        """A distilled stage's `labelled` batches mixed with the unlabelled pool (unchanged
        without one): `(x, y, weight)` elements, see `kd_keras.unlabeled.mix_unlabeled`.
        Unlabelled batches have `batch_size` images (default: `config.batch_size`); an
        epoch then has `batches_per_epoch(labelled_batches)` batches."""
        if self.unlabeled is None:
            return labelled
        return mix_unlabeled(
            labelled,
            self.unlabeled,
            batch_size or self.config.batch_size,
            stage.seed,
            labelled_batches,
            teacher_outputs,
            epochs,
        )

    def batches_per_epoch(self, labelled_batches: int) -> int:
        """Batches in a distilled epoch of `labelled_batches` labelled ones: with an unlabelled
        pool, its batches mixed among them too (`kd_keras.unlabeled.mixing_order`). Schedules
        counted in steps (learning rate, temperature) span them all."""
        if self.unlabeled is None:
            return labelled_batches
        return len(mixing_order(labelled_batches, self.unlabeled.ratio))

    def unlabeled_fingerprint(self) -> dict:
        """`{"unlabeled_files": digest}` of the pool's file listing (empty without a pool): a
        rerun on another pool trains the distilled students again, and only them."""
        if self.unlabeled is None:
            return {}
        root = Path(self.unlabeled.source)
        listing = json.dumps(file_listing(self.unlabeled.files, root), sort_keys=True)
        return {"unlabeled_files": hashlib.sha256(listing.encode()).hexdigest()}

    def check_teacher(self, teacher: keras.Model, path: str) -> None:
        """Raises `ValueError` naming `path` when a given teacher does not fit the data.

        Default: its input and output shapes must be those of the teacher `build` makes.
        """
        expected = self.build("teacher", "expected_teacher")
        got = (teacher.input_shape, teacher.output_shape)
        if got != (expected.input_shape, expected.output_shape):
            raise ValueError(
                f"Expected a teacher taking {expected.input_shape} and giving "
                f"{expected.output_shape}, as this task's data needs. Received: teacher={path} "
                f"taking {teacher.input_shape} and giving {teacher.output_shape}."
            )

    @abc.abstractmethod
    def build(self, role: str, name: str, student: Student | None = None) -> keras.Model:
        """A new `teacher` or `student` network (built from `teacher_model` / `student_model`).

        `student` is the student being built, for tasks whose students differ in structure.
        """

    # --- training ---

    @abc.abstractmethod
    def plain(self, model: keras.Model, stage: Stage) -> Training:
        """`model` compiled with the task loss alone, and its training data."""

    @abc.abstractmethod
    def distilled(self, teacher: keras.Model, student: keras.Model, stage: Stage) -> Training:
        """A compiled `Distiller` (or subclass) with the task's KD terms, and its data."""

    def data(self, stage: Stage):
        """`(dataset, steps_per_epoch)` the stage trains on (`None` steps: the whole dataset),
        for trainings the task does not compile itself (progressive blocks)."""
        raise NotImplementedError(f"{type(self).__name__} does not give its data alone.")

    def kd_terms(self, stage: Stage, student: keras.Model) -> tuple[list, list]:
        """The KD terms and their weights of `stage` for `student`: the one place a task chooses
        them. `distilled` uses them; the MLflow record describes them without building a model.
        """
        raise NotImplementedError(f"{type(self).__name__} does not list its KD terms.")

    def students(self) -> list[Student]:
        """The students to train, in order; the scratch baseline first, one that `ships`.

        Default: scratch, the distilled student that ships, then one student per method named
        in `config.methods` (from `methods`).
        """
        seed = getattr(self.config, "seed", 0)
        by_name = {method.name: method for method in self.methods}
        return [
            Student(
                "scratch", "scratch", "student_scratch.keras", False, seed=seed, logged_as="scratch"
            ),
            Student(
                "student",
                "distilled",
                "student.keras",
                seed=seed,
                ships=True,
                logged_as="distilled",
            ),
            *(
                Student.distilled_with(by_name[name], seed)
                for name in getattr(self.config, "methods", ())
            ),
        ]

    def train_student(
        self, teacher: keras.Model, student: Student, stage: Stage, phases: Phases
    ) -> keras.Model:
        """Builds and trains `student`, returning its network.

        Default: the method's `trainer` when it has one (phases through `phases.fit`, the last
        one `stage` itself), else one training, distilled or plain.
        """
        if student.method is not None and student.method.trainer is not None:
            return student.method.trainer(self, teacher, student, stage, phases)
        model = self.build("student", Path(student.file).stem, student)
        if student.distilled:
            training = self.distilled(teacher, model, stage)
        else:
            training = self.plain(model, stage)
        phases.fit(model, training, stage)
        return model

    def block_boundaries(self, teacher: keras.Model, student: keras.Model) -> list[tuple[str, str]]:
        """`(teacher layer, student layer)` pairs where the same block ends, for progressive KD."""
        raise NotImplementedError(f"{type(self).__name__} does not support progressive KD.")

    def budget_scope(self, layer_name: str) -> bool:
        """Whether the budgeted student may narrow this layer (default: every prunable conv)."""
        return True

    # --- evaluation ---

    @abc.abstractmethod
    def evaluate(self, model: keras.Model) -> dict:
        """Headline metrics of a Keras student (or of the uncompressed teacher, see below)."""

    def evaluate_teacher(self, teacher: keras.Model) -> dict:
        """Metrics of the teacher on the students' test data (default: `evaluate`)."""
        return self.evaluate(teacher)

    @abc.abstractmethod
    def evaluate_tflite(self, path: Path) -> dict:
        """The same metrics of a `.tflite` file run in LiteRT."""

    def deployable(self, model: keras.Model) -> keras.Model:
        """The part of `model` that ships (default: all of it)."""
        return model

    def parity(self, model: keras.Model, path: Path) -> dict | None:
        """How closely the `.tflite` at `path` reproduces its Keras `model` (default: unchecked)."""
        return None

    def parity_metric(self, parity: Mapping) -> float | None:
        """The one parity number the promotion gates read (`tflite_parity`)."""
        return None

    # --- compression ---

    def before_compression(self, student: keras.Model) -> keras.Model:
        """The shipped student as pruning and QAT start from it (default: unchanged)."""
        return student

    def sparsity(self, student: keras.Model, output: Path) -> tuple[float | None, dict]:
        """The sparsity to prune to (`None`: no pruning) and how it was chosen."""
        settings = self.config.compress
        chosen = settings.sparsity if settings.sparsity > 0 and settings.prune_epochs > 0 else None
        return chosen, {}

    def prune(self, student: keras.Model, sparsity: float) -> keras.Model:
        """`student` wrapped for pruning to `sparsity` on the task's schedule (default:
        constant sparsity, the masks updated at every step, `kd_keras.compress.prune`)."""
        from kd_keras import compress

        return compress.prune(student, sparsity, frequency=1)

    @abc.abstractmethod
    def calibration_images(self) -> np.ndarray:
        """`compress.calibration_images` training inputs, preprocessed as for training."""

    # --- report and tracking ---

    def input_example(self) -> np.ndarray:
        """A few real inputs, kept with the registered model (default: two calibration ones)."""
        return self.calibration_images()[:2]

    def deploy_spec(self) -> DeploySpec | None:
        """What the deploy bundle says about the shipped model (default: no bundle is written)."""
        return None

    def pictures(self, folder: Path, models: Mapping[str, object]) -> dict[str, Path]:
        """Pictures of what the models predict, for MLflow (default: none).

        `models` maps `teacher`, `student` to Keras models and `tflite` to the shipped file.
        """
        return {}

    def artifacts(self, output: Path, student_path: Path) -> dict[str, str]:
        """Task files written beside the shipped student (default: none)."""
        return {}


#: The cost columns every table shows after the task's metrics.
COST_COLUMNS = (
    ("params", "params", ","),
    ("flops", "FLOPs", ","),
    ("size_bytes", "size (bytes)", ","),
    ("latency_ms", "LiteRT (ms)", ".4g"),
    ("int8_bytes", "PTQ int8 (bytes)", ","),
    ("int8_latency_ms", "PTQ int8 LiteRT (ms)", ".4g"),
    ("train_seconds", "train (s)", ".1f"),
)


def table_columns(
    metric_keys: Sequence[str], digits: int = 3, extra: Sequence[tuple[str, str, str]] = ()
) -> tuple[tuple[str, str, str], ...]:
    """The table of a task: the model, its metrics (`digits` decimals), then `COST_COLUMNS`
    and any `extra` `(key, heading, format)` columns."""
    metrics = tuple((key, key, f".{digits}f") for key in metric_keys)
    return (("model", "model", ""), *metrics, *COST_COLUMNS, *extra)


__all__ = [
    "COST_COLUMNS",
    "DeploySpec",
    "Phases",
    "Role",
    "Stage",
    "Student",
    "Task",
    "Training",
    "table_columns",
]
