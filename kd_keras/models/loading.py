"""Loading a user's saved model: safe mode, and errors that name the file instead of h5py's."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import tf_keras as keras


class ModelFileError(ValueError):
    """A model file that does not exist or cannot be loaded."""


def load_model_file(
    path: str | os.PathLike, option: str = "teacher", custom_objects: dict | None = None
) -> keras.Model:
    """Loads a `.keras` file saved with tf_keras, in safe mode (no code from the file runs).

    Args:
        path: the `.keras` file.
        option: the command-line option or config key the path came from, for messages.
        custom_objects: extra layers the model needs (registered ones are found by name).

    Raises:
        ModelFileError: a missing file, another format, a corrupt or truncated archive, or a
            model that needs code the file may not bring (a Lambda layer in safe mode).
    """
    path = Path(path)
    if not path.is_file() or path.suffix != ".keras":
        raise ModelFileError(
            f"Expected --{option} to be an existing .keras file saved with tf_keras. "
            f"Received: {option}={str(path)!r}."
        )
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path} is not a .keras archive (it may be truncated or another format). Save the "
            f"model again with model.save('{path.name}'). Received: {option}={str(path)!r}."
        )
    try:
        return keras.models.load_model(
            path, custom_objects=custom_objects, compile=False, safe_mode=True
        )
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise ModelFileError(
            f"Cannot load {path} ({type(error).__name__}: {first_line}). Check that it was saved "
            f"with tf_keras (import tf_keras as keras; model.save(...)) and is complete. "
            f"Received: {option}={str(path)!r}."
        ) from error


__all__ = ["ModelFileError", "load_model_file"]
