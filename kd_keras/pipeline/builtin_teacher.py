"""Built-in teachers: trained weights shipped with a task, reproducible by one command.

A task may ship the teacher its recipe trains on the task's built-in data, in the folder its
`Task.builtin_teacher_dir` names:

- `builtin.npz`: the weight arrays, written so that the same weights give the same bytes
  (`write_weights`; no timestamps, stored uncompressed, in the model's weight order);
- `builtin.json`: the settings that made it (`teacher_settings`), its metrics, the digest of its
  weights (`weights_digest`) and the TensorFlow version that trained it.

With `teacher: auto` (the default) a run whose teacher settings are those of the shipped file
starts from it instead of training a teacher; every seed of that run then distils from the
same teacher. Any other run (your data, another `image_size`, another `teacher_model`, ...) trains
its own teacher, and the log names the settings that differ. `python -m recipes.teacher <task>`
trains the shipped teacher again; `--check` compares the new weights with the shipped ones, bit
for bit. The architecture always comes from the config (`Task.build`): the file holds arrays
only, so loading it runs no code from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import tf_keras as keras

from kd_keras import config as config_lib
from kd_keras.io import atomic_write_bytes
from kd_keras.models.loading import ModelFileError
from kd_keras.pipeline.resumable import RERUN_SAFE_KEYS, stage_dependencies
from kd_keras.pipeline.settings import AUTO

log = logging.getLogger(__name__)

#: keys the teacher stage reads that do not decide which teacher fits: every seed of a run uses
#: the one shipped teacher, and where the built-in data is written does not change it
_NOT_COMPARED = ("seed", "seeds", "teacher", "builtin_dir")
_INDEX = "weights.json"
# A fixed zip timestamp: the file's bytes depend on the weights alone.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def weights_digest(model: keras.Model) -> str:
    """`sha256:<hex>` over every weight's name, dtype, shape and bytes, in the model's order."""
    return _digest((weight.name, weight.numpy()) for weight in model.weights)


def file_weights_digest(path: str | os.PathLike) -> str:
    """`weights_digest` of the network a `write_weights` file was written from."""
    names, arrays = _read(Path(path))
    return _digest(zip(names, arrays))


def _digest(named_arrays) -> str:
    digest = hashlib.sha256()
    for name, array in named_arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{name}|{array.dtype.str}|{array.shape}\n".encode())
        digest.update(array.tobytes())
    return f"sha256:{digest.hexdigest()}"


def write_weights(model: keras.Model, path: str | os.PathLike) -> Path:
    """Writes `model`'s weights to `path` (an `.npz` numpy reads), atomically and byte for byte
    the same for the same weights."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        index = []
        for position, weight in enumerate(model.weights):
            array = weight.numpy()
            member = f"w{position:04d}.npy"
            index.append({"file": member, "name": weight.name, "shape": list(array.shape)})
            data = io.BytesIO()
            np.lib.format.write_array(data, array, allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(member, date_time=_EPOCH), data.getvalue())
        archive.writestr(zipfile.ZipInfo(_INDEX, date_time=_EPOCH), json.dumps(index, indent=1))
    return atomic_write_bytes(path, buffer.getvalue())


def read_weights_into(model: keras.Model, path: str | os.PathLike) -> None:
    """Sets `model`'s weights from a `write_weights` file.

    Raises:
        ModelFileError: a missing or corrupt file, or one whose weights (names, shapes, count)
            are not `model`'s.
    """
    path = Path(path)
    names, arrays = _read(path)
    expected = [(weight.name, tuple(weight.shape)) for weight in model.weights]
    found = [(name, tuple(array.shape)) for name, array in zip(names, arrays)]
    if expected != found:
        mismatch = next(
            (pair for pair in zip(expected, found) if pair[0] != pair[1]),
            (f"{len(expected)} weights", f"{len(found)} weights"),
        )
        raise ModelFileError(
            f"The teacher weights in {path} are not those of the teacher this config builds: "
            f"expected {mismatch[0]}, found {mismatch[1]}. Set teacher: null to train one."
        )
    model.set_weights(arrays)


