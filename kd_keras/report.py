"""Plain-text tables for recipe reports."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """Renders `rows` as an aligned table.

    Args:
        rows: one dict per row.
        columns: `(key, header, format)` triples; `format` is a format spec (`".3f"`) or `""`.
            A missing value prints as `-`.
    """
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            value = row.get(key)
            line.append("-" if value is None else format(value, spec))
        cells.append(line)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    rendered = []
    for index, line in enumerate(cells):
        parts = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths))
        ]
        rendered.append("  ".join(parts))
        if index == 0:
            rendered.append("  ".join("-" * w for w in widths))
    return "\n".join(rendered)
