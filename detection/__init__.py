"""Keypoint (CenterNet-style) object detection: models, COCO data, evaluation and distillation."""
