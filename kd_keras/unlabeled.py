"""Unlabelled images for distillation: a folder of camera frames, mixed into the labelled batches.

A robot records thousands of frames and few of them are labelled. The teacher can still teach
on the rest: an unlabelled batch trains only the KD terms, the teacher's outputs as targets.

`read_unlabeled_folder` reads and checks a folder before any training (missing, empty or
unreadable files are refused, each named). `mix_unlabeled` interleaves its batches with the
labelled ones at `ratio` unlabelled batches per labelled batch. Every element then is
`(x, y, weight)`: labelled batches have weight 1, unlabelled ones weight 0 and zero labels
of the labelled batches' shape. The `Distiller` weighs the task loss and the metrics of each
example by `weight`, and the KD terms see every example at full weight, so an unlabelled
example reaches the KD terms only.

With `mixup > 0` each unlabelled batch is mixed pairwise before the teacher and the student see
it (`mixup_batch`): both see the same new image, so the student matches the teacher's function
between the frames as well as on them ("function matching", Beyer et al., "Knowledge
distillation: A good teacher is patient and consistent", CVPR 2022).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from kd_keras.images import IMAGE_SUFFIXES, ImageReadError, inspect_image

#: How many unreadable files an error lists by name.
_LISTED = 5


@dataclasses.dataclass(frozen=True)
class UnlabeledPool:
    """The preprocessed images of an unlabelled folder, as the task's inputs.

    Attributes:
        images: `[n, ...]` float32, preprocessed exactly like the task's training inputs.
        source: the folder they were read from (or the built-in generator's name).
        ratio: unlabelled batches per labelled batch.
        files: the image files, in the order of `images`.
        mixup: α of the Beta(α, α) mixing weights of `mixup_batch`; 0 leaves batches unmixed.
    """

    images: np.ndarray
    source: str
    ratio: float
    files: tuple[Path, ...] = ()
    mixup: float = 0.0

    def summary(self) -> dict:
        """`report["unlabeled"]`: where the pool is from, its size, mixing ratio and mixup."""
        summary = {"source": self.source, "images": int(len(self.images)), "ratio": self.ratio}
        return {**summary, "mixup": self.mixup} if self.mixup else summary


def list_unlabeled_folder(directory: str | os.PathLike) -> list[Path]:
    """The image files under `directory` (subfolders included), sorted by path.

    Raises:
        FileNotFoundError: `directory` is not a folder.
        ValueError: it holds no image files.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(
            "Unlabelled image folder not found. Set unlabeled_data to a folder of images "
            f"(subfolders are read too), or to null. Received: unlabeled_data={str(root)!r}."
        )
    files = sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    if not files:
        raise ValueError(
            f"The unlabelled folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)}). Add "
            "camera frames to it, or set unlabeled_data to null. Received: an empty folder."
        )
    return files


def read_unlabeled_folder(
    directory: str | os.PathLike,
    read: Callable[[Path], np.ndarray],
    ratio: float = 1.0,
    mixup: float = 0.0,
) -> UnlabeledPool:
    """Every image under `directory`, preprocessed by `read`, as a pool mixed in at `ratio`.

    Every file is read before the pool is made, so one error names every unreadable file
    (the first few, and how many there are).

    Args:
        directory: a folder of image files (any format `kd_keras.images` reads).
        read: the task's preprocessing of one file into its input array; it raises
            `kd_keras.images.ImageReadError` for a file it cannot decode.
        ratio: unlabelled batches per labelled batch (`mixing_order`).
        mixup: α of the pool's pairwise mixing (`mixup_batch`); 0 for none.

    Returns:
        The pool: `[n, ...]` float32 inputs in the sorted order of the files.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: no images in it, or files that cannot be read (named).
    """
    files = list_unlabeled_folder(directory)
    images, problems = [], []
    for path in files:
        try:
            images.append(read(path))
        except ImageReadError:
            problem, _ = inspect_image(path)
            problems.append(f"{path} ({problem or 'image file cannot be read'})")
    if problems:
        listed = "; ".join(problems[:_LISTED])
        more = f" and {len(problems) - _LISTED} more" if len(problems) > _LISTED else ""
        raise ValueError(
            f"{len(problems)} of the {len(files)} unlabelled images cannot be read: {listed}"
            f"{more}. Remove or replace them. Received: unlabeled_data={str(directory)!r}."
        )
    images = np.stack(images).astype(np.float32)
    return UnlabeledPool(images, str(directory), ratio, tuple(files), mixup)


def mixing_order(labelled_batches: int, ratio: float) -> np.ndarray:
    """Which source each batch of an epoch comes from: 0 labelled, 1 unlabelled.

    `round(ratio · labelled_batches)` unlabelled batches (at least one) are spread evenly among
    the labelled ones, which keep their order; the epoch ends with the last labelled batch.

    Example:
        >>> mixing_order(4, 0.5).tolist()
        [0, 1, 0, 0, 1, 0]
    """
    if labelled_batches < 1:
        raise ValueError(f"Expected at least one labelled batch. Received: {labelled_batches}.")
    if ratio <= 0:
        raise ValueError(f"Expected a ratio > 0. Received: ratio={ratio!r}.")
    unlabelled = max(1, round(ratio * labelled_batches))
    # The k-th unlabelled batch follows the labelled batch at fraction k / unlabelled.
    after = np.floor(np.arange(unlabelled) * labelled_batches / unlabelled).astype(int)
    order = []
    for index in range(labelled_batches):
        order.append(0)
        order.extend([1] * int(np.sum(after == index)))
    return np.asarray(order, np.int64)


def mixup_batch(x: tf.Tensor, alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """Each image of `x` mixed with the next one of the batch (the last with the first).

    Formula (mixup, Zhang et al. 2018, on inputs only):
        λ_i ~ Beta(α, α),   x̃_i = λ_i · x_i + (1 − λ_i) · x_{(i+1) mod n}

    λ is drawn as `g₁ / (g₁ + g₂)` from two Gamma(α) draws, statelessly from `seed` (a `[2]`
    integer tensor), so the same seed mixes the same way.
    """
    shape = tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], 0)
    first = tf.random.stateless_gamma(shape, seed, alpha)
    second = tf.random.stateless_gamma(shape, seed + [0, 1 << 30], alpha)
    weight = first / tf.maximum(first + second, 1e-12)
    return weight * x + (1.0 - weight) * tf.roll(x, shift=-1, axis=0)


