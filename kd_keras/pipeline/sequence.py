"""The stage sequence every task runs, once: teacher, students, compression, export, record.

    teacher (given or trained) -> students on the same budget (scratch, distilled, ...)
      -> prune + QAT the shipped student while distilling -> TFLite -> LiteRT evaluation
      -> report.json -> MLflow run and registered model

Every training is a resumable stage of the output folder's `RunState`; a `Task` supplies the
models, losses, data and metrics. The report is on disk before MLflow is contacted, so a store
failure never costs the results.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras
import yaml

from kd_keras import compress
from kd_keras import config as config_lib
from kd_keras.export import check_pixel_input, io_json_path, tflite_latency, to_tflite
from kd_keras.io import atomic_save_model, atomic_write_bytes, atomic_write_json
from kd_keras.models import load_model_file
from kd_keras.pipeline.builtin_teacher import shipped_teacher, weights_digest
from kd_keras.pipeline.deploy import write_deploy_bundle
from kd_keras.pipeline.determinism import set_determinism
from kd_keras.pipeline.distribute import make_strategy, worker_index
from kd_keras.pipeline.progress import Heartbeat, log
from kd_keras.pipeline.reporting import Reporter, with_seed_means
from kd_keras.pipeline.resumable import (
    fit_resumable,
    reuse_or_train,
    reuse_or_train_weights,
    run_state,
    training_record,
)
from kd_keras.pipeline.run_state import RunState
from kd_keras.pipeline.settings import teacher_file
from kd_keras.pipeline.task import Role, Stage, Student, Task, Training

# What each seeded step adds to its seed (`config.seed`, or a student's own `Student.seed`): every
# stage is seeded on its own, so a resumed run seeds it as an uninterrupted run did.
SEED_OFFSETS = {
    "teacher": 0,  # initial weights and batches of the teacher
    "student": 1,  # initial weights and batches of a student (from its own seed)
    "compression": 2,  # the global seed when compression starts
    "lowrank": 99,
    "pruned": 100,
    "qat": 101,
}


@dataclasses.dataclass
class Prepared:
    """What `prepare` checked before any training: the task and its data, a given teacher, the
    output folder's state, and the config and strategy this worker runs with."""

    task: Task
    teacher: keras.Model | None
    state: RunState
    config: Any
    strategy: tf.distribute.Strategy


def prepare(task_class: Callable[[Any], Task], config) -> Prepared:
    """Creates the `config.strategy`, the task (loading its data) and a given teacher, checked.

    Every input error is raised here, before any training. Under `multiworker`, a worker other
    than the chief gets its own output folder (`<output_dir>/worker_<index>`) and no tracking.
    """
    set_determinism(config.deterministic)
    strategy = make_strategy(config.strategy, worker_timeout=config.worker_timeout)
    index = worker_index(strategy)
    if index > 0:
        config = config.model_copy(
            update={
                "output_dir": str(Path(config.output_dir) / f"worker_{index}"),
                "tracking": config.tracking.model_copy(update={"enabled": False}),
            }
        )
    task = task_class(config)
    task.unlabeled = task.load_unlabeled()
    teacher, teacher_digest = None, None
    builtin = shipped_teacher(task, config)
    if builtin is not None:
        with strategy.scope():
            teacher = builtin.load(task.build("teacher", "teacher"))
        teacher_digest = builtin.record()["weights_digest"]
        log.info("teacher: the built-in teacher (%s)", builtin.weights)
    elif teacher_file(config):
        with strategy.scope():
            teacher = load_model_file(config.teacher, option="teacher")
        task.check_teacher(teacher, config.teacher)
    if config.compress.camera_input:
        pixel_input_of(task)
    plain = [student.stage for student in task.students() if not student.distilled]
    state = run_state(
        config, task.data_fingerprint(), plain, task.unlabeled_fingerprint(), teacher_digest
    )
    return Prepared(task, teacher, state, config, strategy)


def _holds_weights(path: Path, model: keras.Model) -> bool:
    """Whether the `.keras` file at `path` holds `model`'s weights, bit for bit."""
    if not path.is_file():
        return False
    try:
        saved = load_model_file(path, option="teacher")
    except ValueError:
        return False
    return weights_digest(saved) == weights_digest(model)


