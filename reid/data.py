"""ReID data: the run's Market-1501 folder from `ReIDConfig`, the user's or the built-in one.

`load_data(config)` is the task-level entry point; `reid.market1501` reads the folder,
`reid.synthetic` writes the built-in one and `reid.sampler` draws the P×K training batches.
"""

from __future__ import annotations

from pathlib import Path

from reid.config import ReIDConfig
from reid.market1501 import Market1501, load_market1501
from reid.synthetic import SyntheticConfig, ensure_synthetic_market1501


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
    root = Path(config.output_dir) / "market1501_synthetic"
    ensure_synthetic_market1501(root, SyntheticConfig(image_size=config.image_size))
    return load_market1501(root, config.image_size), f"built-in synthetic ({root})"
