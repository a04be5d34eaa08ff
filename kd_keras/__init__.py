"""kd-keras: knowledge distillation for tf_keras models that ship to robots."""

from kd_keras import losses, schedules
from kd_keras.distiller import Distiller
from kd_keras.profile import ModelProfile, profile_model
from kd_keras.schedules import UpdateDistillationStep
from kd_keras.terms import DistillationTerm, FeatureDistillation, LogitsDistillation

__version__ = "0.1.0"

__all__ = [
    "DistillationTerm",
    "Distiller",
    "FeatureDistillation",
    "LogitsDistillation",
    "ModelProfile",
    "UpdateDistillationStep",
    "losses",
    "profile_model",
    "schedules",
]
