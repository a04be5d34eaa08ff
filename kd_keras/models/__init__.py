"""Teacher and student builders."""

from kd_keras.models.cnn import build_cnn_classifier, build_student, build_teacher
from kd_keras.models.inspect import final_activation

__all__ = ["build_cnn_classifier", "build_student", "build_teacher", "final_activation"]
