"""Teacher and student builders."""

from kd_keras.models.cnn import build_cnn_classifier, build_student, build_teacher, stage_outputs
from kd_keras.models.inspect import final_activation
from kd_keras.models.lma import LMA
from kd_keras.models.loading import ModelFileError, load_model_file

__all__ = [
    "LMA",
    "ModelFileError",
    "build_cnn_classifier",
    "build_student",
    "build_teacher",
    "final_activation",
    "load_model_file",
    "stage_outputs",
]
