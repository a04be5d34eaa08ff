"""P×K identity sampling: batches of P identities with K images each, for the triplet loss.

The batch-hard triplet loss needs positives and negatives for every anchor in a batch; random
batches from hundreds of identities rarely contain two images of one person. Each P×K batch does.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class PKSampler:
    """Draws batches of `p` distinct identities × `k` images each, deterministically from `seed`.

    Identities with fewer than `k` images are sampled with replacement. Within an epoch (one
    pass over the identities in a shuffled order), each identity appears in at most one batch.

    Args:
        labels: one identity label per training image.
        p: identities per batch (at most the number of identities).
        k: images per identity.
        seed: random seed.

    Example:
        >>> sampler = PKSampler(labels, p=8, k=4, seed=0)
        >>> sampler.batches(100).shape
        (100, 32)
    """

    def __init__(self, labels, p: int, k: int, seed: int = 0):
        labels = np.asarray(labels).reshape(-1)
        identities = np.unique(labels)
        if p < 2 or k < 2:
            raise ValueError(
                "A P×K batch needs p >= 2 identities and k >= 2 images each, so every anchor has "
                f"a positive and a negative. Received: p={p}, k={k}."
            )
        if p > len(identities):
            raise ValueError(
                f"p={p} identities per batch, but the data has only {len(identities)}. Lower p. "
                f"Received: p={p}."
            )
        self.labels = labels
        self.p = p
        self.k = k
        self.seed = seed
        self._indices = {int(i): np.flatnonzero(labels == i) for i in identities}
        self._identities = identities

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    @property
    def batches_per_epoch(self) -> int:
        """Batches that visit every identity once."""
        return len(self._identities) // self.p

    def batches(self, count: int) -> np.ndarray:
        """`[count, p·k]` image indices: row `i` is batch `i`, identity-major (k per identity)."""
        rng = np.random.default_rng(self.seed)
        rows = []
        order: list[int] = []
        while len(rows) < count:
            if len(order) < self.p:
                order = rng.permutation(self._identities).tolist()
            chosen, order = order[: self.p], order[self.p :]
            row = []
            for identity in chosen:
                pool = self._indices[int(identity)]
                row.extend(rng.choice(pool, size=self.k, replace=len(pool) < self.k).tolist())
            rows.append(row)
        return np.asarray(rows, np.int64).reshape(count, self.batch_size)


def pk_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    sampler: PKSampler,
    steps: int,
    augment: bool = True,
    seed: int = 0,
) -> tf.data.Dataset:
    """A `tf.data` pipeline of `steps` P×K batches `(images, labels)`.

    With `augment`, each image is flipped left-right with probability 1/2 and randomly shifted by
    up to 1/8 of its size (zero padding, then a crop), the standard ReID augmentations.
    """
    index_batches = sampler.batches(steps)
    images = tf.constant(images)
    labels = tf.constant(np.asarray(labels, np.int64))
    height, width = images.shape[1], images.shape[2]
    pad_h, pad_w = max(1, height // 8), max(1, width // 8)

    def gather(indices):
        return tf.gather(images, indices), tf.gather(labels, indices)

    def shift_and_flip(step, batch_and_labels):
        batch, batch_labels = batch_and_labels
        # Stateless draws keyed by (seed, step): the same seed gives the same batches.
        size = tf.shape(batch)[0]
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), step]), 2
        )
        shifts = tf.constant([2 * pad_h + 1, 2 * pad_w + 1], tf.float32)
        corners = tf.cast(tf.random.stateless_uniform([size, 2], seeds[0]) * shifts, tf.int32)
        flip = tf.random.stateless_uniform([size, 1, 1, 1], seeds[1]) < 0.5
        padded = tf.pad(batch, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
        crops = tf.map_fn(
            lambda args: tf.slice(args[0], [args[1][0], args[1][1], 0], [height, width, 3]),
            (padded, corners),
            fn_output_signature=padded.dtype,
        )
        return tf.where(flip, tf.reverse(crops, axis=[2]), crops), batch_labels

    dataset = tf.data.Dataset.from_tensor_slices(index_batches).map(gather)
    if augment:
        dataset = dataset.enumerate().map(shift_and_flip)
    return dataset.prefetch(2)
