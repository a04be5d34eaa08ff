"""Keypoint (CenterNet-style) object detection: models, COCO data, evaluation and distillation.

detection.config        DetectConfig, the settings of `recipes.detect`
detection.task          DetectionTask: detection for the shared pipeline (kd_keras.pipeline)
detection.data          load_data (a run's splits), load_coco_dataset (validated), the built-in
                        dataset, augmentation, tf.data
detection.models        build_detector: the teacher's or student's CenterNet from the config
detection.evaluation    COCOeval of a Keras model or of a .tflite in LiteRT
detection.distillation  detection_kd_terms: heatmap, box and hint KD from the config
detection.centernet     the architecture: build_centernet, targets, losses, decoding,
                        CenterNetDistiller and its terms
detection.litert        LiteRTDetector: an exported CenterNet in the LiteRT interpreter
detection.visualize     draw_detections, detection and heatmap grids (PNG) of several models
"""

from detection import centernet, data, evaluation, litert, visualize
from detection.config import DetectConfig
from detection.data import load_data
from detection.distillation import ABLATION, detection_kd_terms, student_layer_name
from detection.evaluation import coco_evaluate, evaluate_detector, keras_predictor
from detection.litert import LiteRTDetector
from detection.models import build_detector, in_backbone, stage_boundaries
from detection.task import DetectionTask

__all__ = [
    "ABLATION",
    "DetectConfig",
    "DetectionTask",
    "LiteRTDetector",
    "build_detector",
    "centernet",
    "coco_evaluate",
    "data",
    "detection_kd_terms",
    "evaluate_detector",
    "evaluation",
    "in_backbone",
    "keras_predictor",
    "litert",
    "load_data",
    "stage_boundaries",
    "student_layer_name",
    "visualize",
]
