"""Series reports on disk, and the image reports a series is rebuilt from.

``<reports>/series/<series id>.json``, written atomically (a temporary dotfile in the same folder,
fsynced, renamed into place, the folder fsynced) like the image reports: a reader never sees half
a report, and a series written again (a late image, a linked ADC series) replaces its file.

At start the tracker rebuilds the series a stop or a crash left open (`open_series_at_start`):
every image report written in the last `REBUILD_HORIZON_S` seconds that names a series is read; a
series whose report already lists every one of them is closed, the others are open again, with
the images their report listed (if any) and the images found since. Files still waiting in
incoming/ or processing/ are scanned as usual and join their series when reported.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

import structlog

from daemon.fs import write_atomic
from daemon.scan.slices import SliceRecord, slice_records

if TYPE_CHECKING:
    from pathlib import Path

log = structlog.get_logger("infarctwatch.series")

SERIES_FOLDER = "series"
REBUILD_HORIZON_S = 86_400.0
"""Image reports older than this (by mtime) are not read at start: a series left open by a stop
is taken up again if the daemon restarts within a day."""
_LISTS = ("slices", "b0_images", "adc_images", "other_images", "duplicate_images")


def series_folder(reports: Path) -> Path:
    """``<reports>/series``."""
    return reports / SERIES_FOLDER


def series_report_path(reports: Path, series_id: str) -> Path:
    """Where the report of series ``series_id`` goes."""
    return series_folder(reports) / f"{series_id}.json"


def write_series_report(reports: Path, document: dict[str, Any]) -> Path:
    """Write (or replace) a series report atomically; creates ``<reports>/series`` if missing.

    Raises:
        OSError: the report could not be written (the tracker tries again later).
    """
    path = series_report_path(reports, document["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False).encode() + b"\n"
    write_atomic(path, data)
    return path


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def listed_report_ids(document: dict[str, Any]) -> set[str]:
    """The image report ids a series report lists (slices, b0, ADC and other images)."""
    ids: set[str] = set()
    for key in _LISTS:
        for item in document.get(key) or ():
            if isinstance(item, dict) and isinstance(item.get("report_id"), str):
                ids.add(item["report_id"])
    return ids


def read_series_report(reports: Path, series_id: str) -> dict[str, Any] | None:
    """The series report of ``series_id``, or None when there is none (or it is unreadable)."""
    return _read_json(series_report_path(reports, series_id))


def image_records(reports: Path, report_ids: set[str]) -> list[SliceRecord]:
    """The `SliceRecord` s of these image reports (those gone or unreadable are left out)."""
    records: list[SliceRecord] = []
    for report_id in sorted(report_ids):
        document = _read_json(reports / f"{report_id}.json")
        records += slice_records(document) if document is not None else []
    return records


def recent_image_records(reports: Path, now: float | None = None) -> list[SliceRecord]:
    """Every image report of the last `REBUILD_HORIZON_S` seconds that belongs to a series."""
    since = (time.time() if now is None else now) - REBUILD_HORIZON_S
    records: list[SliceRecord] = []
    try:
        entries = list(os.scandir(reports))
    except OSError as exc:
        log.warning("series_rebuild_failed", error=exc.strerror or str(exc))
        return []
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or entry.stat().st_mtime < since:
                continue
        except OSError:
            continue
        document = _read_json(reports / entry.name)
        records += slice_records(document) if document is not None else []
    return records


def open_series_at_start(reports: Path) -> dict[str, list[SliceRecord]]:
    """The series to take up again at start, each with every image known of it (see above)."""
    found: dict[str, list[SliceRecord]] = {}
    for record in recent_image_records(reports):
        found.setdefault(record.series_id, []).append(record)
    open_series: dict[str, list[SliceRecord]] = {}
    for series_id, records in found.items():
        existing = read_series_report(reports, series_id)
        listed = listed_report_ids(existing) if existing is not None else set()
        if existing is not None and {r.scan_id for r in records} <= listed:
            continue  # reported with every image it has: closed
        known = {r.scan_id for r in records}
        open_series[series_id] = image_records(reports, listed - known) + records
    return open_series
