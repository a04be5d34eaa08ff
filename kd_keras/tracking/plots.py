"""Run plots: training curves and a metric against model size (PNG files, no display needed).

Figures are drawn on their own Agg canvas, without pyplot, so matplotlib's global backend and
the caller's open figures are left as they were.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def training_curves(metrics: Sequence[Sequence], path: str | os.PathLike) -> Path | None:
    """One panel per training (`teacher/…`, `distilled/…`), one line per metric, over epochs.

    Args:
        metrics: `[key, value, step, timestamp]` rows as logged by `MlflowCallback`.
        path: the PNG to write.

    Returns:
        `path`, or `None` when there are no per-epoch metrics.
    """
    panels: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for key, value, step, _ in metrics:
        panel, _, name = key.rpartition("/")
        panels[panel or "training"][name].append((step, value))
    if not panels:
        return None
    figure = _figure((4.5 * len(panels), 3.5))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (panel, series) in zip(axes[0], sorted(panels.items())):
        for name, points in sorted(series.items()):
            steps, values = zip(*sorted(points))
            axis.plot(steps, values, marker="o", markersize=3, label=name)
        axis.set_title(panel)
        axis.set_xlabel("epoch")
        axis.legend(fontsize=7)
    return _save(figure, path)


def metric_vs_size(
    points: Sequence[tuple[str, float, float]], path: str | os.PathLike, metric: str = "accuracy"
) -> Path | None:
    """Scatter of `(label, size_bytes, value)` points, size on a log axis.

    Args:
        points: one `(label, size_bytes, value)` per model.
        path: the PNG to write.
        metric: the y-axis label (the metric's report key, e.g. `accuracy`, `AP`, `mAP`).

    Returns:
        `path`, or `None` when there are no points.
    """
    if not points:
        return None
    figure = _figure((5, 3.5))
    axis = figure.subplots()
    for label, size, value in points:
        axis.scatter(size / 1024, value)
        axis.annotate(
            label, (size / 1024, value), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    axis.set_xscale("log")
    axis.set_xlabel("size (KiB)")
    axis.set_ylabel(metric)
    return _save(figure, path)


def _figure(size: tuple[float, float]) -> Figure:
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
