"""COCO-format detection data: validated loading, a built-in dataset, augmentation, tf.data.

`load_data(config)` gives a run's train and validation sets (`detection.data.splits`).
"""

from detection.data.augmentation import (
    apply_augmentation,
    apply_colour_jitter,
    build_augmentation,
    sample_colour_factors,
)
from detection.data.coco_dataset import (
    AnnotationError,
    AnnotationIssue,
    CocoDataset,
    DatasetError,
    ImageRecord,
    load_coco_dataset,
)
from detection.data.pipeline import detection_dataset, load_images, read_image
from detection.data.splits import load_data, median_box_cells, small_object_warning
from detection.data.synthetic_shapes import (
    CLASS_NAMES,
    ensure_shapes_dataset,
    generate_shapes_dataset,
)

__all__ = [
    "CLASS_NAMES",
    "AnnotationError",
    "AnnotationIssue",
    "CocoDataset",
    "DatasetError",
    "ImageRecord",
    "apply_augmentation",
    "apply_colour_jitter",
    "build_augmentation",
    "detection_dataset",
    "ensure_shapes_dataset",
    "generate_shapes_dataset",
    "load_coco_dataset",
    "load_data",
    "load_images",
    "median_box_cells",
    "read_image",
    "sample_colour_factors",
    "small_object_warning",
]
