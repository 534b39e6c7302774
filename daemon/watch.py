"""Noticing complete files in the incoming folder, and handing them to the pipeline.

Three sources feed `Watcher`'s ``offer`` callable, so that nothing is missed:

* **inotify** (``watch.mode: inotify``): watchdog's ``InotifyObserver`` with full move events.
  A file counts as complete when its writer closes it (``FileClosedEvent``) or when it is renamed
  or moved into the folder (``FileMovedEvent`` with a destination inside). *Created* events are
  never acted on: a created file is still being written.
* **scans**: at start (what arrived while the service was down), every
  ``watch.reconcile_interval_s`` (the safety net: after an inotify queue overflow watchdog
  rebuilds its watches but tells the handler nothing; its log warning triggers an early scan
  here), and when the pipeline has room again after turning files away.
* **polling** (``watch.mode: polling``, for NFS/CIFS shares where inotify sees nothing): a scan
  every ``watch.poll_interval_s``.

A file found by a scan counts as complete once its size and mtime have stayed the same for
``watch.stable_s``, measured on this machine's clock (never by comparing a share's mtimes with
it). Files the pipeline cannot take yet (``pipeline.max_pending``) stay in the folder and in a
bounded tracker, and are offered again as soon as a slot frees: back-pressure never drops one.

One scanner thread does all the scanning; with ``once`` it takes what the first scan found, waits
until each is complete and taken, sets `Watcher.finished` and ends (``infarctwatch run --once``).
"""

from __future__ import annotations

import logging
import math
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from daemon.intake import IntakeRules, Offer

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from watchdog.observers.api import BaseObserver

    from daemon.config import WatchConfig

log = structlog.get_logger("infarctwatch.watch")

MAX_TRACKED = 100_000
"""Files remembered while waiting to be stable or for a slot; beyond, a later scan finds them."""


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float
    """Monotonic time since which size and mtime have not changed."""
    complete: bool = False
    """Known complete (closed or moved in) but turned away for lack of room."""


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def on_closed(self, event: FileClosedEvent) -> None:
        self._watcher.arrived(Path(str(event.src_path)))

    def on_moved(self, event: FileSystemEvent) -> None:
        if not event.dest_path:
            return  # moved out of the folder
        if event.is_directory:  # a folder moved in (recursive mode): scan its content
            self._watcher.folder_arrived(Path(str(event.dest_path)))
        else:
            self._watcher.arrived(Path(str(event.dest_path)))

    def on_created(self, event: FileSystemEvent) -> None:
        # Only folders are subscribed (recursive mode): files written into a new folder before
        # its watch existed get no close event, so scan it. A created *file* is never acted on.
        if event.is_directory:
            self._watcher.folder_arrived(Path(str(event.src_path)))


def stop_observer(observer: BaseObserver, bridge: WatchdogLogBridge) -> None:
    """Stop and join a watchdog observer, then detach its log bridge (kept until the join)."""
    observer.stop()
    observer.join()
    logging.getLogger("watchdog").removeHandler(bridge)


