"""The stages of every run, resumable: train or reuse, fit with a backup, keep a record.

A recipe is a sequence of stages (teacher, students, pruning, QAT, export) in one output folder.
`reuse_or_train` runs a stage once: its model is saved and the stage recorded in the folder's
`RunState`, so a rerun loads it instead of training again; `fit_resumable` resumes a stage that
was interrupted from its last finished epoch and stops a diverging one with a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import tf_keras as keras

from kd_keras import config as config_lib
from kd_keras.io import atomic_save_model, atomic_save_weights
from kd_keras.models import load_model_file
from kd_keras.pipeline.divergence import StopOnNonFiniteLoss
from kd_keras.pipeline.fingerprint import file_digest
from kd_keras.pipeline.progress import EpochLog, log
from kd_keras.pipeline.run_state import RunState
from kd_keras.pipeline.settings import teacher_file


def fit_resumable(
    model,
    dataset,
    epochs: int,
    checkpoint_dir,
    callbacks=(),
    steps_per_epoch: int | None = None,
    stage: str | None = None,
) -> tuple[float, dict]:
    """Fits with a `BackupAndRestore` in `checkpoint_dir`, so an interrupted run resumes there.

    A NaN or infinite loss stops the run with `TrainingDivergedError` (naming `stage`) before
    anything is saved. Each epoch is logged (`kd_keras.pipeline.progress.EpochLog`). Returns the
    wall-clock seconds and the history.
    """
    backup = keras.callbacks.BackupAndRestore(str(checkpoint_dir), delete_checkpoint=True)
    name = stage or Path(checkpoint_dir).name
    guard = StopOnNonFiniteLoss(name)
    start = time.perf_counter()
    history = model.fit(
        dataset,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        # The backup comes last: once an epoch's checkpoint exists, its metrics are logged.
        callbacks=[guard, EpochLog(name, epochs), *callbacks, backup],
        verbose=0,
    )
    return time.perf_counter() - start, history.history


# Config keys that can change between reruns in one output folder without changing what is
# trained: where results go, how they are tracked, how often latency is timed, whether int8 costs
# are measured, how many devices share the global batch, whether kernels sum in a fixed order.
RERUN_SAFE_KEYS = (
    "output_dir",
    "tracking",
    "latency_runs",
    "int8_costs",
    "restart",
    "strategy",
    "worker_timeout",
    "deterministic",
)


# The stages a changed key trains differently, for the keys that do not change every stage
# (first match wins; a section name covers its keys). A run that stopped in a compression stage
# can take a new compression setting without retraining the teacher and students.
_COMPRESSION_STAGES = ("lowrank", "pruned", "qat")
_STAGES_CHANGED_BY = (
    ("compress.export", ()),
    ("compress.int8_io", ()),
    ("compress.camera_input", ()),
    ("compress.calibration_images", ("qat",)),
    ("compress.qat_epochs", ("qat",)),
    ("compress.sparsity", ("pruned", "qat")),
    ("compress.prune_epochs", ("pruned", "qat")),
    ("compress", _COMPRESSION_STAGES),
)
# Keys every student reads but the teacher does not (the method sections only change their own
# student, but a shipped student may be one of them), and KD keys the scratch students ignore.
# (`steps_per_epoch`: re-id's student epochs; its teacher has `teacher_steps_per_epoch`.)
_STUDENT_KEYS = ("student_model", "epochs", "steps_per_epoch", "budget", "progressive")
_KD_KEYS = (
    "distill",
    "unlabeled_data",
    "unlabeled_ratio",
    "unlabeled_files",
    "unlabeled_mixup",
    "builtin_unlabeled",
)


def stage_dependencies(plain_stages: Sequence[str] = ()) -> Callable[[str, str], bool]:
    """`changes(key, stage)`: whether a change of config `key` changes what `stage` trains.

    `plain_stages` are the students trained without the teacher (scratch): KD keys leave them
    as they are. Methods (`methods`, `ablation`) add or drop their own students only.
    """

    def covers(section: str, key: str) -> bool:
        return key == section or key.startswith(f"{section}.")

    def changes(key: str, stage: str) -> bool:
        if covers("methods", key) or covers("ablation", key):
            return False
        for section, stages in _STAGES_CHANGED_BY:
            if covers(section, key):
                return stage in stages
        if any(covers(section, key) for section in _STUDENT_KEYS):
            return stage != "teacher"
        if any(covers(section, key) for section in _KD_KEYS):
            return stage != "teacher" and stage not in plain_stages
        return True

    return changes


def run_state(
    config,
    data: Mapping | None = None,
    plain_stages: Sequence[str] = (),
    distilled_inputs: Mapping | None = None,
    teacher_digest: str | None = None,
) -> RunState:
    """The finished stages of `config.output_dir`.

    Refuses a folder whose finished stages were made with another config (`stage_dependencies`)
    or other data (`data`, the task's `data_fingerprint()`). `distilled_inputs` (the unlabelled
    pool's digest) are compared like KD keys: a change trains the distilled students again. The
    content of the model files the config names is compared too (`with_model_file_digests`;
    `teacher_digest` is that of the shipped teacher `teacher: auto` found).
    """
    return RunState(
        config.output_dir,
        {**with_model_file_digests(config, teacher_digest), **(distilled_inputs or {})},
        ignore=RERUN_SAFE_KEYS,
        restart=config.restart,
        data=data,
        changes_stage=stage_dependencies(plain_stages),
    )


def with_model_file_digests(config, teacher_digest: str | None = None) -> dict:
    """`config` as a dict, plus the digest of each model file it names: a given `teacher`
    (`teacher_digest`, or the given digest of the teacher `teacher: auto` found) and the
    `weights` file of `teacher_model` / `student_model` (`<section>.weights_digest`). A file
    replaced under the same name then counts as a changed key, which retrains the stages that
    read it (`stage_dependencies`)."""
    data = config_lib.to_dict(config)
    if teacher_digest:
        data["teacher_digest"] = teacher_digest
    elif teacher_file(config):
        data["teacher_digest"] = file_digest(config.teacher)
    for section in ("teacher_model", "student_model"):
        weights = (data.get(section) or {}).get("weights")
        if weights and weights != "imagenet":
            data[section] = {**data[section], "weights_digest": file_digest(weights)}
    return data


def reuse_or_train(
    state: RunState,
    stage: str,
    path: Path,
    train: Callable[[], tuple[object, dict]],
):
    """`(model, record)`: `stage`'s saved model if it finished before, else what `train()` made.

    `train()` returns the model and a JSON-able record of its training (`training_record`).

    A trained model is saved atomically to `path` before the stage is recorded as finished, so an
    interruption at any point either reuses the whole stage or runs it again.
    """
    record = state.done(stage)
    if record is not None:
        log.info("%s: reused (finished earlier, %s)", stage, Path(path).name)
        return load_model_file(path, option=stage), record
    log.info("%s: started", stage)
    model, record = train()
    atomic_save_model(model, path)
    state.finish(stage, file=path, **record)
    _log_finished(stage, record)
    return model, record


def reuse_or_train_weights(
    state: RunState,
    stage: str,
    model,
    path: Path,
    train: Callable[[], dict],
) -> dict:
    """The record of `stage`, training `model` in place with `train()` only if it has not run.

    For models rebuilt identically on every run (a quantization-aware wrapper): a finished
    stage loads its weights from `path` (HDF5, weights only), otherwise `train()` trains `model`
    and returns its `training_record`, and the weights are saved atomically before the stage is
    recorded.
    """
    record = state.done(stage)
    if record is not None:
        log.info("%s: reused (finished earlier, %s)", stage, Path(path).name)
        model.load_weights(path)
        return record
    log.info("%s: started", stage)
    record = train()
    atomic_save_weights(model, path)
    state.finish(stage, file=path, **record)
    _log_finished(stage, record)
    return record


def _log_finished(stage: str, record: Mapping) -> None:
    loss = record.get("loss")
    shown = "" if loss is None else f", final loss {loss:.4g}"
    log.info("%s: finished in %.1f s%s", stage, record.get("seconds", 0.0), shown)


def training_record(seconds: float, history: Mapping[str, list]) -> dict:
    """What a stage keeps of its training: wall-clock seconds, the last epoch's loss (rounded)
    and every epoch's loss (`losses`, as computed).

    A distillation whose temperature moves (a `<term>_temperature` metric) also keeps the
    temperature of each epoch, as `temperatures`.
    """
    losses = history.get("loss") or [None]
    record = {
        "seconds": round(seconds, 1),
        "loss": None if losses[-1] is None else round(float(losses[-1]), 6),
        "losses": [float(loss) for loss in history.get("loss", [])],
    }
    temperature = next((key for key in sorted(history) if key.endswith("_temperature")), None)
    if temperature is not None:
        record["temperatures"] = [round(float(t), 4) for t in history[temperature]]
    return record


def check_batch_size(batch_size: int, examples: int, what: str) -> None:
    """Refuses a batch larger than the training set (it would give zero training batches)."""
    if batch_size > examples:
        raise config_lib.ConfigError(
            f"Expected batch_size at most the {examples} {what}: a larger batch leaves no "
            f"complete training batch. Lower batch_size or add data. "
            f"Received: batch_size={batch_size}."
        )


__all__ = [
    "RERUN_SAFE_KEYS",
    "check_batch_size",
    "fit_resumable",
    "reuse_or_train",
    "reuse_or_train_weights",
    "run_state",
    "stage_dependencies",
    "training_record",
]
