"""What a run's data was, so a rerun notices data that changed under the same config.

A task describes its data as a flat mapping (`Task.data_fingerprint`): the digest of each
annotation file, the listing of the image files it reads (name, size in bytes and modification
time) and, for built-in data, the generator's settings. The run state keeps it; a rerun in the
same output folder compares it with the data of now and refuses to reuse stages trained on
other data, naming what changed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_SHOWN = 5


def file_digest(path: str | os.PathLike) -> str:
    """`sha256:<hex>` of a file's content (an annotation file, a label list)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def file_listing(
    paths: Iterable[str | os.PathLike], root: str | os.PathLike
) -> dict[str, list[int]]:
    """`{path relative to root: [size in bytes, modification time in ns]}` of the given files."""
    root = Path(root)
    listing = {}
    for path in paths:
        path = Path(path)
        status = path.stat()
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        listing[name] = [int(status.st_size), int(status.st_mtime_ns)]
    return dict(sorted(listing.items()))


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """One phrase per entry that differs: a changed digest or setting, or the files of a listing
    that were added, removed or modified (the first few named)."""
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            changes.append(f"{key}: {_listing_change(before, after)}")
        elif before is None or after is None:
            changes.append(f"{key}: {'added' if before is None else 'removed'}")
        else:
            changes.append(f"{key}: {_short(before)} -> {_short(after)}")
    return changes


def _listing_change(before: Mapping, after: Mapping) -> str:
    parts = []
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    modified = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    for label, names in (("added", added), ("removed", removed), ("modified", modified)):
        if names:
            more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
            parts.append(f"{len(names)} {label} ({', '.join(names[:_SHOWN])}{more})")
    return "; ".join(parts)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:24]}...{text[-8:]}"


__all__ = ["describe_changes", "file_digest", "file_listing"]