def pixel_input_of(task: Task) -> tuple[float, float]:
    """`(mean, std)` of the task's pixel normalisation, for a camera-native `.tflite`."""
    spec = task.deploy_spec()
    if spec is None:
        raise config_lib.ConfigError(
            f"compress.camera_input needs the {task.name} task's deploy description "
            "(Task.deploy_spec) to know its pixel normalisation: set camera_input=false. "
            "Received: no deploy_spec."
        )
    pixel_input = float(spec.normalization["mean"]), float(spec.normalization["std"])
    try:
        check_pixel_input(pixel_input)
    except ValueError as error:
        raise config_lib.ConfigError(f"compress.camera_input: {error}") from None
    return pixel_input


def run_pipeline(prepared: Prepared, session=None) -> dict:
    """Runs every stage (reusing those finished in `output_dir`); returns the report.

    `session` is the MLflow `RunSession` that records the run, or `None` for none. The report
    is also written to `<output_dir>/report.json`.
    """
    with Heartbeat() as heartbeat:
        return _Run(prepared, session, heartbeat).run()


class _Run:
    def __init__(self, prepared: Prepared, session, heartbeat: Heartbeat) -> None:
        self.heartbeat = heartbeat
        self.task, self.state, self.config = prepared.task, prepared.state, prepared.config
        self.strategy = prepared.strategy
        self.given_teacher = prepared.teacher
        self.session = session
        self.output = Path(self.config.output_dir)
        self.artifacts: dict[str, str] = {}
        self.student_details: dict[str, dict] = {}
        self._calibration: np.ndarray | None = None
        self.reporter = Reporter(self.task, self.config, self.calibration_images, heartbeat)

    def run(self) -> dict:
        config, output = self.config, self.output
        keras.utils.set_random_seed(config.seed)
        output.mkdir(parents=True, exist_ok=True)
        config_text = yaml.safe_dump(config_lib.to_dict(config))
        atomic_write_bytes(output / "config.yaml", config_text.encode())

        teacher, teacher_row = self.teacher()
        rows, shipped, temperatures, seed_runs = self.students(teacher)
        rows = [teacher_row, *rows]
        spec, student = shipped
        keras.utils.set_random_seed(config.seed + SEED_OFFSETS["compression"])
        compressed_rows, compression = self.compress(teacher, student)
        rows += compressed_rows
        self.deploy(config_text, compression, rows[-1])

        report = {
            "task": self.task.name,
            "data": self.task.description,
            **self.task.summary(),
            **({"unlabeled": self.task.unlabeled.summary()} if self.task.unlabeled else {}),
            "rows": rows,
            **({"seed_runs": seed_runs} if seed_runs else {}),
            **self.reporter.kd_gains(seed_runs, teacher_row),
            "temperatures_per_epoch": temperatures,
            "epoch_losses": self.epoch_losses(),
            **({"student_details": self.student_details} if self.student_details else {}),
            "compression": compression,
            "reused_stages": self.state.reused,
            "artifacts": self.artifacts,
        }
        atomic_write_json(output / "report.json", report)
        if self.session is not None:
            report["mlflow"] = self.reporter.record(
                self.session, report, self.artifacts, teacher, _student_stage(spec, config), student
            )
            atomic_write_json(output / "report.json", report)
        return report

    def deploy(self, config_text: str, compression: dict, shipped_row: dict) -> None:
        """Writes `deploy/` (the shipped `.tflite` and its `bundle.json`) when it was exported."""
        tflite = self.artifacts.get("student_tflite")
        spec = self.task.deploy_spec()
        if tflite is None or spec is None:
            return
        folder = write_deploy_bundle(
            spec,
            Path(tflite),
            self.output,
            mode=compression["export"]["mode"],
            config_text=config_text,
            metrics={key: shipped_row.get(key) for key in (*self.task.metric_keys, "latency_ms")},
        )
        self.artifacts["deploy"] = str(folder)
        log.info("deploy bundle written to %s", folder)

    def epoch_losses(self) -> dict[str, list[float]]:
        """Every finished stage's training loss at each epoch, by stage name, in stage order
        (a stage resumed from its checkpoint lists the epochs after the resume)."""
        records = {stage: self.state.done(stage) or {} for stage in self.state.finished}
        return {stage: r["losses"] for stage, r in records.items() if r.get("losses")}

    # --- stages ---

    def fit(self, training: Training, stage: Stage, logged_as: str | None, callbacks=()) -> dict:
        if self.session is not None and logged_as is not None:
            callbacks = [*callbacks, self.session.callback(logged_as)]
        seconds, history = fit_resumable(
            training.model,
            training.data,
            stage.epochs,
            self.output / "checkpoints" / stage.name,
            callbacks,
            training.steps_per_epoch,
            stage=stage.name,
        )
        return training_record(seconds, history)

    def teacher(self) -> tuple[keras.Model, dict]:
        config, task = self.config, self.task
        teacher, trained = self.given_teacher, None
        if teacher is None:
            stage = teacher_stage(config)

            def train():
                keras.utils.set_random_seed(stage.seed)
                with self.strategy.scope():
                    model = task.build("teacher", "teacher")
                    training = task.plain(model, stage)
                return model, self.fit(training, stage, "teacher")

            path = self.output / "teacher.keras"
            teacher, trained = reuse_or_train(self.state, "teacher", path, train)
        if teacher_file(config):
            self.artifacts["teacher"] = str(config.teacher)
        else:  # trained here, or the built-in teacher: a .keras file like any other
            path = self.output / "teacher.keras"
            if trained is None and not _holds_weights(path, teacher):
                atomic_save_model(teacher, path)  # once: a rerun leaves the file as it is
            self.artifacts["teacher"] = str(path)
        tflite = self.output / "teacher_float32.tflite"
        to_tflite(task.deployable(teacher), "float32", path=tflite)
        self.artifacts["teacher_tflite"] = str(tflite)
        row = self.reporter.keras_row("teacher", teacher, trained, task.evaluate_teacher(teacher))
        row["latency_ms"] = tflite_latency(tflite, runs=config.latency_runs)
        row.update(self.reporter.int8_cost("teacher", teacher))
        return teacher, row

    def students(self, teacher):
        """Rows of the tabled students, the shipped `(spec, model)`, temperatures, seed runs."""
        config, task = self.config, self.task
        rows, runs, temperatures, shipped = [], [], {}, None
        for spec in task.students():
            stage = _student_stage(spec, config)

            def train(spec: Student = spec, stage: Stage = stage):
                keras.utils.set_random_seed(spec.seed + SEED_OFFSETS["student"])
                phases = _Phases(self, stage, spec.logged_as)
                with self.strategy.scope():
                    model = task.train_student(teacher, spec, stage, phases)
                return model, phases.record()

            path = self.output / spec.file
            model, trained = reuse_or_train(self.state, spec.stage, path, train)
            label = f"student ({spec.label})"
            row = self.reporter.keras_row(label, model, trained, task.evaluate(model))
            runs.append({"seed": spec.seed, "distilled": spec.distilled, **row})
            if spec.tabled:
                flatbuffer = to_tflite(task.deployable(model), "float32")
                row["latency_ms"] = tflite_latency(flatbuffer, runs=config.latency_runs)
                row.update(self.reporter.int8_cost(label, model))
                rows.append(row)
                self.artifacts[Path(spec.file).stem] = str(path)
                if "temperatures" in trained:
                    temperatures[spec.label] = trained["temperatures"]
                if "details" in trained:
                    self.student_details[spec.label] = trained["details"]
            if spec.ships:
                shipped = (spec, model)
                self.artifacts["student"] = str(path)
                self.artifacts.update(task.artifacts(self.output, path))
        if shipped is None:
            raise ValueError(f"{type(task).__name__}.students() names no student that ships.")
        if len(runs) == len(rows):
            return rows, shipped, temperatures, []
        return with_seed_means(rows, runs, task.metric_keys), shipped, temperatures, runs

    def compress(self, teacher, student) -> tuple[list[dict], dict]:
        """Prune and/or QAT the shipped student while distilling, then export and measure it.

        Low-rank factoring (`compress.lowrank`), pruning and QAT are stages, in that order: the
        pruned student is saved as `student_pruned.keras`, the QAT weights as
        `student_qat.weights.h5`; the `.tflite` is exported again on every run.
        """
        task, settings = self.task, self.config.compress
        base = task.before_compression(student)
        rows, details = [], {"prune_sparsity": 0.0, "qat": False}
        mode = settings.export
        if task.ptq_reference and mode is not None:
            path = self.output / "student_ptq_int8.tflite"
            images = self.calibration_images()
            to_tflite(task.deployable(base), "int8", representative_data=images, path=path)
            self.artifacts["student_ptq_int8"] = str(path)
            rows.append(
                self.reporter.tflite_row("student (int8 PTQ TFLite, LiteRT)", path, base, None)
            )
        parts, seconds = [], 0.0
        if settings.lowrank > 0:
            base, trained, details["lowrank"] = self.lowrank(teacher, base)
            seconds += trained["seconds"]
            parts.append(f"low-rank {settings.lowrank:g}")
        sparsity, chosen = task.sparsity(base, self.output)
        self.artifacts.update(chosen.pop("artifacts", {}))
        details.update(chosen)
        model = base
        if sparsity is not None:
            stage = self.compression_stage(Role.PRUNED, settings.prune_epochs)

            def prune():
                with self.strategy.scope():
                    pruned = task.prune(base, sparsity)
                record = self.distill_into(teacher, pruned, stage, [compress.UpdatePruningStep()])
                return compress.strip(pruned), record

            path = self.output / "student_pruned.keras"
            model, trained = reuse_or_train(self.state, "pruned", path, prune)
            seconds += trained["seconds"]
            details["sparsity"] = compress.sparsity_report(model)
            details["prune_sparsity"] = round(details["sparsity"]["total"], 4)
            parts.append(f"pruned {sparsity:.0%}")
        refusal = compress.qat_refusal(model) if settings.qat_epochs > 0 else None
        if refusal is not None:
            log.warning("no QAT for this student, its int8 export calibrates instead: %s", refusal)
            details["qat_skipped"] = refusal
        elif settings.qat_epochs > 0:
            stage = self.compression_stage(Role.QAT, settings.qat_epochs)
            with self.strategy.scope():
                qat = compress.quantize_aware(
                    model,
                    preserve_sparsity=sparsity is not None,
                    calibration_data=_calibration_batches(self.calibration_images()),
                )

            path = self.output / "student_qat.weights.h5"
            trained = reuse_or_train_weights(
                self.state, "qat", qat, path, lambda: self.distill_into(teacher, qat, stage)
            )
            seconds += trained["seconds"]
            details.update(qat=True, qat_loss=trained["loss"])
            model = qat
            parts.append("QAT")
        details["seconds"] = round(seconds, 1)
        if parts:
            row = self.reporter.keras_row(
                f"student ({', '.join(parts)})", base, {"seconds": seconds}, task.evaluate(model)
            )
            row["sparsity"] = compress.kernel_sparsity(model)
            row["size_bytes"] = (
                None  # fake-quantized Keras model: its deployable size is the .tflite
            )
            rows.append(row)
        if mode is not None:
            rows += self.export(model, base, mode, seconds, details)
        return rows, details

    def lowrank(self, teacher, student) -> tuple[keras.Model, dict, dict]:
        """`student` with its k×k convs factored into k×1 + 1×k pairs, recovered while distilling.

        A stage: the recovered student is saved as `student_lowrank.keras`. Returns it, the
        stage's record and the per-layer ranks, parameters and kernel errors at decomposition.
        """
        settings = self.config.compress
        stage = self.compression_stage(Role.LOWRANK, settings.lowrank_epochs)

        def recover():
            with self.strategy.scope():
                factored = compress.decompose(student, settings.lowrank)
            record = {"seconds": 0.0, "loss": None}
            if stage.epochs > 0:
                record = self.distill_into(teacher, factored, stage)
            return factored, {**record, "report": compress.lowrank_report(student, factored)}

        path = self.output / "student_lowrank.keras"
        factored, trained = reuse_or_train(self.state, "lowrank", path, recover)
        return factored, trained, trained["report"]

    def compression_stage(self, role: Role, epochs: int) -> Stage:
        """The `role` stage (lowrank, pruned, qat): `compress.learning_rate`, its own seed."""
        seed = self.config.seed + SEED_OFFSETS[role.value]
        return Stage(role.value, role, epochs, self.config.compress.learning_rate, seed)

    def distill_into(self, teacher, model: keras.Model, stage: Stage, callbacks=()) -> dict:
        """Fits `model` for `stage` while distilling from `teacher`; the stage's record."""
        with self.strategy.scope():
            training = self.task.distilled(teacher, model, stage)
        return self.fit(training, stage, stage.name, callbacks)

    def export(self, model, base, mode: str, seconds: float, details: dict) -> list[dict]:
        """Writes `student_<mode>.tflite` (+ `.io.json`) and measures it in LiteRT.

        With `compress.camera_input` the shipped file takes uint8 pixels; the same model with
        float input is exported beside it (`student_int8_float_input.tflite`) and measured in
        the row before, so the two can be compared.
        """
        task, settings = self.task, self.config.compress
        deployable = task.deployable(model)
        calibrate = mode == "int8" and not compress.is_quantize_aware(model)
        # Calibration images go through the training preprocessing (no augmentation).
        calibration = self.calibration_images() if calibrate else None
        float_input_row = pixel_input = None
        if settings.camera_input:
            pixel_input = pixel_input_of(task)
            float_input = self.output / f"student_{mode}_float_input.tflite"
            self.heartbeat.what = f"exporting the student to {mode} TFLite with float input"
            to_tflite(deployable, mode, representative_data=calibration, path=float_input)
            self.artifacts["student_tflite_float_input"] = str(float_input)
            float_input_row = self.reporter.tflite_row(
                f"student ({mode} TFLite, float input, LiteRT)", float_input, base, None
            )
        path = self.output / f"student_{mode}.tflite"
        self.heartbeat.what = f"exporting the student to {mode} TFLite"
        log.info("exporting the student to %s", path.name)
        to_tflite(
            deployable,
            mode,
            representative_data=calibration,
            int8_io=settings.int8_io,
            pixel_input=pixel_input,
            path=path,
        )
        details["export"] = {
            "mode": mode,
            "io": json.loads(io_json_path(path).read_text()),
            "parity": task.parity(deployable, path),
        }
        self.artifacts["student_tflite"] = str(path)
        self.artifacts["student_tflite_io"] = str(io_json_path(path))
        kind = "uint8 camera input, " if pixel_input else ""
        row = self.reporter.tflite_row(
            f"student ({mode} TFLite, {kind}LiteRT)", path, base, round(seconds, 1)
        )
        row["sparsity"] = compress.kernel_sparsity(model)
        if float_input_row is None:
            return [row]
        float_input_row["sparsity"] = row["sparsity"]
        details["export"]["camera_input"] = {
            "normalization": {"mean": pixel_input[0], "std": pixel_input[1]},
            "minus_float_input": {key: row[key] - float_input_row[key] for key in task.metric_keys},
        }
        return [float_input_row, row]

    def calibration_images(self) -> np.ndarray:
        if self._calibration is None:
            self._calibration = self.task.calibration_images()
        return self._calibration


