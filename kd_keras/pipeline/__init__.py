"""One pipeline for every task: the stage sequence, its task hooks and resumable stages.

- `run_pipeline(prepare(task, config), config, session)`: teacher, students, prune + QAT,
  TFLite, LiteRT evaluation, report and MLflow record, for any `Task`.
- `Task`, `Student`, `Stage`, `Training`, `Phases`: what a task supplies.
- `fit_resumable`, `reuse_or_train`, ...: the resumable stages the sequence is made of, usable
  alone.
"""

from kd_keras.pipeline.resumable import (
    RERUN_SAFE_KEYS,
    check_batch_size,
    fit_resumable,
    reuse_or_train,
    reuse_or_train_weights,
    run_state,
    stage_dependencies,
    training_record,
)
from kd_keras.pipeline.sequence import Prepared, prepare, run_pipeline
from kd_keras.pipeline.task import (
    COST_COLUMNS,
    DeploySpec,
    Phases,
    Role,
    Stage,
    Student,
    Task,
    Training,
    table_columns,
)

__all__ = [
    "COST_COLUMNS",
    "DeploySpec",
    "RERUN_SAFE_KEYS",
    "Phases",
    "Prepared",
    "Role",
    "Stage",
    "Student",
    "Task",
    "Training",
    "check_batch_size",
    "fit_resumable",
    "prepare",
    "reuse_or_train",
    "reuse_or_train_weights",
    "run_pipeline",
    "run_state",
    "stage_dependencies",
    "table_columns",
    "training_record",
]
