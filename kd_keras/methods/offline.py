"""Offline (response-based) KD: run the teacher once, store its outputs, train from the cache.

The cache is a directory holding `outputs.npy` and `meta.json` (what produced it: teacher name,
output kind, number of examples and a fingerprint of the inputs), written atomically so an
interrupted run never leaves a half-written cache that looks valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kd_keras.io import atomic_write_bytes, atomic_write_json

_OUTPUTS = "outputs.npy"
_META = "meta.json"
# Batches prepared ahead of the training step (a fixed buffer: see `offline_dataset`).
_PREFETCH_BATCHES = 2


@dataclasses.dataclass(frozen=True)
class TeacherCache:
    """Teacher outputs for a fixed, ordered set of inputs.

    Attributes:
        outputs: `[examples, ...]` float32 teacher outputs, in the order of the inputs.
        teacher_name: name of the teacher that produced them.
        inputs_fingerprint: SHA-256 of the inputs, to detect a cache used with other data.
    """

    outputs: np.ndarray
    teacher_name: str
    inputs_fingerprint: str

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one example's outputs (for `Distiller(teacher_output_shape=...)`)."""
        return tuple(self.outputs.shape[1:])

    def check_inputs(self, x: np.ndarray) -> None:
        """Raises if `x` are not the inputs this cache was computed on."""
        if len(x) != len(self.outputs) or fingerprint(x) != self.inputs_fingerprint:
            raise ValueError(
                f"The teacher cache (from {self.teacher_name!r}, {len(self.outputs)} examples) was "
                "computed on other inputs. Recompute it with compute_teacher_outputs on these "
                f"inputs. Received: {len(x)} examples with a different fingerprint."
            )


def fingerprint(x: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and bytes."""
    x = np.ascontiguousarray(x)
    digest = hashlib.sha256(f"{x.shape}{x.dtype}".encode())
    digest.update(x.tobytes())
    return digest.hexdigest()


def compute_teacher_outputs(
    teacher: keras.Model, x: np.ndarray, batch_size: int = 256
) -> TeacherCache:
    """Runs the teacher once, in inference mode, over `x`."""
    outputs = teacher.predict(x, batch_size=batch_size, verbose=0)
    return TeacherCache(np.asarray(outputs, np.float32), teacher.name, fingerprint(x))


def save_teacher_cache(cache: TeacherCache, directory: str | os.PathLike) -> Path:
    """Writes the cache to `directory` (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = _npy_bytes(cache.outputs)
    atomic_write_bytes(directory / _OUTPUTS, buffer)
    meta = {
        "teacher_name": cache.teacher_name,
        "inputs_fingerprint": cache.inputs_fingerprint,
        "examples": int(len(cache.outputs)),
        "output_shape": list(cache.output_shape),
    }
    atomic_write_json(directory / _META, meta)
    return directory


def load_teacher_cache(directory: str | os.PathLike) -> TeacherCache:
    """Reads a cache written by `save_teacher_cache` (plain arrays only, never pickles)."""
    directory = Path(directory)
    missing = [name for name in (_OUTPUTS, _META) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a teacher cache: missing {missing}. Create it with "
            f"save_teacher_cache. Received: directory={str(directory)!r}."
        )
    meta = json.loads((directory / _META).read_text())
    outputs = np.load(directory / _OUTPUTS, allow_pickle=False)
    if len(outputs) != meta["examples"]:
        raise ValueError(
            f"Teacher cache {directory} is inconsistent: meta.json says {meta['examples']} "
            f"examples, outputs.npy holds {len(outputs)}. Recompute it."
        )
    return TeacherCache(outputs, meta["teacher_name"], meta["inputs_fingerprint"])


def offline_dataset(
    x: np.ndarray,
    y: np.ndarray,
    cache: TeacherCache,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    augmentation=None,
) -> tf.data.Dataset:
    """A dataset of `(x, y, teacher_outputs)` batches for a teacher-less `Distiller`.

    Batches are prefetched two ahead, with tf.data autotuning off (see the comment in the body).

    Random augmentation is refused: the cached outputs describe the un-augmented inputs, so the
    student would learn from targets that do not match what it sees.

    Raises:
        ValueError: if `augmentation` is given, or the cache was computed on other inputs.
    """
    if augmentation is not None:
        raise ValueError(
            "Cached teacher outputs cannot be combined with random augmentation: the cache holds "
            "the teacher's outputs for the un-augmented inputs, so its targets would be stale. "
            "Train online (pass the teacher to the Distiller) to augment, or drop the "
            f"augmentation. Received: augmentation={augmentation!r}."
        )
    cache.check_inputs(x)
    dataset = tf.data.Dataset.from_tensor_slices((x, y, cache.outputs))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    # The batches come from memory, so tf.data's autotuner has nothing to tune but the prefetch
    # buffer; with it on, each epoch of `fit` ends waiting 0-0.3 s for the iterator's autotuning
    # thread (an epoch of 29 batches of the 32×32 digits took 1.4× as long, median of 8 rounds).
    # The elements and their order are the same without it.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.batch(batch_size).prefetch(_PREFETCH_BATCHES).with_options(options)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
