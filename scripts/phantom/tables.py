"""The CSV tables written beside the images: manifest.csv and truth.csv."""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (the first row's keys are the columns) as a CSV file."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def uniform_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every column any of them has (empty where absent)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return [{c: row.get(c, "") for c in columns} for row in rows]