def _read(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """The weight names and arrays of a `write_weights` file (no pickles)."""
    try:
        with zipfile.ZipFile(path) as archive:
            index = json.loads(archive.read(_INDEX))
            arrays = []
            for entry in index:
                with archive.open(entry["file"]) as handle:
                    arrays.append(np.lib.format.read_array(handle, allow_pickle=False))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ModelFileError(
            f"Could not read the teacher weights {path} ({error}). Reinstall kd-keras, or set "
            "teacher: null to train a teacher."
        ) from None
    return [entry["name"] for entry in index], arrays


def teacher_settings(config) -> dict[str, Any]:
    """The flat config values that decide which teacher a run trains (seed and output excluded)."""
    changes = stage_dependencies()
    flat = config_lib.flatten(config_lib.to_dict(config))
    settings = {
        key: value
        for key, value in sorted(flat.items())
        if key.split(".")[0] not in (*RERUN_SAFE_KEYS, *_NOT_COMPARED) and changes(key, "teacher")
    }
    return json.loads(json.dumps(settings, default=str))  # as builtin.json holds them


@dataclasses.dataclass(frozen=True)
class BuiltinTeacher:
    """A task's shipped teacher: `directory/builtin.npz` and its record `directory/builtin.json`."""

    directory: Path

    @property
    def weights(self) -> Path:
        return self.directory / "builtin.npz"

    @property
    def record_file(self) -> Path:
        return self.directory / "builtin.json"

    def record(self) -> dict:
        return json.loads(self.record_file.read_text())

    def exists(self) -> bool:
        return self.weights.is_file() and self.record_file.is_file()

    def differences(self, config) -> list[str]:
        """The teacher settings in which `config` differs from the shipped teacher's, as
        `key=value (built-in: value)`; empty when the shipped teacher fits the run."""
        shipped = self.record()["settings"]
        current = teacher_settings(config)
        return [
            f"{key}={current.get(key)!r} (built-in: {shipped.get(key)!r})"
            for key in sorted(set(shipped) | set(current))
            if current.get(key) != shipped.get(key)
        ]

    def load(self, model: keras.Model) -> keras.Model:
        """`model` (the config's teacher network) with the shipped weights, digest checked."""
        read_weights_into(model, self.weights)
        expected = self.record()["weights_digest"]
        if weights_digest(model) != expected:
            raise ModelFileError(
                f"The teacher weights in {self.weights} do not match the digest in "
                f"{self.record_file.name} ({expected}). Reinstall kd-keras, or set teacher: null "
                "to train a teacher."
            )
        return model


def shipped_teacher(task, config) -> BuiltinTeacher | None:
    """The task's shipped teacher when `config.teacher` is `auto` and the teacher fits the run,
    else `None` (with `auto`, the log says why a teacher is trained instead)."""
    if config.teacher != AUTO:
        return None
    if task.builtin_teacher_dir is None:
        return None
    builtin = BuiltinTeacher(Path(task.builtin_teacher_dir))
    if not builtin.exists():
        return None
    changed = builtin.differences(config)
    if changed:
        more = f"; and {len(changed) - 4} more" if len(changed) > 4 else ""
        log.info(
            "teacher: training one; the built-in teacher was made with other settings: %s%s",
            "; ".join(changed[:4]),
            more,
        )
        return None
    return builtin


def teacher_record(
    task, config, model: keras.Model, metrics: dict, seconds: float, command: str
) -> dict:
    """What `builtin.json` holds for a teacher trained from `config`."""
    import tensorflow as tf

    return {
        "task": task.name,
        "settings": teacher_settings(config),
        "seed": config.seed,
        "metrics": {k: None if v is None else float(v) for k, v in metrics.items()},
        "weights_digest": weights_digest(model),
        "parameters": int(model.count_params()),
        "train_seconds": round(seconds, 1),
        "tensorflow": tf.__version__,
        "command": command,
    }


__all__ = [
    "AUTO",
    "BuiltinTeacher",
    "file_weights_digest",
    "read_weights_into",
    "shipped_teacher",
    "teacher_record",
    "teacher_settings",
    "weights_digest",
    "write_weights",
]
