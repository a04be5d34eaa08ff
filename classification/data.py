"""Classification data: scikit-learn's bundled digits, and image folders (a subfolder per class).

`load_data(config)` gives the run's stratified train and test sets (the built-in ones: digits,
or the generated shapes of `classification.synthetic`); `training_dataset` batches
them for `fit`, with `random_shift` as the optional augmentation.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from classification.config import ClassifyConfig
from classification.synthetic import LABELLED, ShapesConfig, ensure_shapes_folder
from kd_keras.images import IMAGE_SUFFIXES, list_images, read_resized


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """Images as float32 in [0, 1], shape `[n, h, w, c]`, with integer labels and class names.

    `x = sample / sample_max`: 255 for image files, 16 for the digits' 0..16 samples.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    sample_max: float = 255.0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    def split(self, test_fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
        """A stratified train/test split, the same for the same seed.

        Raises:
            ValueError: a class with fewer than 2 images (named), or too few images for every
                class to appear on both sides.
        """
        from sklearn.model_selection import train_test_split

        counts = np.bincount(self.y, minlength=self.num_classes)
        few = [f"{self.class_names[i]!r} ({counts[i]})" for i in np.flatnonzero(counts < 2)]
        if few:
            raise ValueError(
                f"Every class needs at least 2 images, one to train on and one to test on; "
                f"add images to these class folders or remove them. Received: {', '.join(few)}."
            )
        tested = int(np.ceil(test_fraction * len(self.y)))
        if min(tested, len(self.y) - tested) < self.num_classes:
            raise ValueError(
                f"A test fraction of {test_fraction:g} of {len(self.y)} images leaves fewer "
                f"images than the {self.num_classes} classes on one side of the split; add "
                f"images or change test_fraction. Received: {len(self.y)} images."
            )
        x_train, x_test, y_train, y_test = train_test_split(
            self.x, self.y, test_size=test_fraction, random_state=seed, stratify=self.y
        )
        return (
            dataclasses.replace(self, x=x_train, y=y_train),
            dataclasses.replace(self, x=x_test, y=y_test),
        )


def load_data(config: ClassifyConfig) -> tuple[ImageDataset, ImageDataset]:
    """The run's train and test sets: `config.data`'s image folder, or the bundled digits.

    The split is stratified by class, `test_fraction` of the images tested, the same for the
    same `seed` (`ImageDataset.split`).

    Raises:
        FileNotFoundError: `config.data` does not exist.
        ValueError: the folder or the split is unusable (see `load_image_folder` and `split`).
    """
    if config.data is None and config.builtin == "shapes":
        root = ensure_shapes_folder(config.builtin_dir, shapes_settings(config))
        dataset = load_image_folder(root / LABELLED, config.image_size, config.channels)
    elif config.data is None:
        dataset = load_digits()
    else:
        dataset = load_image_folder(config.data, config.image_size, config.channels)
    return dataset.split(config.test_fraction, config.seed)


def shapes_settings(config: ClassifyConfig) -> ShapesConfig:
    """The built-in shapes set of `config` (its pool written with `unlabeled_data: builtin`)."""
    unlabeled = config.builtin_unlabeled if config.unlabeled_data == "builtin" else 0
    return ShapesConfig(per_class=config.builtin_per_class, unlabeled=unlabeled)


def load_digits() -> ImageDataset:
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes); nothing is downloaded."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    names = tuple(str(i) for i in range(10))
    return ImageDataset(x, digits.target.astype(np.int64), names, sample_max=16.0)


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
    class_dirs = _class_dirs(directory)
    if not class_dirs:
        raise ValueError(
            f"{directory} has no class subfolders; expected {directory}/<class_name>/<image>.png. "
            "Received: an empty dataset."
        )
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = list_images(class_dir)
        if not files:
            raise ValueError(
                f"Class folder {class_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}). "
                "Add images or remove the folder. Received: an empty class."
            )
        for path in files:
            images.append(read_resized(path, (image_size, image_size), channels))
            labels.append(label)
    if len(class_dirs) < 2:
        raise ValueError(
            f"{directory} has one class folder ({class_dirs[0].name}); a classifier needs at "
            f"least 2 classes, one subfolder each. Received: classes=[{class_dirs[0].name!r}]."
        )
    x = np.stack(images).astype(np.float32) / 255.0
    names = tuple(p.name for p in class_dirs)
    return ImageDataset(x, np.asarray(labels, np.int64), names)


def list_image_folder(directory: str | os.PathLike) -> list[Path]:
    """The image files of `directory/<class>/`, in the order `load_image_folder` reads them."""
    return [path for class_dir in _class_dirs(Path(directory)) for path in list_images(class_dir)]


def _class_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


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
