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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras
import yaml

from kd_keras import compress
from kd_keras import config as config_lib
from kd_keras.distribute import make_strategy, worker_index
from kd_keras.export import io_json_path, tflite_latency, tflite_size, to_tflite
from kd_keras.io import atomic_write_bytes, atomic_write_json
from kd_keras.models import load_model_file
from kd_keras.pipeline.progress import Heartbeat, format_metrics, log
from kd_keras.pipeline.resumable import (
    fit_resumable,
    reuse_or_train,
    reuse_or_train_weights,
    run_state,
    training_record,
)
from kd_keras.pipeline.task import Role, Stage, Student, Task, Training
from kd_keras.profile import profile_model
from kd_keras.run_state import RunState

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
    teacher = None
    if config.teacher:
        with strategy.scope():
            teacher = load_model_file(config.teacher, option="teacher")
        task.check_teacher(teacher, config.teacher)
    plain = [student.stage for student in task.students() if not student.distilled]
    state = run_state(config, task.data_fingerprint(), plain)
    return Prepared(task, teacher, state, config, strategy)


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

        report = {
            "task": self.task.name,
            "data": self.task.description,
            **self.task.summary(),
            "rows": rows,
            **({"seed_runs": seed_runs} if seed_runs else {}),
            "temperatures_per_epoch": temperatures,
            **({"student_details": self.student_details} if self.student_details else {}),
            "compression": compression,
            "reused_stages": self.state.reused,
            "artifacts": self.artifacts,
        }
        atomic_write_json(output / "report.json", report)
        if self.session is not None:
            report["mlflow"] = self.record(report, teacher, spec, student)
            atomic_write_json(output / "report.json", report)
        return report

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
            stage = Stage(
                "teacher",
                Role.TEACHER,
                config.teacher_epochs,
                config.learning_rate,
                config.seed + SEED_OFFSETS["teacher"],
            )

            def train():
                keras.utils.set_random_seed(config.seed + SEED_OFFSETS["teacher"])
                with self.strategy.scope():
                    model = task.build("teacher", "teacher")
                    training = task.plain(model, stage)
                return model, self.fit(training, stage, "teacher")

            path = self.output / "teacher.keras"
            teacher, trained = reuse_or_train(self.state, "teacher", path, train)
        self.artifacts["teacher"] = str(config.teacher or self.output / "teacher.keras")
        tflite = self.output / "teacher_float32.tflite"
        to_tflite(task.deployable(teacher), "float32", path=tflite)
        self.artifacts["teacher_tflite"] = str(tflite)
        row = self.keras_row("teacher", teacher, trained, task.evaluate_teacher(teacher))
        row["latency_ms"] = tflite_latency(tflite, runs=config.latency_runs)
        row.update(self.int8_cost("teacher", teacher))
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
            row = self.keras_row(label, model, trained, task.evaluate(model))
            runs.append({"seed": spec.seed, **row})
            if spec.tabled:
                flatbuffer = to_tflite(task.deployable(model), "float32")
                row["latency_ms"] = tflite_latency(flatbuffer, runs=config.latency_runs)
                row.update(self.int8_cost(label, model))
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
        return _with_seed_means(rows, runs, task.metric_keys), shipped, temperatures, runs

    def compress(self, teacher, student) -> tuple[list[dict], dict]:
        """Prune and/or QAT the shipped student while distilling, then export and measure it.

        Low-rank factoring (`compress.lowrank`), pruning and QAT are stages, in that order: the
        pruned student is saved as `student_pruned.keras`, the QAT weights as
        `student_qat.weights.h5`; the `.tflite` is exported again on every run.
        """
        config, task, settings = self.config, self.task, self.config.compress
        base = task.before_compression(student)
        rows, details = [], {"prune_sparsity": 0.0, "qat": False}
        mode = settings.export
        if task.ptq_reference and mode is not None:
            path = self.output / "student_ptq_int8.tflite"
            images = self.calibration_images()
            to_tflite(task.deployable(base), "int8", representative_data=images, path=path)
            self.artifacts["student_ptq_int8"] = str(path)
            rows.append(self.tflite_row("student (int8 PTQ TFLite, LiteRT)", path, base, None))
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
            stage = Stage(
                "pruned",
                Role.PRUNED,
                settings.prune_epochs,
                settings.learning_rate,
                config.seed + SEED_OFFSETS["pruned"],
            )

            def prune():
                with self.strategy.scope():
                    pruned = task.prune(base, sparsity)
                    training = task.distilled(teacher, pruned, stage)
                record = self.fit(training, stage, "pruned", [compress.UpdatePruningStep()])
                return compress.strip(pruned), record

            path = self.output / "student_pruned.keras"
            model, trained = reuse_or_train(self.state, "pruned", path, prune)
            seconds += trained["seconds"]
            details["sparsity"] = compress.sparsity_report(model)
            details["prune_sparsity"] = round(details["sparsity"]["total"], 4)
            parts.append(f"pruned {sparsity:.0%}")
        if settings.qat_epochs > 0:
            stage = Stage(
                "qat",
                Role.QAT,
                settings.qat_epochs,
                settings.learning_rate,
                config.seed + SEED_OFFSETS["qat"],
            )
            with self.strategy.scope():
                qat = compress.quantize_aware(
                    model,
                    preserve_sparsity=sparsity is not None,
                    calibration_data=_calibration_batches(self.calibration_images()),
                )

            def fine_tune() -> dict:
                with self.strategy.scope():
                    training = task.distilled(teacher, qat, stage)
                return self.fit(training, stage, "qat")

            path = self.output / "student_qat.weights.h5"
            trained = reuse_or_train_weights(self.state, "qat", qat, path, fine_tune)
            seconds += trained["seconds"]
            details.update(qat=True, qat_loss=trained["loss"])
            model = qat
            parts.append("QAT")
        details["seconds"] = round(seconds, 1)
        if parts:
            row = self.keras_row(
                f"student ({', '.join(parts)})", base, {"seconds": seconds}, task.evaluate(model)
            )
            row["sparsity"] = compress.kernel_sparsity(model)
            row["size_bytes"] = (
                None  # fake-quantized Keras model: its deployable size is the .tflite
            )
            rows.append(row)
        if mode is not None:
            rows.append(self.export(model, base, mode, seconds, details))
        return rows, details

    def lowrank(self, teacher, student) -> tuple[keras.Model, dict, dict]:
        """`student` with its k×k convs factored into k×1 + 1×k pairs, recovered while distilling.

        A stage: the recovered student is saved as `student_lowrank.keras`. Returns it, the
        stage's record and the per-layer ranks, parameters and kernel errors at decomposition.
        """
        config, task, settings = self.config, self.task, self.config.compress
        stage = Stage(
            "lowrank",
            Role.LOWRANK,
            settings.lowrank_epochs,
            settings.learning_rate,
            config.seed + SEED_OFFSETS["lowrank"],
        )

        def recover():
            with self.strategy.scope():
                factored = compress.decompose(student, settings.lowrank)
            record = {"seconds": 0.0, "loss": None}
            if stage.epochs > 0:
                with self.strategy.scope():
                    training = task.distilled(teacher, factored, stage)
                record = self.fit(training, stage, "lowrank")
            return factored, {**record, "report": compress.lowrank_report(student, factored)}

        path = self.output / "student_lowrank.keras"
        factored, trained = reuse_or_train(self.state, "lowrank", path, recover)
        return factored, trained, trained["report"]

    def export(self, model, base, mode: str, seconds: float, details: dict) -> dict:
        """Writes `student_<mode>.tflite` (+ `.io.json`) and measures it in LiteRT."""
        task = self.task
        path = self.output / f"student_{mode}.tflite"
        self.heartbeat.what = f"exporting the student to {mode} TFLite"
        log.info("exporting the student to %s", path.name)
        deployable = task.deployable(model)
        calibrate = mode == "int8" and not compress.is_quantize_aware(model)
        to_tflite(
            deployable,
            mode,
            # Calibration images go through the training preprocessing (no augmentation).
            representative_data=self.calibration_images() if calibrate else None,
            int8_io=self.config.compress.int8_io,
            path=path,
        )
        details["export"] = {
            "mode": mode,
            "io": json.loads(io_json_path(path).read_text()),
            "parity": task.parity(deployable, path),
        }
        self.artifacts["student_tflite"] = str(path)
        self.artifacts["student_tflite_io"] = str(io_json_path(path))
        row = self.tflite_row(f"student ({mode} TFLite, LiteRT)", path, base, round(seconds, 1))
        row["sparsity"] = compress.kernel_sparsity(model)
        return row

    def int8_cost(self, label: str, model: keras.Model) -> dict:
        """`int8_bytes` and `int8_latency_ms` (LiteRT) of `model` quantized after training.

        Full-integer post-training quantization, calibrated on `calibration_images`: what the
        row's network would weigh and cost on the robot without pruning or QAT. A network the
        converter cannot quantize gets `None` and a warning naming it; the run goes on.
        Nothing with `int8_costs: false`.
        """
        if not self.config.int8_costs:
            return {}
        self.heartbeat.what = f"quantizing {label} to int8"
        try:
            flatbuffer = to_tflite(
                self.task.deployable(model),
                "int8",
                representative_data=self.calibration_images(),
            )
        except Exception as error:  # noqa: BLE001 - a cost column never costs the trained run
            message = f"{label}: no int8 size or latency, the conversion failed: {error}"
            warnings.warn(message, stacklevel=2)
            return {"int8_bytes": None, "int8_latency_ms": None}
        return {
            "int8_bytes": len(flatbuffer),
            "int8_latency_ms": tflite_latency(flatbuffer, runs=self.config.latency_runs),
        }

    def calibration_images(self) -> np.ndarray:
        if self._calibration is None:
            self._calibration = self.task.calibration_images()
        return self._calibration

    # --- rows and record ---

    def keras_row(self, label: str, model, trained: dict | None, metrics: dict) -> dict:
        """A table row: `metrics`, and the cost of the float `model` (what it ships as)."""
        profile = profile_model(self.task.deployable(model))
        trained = trained or {}
        log.info("%s: %s", label, _metrics_text(metrics))
        return {
            "model": label,
            **metrics,
            "params": profile.params,
            "flops": profile.flops,
            "size_bytes": profile.size_bytes,
            "train_seconds": trained.get("seconds"),
            "train_loss": trained.get("loss"),
            "runtime": "keras",
        }

    def tflite_row(self, label: str, path: Path, base, seconds: float | None) -> dict:
        """A `.tflite` file's row: LiteRT metrics, file size and latency; `base`'s params."""
        profile = profile_model(self.task.deployable(base))
        size = tflite_size(path)
        self.heartbeat.what = f"evaluating {path.name} in LiteRT"
        metrics = self.task.evaluate_tflite(path)
        log.info("%s: %s", label, _metrics_text(metrics))
        return {
            "model": label,
            **metrics,
            "params": profile.params,
            "flops": profile.flops,
            "size_bytes": size["bytes"],
            "gzip_bytes": size["gzip_bytes"],
            "latency_ms": tflite_latency(path, runs=self.config.latency_runs),
            "train_seconds": seconds,
            "runtime": "litert",
        }

    def record(self, report: dict, teacher, spec: Student, student) -> dict:
        """Logs the finished run, registers the shipped `.tflite`; never raises on store errors."""
        from kd_keras import tracking

        config, task = self.config, self.task
        self.heartbeat.what = "recording the run in MLflow"
        log.info("recording the run in MLflow")
        tflite = self.artifacts.get("student_tflite")
        shipped_row = report["rows"][-1] if tflite else {}
        exported = report["compression"].get("export") or {}
        metrics = {key: shipped_row.get(key) for key in (*task.metric_keys, "latency_ms")}
        if exported.get("parity"):
            metrics["parity"] = task.parity_metric(exported["parity"])
        calibration = None
        if exported.get("mode") == "int8":
            calibration = {
                "dataset": report["data"],
                "split": task.calibration_split,
                "examples": int(len(self.calibration_images())),
                "preprocessing": "same as training, no augmentation",
                "quantize_aware": bool(report["compression"]["qat"]),
            }
        params = {}
        try:
            terms, weights = task.kd_terms(_student_stage(spec, config), student)
        except NotImplementedError:
            pass  # a task that does not list its terms: the run is recorded without them
        else:
            weight = config.distill.student_loss_weight
            params["distiller"] = tracking.describe_distillation(
                teacher, student, terms, weights, weight
            )
        models = {"teacher": teacher, "student": student, "tflite": tflite}
        try:
            pictures = task.pictures(self.output / "pictures", models)
        except Exception as error:  # noqa: BLE001 - a picture never costs the run
            warnings.warn(f"Pictures not drawn: {error}", stacklevel=2)
            pictures = {}
        record = self.session.finish(
            config_lib.to_dict(config),
            {key: value for key, value in report.items() if key != "seed_runs"},
            {**self.artifacts, "config": self.output / "config.yaml"},
            tflite_path=tflite,
            register_as=config.tracking.register_as if tflite else None,
            input_example=task.input_example(),
            calibration=calibration,
            tflite_metrics={key: value for key, value in metrics.items() if value is not None},
            params=params,
            headline=task.headline,
            images=pictures,
        )
        return {
            "tracking_uri": record.tracking_uri,
            "run_id": record.run_id,
            "model_uri": record.model_uri,
            "complete": record.complete,
        }


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


def _with_seed_means(rows: list[dict], runs: list[dict], keys) -> list[dict]:
    """Student rows get the mean and standard deviation of `keys` over their seeds."""
    result = []
    for row in rows:
        seeds = [run for run in runs if run["model"] == row["model"]]
        if len(seeds) > 1:
            row = dict(row)
            for key in keys:
                values = np.array([run[key] for run in seeds], dtype=float)
                row[key], row[f"{key}_std"] = float(values.mean()), float(values.std())
            row["seeds"] = len(seeds)
        result.append(row)
    return result


def _metrics_text(metrics: dict) -> str:
    numbers = {key: value for key, value in metrics.items() if isinstance(value, int | float)}
    return format_metrics(numbers) if numbers else "measured"


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


__all__ = ["Prepared", "prepare", "run_pipeline"]
