"""What a run reports: table rows (metrics beside each network's costs), seed means, the MLflow
record, and plain-text tables."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tf_keras as keras

from kd_keras import config as config_lib
from kd_keras import stats
from kd_keras.export import tflite_latency, tflite_size, to_tflite
from kd_keras.pipeline.progress import Heartbeat, format_metrics, log
from kd_keras.pipeline.task import Stage, Task
from kd_keras.profile import profile_model


class Reporter:
    """The rows and the record of one run.

    Args:
        task: the run's task (metrics, the deployable part of a model).
        config: the run's config (`latency_runs`, `int8_costs`, `output_dir`, `tracking`).
        calibration: gives the int8 calibration images (computed once, when first needed).
        heartbeat: told what is being measured, for the "still working" lines.
    """

    def __init__(
        self,
        task: Task,
        config,
        calibration: Callable[[], np.ndarray],
        heartbeat: Heartbeat,
    ) -> None:
        self.task, self.config = task, config
        self.calibration, self.heartbeat = calibration, heartbeat

    def keras_row(self, label: str, model, trained: dict | None, metrics: dict) -> dict:
        """A table row: `metrics`, and the cost of the float `model` (what it ships as)."""
        profile = profile_model(self.task.deployable(model))
        trained = trained or {}
        log.info("%s: %s", label, metrics_text(metrics))
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
        log.info("%s: %s", label, metrics_text(metrics))
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

    def record(
        self, session, report: dict, artifacts: dict, teacher, stage: Stage, student
    ) -> dict:
        """Logs the finished run in `session` (an MLflow `RunSession`) and registers the shipped
        `.tflite`; never raises on store errors. `stage` is the shipped student's own."""
        from kd_keras import tracking

        config, task = self.config, self.task
        self.heartbeat.what = "recording the run in MLflow"
        log.info("recording the run in MLflow")
        tflite = artifacts.get("student_tflite")
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
                "examples": int(len(self.calibration())),
                "preprocessing": "same as training, no augmentation",
                "quantize_aware": bool(report["compression"]["qat"]),
            }
        params = {}
        try:
            terms, weights = task.kd_terms(stage, student)
        except NotImplementedError:
            pass  # a task that does not list its terms: the run is recorded without them
        else:
            weight = config.distill.student_loss_weight
            params["distiller"] = tracking.describe_distillation(
                teacher, student, terms, weights, weight
            )
        models = {"teacher": teacher, "student": student, "tflite": tflite}
        try:
            pictures = task.pictures(Path(config.output_dir) / "pictures", models)
        except Exception as error:  # noqa: BLE001 - a picture never costs the run
            warnings.warn(f"Pictures not drawn: {error}", stacklevel=2)
            pictures = {}
        record = session.finish(
            config_lib.to_dict(config),
            {key: value for key, value in report.items() if key != "seed_runs"},
            {
                **{key: path for key, path in artifacts.items() if key != "deploy"},
                "config": Path(config.output_dir) / "config.yaml",
            },
            tflite_path=tflite,
            deploy=artifacts.get("deploy"),
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

    def kd_gains(self, runs: list[dict], teacher_row: dict) -> dict:
        """`{"kd_gain": ...}` when students ran over several seeds (see `kd_gains`): each
        distilled student against the scratch baseline (the first undistilled student) on the
        task's headline metric; `{}` otherwise."""
        scratch = next((run["model"] for run in runs if not run.get("distilled")), None)
        if scratch is None:
            return {}
        gains = kd_gains(runs, teacher_row, scratch, self.task.headline)
        return {"kd_gain": gains} if gains else {}

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
                representative_data=self.calibration(),
            )
        except Exception as error:  # noqa: BLE001 - a cost column never costs the trained run
            message = f"{label}: no int8 size or latency, the conversion failed: {error}"
            warnings.warn(message, stacklevel=2)
            return {"int8_bytes": None, "int8_latency_ms": None}
        return {
            "int8_bytes": len(flatbuffer),
            "int8_latency_ms": tflite_latency(flatbuffer, runs=self.config.latency_runs),
        }


def kd_gains(runs: list[dict], teacher_row: dict, scratch: str, headline: str) -> dict:
    """Per distilled student over the seeds of `runs`: `kd_keras.stats.kd_gain` on `headline`
    against `scratch` (the paired difference, and the teacher–scratch gap closed). The gap is
    to each seed's own teacher where `runs` hold one (a run of `teacher_row`'s model in every
    seed), else to `teacher_row`."""
    by_seed: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_seed.setdefault(run["seed"], {})[run["model"]] = run
    seeds = [seed for seed, models in by_seed.items() if scratch in models]
    if len(seeds) < 2:
        return {}
    base = [by_seed[seed][scratch][headline] for seed in seeds]
    teacher = teacher_row["model"]
    teachers = teacher_row[headline]
    if all(teacher in by_seed[seed] for seed in seeds):
        teachers = [by_seed[seed][teacher][headline] for seed in seeds]
    gains = {}
    for label in dict.fromkeys(r["model"] for r in runs if r.get("distilled")):
        if all(label in by_seed[seed] for seed in seeds):
            values = [by_seed[seed][label][headline] for seed in seeds]
            gain = stats.kd_gain(values, base, teachers)
            gains[label] = {"metric": headline, **gain}
    return gains


def with_seed_means(rows: list[dict], runs: list[dict], keys) -> list[dict]:
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


def metrics_text(metrics: dict) -> str:
    numbers = {key: value for key, value in metrics.items() if isinstance(value, int | float)}
    return format_metrics(numbers) if numbers else "measured"


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """Renders `rows` as an aligned table.

    Args:
        rows: one dict per row.
        columns: `(key, header, format)` triples; `format` is a format spec (`".3f"`) or `""`.
            A missing value prints as `-`.
    """
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            value = row.get(key)
            line.append("-" if value is None else format(value, spec))
        cells.append(line)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    rendered = []
    for index, line in enumerate(cells):
        parts = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths))
        ]
        rendered.append("  ".join(parts))
        if index == 0:
            rendered.append("  ".join("-" * w for w in widths))
    return "\n".join(rendered)


__all__ = ["Reporter", "format_table", "kd_gains", "metrics_text", "with_seed_means"]
