"""ReID data: the run's Market-1501 folder from `ReIDConfig`, the user's or the built-in one.

`load_data(config)` is the task-level entry point; `reid.market1501` reads the folder,
`reid.synthetic` writes the built-in one and `reid.sampler` draws the P×K training batches.
"""

from __future__ import annotations

from pathlib import Path

from reid.config import ReIDConfig
from reid.market1501 import Market1501, load_market1501
from reid.synthetic import SyntheticConfig, ensure_synthetic_market1501

#: Unlabelled crops the built-in folder holds with `unlabeled_data: builtin`: 2.7× its 576
#: labelled training images.
BUILTIN_UNLABELED = 1536


def builtin_root(config: ReIDConfig) -> Path:
    """Where the built-in Market-1501 folder is written."""
    return Path(config.output_dir) / "market1501_synthetic"


def load_data(config: ReIDConfig) -> tuple[Market1501, str]:
    """The user's Market-1501 folder, or the built-in one (written on first use).

    Args:
        config: the run's settings (`data`, or `output_dir` for the built-in folder, and
            `image_size`).

    Returns:
        `(dataset, description)`.
    """
    if config.data is not None:
        return load_market1501(config.data, config.image_size), config.data
    root = builtin_root(config)
    unlabeled = BUILTIN_UNLABELED if config.unlabeled_data == "builtin" else 0
    settings = SyntheticConfig(image_size=config.image_size, unlabeled=unlabeled)
    ensure_synthetic_market1501(root, settings)
    return load_market1501(root, config.image_size), f"built-in synthetic ({root})"
