"""Atomic file writes: a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to a temporary file beside `path`, fsyncs it, then renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, payload) -> Path:
    """Writes `payload` as indented JSON, atomically."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    return atomic_write_bytes(path, text.encode())


def atomic_save_model(model, path: str | os.PathLike) -> Path:
    """Saves a Keras model to a temporary file beside `path`, then renames it into place."""
    return _saved_then_renamed(Path(path), model.save)


def atomic_save_weights(model, path: str | os.PathLike) -> Path:
    """Saves a Keras model's weights atomically to `path` (its suffix picks the format)."""
    return _saved_then_renamed(Path(path), model.save_weights)


def _saved_then_renamed(path: Path, save) -> Path:
    # The temporary name ends like `path` (`.keras`, `.weights.h5`): Keras picks the format from it.
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{path.name}")
    save(temporary)
    os.replace(temporary, path)
    return path
