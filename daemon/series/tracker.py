"""The series tracker: groups reported images into series and writes a report per series.

One thread in the daemon process. The pipeline hands it the `SliceRecord` of every image report
that names a series (`add`, any thread; the worker made the record from the report it wrote).
Images are grouped by series id (`daemon.records.series_id`: the SeriesInstanceUID, whatever
folder or order they arrive in, interleaved with other series; or the sub-folder of incoming). An
image seen again (the same SOPInstanceUID, or the same file name in a folder series) counts once:
a re-scan of the same file replaces its record silently, a different file with the same
SOPInstanceUID is counted in ``duplicates``.

**Completion.** A series is complete when no image of it has arrived for ``series.stable_s``, or
as soon as ImagesInAcquisition says how many images it holds and every InstanceNumber up to that
has arrived. Its report (`daemon.series.assemble`) is then written into ``<reports>/series/``
(`daemon.series.store`). An image arriving after that reopens the series: the report is written
again, to the same file, after the same rule. ``run --once`` completes every open series once the
folder is done (`complete_all`). A stop leaves open series open: their images are on disk as image
reports, and the next start rebuilds them (`daemon.series.store.open_series_at_start`), so each
gets exactly one report across restarts, also after ``kill -9``.

**Links.** An ADC series (no slice, its images say ADC) is linked to the DWI series of the same
study with the same geometry (the same orientation and at least half of the slice positions in
common; without positions, the orientation alone): the ADC report names it in ``dwi_series``, the
DWI report lists it in ``adc_series`` (written again if it was written before the ADC series
completed).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from daemon import DISCLAIMER, GENERATOR
from daemon.clock import iso, utc_now
from daemon.scan.report import VERSION
from daemon.series.assemble import (
    analysed_slices,
    build_series_report,
    is_adc,
    kind_of,
    missing_instances,
)
from daemon.series.lesions import failed_fields, lesion_fields, model_text
from daemon.series.store import (
    image_records,
    listed_report_ids,
    open_series_at_start,
    read_series_report,
    write_series_report,
)
from daemon.threads import StageThread

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from daemon.scan.slices import SliceRecord

log = structlog.get_logger("infarctwatch.series")

KEEP_CLOSED_S = 3600.0
"""A completed series stays in memory this long (for late images and ADC links); after that a late
image reloads it from its report."""
_RETRY_S = 5.0
"""A series report that could not be written is tried again after this long."""
_ORIENTATION_TOLERANCE = 1e-3
_POSITION_DECIMALS = 1


@dataclass
class _Series:
    """What the tracker knows of one series."""

    series_id: str
    records: dict[str, SliceRecord] = field(default_factory=dict)
    duplicates: dict[str, SliceRecord] = field(default_factory=dict)
    """Other files with a SOPInstanceUID already counted, by report id (listed, not counted)."""
    last_seen: float = 0.0
    """Monotonic time of the last image that changed it."""
    reported: bool = False
    """True while its report on disk says everything the tracker knows of it."""
    completed_at: float = 0.0
    retry_at: float = 0.0
    status: str | None = None

    @property
    def folder(self) -> str | None:
        """The sub-folder of incoming of a folder series (None for a DICOM series)."""
        if any(r.series_uid for r in self.records.values()):
            return None
        names = [r.name for r in self.records.values() if "/" in r.name]
        return names[0].rpartition("/")[0] if names else None

    @property
    def study(self) -> str | None:
        return next((r.study_uid for r in self.records.values() if r.study_uid), None)

    def has_slices(self) -> bool:
        return any(kind_of(r) == "slice" for r in self.records.values())

    def is_adc(self) -> bool:
        records = list(self.records.values())
        return (
            bool(records)
            and not self.has_slices()
            and sum(map(is_adc, records)) * 2 >= len(records)
        )

    def geometry(self) -> tuple[tuple[float, ...] | None, set[float]]:
        orientation = next((r.orientation for r in self.records.values() if r.orientation), None)
        positions = {
            round(r.slice_position, _POSITION_DECIMALS)
            for r in self.records.values()
            if r.slice_position is not None
        }
        return orientation, positions

    def counted(self) -> bool:
        """ImagesInAcquisition is known and every InstanceNumber up to it has arrived."""
        records = list(self.records.values())
        expected = max((r.expected for r in records if r.expected), default=None)
        if not expected or len(records) < expected:
            return False
        return not missing_instances(records)


@dataclass(frozen=True)
class SeriesCounts:
    """The status file's ``series``."""

    open: int = 0
    reported: int = 0
    by_status: tuple[tuple[str, int], ...] = ()
    last_reported_at: str | None = None

    def to_status(self) -> dict[str, Any]:
        """As the status file holds it."""
        counts = dict(self.by_status)
        return {
            "open": self.open,
            "reported": self.reported,
            "ok": counts.get("ok", 0),
            "incomplete": counts.get("incomplete", 0),
            "not_analysed": counts.get("not_analysed", 0),
            "error": counts.get("error", 0),
            "last_reported_at": self.last_reported_at,
        }


