"""CenterNet ("objects as points"): model builders, targets, losses, decoding and distillation."""

from detection.centernet.centernet_backbone import BACKBONES, build_centernet_backbone
from detection.centernet.centernet_decoder import (
    CenterNetDecoder,
    Detections,
    add_decoder,
    decode_detections,
)
from detection.centernet.centernet_detector import OUTPUT_STRIDE, build_centernet
from detection.centernet.centernet_distiller import (
    BoxDistillation,
    CenterNetDistiller,
    HeatmapDistillation,
    ObjectHintDistillation,
    centernet_distillation_terms,
)
from detection.centernet.centernet_losses import (
    CenterNetLoss,
    HeatmapFocalLoss,
    MaskedL1Loss,
    heatmap_focal_loss,
    masked_l1_loss,
    retained_binary_kd,
)
from detection.centernet.centernet_targets import as_target_dict, encode_targets, gaussian_radius

__all__ = [
    "BACKBONES",
    "BoxDistillation",
    "CenterNetDistiller",
    "HeatmapDistillation",
    "ObjectHintDistillation",
    "as_target_dict",
    "centernet_distillation_terms",
    "retained_binary_kd",
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