class WatchdogLogBridge(logging.Handler):
    """Forwards watchdog's own warnings to structlog while an observer runs; silent once it stops.

    Attach it to the ``watchdog`` logger before starting an observer and remove it after joining
    it: watchdog may log a harmless error while winding down, which would otherwise reach stderr
    through logging's last-resort handler. An inotify queue overflow calls ``on_overflow``.
    """

    def __init__(
        self,
        folder: str,
        stopping: Callable[[], bool],
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(logging.WARNING)
        self._folder = folder
        self._stopping = stopping
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        """Log one watchdog record through structlog (nothing while stopping)."""
        if self._stopping():
            return
        message = record.getMessage()
        log.warning("watchdog_warning", folder=self._folder, message=message, logger=record.name)
        if self._on_overflow is not None and "overflow" in message.lower():
            self._on_overflow()


class Watcher:
    """The observer and the scanner thread; a context manager that stops and joins both."""

    def __init__(
        self,
        config: WatchConfig,
        rules: IntakeRules,
        offer: Callable[[Path], Offer],
        *,
        once: bool = False,
        before_first_scan: Callable[[threading.Event], None] | None = None,
        name: str = "incoming",
    ) -> None:
        self._config = config
        self._name = name
        self._rules = rules
        self._offer = offer
        self._once = once
        self._before_first_scan = before_first_scan
        self._polling = config.mode == "polling"
        self._tracked: dict[Path, _Seen] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._scan_requested = threading.Event()
        self._turned_away = False
        self.finished = threading.Event()
        """Set in ``once`` mode when everything found by the first scan has been taken."""
        self._thread = threading.Thread(
            target=self._run, name=f"infarctwatch-scan-{name}", daemon=True
        )
        self._observer: BaseObserver | None = None
        self._log_bridge = WatchdogLogBridge(name, lambda: self.stopping, self.request_scan)

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if not self._polling and not self._once:
            self._observer = self._make_observer()
            logging.getLogger("watchdog").addHandler(self._log_bridge)
            self._observer.start()  # watch first, then scan: nothing falls in between
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching: the observer and the scanner thread are stopped and joined."""
        self._stop.set()
        self._wakeup.set()
        if self._observer is not None:
            stop_observer(self._observer, self._log_bridge)
            self._observer = None
        if self._thread.is_alive():
            self._thread.join()

    def _make_observer(self) -> BaseObserver:
        from watchdog.observers.inotify import InotifyObserver  # noqa: PLC0415 - Linux only
        from watchdog.observers.inotify_move_event_grouper import (  # noqa: PLC0415
            InotifyMoveEventGrouper,
        )

        # watchdog holds every IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO, in a FIFO:
        # each claim (a rename out of incoming/) delayed the next file's event by half a second.
        # Unpaired, a rename inside the folder arrives as a move with only a destination, which
        # `_Handler.on_moved` takes as "moved in", and a move out has only a source: ignored.
        InotifyMoveEventGrouper.delay = 0.0
        filters: list[type[FileSystemEvent]] = [FileClosedEvent, FileMovedEvent, DirMovedEvent]
        if self._config.recursive:
            filters.append(DirCreatedEvent)
        observer = InotifyObserver(generate_full_events=True)
        observer.schedule(
            _Handler(self),
            str(self._rules.root),
            recursive=self._config.recursive,
            event_filter=filters,
        )
        return observer

    # -- inputs ------------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once `close` has begun."""
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        """False when the scanner thread died (it only ends by itself in ``once`` mode)."""
        return self._thread.is_alive() or self.finished.is_set() or not self._thread.ident

    @property
    def waiting(self) -> int:
        """Files seen in the incoming folder and not yet taken (unstable, or no room yet)."""
        return len(self._tracked)

    def arrived(self, path: Path) -> None:
        """A file was closed or moved in (observer thread): offer it now."""
        if self._stop.is_set() or not self._rules.admits(path):
            return
        try:
            info = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            return
        if self._offer(path) is Offer.BUSY:
            with self._lock:
                if len(self._tracked) < MAX_TRACKED:
                    seen = _Seen(info.st_size, info.st_mtime_ns, time.monotonic(), complete=True)
                    self._tracked[path] = seen
                self._turned_away = True

    def folder_arrived(self, path: Path) -> None:
        """A folder appeared (recursive mode): scan, unless it is hidden (our claim area)."""
        if self._rules.admits(path):
            self.request_scan()

    def request_scan(self) -> None:
        """Scan the whole folder soon (folder moved in, inotify overflow)."""
        self._scan_requested.set()
        self._wakeup.set()

    def room(self) -> None:
        """The pipeline has a free slot again: retry the files turned away, if any."""
        if self._turned_away:
            self._wakeup.set()

    # -- the scanner thread ------------------------------------------------------------------------

    def _run(self) -> None:
        if self._before_first_scan is not None:
            try:
                self._before_first_scan(self._stop)
            except OSError:
                log.exception("resume_failed", folder=self._name)
        interval = (
            self._config.poll_interval_s if self._polling else self._config.reconcile_interval_s
        )
        next_scan = time.monotonic()
        first, overflowed = True, False
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_scan or self._scan_requested.is_set():
                    self._scan_requested.clear()
                    overflowed = self._scan(now, first=first)
                    first = False
                    next_scan = math.inf if self._once else now + interval
                else:
                    self._refresh(now)
                self._offer_ready(time.monotonic())
            except OSError:  # e.g. the share went away: log, and try again at the next turn
                log.exception("scan_failed", folder=self._name)
                next_scan = now + interval
            if self._once and not first and not self._tracked:
                if not overflowed:
                    self.finished.set()
                    return
                next_scan = time.monotonic()  # more files than MAX_TRACKED: take the rest
            self._wakeup.wait(self._sleep(next_scan))
            self._wakeup.clear()

    def _sleep(self, next_scan: float) -> float:
        now = time.monotonic()
        timeout = next_scan - now
        if self._tracked:  # look again at waiting files at least every poll interval
            timeout = min(timeout, self._config.poll_interval_s, self._config.stable_s or 0.05)
        return max(0.01, min(timeout, 3600.0))

    def _scan(self, now: float, *, first: bool) -> bool:
        """Scan the folder into the tracker; True when it held more than `MAX_TRACKED` files."""
        found = dict(self._rules.scan())
        with self._lock:
            for path in [p for p in self._tracked if p not in found]:
                del self._tracked[path]
            for path, info in found.items():
                self._note(path, info.st_size, info.st_mtime_ns, now)
        if first:
            log.info("startup_scan", folder=self._name, found=len(found))
        return len(found) > MAX_TRACKED

    def _refresh(self, now: float) -> None:
        """Look again at files still settling; complete ones only wait for a slot."""
        stable_s = self._config.stable_s
        with self._lock:
            paths = [
                path
                for path, seen in self._tracked.items()
                if not seen.complete and now - seen.since < stable_s
            ]
        for path in paths:
            try:
                info = path.lstat()
            except FileNotFoundError:
                with self._lock:
                    self._tracked.pop(path, None)
                continue
            with self._lock:
                self._note(path, info.st_size, info.st_mtime_ns, now)

    def _note(self, path: Path, size: int, mtime_ns: int, now: float) -> None:
        """Track ``path`` (lock held); a change of size or mtime restarts its stability clock."""
        seen = self._tracked.get(path)
        if seen is not None and (seen.size, seen.mtime_ns) == (size, mtime_ns):
            return
        if seen is not None or len(self._tracked) < MAX_TRACKED:
            self._tracked[path] = _Seen(size, mtime_ns, now)

    def _offer_ready(self, now: float) -> None:
        with self._lock:
            ready = [
                path
                for path, seen in self._tracked.items()
                if seen.complete or now - seen.since >= self._config.stable_s
            ]
        for path in ready:
            if self._stop.is_set():
                return
            result = self._offer(path)
            if result is Offer.BUSY:
                self._turned_away = True
                return
            with self._lock:
                self._tracked.pop(path, None)
        self._turned_away = False
