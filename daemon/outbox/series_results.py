"""The DICOM results of a whole series: its lesion SEG and its TID 1500 SR, made in the outbox.

When the outbox writer makes an analysed slice's Secondary Capture it also keeps the slice's
DICOM header (no pixels) in ``<outbox>/.sources/<series id>/<scan id>.dcm`` (`keep_source`): the
SEG and the SR reference their source images by UID, position and geometry, and the input file
itself may be gone by the time its series completes. When the series tracker has written a
series report (`daemon.series.tracker.SeriesTracker.on_reported`), `series_results` reads it and
makes, for an analysed DICOM series,

* the SR (`daemon.outbox.sr.lesion_report`): the finding, and each lesion's volume and location
  when the bundle has a segmenter;
* the SEG (`daemon.outbox.seg.lesion_segmentation`) when the lesion maps show a lesion.

Each is named after the series (``<series id>-sr.dcm``, ``<series id>-seg.dcm``); a series report
written again (a late image) makes them again under the same names, with new UIDs when their
content changed. Only slices whose header was kept and (for the SEG) whose mask file exists take
part; a series with none is skipped. Kept headers are removed `SOURCES_KEEP_S` after their last
change (`prune_sources`).
"""

from __future__ import annotations

import io
import json
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydicom

from daemon.fs import write_atomic

if TYPE_CHECKING:
    from pathlib import Path

SOURCES = ".sources"
SOURCES_KEEP_S = 86400.0
"""A series' kept headers are removed this long after the last one was written."""
_ANALYSED = ("ok", "incomplete")


@dataclass(frozen=True)
class SeriesResult:
    """One DICOM object made for a series: its outbox file name, kind and bytes."""

    name: str
    kind: str
    data: bytes


def keep_source(outbox: Path, report: dict[str, Any], data: bytes) -> bool:
    """Keep the header of an analysed single-frame DICOM slice of a series; True when kept."""
    series = report.get("series_id")
    scan = report.get("id")
    if not series or not scan or report.get("status") != "ok":
        return False
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    if int(header.get("NumberOfFrames") or 1) != 1:
        return False
    buffer = io.BytesIO()
    header.save_as(buffer, enforce_file_format=False)
    folder = outbox / SOURCES / str(series)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"{scan}.dcm", buffer.getvalue())
    return True


def _sources_and_masks(
    folder: Path, reports: Path, slices: list[dict[str, Any]]
) -> tuple[list[pydicom.Dataset], list[Path | None]]:
    """The kept headers of the report's slices (in its order) and their mask files, if any."""
    sources: list[pydicom.Dataset] = []
    masks: list[Path | None] = []
    for entry in slices:
        kept = folder / f"{entry.get('report_id')}.dcm"
        if entry.get("frame") is not None or not kept.is_file():
            continue
        sources.append(pydicom.dcmread(kept))
        mask = entry.get("lesion_mask")
        masks.append(reports / mask if mask and (reports / mask).is_file() else None)
    return sources, masks


def series_results(outbox: Path, reports: Path, series_id: str) -> list[SeriesResult]:
    """The SR (and the SEG when there is a lesion) of a reported series; [] when none is due.

    Raises:
        daemon.outbox.seg.LesionResultError: the kept sources cannot carry the results.
        OSError, ValueError: the series report or a kept header cannot be read.
    """
    from daemon.outbox.seg import lesion_segmentation  # noqa: PLC0415 - highdicom is heavy
    from daemon.outbox.sr import lesion_report  # noqa: PLC0415

    folder = outbox / SOURCES / series_id
    if not folder.is_dir():
        return []
    report = json.loads((reports / "series" / f"{series_id}.json").read_bytes())
    if report.get("status") not in _ANALYSED or not report.get("model"):
        return []
    sources, masks = _sources_and_masks(folder, reports, report.get("slices") or [])
    if not sources:
        return []
    seg = None
    if report.get("lesions") and all(m is not None for m in masks):
        seg = lesion_segmentation(sources, [m for m in masks if m is not None], report)
    results = []
    if seg is not None:
        results.append(SeriesResult(f"{series_id}-seg.dcm", "segmentation", _encoded(seg)))
    sr = lesion_report(sources, report, seg)
    results.append(SeriesResult(f"{series_id}-sr.dcm", "structured_report", _encoded(sr)))
    return results


def _encoded(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def prune_sources(outbox: Path, now: float | None = None) -> int:
    """Remove the kept headers of series untouched for `SOURCES_KEEP_S`; return how many."""
    root = outbox / SOURCES
    now = time.time() if now is None else now
    removed = 0
    try:
        folders = [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return 0
    for folder in folders:
        try:
            if now - folder.stat().st_mtime > SOURCES_KEEP_S:
                shutil.rmtree(folder)
                removed += 1
        except OSError:
            continue
    return removed
