"""CenterNet ("objects as points"): model builders, targets, losses, decoding and distillation."""

from detection.centernet.centernet_backbone import BACKBONES, build_centernet_backbone
from detection.centernet.centernet_decoder import (
    CenterNetDecoder,
    Detections,
    add_decoder,
    decode_detections,
)
from detection.centernet.centernet_detector import OUTPUT_STRIDE, build_centernet
from detection.centernet.centernet_losses import (
    CenterNetLoss,
    HeatmapFocalLoss,
    MaskedL1Loss,
    heatmap_focal_loss,
    masked_l1_loss,
)
from detection.centernet.centernet_targets import encode_targets, gaussian_radius

__all__ = [
    "BACKBONES",
    "CenterNetDecoder",
    "CenterNetLoss",
    "Detections",
    "HeatmapFocalLoss",
    "MaskedL1Loss",
    "OUTPUT_STRIDE",
    "add_decoder",
    "build_centernet",
    "build_centernet_backbone",
    "decode_detections",
    "encode_targets",
    "gaussian_radius",
    "heatmap_focal_loss",
    "masked_l1_loss",
]
