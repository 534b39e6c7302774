"""The outbox writer: one thread in the daemon process that turns staged DICOM files into captures.

A scan worker links each analysed DICOM file into ``<outbox>/.staging/<scan id>.dcm`` before it
writes the report (`daemon.scan.worker.stage_for_outbox`). Here, after the report is written
(`notify`, called by the pipeline for each scan reported ``ok``), the writer reads the report and
the staged file, makes the Secondary Capture (`daemon.outbox.capture`), writes it as
``<outbox>/<scan id>.dcm`` (temporary name, fsync, rename, folder fsync) and removes the staged
file; then it wakes the sender (``on_written``).

Restart-safe: the staging folder is swept (and made again if it was deleted) at start and every
`SWEEP_S` seconds, so a file staged before a crash gets its capture once its report exists. A
capture that exists already is written again with the same UIDs (they are derived from the source
and the scan: the same object). A staged file whose report says it was not analysed is dropped;
one whose report has not appeared within `ORPHAN_S` (the scan's report was never written) is
dropped and logged. A capture that cannot be made (a bug, a source highdicom refuses) drops its
staged file and is counted (``failed``, ``last_error``); a write that fails (disk full) leaves it
staged for the next sweep.

Captures yield to scans: while any scan is pending (``busy``), the writer waits, at most
`MAX_DEFER_S` per capture, so a burst of scans is reported first and its captures follow.

For series (`daemon.outbox.series_results`): with each capture the slice's header is kept, and
when the series tracker has written a series report (`notify_series`) the series' SR, and its
SEG when the lesion maps show a lesion, are written as ``<outbox>/<series id>-sr.dcm`` and
``-seg.dcm`` the same way. A series result that cannot be made is counted as failed like a
capture; one that cannot be written is tried again at the next series report.

Why here and not in the worker: a capture costs 10-15 ms of CPU (rendering, highdicom, encoding)
against about 4 ms for the whole scan, and a worker would spend it before answering for its batch;
in this thread it never delays a report. Log lines name the scan id, never a patient attribute
(highdicom's error messages can quote them: only the exception's type is logged).
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from daemon.clock import iso, utc_now
from daemon.fs import write_atomic
from daemon.outbox.capture import CaptureError, secondary_capture
from daemon.outbox.series_results import keep_source, prune_sources, series_results
from daemon.threads import StageThread

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger("infarctwatch.outbox")

SWEEP_S = 30.0
"""Seconds between looks at the staging folder (besides each `OutboxWriter.notify`)."""
ORPHAN_S = 600.0
"""A staged file whose report has not appeared for this long is dropped."""
MAX_DEFER_S = 5.0
"""While scans are pending, a capture waits for them at most this long (then one is made)."""
STAGING = ".staging"


def staging_folder(outbox: Path) -> Path:
    """Where the scan workers stage analysed DICOM files for ``outbox`` (hidden: never sent)."""
    return outbox / STAGING


class OutboxWriter(StageThread):
    """Writes a Secondary Capture for each staged DICOM file whose report says ``ok``."""

    def __init__(
        self,
        outbox: Path,
        reports: Path,
        on_written: Callable[[], None] = lambda: None,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__("infarctwatch-outbox")
        self._busy = busy
        self.outbox = outbox
        self.staging = staging_folder(outbox)
        self._reports = reports
        self._on_written = on_written
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._series: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._written = 0
        self._failed = 0
        self._last_error: dict[str, str | None] | None = None

    def notify(self, scan_id: str) -> None:
        """The report of ``scan_id`` is written (any thread): make its capture if it is staged."""
        self._queue.put(scan_id)
        self._wakeup.set()

    def notify_series(self, series_id: str) -> None:
        """The report of ``series_id`` is written (any thread): make its SR and SEG if due."""
        self._series.put(series_id)
        self._wakeup.set()

    def snapshot(self) -> dict[str, Any]:
        """The status file's ``outbox`` counters: written, failed, staged, the last error."""
        try:
            staged = sum(1 for p in self.staging.iterdir() if not p.name.startswith("."))
        except OSError:
            staged = 0
        with self._lock:
            return {
                "folder": str(self.outbox),
                "written": self._written,
                "failed": self._failed,
                "staged": staged,
                "last_error": self._last_error,
            }

    def _ended_normally(self) -> bool:
        return self.stopping

    def _run(self) -> None:
        next_sweep = 0.0
        while True:
            self._wakeup.clear()
            self._take_queued()
            if time.monotonic() >= next_sweep or self.stopping:
                self._sweep()
                next_sweep = time.monotonic() + SWEEP_S
            if self.stopping:
                return
            self._wakeup.wait(max(0.0, next_sweep - time.monotonic()))

    def _take_queued(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                scan_id = self._queue.get_nowait()
                if (self.staging / f"{scan_id}.dcm").exists():  # else not DICOM: nothing to do
                    self._yield_to_scans()
                    self._make_safely(scan_id)
        with contextlib.suppress(queue.Empty):
            while True:
                series_id = self._series.get_nowait()
                self._sweep_staging()  # every slice staged so far has its header kept first
                self._yield_to_scans()
                self._make_series_safely(series_id)

    def _make_series_safely(self, series_id: str) -> None:
        """Write the series' SR and SEG; a failure is counted and logged by type only."""
        try:
            results = series_results(self.outbox, self._reports, series_id)
        except Exception as exc:  # noqa: BLE001 - one series' problem is that series' failure
            frames = traceback.extract_tb(exc.__traceback__)
            where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
            with self._lock:
                self._failed += 1
            self._error(f"no series results made: {type(exc).__name__}{where}", series_id)
            return
        for result in results:
            try:
                write_atomic(self.outbox / result.name, result.data)
            except OSError as exc:
                self._error(f"cannot write a series result: {exc.strerror or exc}", series_id)
                return
            with self._lock:
                self._written += 1
            log.info("outbox_written", series=series_id, kind=result.kind, bytes=len(result.data))
        if results:
            self._on_written()

    def _yield_to_scans(self) -> None:
        """Wait while scans are pending (``busy``), at most `MAX_DEFER_S`; not once stopping.

        A capture costs more CPU than a scan: made during a burst, it would slow the reports.
        """
        deadline = time.monotonic() + MAX_DEFER_S
        while self._busy() and not self.stopping and time.monotonic() < deadline:
            self._stop.wait(0.05)

    def _sweep(self) -> None:
        self._sweep_staging()
        prune_sources(self.outbox)

    def _sweep_staging(self) -> None:
        try:
            self.staging.mkdir(parents=True, exist_ok=True)  # deleted meanwhile: made again
            names = sorted(p.name for p in self.staging.iterdir())
        except OSError as exc:
            self._error(f"cannot list {self.staging}: {exc.strerror or exc}")
            return
        for name in names:
            if name.endswith(".dcm") and not name.startswith("."):
                self._yield_to_scans()
                self._make_safely(name.removesuffix(".dcm"))

    def _make_safely(self, scan_id: str) -> None:
        """`make`; a bug drops that one staged file (counted), never the thread.

        Only the exception's type and where it was raised are logged: a message from pydicom or
        highdicom can quote a patient attribute.
        """
        try:
            self.make(scan_id)
        except Exception as exc:  # noqa: BLE001 - one file's bug must not end the writer
            frames = traceback.extract_tb(exc.__traceback__)
            where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
            self._fail(
                scan_id,
                self.staging / f"{scan_id}.dcm",
                f"unexpected {type(exc).__name__}{where}",
            )

    def make(self, scan_id: str) -> bool:
        """Write the capture of the staged ``scan_id``; True when one was written."""
        staged = self.staging / f"{scan_id}.dcm"
        loaded = self._load(scan_id, staged)
        if loaded is None:
            return False
        data, report = loaded
        try:
            capture = secondary_capture(data, report, scan_id)
        except Exception as exc:  # noqa: BLE001 - one file's problem is that file's failure
            message = str(exc) if isinstance(exc, CaptureError) else type(exc).__name__
            self._fail(scan_id, staged, f"no capture made: {message}")
            return False
        target = self.outbox / f"{scan_id}.dcm"
        try:
            write_atomic(target, capture.data)
        except OSError as exc:  # kept staged: written at the next sweep
            self._error(f"cannot write a capture: {exc.strerror or exc}", scan_id)
            return False
        try:
            keep_source(self.outbox, report, data)
        except Exception as exc:  # noqa: BLE001 - the capture stands; the series results lack it
            self._error(f"cannot keep the slice's header: {type(exc).__name__}", scan_id)
        staged.unlink(missing_ok=True)
        with self._lock:
            self._written += 1
        log.info("outbox_written", scan=scan_id, kind="secondary_capture", bytes=len(capture.data))
        self._on_written()
        return True

    def _load(self, scan_id: str, staged: Path) -> tuple[bytes, dict[str, Any]] | None:
        """The staged file and its report; None when there is nothing (more) to do for now."""
        try:
            data = staged.read_bytes()
        except FileNotFoundError:
            return None  # not a DICOM scan, or done already
        except OSError as exc:
            self._error(f"cannot read a staged file: {exc.strerror or exc}", scan_id)
            return None
        report = self._report(scan_id, staged)
        if report is None:
            return None
        if report.get("status") != "ok" or report.get("prediction") is None:
            staged.unlink(missing_ok=True)  # not analysed after all: no capture
            return None
        return data, report

    def _report(self, scan_id: str, staged: Path) -> dict[str, Any] | None:
        """The scan's report, or None (not written yet; an orphan past `ORPHAN_S` is dropped)."""
        try:
            report = json.loads((self._reports / f"{scan_id}.json").read_bytes())
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - staged.stat().st_ctime > ORPHAN_S:  # ctime: the link made it
                    staged.unlink(missing_ok=True)
                    log.warning("outbox_orphan_dropped", scan=scan_id, note="no report")
            return None
        except (OSError, ValueError) as exc:
            self._error(f"cannot read the report: {exc}", scan_id)
            return None
        return report if isinstance(report, dict) else None

    def _fail(self, scan_id: str, staged: Path, message: str) -> None:
        staged.unlink(missing_ok=True)
        with self._lock:
            self._failed += 1
        self._error(message, scan_id)

    def _error(self, message: str, scan_id: str | None = None) -> None:
        with self._lock:
            self._last_error = {"at": iso(utc_now()), "message": message}
        log.error("outbox_failed", scan=scan_id, error=message)
