"""Keypoint (CenterNet-style) object detection: models, COCO data, evaluation and distillation.

detection.config      DetectConfig, the settings of `recipes.detect`
detection.task        DetectionTask: detection for the shared pipeline (kd_keras.pipeline)
detection.centernet   build_centernet, targets, losses, decoding, CenterNetDistiller and terms
detection.data        load_coco_dataset (validated), the built-in dataset, augmentation, tf.data
detection.evaluation  COCOeval of a Keras model or of a .tflite in LiteRT
detection.litert      LiteRTDetector: an exported CenterNet in the LiteRT interpreter
detection.visualize   draw_detections, detection and heatmap grids (PNG) of several models
"""

from detection import centernet, data, evaluation, litert, visualize

__all__ = ["centernet", "data", "evaluation", "litert", "visualize"]
