"""Classification data: scikit-learn's bundled digits, and image folders (a subfolder per class)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """Images as float32 in [0, 1], shape `[n, h, w, c]`, with integer labels and class names."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    def split(self, test_fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
        """A stratified train/test split, the same for the same seed."""
        from sklearn.model_selection import train_test_split

        x_train, x_test, y_train, y_test = train_test_split(
            self.x, self.y, test_size=test_fraction, random_state=seed, stratify=self.y
        )
        return (
            ImageDataset(x_train, y_train, self.class_names),
            ImageDataset(x_test, y_test, self.class_names),
        )


def load_digits() -> ImageDataset:
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes); nothing is downloaded."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    return ImageDataset(x, digits.target.astype(np.int64), tuple(str(i) for i in range(10)))


def load_image_folder(
    directory: str | os.PathLike, image_size: int, channels: int = 3
) -> ImageDataset:
    """Loads `directory/<class>/<image>` into memory, resized to `image_size`².

    Classes are the subfolders, in sorted order. Every image is decoded before training starts, so
    a corrupt file stops the run at once with its path.

    Raises:
        FileNotFoundError: the directory does not exist.
        ValueError: no class subfolders, a class without images, or an image that cannot be read.
    """
    if channels not in (1, 3):
        raise ValueError(f"Expected channels 1 or 3. Received: channels={channels!r}.")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"Image folder not found. Pass --data DIR with one subfolder per class. "
            f"Received: data={str(directory)!r}."
        )
    class_dirs = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(
            f"{directory} has no class subfolders; expected {directory}/<class_name>/<image>.png. "
            "Received: an empty dataset."
        )
    images, labels = [], []
    mode = "L" if channels == 1 else "RGB"
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(
                f"Class folder {class_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}). "
                "Add images or remove the folder. Received: an empty class."
            )
        for path in files:
            images.append(_read_image(path, image_size, mode))
            labels.append(label)
    x = np.stack(images).astype(np.float32) / 255.0
    if channels == 1:
        x = x[..., None]
    names = tuple(p.name for p in class_dirs)
    return ImageDataset(x, np.asarray(labels, np.int64), names)


def _read_image(path: Path, image_size: int, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert(mode).resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(
            f"Cannot read image {path}: {error}. Remove or replace the file. "
            f"Received: file={str(path)!r}."
        ) from None


def random_shift(max_pixels: int = 1, seed: int = 0):
    """Augmentation of one image: pads by `max_pixels` and crops back at a random offset."""

    def augment(image: tf.Tensor) -> tf.Tensor:
        padded = tf.pad(image, [[max_pixels] * 2, [max_pixels] * 2, [0, 0]])
        return tf.image.random_crop(padded, tf.shape(image), seed=seed)

    return augment


def training_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augmentation=None
) -> tf.data.Dataset:
    """Shuffled, batched `(x, y)` with an optional per-image augmentation."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if augmentation is not None:
        dataset = dataset.map(
            lambda image, label: (augmentation(image), label), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
