"""The run's train and validation sets from `DetectConfig`: the built-in shapes or COCO files.

The validation set is the user's own (`val_data`, `val_annotations`, aligned to the training
categories) or a random `val_fraction` of the training images.
"""

from __future__ import annotations

import numpy as np

from detection.config import DetectConfig
from detection.data.coco_dataset import CocoDataset, DatasetError, load_coco_dataset
from detection.data.synthetic_shapes import ensure_shapes_dataset

#: The side of the built-in `small_dense` images, resized to `image_size` like real photos.
SMALL_DENSE_SIDE = 200


def load_data(config: DetectConfig) -> tuple[CocoDataset, CocoDataset, str]:
    """Train and validation sets (generating the built-in one if needed) and a description.

    Args:
        config: the run's settings (`data`, `annotations`, `val_*`, `builtin_*`,
            `on_bad_annotations`).

    Returns:
        `(train, val, description)`.

    Raises:
        DatasetError: the validation split has no boxes (or the annotations are refused,
            see `load_coco_dataset`).
    """
    on_error = config.on_bad_annotations
    if config.data is None:
        small_dense = config.builtin_mode == "small_dense"
        paths = ensure_shapes_dataset(
            config.builtin_dir,
            num_train=config.builtin_train,
            num_val=config.builtin_val,
            image_size=SMALL_DENSE_SIDE if small_dense else config.image_size,
            seed=0,
            num_unlabeled=config.builtin_unlabeled if config.unlabeled_data == "builtin" else 0,
            mode=config.builtin_mode,
        )
        train = load_coco_dataset(*paths["train"], on_error=on_error)
        val = load_coco_dataset(*paths["val"], on_error=on_error)
        kind = "small dense shapes" if small_dense else "shapes"
        return train, val, f"built-in {kind} on photos ({config.builtin_dir})"
    train = load_coco_dataset(config.data, config.annotations, on_error=on_error)
    if config.val_data is not None:
        val = load_coco_dataset(config.val_data, config.val_annotations, on_error=on_error)
        val = val.aligned_to(train)  # class index i means the same category in both
    else:
        train, val = _split(train, config.val_fraction, config.seed)
    if val.num_boxes == 0:
        raise DatasetError(
            f"The validation split ({len(val)} images) has no boxes, so AP is undefined. Pass "
            "val_data/val_annotations with labelled images, or raise val_fraction. "
            f"Received: val_fraction={config.val_fraction}."
        )
    return train, val, f"{config.data} ({config.annotations})"


#: Fewer output cells than this across the median box and CenterNet has little to learn from.
MIN_BOX_CELLS = 3.0


def median_box_cells(dataset: CocoDataset, image_size: int, stride: int) -> float | None:
    """The median box's shorter side, in output cells, once images are resized to `image_size`;
    None for a dataset with no boxes."""
    sides = []
    for record in dataset.records:
        if len(record.boxes):
            scale = np.array([image_size / record.width, image_size / record.height])
            sizes = (record.boxes[:, 2:4] - record.boxes[:, 0:2]) * scale  # resized w, h
            sides.extend(np.min(sizes, axis=1) / stride)
    return float(np.median(sides)) if sides else None


def small_object_warning(dataset: CocoDataset, image_size: int, stride: int) -> str | None:
    """A warning when the median box covers fewer than `MIN_BOX_CELLS` output cells across."""
    cells = median_box_cells(dataset, image_size, stride)
    if cells is None or cells >= MIN_BOX_CELLS:
        return None
    enough = int(np.ceil(image_size * MIN_BOX_CELLS / cells / 16) * 16)
    return (
        f"The median training box is {cells:.1f} output cells across at image_size={image_size} "
        f"(stride {stride}); below {MIN_BOX_CELLS:g} cells the heatmaps barely resolve objects. "
        f"Raise image_size (about {enough} gives {MIN_BOX_CELLS:g} cells), or crop the images."
    )


def _split(dataset: CocoDataset, fraction: float, seed: int) -> tuple[CocoDataset, CocoDataset]:
    """Splits images (not boxes) at random into train and validation sets."""
    order = np.random.default_rng(seed).permutation(len(dataset.records))
    count = max(1, int(round(len(order) * fraction)))
    return dataset.select(sorted(order[count:])), dataset.select(sorted(order[:count]))