def _same_geometry(one: _Series, other: _Series) -> bool:
    (o1, p1), (o2, p2) = one.geometry(), other.geometry()
    if o1 is None or o2 is None:
        return False
    if any(abs(a - b) > _ORIENTATION_TOLERANCE for a, b in zip(o1, o2, strict=True)):
        return False
    if not p1 or not p2:
        return True
    return len(p1 & p2) * 2 >= min(len(p1), len(p2))


class SeriesTracker(StageThread):
    """Groups images into series and writes their reports (one thread; `add` from any thread)."""

    def __init__(self, reports: Path, stable_s: float) -> None:
        super().__init__("infarctwatch-series")
        self._reports = reports
        self._stable_s = stable_s
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()
        self._counts = SeriesCounts()
        self._status_of: dict[str, str] = {}
        self._last_reported_at: str | None = None
        self.rebuilt = threading.Event()
        """Set once the series left open by the previous run are known again."""
        self.on_reported: Callable[[str], None] = lambda _series_id: None
        """Called (tracker thread) with the id of each series report written: the outbox's
        `OutboxWriter.notify_series`."""

    # -- any thread -------------------------------------------------------------------------------

    def add(self, record: SliceRecord) -> None:
        """An image of a series was reported."""
        self._inbox.put(("image", (time.monotonic(), record)))

    def complete_all(self, timeout: float = 60.0) -> bool:
        """Complete every open series now (``run --once``), after the images already handed in.

        Returns False when the tracker did not finish within ``timeout``.
        """
        done = threading.Event()
        self._inbox.put(("complete_all", done))
        return done.wait(timeout)

    def snapshot(self) -> SeriesCounts:
        """The counters now."""
        with self._lock:
            return self._counts

    # -- the tracker thread -----------------------------------------------------------------------

    def _stopping(self) -> None:
        self._inbox.put(("stop", None))

    def _run(self) -> None:
        self._rebuild()
        self.rebuilt.set()
        while not self._stop.is_set():
            try:
                kind, item = self._inbox.get(timeout=self._sleep())
            except queue.Empty:
                kind, item = "tick", None
            if kind == "stop":
                return
            try:
                if kind == "image":
                    seen, record = item
                    self._take(record, seen)
                self._complete_due(time.monotonic(), everything=kind == "complete_all")
            except Exception:  # a bug must not end the thread (and the service) for one series
                log.exception("series_tracker_bug")
            if kind == "complete_all":
                item.set()
            self._publish()

    def _sleep(self) -> float:
        now = time.monotonic()
        due = [
            s.retry_at or s.last_seen + self._stable_s
            for s in self._series.values()
            if not s.reported
        ]
        return max(0.01, min([*due, now + 60.0]) - now)

    def _rebuild(self) -> None:
        try:
            found = open_series_at_start(self._reports)
        except Exception:  # a bad report must not stop the tracker: those series stay unreported
            log.exception("series_rebuild_failed")
            return
        now = time.monotonic()
        for series_id, records in found.items():
            series = _Series(series_id, last_seen=now)
            for record in records:
                self._put(series, record)
            self._series[series_id] = series
        if found:
            log.info("series_resumed", series=len(found), images=sum(map(len, found.values())))

    def _take(self, record: SliceRecord, seen: float) -> None:
        series = self._series.get(record.series_id)
        if series is None:
            series = self._series[record.series_id] = self._reload(record.series_id)
        self._put(series, record)
        series.last_seen, series.reported, series.retry_at = seen, False, 0.0

    def _reload(self, series_id: str) -> _Series:
        """A series not in memory: new, or reported before and forgotten (its images come back)."""
        series = _Series(series_id)
        existing = read_series_report(self._reports, series_id)
        if existing is not None:
            for record in image_records(self._reports, listed_report_ids(existing)):
                self._put(series, record)
        return series

    @staticmethod
    def _put(series: _Series, record: SliceRecord) -> None:
        known = series.records.get(record.key)
        if known is not None and known.scan_id != record.scan_id:
            series.duplicates[record.scan_id] = record
            return  # the first image of that SOPInstanceUID stays
        series.records[record.key] = record

    def _complete_due(self, now: float, *, everything: bool = False) -> None:
        """Complete the series that are due; ``everything``: every open one (``run --once``).

        Completing an ADC series can reopen its DWI series (to add the link): with
        ``everything`` that one is written again in the same call.
        """
        for _ in range(3 if everything else 1):
            for series in list(self._series.values()):
                if series.reported:
                    if now - series.completed_at > KEEP_CLOSED_S:
                        del self._series[series.series_id]
                    continue
                if series.retry_at and now < series.retry_at and not everything:
                    continue
                if everything:
                    self._complete(series, "once")
                elif series.counted():
                    self._complete(series, "count")
                elif now - series.last_seen >= self._stable_s:
                    self._complete(series, "quiet")
            if all(s.reported for s in self._series.values()):
                return

    def _links(self, series: _Series) -> tuple[dict[str, Any], list[_Series]]:
        """The series' ADC/DWI links, and the reported DWI series that must be written again."""
        others = self._peers(series)
        if series.is_adc():
            dwi = next((s for s in others if s.has_slices()), None)
            if dwi is None:
                return {"adc_series": [], "dwi_series": None}, []
            again = [dwi] if dwi.reported else []
            return {"adc_series": [], "dwi_series": _reference(dwi)}, again
        if series.has_slices():
            return {"adc_series": [_reference(s) for s in others if s.is_adc()]}, []
        return {"adc_series": [], "dwi_series": None}, []

    def _complete(self, series: _Series, how: str) -> None:
        """Write the series' report; a bug while building it is logged, the series set aside.

        Set aside: marked reported, so it is not tried again until another image of it arrives
        (a bug that repeats must not take the tracker down at every start).
        """
        try:
            self._write(series, how)
        except Exception:
            log.exception("series_report_failed", series=series.series_id)
            series.reported, series.retry_at = True, 0.0
            series.completed_at = time.monotonic()

    def _write(self, series: _Series, how: str) -> None:
        links, again = self._links(series)
        completed = utc_now()
        received = sorted(r.received_at for r in series.records.values() if r.received_at)
        lesions = self._lesions(series)
        document = build_series_report(
            series.series_id,
            list(series.records.values()),
            folder=series.folder,
            duplicates=list(series.duplicates.values()),
            timing={
                "first_received_at": received[0] if received else None,
                "last_received_at": received[-1] if received else None,
                "completed_at": iso(completed),
                "completed_by": how,
                "reported_at": None,
            },
            links=links,
            generator={"name": GENERATOR, "version": VERSION},
            disclaimer=DISCLAIMER,
            lesions=lesions,
        )
        document["timing"]["reported_at"] = iso(utc_now())
        try:
            write_series_report(self._reports, document)
        except (OSError, ValueError) as exc:
            log.warning(
                "series_report_write_failed",
                series=series.series_id,
                error=getattr(exc, "strerror", None) or str(exc),
                retry_in_s=_RETRY_S,
            )
            series.retry_at = time.monotonic() + _RETRY_S
            return
        series.reported, series.retry_at = True, 0.0
        series.completed_at = time.monotonic()
        series.status = document["status"]
        self._status_of[series.series_id] = document["status"]
        self._last_reported_at = document["timing"]["reported_at"]
        log.info(
            "series_reported",
            series=series.series_id,
            status=document["status"],
            code=(document["reason"] or document["error"] or {}).get("code"),
            finding=document["finding"],
            images=document["images"],
            slices=len(document["slices"]),
            duplicates=len(series.duplicates),
            completed_by=how,
            quiet_s=round(time.monotonic() - series.last_seen, 2),
        )
        self.on_reported(series.series_id)
        for dwi in again:
            dwi.reported = False
            dwi.retry_at = 0.0
            dwi.last_seen = 0.0  # due at once: its report gains the ADC series

    def _peers(self, series: _Series) -> list[_Series]:
        """The other series of its study with the same geometry (where ADC and DWI pair)."""
        study = series.study
        if study is None:
            return []
        return [
            s
            for s in self._series.values()
            if s is not series and s.study == study and _same_geometry(s, series)
        ]

    def _adc_images(self, series: _Series) -> list[SliceRecord] | None:
        """The images of the ADC series linked to a DWI series (None: no ADC series)."""
        linked = [s for s in self._peers(series) if s.is_adc()]
        if not linked:
            return None
        return [r for s in linked for r in s.records.values() if is_adc(r)]

    def _lesions(self, series: _Series) -> dict[str, Any] | None:
        """The series' lesion fields (`daemon.series.lesions`); a bug there costs them only."""
        slices = analysed_slices(series.records.values())
        try:
            model = next((r.model for r in slices if r.model), None)
            adc = self._adc_images(series) if slices else None
            return lesion_fields(self._reports, series.series_id, slices, model_text(model), adc)
        except Exception as exc:
            log.exception("series_lesions_failed", series=series.series_id)
            return failed_fields(f"unexpected {type(exc).__name__} while finding the lesions")

    def _publish(self) -> None:
        counts: dict[str, int] = {}
        for status in self._status_of.values():
            counts[status] = counts.get(status, 0) + 1
        snapshot = SeriesCounts(
            open=sum(1 for s in self._series.values() if not s.reported),
            reported=len(self._status_of),
            by_status=tuple(sorted(counts.items())),
            last_reported_at=self._last_reported_at,
        )
        with self._lock:
            self._counts = snapshot


def _reference(series: _Series) -> dict[str, Any]:
    uid = next((r.series_uid for r in series.records.values() if r.series_uid), None)
    number = next((r.series_number for r in series.records.values() if r.series_number), None)
    return {"id": series.series_id, "series_instance_uid": uid, "series_number": number}
