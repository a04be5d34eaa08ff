"""Models: the reference CNN, the LMA activation, safe loading, and reading layer graphs."""

from kd_keras.models import graph
from kd_keras.models.cnn import build_cnn_classifier, stage_outputs
from kd_keras.models.inspect import final_activation
from kd_keras.models.lma import LMA
from kd_keras.models.loading import ModelFileError, load_model_file

__all__ = [
    "LMA",
    "ModelFileError",
    "build_cnn_classifier",
    "final_activation",
    "graph",
    "load_model_file",
    "stage_outputs",
]