class _Phases:
    """`Phases` of one student: its own stage checkpointed, earlier phases saved as weights."""

    def __init__(self, run: _Run, stage: Stage, logged_as: str | None) -> None:
        self.run, self.stage, self.logged_as = run, stage, logged_as
        self.seconds, self.last, self.details = 0.0, None, {}

    def fit(self, model: keras.Model, training: Training, stage: Stage) -> None:
        run = self.run
        if stage.role is not Role.PHASE:
            self.last = run.fit(training, stage, self.logged_as)
            self.seconds += self.last["seconds"]
            return
        path = run.output / "phases" / f"{stage.name}.weights.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = reuse_or_train_weights(
            run.state, stage.name, model, path, lambda: run.fit(training, stage, None)
        )
        self.seconds += record["seconds"]

    def note(self, **details) -> None:
        self.details.update(details)

    def record(self) -> dict:
        if self.last is None:
            raise ValueError(
                f"train_student never trained the stage {self.stage.name!r} itself: its last "
                "phase must be named as the student's stage."
            )
        details = {"details": self.details} if self.details else {}
        return {**self.last, "seconds": round(self.seconds, 1), **details}


def teacher_stage(config) -> Stage:
    """The stage that trains the teacher when none is given: `teacher_epochs` at
    `learning_rate`, seeded `seed + SEED_OFFSETS["teacher"]` (its initial weights and batches)."""
    return Stage(
        "teacher",
        Role.TEACHER,
        config.teacher_epochs,
        config.learning_rate,
        config.seed + SEED_OFFSETS["teacher"],
    )


def _student_stage(spec: Student, config) -> Stage:
    return Stage(
        spec.stage,
        Role.STUDENT,
        config.epochs,
        config.learning_rate,
        spec.seed + SEED_OFFSETS["student"],
        spec.method,
        spec.variant,
    )


def _calibration_batches(images: np.ndarray, count: int = 8) -> list[np.ndarray]:
    """`images` in up to `count` non-empty batches (a small training set gives fewer)."""
    return np.array_split(images, max(1, min(count, len(images))))


__all__ = ["Prepared", "prepare", "run_pipeline", "teacher_stage"]
