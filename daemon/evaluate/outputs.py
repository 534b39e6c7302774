"""The evaluation folder: written into a hidden staging folder beside it, then renamed into place.

    metrics.json           `daemon.evaluate.figures` + what was evaluated, with which model
    results.csv            one row per file (`RESULT_COLUMNS`)
    confusion_matrix.png   labelled sets: slice-level, with class names
    reliability.png        labelled sets: slice and case level, ``bins`` bins

An existing folder is never overwritten: `claim_folder` refuses one that exists, and the final
rename fails rather than replace anything that appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.errors import DatasetError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from daemon.evaluate.scoring import Row

RESULT_COLUMNS = (
    "file",
    "case",
    "truth",
    "status",
    "code",
    "label",
    "probability",
    "finding",
    "correct",
)
METRICS = "metrics.json"
RESULTS = "results.csv"
CONFUSION = "confusion_matrix.png"
RELIABILITY = "reliability.png"


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has neither), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def correct(row: Row, kind: str) -> str:
    """``1``/``0``: the label is the truth (labelled), the file was refused (out of scope).

    Empty for a labelled file the daemon did not analyse.
    """
    if kind == "out_of_scope":
        return "1" if row.status == "not_analysed" else "0"
    if row.status != "ok":
        return ""
    return "1" if row.label == row.item.truth else "0"


def write_results(path: Path, rows: Sequence[Row], kind: str) -> None:
    """``results.csv``: one row per file, in the order scored."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(RESULT_COLUMNS)
        for row in rows:
            probability = "" if row.probability is None else f"{row.probability:.6f}"
            writer.writerow(
                [
                    row.item.rel,
                    row.item.case,
                    row.item.truth,
                    row.status,
                    row.code,
                    row.label,
                    probability,
                    row.finding,
                    correct(row, kind),
                ]
            )


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json``, indented, NaN written as null."""
    text = json.dumps(finite(metrics), indent=2, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def claim_folder(out: Path) -> None:
    """Refuse an ``out`` that exists already.

    Raises:
        DatasetError: ``out`` exists (nothing is overwritten).
    """
    if os.path.lexists(out):
        raise DatasetError(f"{out} exists already: evaluate never overwrites; name a new --out")


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A hidden staging folder beside ``out``, renamed to ``out`` when the block succeeds.

    Removed (with what it holds) when the block raises, Ctrl-C included.

    Raises:
        DatasetError: ``out`` appeared meanwhile, or the rename failed (the staging folder is
            removed).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    staging.mkdir()
    try:
        yield staging
        claim_folder(out)  # rename() would replace an empty folder that appeared meanwhile
        try:
            staging.rename(out)
        except OSError as exc:
            raise DatasetError(f"cannot move the evaluation into {out}: {exc.strerror}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def folder_name(now: str) -> Path:
    """The default ``--out``: ``evaluations/<UTC time>``."""
    return Path("evaluations") / now
