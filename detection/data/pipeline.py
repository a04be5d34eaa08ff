"""tf.data input pipeline: read, resize, augment and encode CenterNet targets a batch at a time.

Each batch of image indices goes through one `tf.numpy_function` call that reads the images with
`kd_keras.images.read_image` (as displayed, in any format; Pillow releases the GIL while
decoding), runs the box-aware geometric augmentation and encodes the targets; batches are mapped
with `num_parallel_calls=AUTOTUNE` and prefetched. Colour jitter and the float conversion then
run in-graph on the whole batch. Small datasets are decoded and resized
once and kept in memory (`cache_images`).

Training batches are reproducible: the shuffle is seeded, and each batch draws its augmentation
from a generator seeded with `(seed, its image indices)`, so two datasets built with the same seed
yield the same batches in the same order, whatever the number of parallel calls.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import tensorflow as tf

from detection.centernet.centernet_targets import encode_targets
from detection.data.augmentation import (
    IDENTITY_COLOUR,
    apply_augmentation,
    apply_colour_jitter,
    build_augmentation,
    sample_colour_factors,
)
from detection.data.coco_dataset import CocoDataset, ImageRecord
from kd_keras import images

# Keep decoded images in memory when they fit in this many bytes.
CACHE_LIMIT_BYTES = 512 * 1024 * 1024


def read_image(record: ImageRecord, image_size: tuple[int, int]) -> np.ndarray:
    """The record's image as RGB uint8 (as displayed, `kd_keras.images`), resized to
    `image_size` = `(height, width)`."""
    try:
        image = images.read_image(record.path)
    except images.ImageReadError as error:
        raise images.ImageReadError(
            f"{error} (image_id={record.image_id}). Check the file, or load the dataset with "
            "on_error='skip'."
        ) from None
    if image.shape[:2] != (record.height, record.width):
        raise ValueError(
            f"Image {record.path} (image_id={record.image_id}) decodes to "
            f"{image.shape[1]}x{image.shape[0]} but its record says {record.width}x"
            f"{record.height}; boxes would land on the wrong pixels. Load it with "
            f"load_coco_dataset, which checks sizes. Received: path={str(record.path)!r}."
        )
    if image.shape[:2] != tuple(image_size):
        image = cv2.resize(image, (image_size[1], image_size[0]), interpolation=cv2.INTER_AREA)
    return image


def resized_boxes(record: ImageRecord, image_size: tuple[int, int]) -> np.ndarray:
    """The record's boxes in the resized image's pixels."""
    sx, sy = image_size[1] / record.width, image_size[0] / record.height
    return record.boxes * np.array([sx, sy, sx, sy], np.float32)


def load_images(dataset: CocoDataset, image_size: tuple[int, int]) -> np.ndarray:
    """All images resized, as uint8 `[n, h, w, 3]` (for evaluation and caching)."""
    return np.stack([read_image(r, image_size) for r in dataset.records])


def detection_dataset(
    dataset: CocoDataset,
    image_size: tuple[int, int],
    batch_size: int,
    training: bool = True,
    augment: bool = True,
    seed: int = 0,
    stride: int = 4,
    cache_images: bool | None = None,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """Batches of `(images, targets)` for CenterNet training.

    Args:
        dataset: a loaded `CocoDataset`.
        image_size: network input `(height, width)`; images are resized to it.
        batch_size: images per batch.
        training: shuffle (reshuffled each epoch) and repeat-safe ordering; `False` keeps order.
        augment: albumentations flip and scale/crop, then batched colour jitter (training only).
        seed: shuffle and augmentation seed; the same seed gives the same batches.
        stride: output stride of the model.
        cache_images: keep decoded images in memory; default when they fit in 512 MiB.
        drop_remainder: default `training`.

    Returns:
        A `tf.data.Dataset` of `(float32 images in [0, 1] [b, h, w, 3], (heatmap, size,
        offset))`: the targets of `encode_targets`, in the order of the model's outputs.
    """
    image_size = (int(image_size[0]), int(image_size[1]))
    records = dataset.records
    num_classes = dataset.num_classes
    if cache_images is None:
        cache_images = len(records) * image_size[0] * image_size[1] * 3 <= CACHE_LIMIT_BYTES
    cached = load_images(dataset, image_size) if cache_images else None
    boxes = [resized_boxes(r, image_size) for r in records]
    augment = training and augment
    out_h, out_w = image_size[0] // stride, image_size[1] // stride
    per_thread = threading.local()  # albumentations pipelines hold their generator: one per call

    def load_batch(indices):
        count = len(indices)
        augmentation = None
        if augment:
            rng = np.random.default_rng([seed, *indices.tolist()])
            if not hasattr(per_thread, "augmentation"):
                per_thread.augmentation = build_augmentation(image_size)
            augmentation = per_thread.augmentation
            augmentation.set_random_seed(int(rng.integers(2**31)))
        images = np.empty((count, *image_size, 3), np.uint8)
        heatmaps = np.empty((count, out_h, out_w, num_classes), np.float32)
        sizes = np.empty((count, out_h, out_w, 3), np.float32)
        offsets = np.empty((count, out_h, out_w, 3), np.float32)
        for slot, index in enumerate(indices):
            image = cached[index] if cached is not None else read_image(records[index], image_size)
            image_boxes, classes = boxes[index], records[index].classes
            if augmentation is not None:
                image, image_boxes, classes = apply_augmentation(
                    augmentation, image, image_boxes, classes
                )
            targets = encode_targets(image_boxes, classes, image_size, num_classes, stride)
            images[slot] = image
            heatmaps[slot], sizes[slot] = targets["heatmap"], targets["size"]
            offsets[slot] = targets["offset"]
        if augmentation is None:
            colours = np.tile(np.float32(IDENTITY_COLOUR), (count, 1))
        else:
            colours = sample_colour_factors(rng, count)
        return images, heatmaps, sizes, offsets, colours

    def to_tensors(indices):
        images, heatmap, size, offset, colours = tf.numpy_function(
            load_batch,
            [indices],
            [tf.uint8, tf.float32, tf.float32, tf.float32, tf.float32],
            stateful=False,
        )
        images.set_shape([None, *image_size, 3])
        heatmap.set_shape([None, out_h, out_w, num_classes])
        size.set_shape([None, out_h, out_w, 3])
        offset.set_shape([None, out_h, out_w, 3])
        colours.set_shape([None, 4])
        images = tf.cast(images, tf.float32) / 255.0
        if augment:
            images = apply_colour_jitter(images, colours)
        return images, (heatmap, size, offset)

    data = tf.data.Dataset.range(len(records))
    if training:
        data = data.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(
        batch_size, drop_remainder=training if drop_remainder is None else drop_remainder
    )
    data = data.map(to_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return data.prefetch(tf.data.AUTOTUNE)
