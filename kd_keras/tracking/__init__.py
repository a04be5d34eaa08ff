"""MLflow tracking and registry for kd-keras runs (the only package that imports MLflow).

- `RunSession` / `MlflowCallback` / `record_run`: per-epoch metrics, params, tags, artifacts and
  the TFLite student as a LiteRT pyfunc model; a run that cannot be logged waits on disk for
  `upload_pending`.
- `registry.promote` with `Gates`: move the `champion` alias only when the challenger wins.
"""

from kd_keras.tracking._store import (
    DEFAULT_TRACKING_URI,
    TrackingError,
    flatten,
    resolve_tracking_uri,
)
from kd_keras.tracking.describe import describe_distillation, describe_distiller, describe_model
from kd_keras.tracking.pyfunc import save_tflite_model, tflite_signature
from kd_keras.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    Gates,
    PromotionDecision,
    promote,
    register_version,
)
from kd_keras.tracking.runs import MlflowCallback, RunSession, TrackingWarning, record_run
from kd_keras.tracking.upload import RunRecord, upload_pending

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_TRACKING_URI",
    "Gates",
    "MlflowCallback",
    "PromotionDecision",
    "RunRecord",
    "RunSession",
    "TrackingError",
    "TrackingWarning",
    "describe_distillation",
    "describe_distiller",
    "describe_model",
    "flatten",
    "promote",
    "record_run",
    "register_version",
    "resolve_tracking_uri",
    "save_tflite_model",
    "tflite_signature",
    "upload_pending",
]