def mix_unlabeled(
    labelled: tf.data.Dataset,
    pool: UnlabeledPool,
    batch_size: int,
    seed: int,
    labelled_batches: int | None = None,
    teacher_outputs: np.ndarray | None = None,
    epochs: int = 1,
) -> tf.data.Dataset:
    """`labelled` batches and `pool` batches, each with a per-example weight last.

    Args:
        labelled: batched `(x, y)`, or `(x, y, teacher_outputs)` for offline KD; each pass
            over it is one epoch (Keras re-iterates it).
        pool: the unlabelled images and the ratio to mix them at (`mixing_order`).
        batch_size: examples per unlabelled batch.
        seed: the pool's shuffle order (a new order each pass, the same for the same seed).
        labelled_batches: batches per pass over `labelled`, when its cardinality is unknown.
        teacher_outputs: offline KD: the teacher's cached outputs on `pool.images`.
        epochs: epochs one pass over `labelled` holds (a stream of `epochs ×
            labelled_batches` batches fitted with `steps_per_epoch`); each gets its own mix.

    Returns:
        A dataset of `(x, y, weight)` (offline: `(x, y, teacher_outputs, weight)`). `weight`
        is `[batch]` float32, 1 for labelled examples and 0 for unlabelled ones, whose `y` are
        zeros shaped like the labelled ones. With `pool.mixup` the unlabelled `x` are mixed
        pairwise (`mixup_batch`), a new draw for every batch.

    Raises:
        ValueError: mixup with offline KD (the cached outputs describe unmixed images).
    """
    x_spec, y_spec = labelled.element_spec[:2]
    offline = len(labelled.element_spec) == 3
    if offline != (teacher_outputs is not None):
        raise ValueError(
            "Offline KD mixes (x, y, teacher_outputs) batches with the teacher's cached outputs "
            "on the pool: pass both or neither. Received: labelled elements with "
            f"{len(labelled.element_spec)} parts, teacher_outputs="
            f"{'given' if teacher_outputs is not None else 'None'}."
        )
    if offline and pool.mixup:
        raise ValueError(
            "Mixup on the unlabelled pool needs the teacher online: its cached outputs describe "
            f"the unmixed images. Set unlabeled_mixup to 0 or drop offline KD. Received: "
            f"mixup={pool.mixup}."
        )
    count = labelled_batches
    if count is None:
        count = int(labelled.cardinality())
        if count < 1:
            raise ValueError(
                "Mixing unlabelled batches needs the number of labelled batches per epoch; pass "
                f"labelled_batches=. Received: a dataset of cardinality {count}."
            )
    for spec in tf.nest.flatten(y_spec):
        if not spec.shape[1:].is_fully_defined():
            raise ValueError(
                "Unlabelled batches need labels of a fixed shape per example to stand in for. "
                f"Received: a label of shape {spec.shape}."
            )

    def weighted(*element):
        return (*element, tf.ones([tf.shape(element[0])[0]], tf.float32))

    def unweighted(x, *cached):
        size = tf.shape(x)[0]
        zeros = tf.nest.map_structure(
            lambda spec: tf.zeros(tf.concat([[size], spec.shape[1:]], 0), spec.dtype), y_spec
        )
        x = tf.ensure_shape(x, x_spec.shape)
        return (x, zeros, *cached, tf.zeros([size], tf.float32))

    sources = pool.images if teacher_outputs is None else (pool.images, teacher_outputs)
    images = tf.data.Dataset.from_tensor_slices(sources)
    images = images.shuffle(len(pool.images), seed=seed, reshuffle_each_iteration=True).repeat()
    unlabelled = images.batch(batch_size, drop_remainder=len(pool.images) >= batch_size)
    if pool.mixup:
        alpha = float(pool.mixup)
        unlabelled = unlabelled.enumerate().map(
            lambda index, x: mixup_batch(x, alpha, tf.stack([tf.constant(seed, tf.int64), index]))
        )
    order = np.tile(mixing_order(count, pool.ratio), epochs)
    mixed = tf.data.Dataset.choose_from_datasets(
        [labelled.map(weighted), unlabelled.map(unweighted)],
        tf.data.Dataset.from_tensor_slices(order),
    )
    # The pool repeats forever; an epoch is the labelled batches and those mixed among them.
    return mixed.apply(tf.data.experimental.assert_cardinality(len(order)))


__all__ = [
    "UnlabeledPool",
    "list_unlabeled_folder",
    "mix_unlabeled",
    "mixing_order",
    "mixup_batch",
    "read_unlabeled_folder",
]
