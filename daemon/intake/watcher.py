"""Noticing complete files in the incoming folder, and handing them to the pipeline.

Three sources feed `Watcher`'s ``offer`` callable, so that nothing is missed:

* **inotify** (``watch.mode: inotify``): watchdog's ``InotifyObserver`` with full move events.
  A file counts as complete when its writer closes it (``FileClosedEvent``) or when it is renamed
  or moved into the folder (``FileMovedEvent`` with a destination inside). *Created* events are
  never acted on: a created file is still being written.
* **scans**: at start (what arrived while the service was down), every
  ``watch.reconcile_interval_s`` (the safety net for events inotify never delivered), at once
  after an inotify queue overflow (watchdog's ``EventsLostEvent``, logged once as
  ``inotify_overflow``), after the watch was re-established (`Watcher.rewatch`: the folder was
  replaced), and once the files waiting have been taken after some were left out (`MAX_TRACKED`).
* **polling** (``watch.mode: polling``, for NFS/CIFS shares where inotify sees nothing): a scan
  every ``watch.poll_interval_s``.

A file found by a scan *settles* first: it counts as complete once its size and mtime, looked at
again every ``min(watch.poll_interval_s, watch.stable_s)``, have stayed the same across at least
two looks and for ``watch.stable_s``, measured on this machine's clock (never by comparing a
share's mtimes with it), and no process holds it open for writing (`daemon.intake.writers`: one
pass over ``/proc`` per round for the files that settled in it; where other users' processes
cannot be read, the size and mtime rule alone decides for them). A 0-byte file, even one that
came with a close event, must stay 0 bytes for ``max(watch.stable_s, watch.grace_s)``: a
placeholder that its writer fills in place later is taken once, complete. A file the pipeline
puts back (`Watcher.returned`: found truncated or empty, and changed since) settles again.

Names the intake ignores (dotfiles, ignored suffixes, folders when not recursive) that a scan
finds are counted and logged once each without their name (`daemon.intake.ignored`): a scan, not an
event, so that the dotfile a careful sender renames into place a moment later is not counted.

Complete files wait in one queue, oldest first (events in arrival order, scanned files by mtime),
and are offered from its front until the pipeline answers `Offer.BUSY` (``pipeline.max_pending``
claims); `Watcher.room`, called by the pipeline once per freed slot, wakes the scanner to go on.
So the work per file does not depend on how many wait: a freed slot costs an ``lstat`` and an
offer or two, and files still settling are looked at on their own clock, never per freed slot.
Once the pipeline has said BUSY and freed no slot since, an event only queues its file (no offer).
A file written to again while waiting goes back to settling. Back-pressure never drops a file:
beyond `MAX_TRACKED` files remembered, the rest stay in the folder for a later scan.

One scanner thread does all the scanning and offers the queue; with ``once`` it takes what the
first scan found, waits until each is complete and taken, sets `Watcher.finished` and ends
(``infarctwatch run --once``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    EventsLostEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from daemon.intake.ignored import IgnoredNames
from daemon.intake.rules import IntakeRules, Offer
from daemon.intake.writers import held_for_writing, resolved_folder
from daemon.threads import StageThread

if TYPE_CHECKING:
    import os
    from collections.abc import Callable

    from watchdog.observers.api import BaseObserver

    from daemon.config import WatchConfig

log = structlog.get_logger("infarctwatch.watch")

MAX_TRACKED = 100_000
"""Files remembered while settling or waiting for a slot; beyond, a later scan finds them."""

_MIN_CHECK_S = 0.05
"""Settling files are looked at no more often than this, whatever ``stable_s``."""


@dataclass(frozen=True, slots=True)
class _Seen:
    """What the watcher knows of one file it remembers."""

    signature: tuple[int, int] | None
    """``(size, mtime_ns)`` when last looked at; None for a file queued by its event unlooked."""
    since: float
    """Monotonic time: settling, since when the signature has not changed; queued, when last
    found complete."""


_GONE = _Seen(None, 0.0)


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

    def on_events_lost(self, event: EventsLostEvent) -> None:  # noqa: ARG002 - one watch only
        self._watcher.events_lost()


def stop_observer(observer: BaseObserver, bridge: WatchdogLogBridge) -> None:
    """Stop and join a watchdog observer, then detach its log bridge (kept until the join)."""
    observer.stop()
    observer.join()
    logging.getLogger("watchdog").removeHandler(bridge)


class WatchdogLogBridge(logging.Handler):
    """Forwards watchdog's own warnings to structlog while an observer runs; silent once it stops.

    Attach it to the ``watchdog`` logger before starting an observer and remove it after joining
    it: watchdog may log a harmless error while winding down, which would otherwise reach stderr
    through logging's last-resort handler. watchdog's own overflow warnings are dropped: every
    bridge attached would repeat them, and each handler learns of an overflow through
    ``on_events_lost`` instead (the incoming folder's logs it once, ``inotify_overflow``).
    """

    def __init__(self, folder: str, stopping: Callable[[], bool]) -> None:
        super().__init__(logging.WARNING)
        self._folder = folder
        self._stopping = stopping

    def emit(self, record: logging.LogRecord) -> None:
        """Log one watchdog record through structlog (nothing while stopping)."""
        if self._stopping():
            return
        message = record.getMessage()
        if "overflow" in message.lower():
            return
        log.warning("watchdog_warning", folder=self._folder, message=message, logger=record.name)


class Watcher(StageThread):
    """The observer and the scanner thread; a context manager that stops and joins both.

    Files it remembers are either *settling* (found by a scan, size and mtime not yet stable for
    ``stable_s``) or *queued* (complete, waiting for a pipeline slot, oldest first). Both sets
    together hold at most `MAX_TRACKED` files.
    """

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
        super().__init__(f"infarctwatch-scan-{name}")
        self._config = config
        self._name = name
        self._rules = rules
        self._offer = offer
        self._once = once
        self._before_first_scan = before_first_scan
        self._polling = config.mode == "polling"
        self.root = rules.root
        self.name = name
        self._real_root = resolved_folder(rules.root)
        self.ignored = IgnoredNames(name)
        """Names seen in the folder and never taken (`daemon.intake.ignored`)."""
        self._returned: set[Path] = set()
        """Files put back by the pipeline: their move event settles them instead of taking them."""
        self._writers_partial_logged = False
        self._observer_lock = threading.Lock()
        self._handler = _Handler(self)
        self._rewatch = threading.Event()
        self._settling: dict[Path, _Seen] = {}
        self._queued: OrderedDict[Path, _Seen] = OrderedDict()
        """Complete files waiting for a slot, oldest first (O(1) at both ends, unlike a dict)."""
        self._lock = threading.Lock()
        """Guards both sets; held only for dict operations, never across an offer or a stat."""
        self._left_out = False
        """Files were not remembered (`MAX_TRACKED`): scan again once the queue is empty."""
        self._room_tickets = itertools.count(1)
        self._rooms = 0
        """Changes at each `room` call (a ticket from an atomic counter, so never reused)."""
        self._full_at = -1
        """The value of ``_rooms`` read before an offer answered BUSY: while ``_rooms`` still
        holds it, no slot has freed since and the pipeline is known to be full."""
        self._scan_requested = threading.Event()
        self.finished = threading.Event()
        """Set in ``once`` mode when everything found by the first scan has been taken."""
        self._observer: BaseObserver | None = None
        self._log_bridge = WatchdogLogBridge(name, lambda: self.stopping)

    # -- lifecycle ---------------------------------------------------------------------------------

    def _starting(self) -> None:
        if not self._polling and not self._once:
            try:
                self._observer = self._start_observer()  # watch first, then scan
            except OSError as exc:  # the folder vanished meanwhile: the scanner tries again
                log.error("watch_failed", folder=self.name, error=exc.strerror or str(exc))  # noqa: TRY400 - no traceback needed
                self._rewatch.set()

    def _stopping(self) -> None:
        """Stop watching (the observer); `close` then joins the scanner thread."""
        with self._observer_lock:
            if self._observer is not None:
                stop_observer(self._observer, self._log_bridge)
                self._observer = None

    def rewatch(self) -> None:
        """The folder was replaced (`intake.folders`): watch the new one, then scan it (soon).

        watchdog's own signal cannot be relied on: when the folder is deleted with the claim
        area inside it, watchdog 7.1.1 reports the sub-folder's deletion but not the watched
        folder's, and its emitter lives on, watching nothing. The identity check notices.
        """
        self._rewatch.set()
        self.request_scan()

    def _restart_observer(self) -> None:
        """Replace the observer by one watching the folder now at ``root`` (scanner thread)."""
        self._real_root = resolved_folder(self.root)
        if self._polling or self._once:
            return
        with self._observer_lock:
            if self._stop.is_set():
                return
            if self._observer is not None:
                stop_observer(self._observer, self._log_bridge)
                self._observer = None
            self._observer = self._start_observer()
        log.info("watch_restored", folder=self.name)

    def _start_observer(self) -> BaseObserver:
        """A started observer of ``root``.

        Raises:
            OSError: the folder cannot be watched (gone); nothing is left running.
        """
        observer = self._make_observer()
        logging.getLogger("watchdog").addHandler(self._log_bridge)
        try:
            observer.start()
        except OSError:
            logging.getLogger("watchdog").removeHandler(self._log_bridge)
            with contextlib.suppress(Exception):
                observer.stop()  # never started: nothing to join
            raise
        return observer

    def _make_observer(self) -> BaseObserver:
        from watchdog.observers.inotify import InotifyObserver  # noqa: PLC0415 - Linux only
        from watchdog.observers.inotify_move_event_grouper import (  # noqa: PLC0415
            InotifyMoveEventGrouper,
        )

        # watchdog holds every IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO, in a FIFO:
        # each claim (a rename out of incoming/) delayed the next file's event by half a second.
        # Unpaired, a rename inside the folder arrives as a move with only a destination, which
        # `_Handler.on_moved` takes as "moved in", and a move out has only a source: ignored.
        # watchdog 7.1.1 has no parameter for it (each watch builds its grouper from this class
        # attribute), so it is set for the process: the daemon's other observer (the models
        # folder, `daemon.model.reload`) acts on any event alike and needs no pairing either.
        InotifyMoveEventGrouper.delay = 0.0
        filters: list[type[FileSystemEvent]] = [
            FileClosedEvent,
            FileMovedEvent,
            DirMovedEvent,
            EventsLostEvent,
        ]
        if self._config.recursive:
            filters.append(DirCreatedEvent)
        observer = InotifyObserver(generate_full_events=True)
        observer.schedule(
            self._handler,
            str(self._rules.root),
            recursive=self._config.recursive,
            event_filter=filters,
        )
        return observer

    # -- inputs ------------------------------------------------------------------------------------

    def _ended_normally(self) -> bool:
        return self.finished.is_set()  # the scanner ends by itself only in ``once`` mode

    @property
    def waiting(self) -> int:
        """Files seen in the incoming folder and not yet taken (settling, or no room yet)."""
        return len(self._settling) + len(self._queued)

    def arrived(self, path: Path) -> None:
        """A file was closed or moved in (observer thread): offer it now, or queue it.

        It is queued without an offer behind files already queued (arrival order), and when the
        pipeline answered BUSY and has freed no slot since (no BUSY round trip per event).
        """
        if self._stop.is_set() or not self._wanted(path):
            return
        rooms = self._rooms
        with self._lock:
            self._settling.pop(path, None)  # complete: no need to wait for it to settle
            first = not self._queued
            queue_it = not first or rooms == self._full_at
            if queue_it:
                self._queue(path, None, time.monotonic())
        if queue_it:
            # Files queued before this one are the scanner's already (`room` wakes it while any
            # wait). The first one is too, unless a `room` call came after the read above: it
            # may have seen the queue still empty. So read again, after queueing.
            if first and self._rooms != rooms:
                self._wakeup.set()
            return
        try:
            info = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode) or self._placeholder(path, info):
            return
        if self._offer(path) is Offer.BUSY:
            with self._lock:
                self._queue(path, (info.st_size, info.st_mtime_ns), time.monotonic())
            self._full_at = rooms
            if self._rooms != rooms:  # a slot freed while offering: the scanner takes it
                self._wakeup.set()

    def _wanted(self, path: Path) -> bool:
        """False for a name the intake ignores, and for a file put back (it settles again)."""
        if not self._rules.admits(path):
            return False
        if path in self._returned:
            self._returned.discard(path)
            self._settle_again(path)
            return False
        return True

    def _placeholder(self, path: Path, info: os.stat_result) -> bool:
        """True for a 0-byte file, which settles (for ``grace_s``) instead of being taken now."""
        if info.st_size == 0 and stat.S_ISREG(info.st_mode):
            self._settle_again(path)
            return True
        return False

    def folder_arrived(self, path: Path) -> None:
        """A folder appeared (recursive mode): scan, unless it is hidden (our claim area)."""
        if self._rules.admits(path):
            self.request_scan()

    def events_lost(self) -> None:
        """Inotify dropped events (observer thread): say so once, and scan at once."""
        if not self._stop.is_set():
            log.warning("inotify_overflow", folder=self.name, note="events lost; scanning")
            self.request_scan()

    def returned(self, path: Path) -> None:
        """The pipeline put ``path`` back (any thread): it settles again, whatever event follows.

        A hard link (how it is put back) gives no close or move event, so it settles from here;
        a move event for it (a rename where links are not supported) is not taken as complete.
        """
        self._returned.add(path)
        self._settle_again(path)

    def _settle_again(self, path: Path) -> None:
        """Make ``path`` settle (again) from now, as a file found by a scan."""
        try:
            info = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return
        with self._lock:
            self._queued.pop(path, None)
            if len(self._settling) + len(self._queued) < MAX_TRACKED:
                self._settling[path] = _Seen((info.st_size, info.st_mtime_ns), time.monotonic())
            else:
                self._left_out = True
        self._wakeup.set()

    def request_scan(self) -> None:
        """Scan the whole folder soon (folder moved in, inotify overflow)."""
        self._scan_requested.set()
        self._wakeup.set()

    def room(self) -> None:
        """A pipeline slot freed (its report writer, once per slot): wake the scanner if needed.

        Constant time: a ticket and, when files are queued, setting an event.
        """
        self._rooms = next(self._room_tickets)
        if self._queued:
            self._wakeup.set()

    # -- the scanner thread ------------------------------------------------------------------------

    def _run(self) -> None:
        if self._before_first_scan is not None:
            try:
                self._before_first_scan(self._stop)
            except OSError:
                log.exception("resume_failed", folder=self._name)
        config = self._config
        scan_every = config.poll_interval_s if self._polling else config.reconcile_interval_s
        check_every = min(config.poll_interval_s, max(config.stable_s, _MIN_CHECK_S))
        next_scan, next_check = time.monotonic(), 0.0
        followup: float | None = None
        first = True
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if self._rewatch.is_set():
                    self._restart_observer()
                    self._rewatch.clear()
                    # Scan now, with the new watch up, and once more a second later: a file that
                    # landed while the folder was being made again is never left to the
                    # reconciliation scan.
                    self._scan_requested.set()
                    followup = now + 1.0
                if (
                    now >= next_scan
                    or self._scan_requested.is_set()
                    or (self._left_out and not self.waiting)
                ):
                    self._scan_requested.clear()
                    self._scan(now, first=first)
                    first = False
                    next_scan = math.inf if self._once else now + scan_every
                    if followup is not None and followup > now:
                        next_scan = min(next_scan, followup)
                    else:
                        followup = None
                    next_check = now + check_every
                elif self._settling and now >= next_check:
                    self._refresh(now)
                    next_check = now + check_every
                self._offer_queued()
            except OSError:  # e.g. the share went away: log, and try again at the next turn
                log.exception("scan_failed", folder=self._name)
                next_scan = now + (1.0 if self._rewatch.is_set() else scan_every)
            if self._once and not first and not self.waiting and not self._left_out:
                self.finished.set()
                return
            self._wakeup.wait(self._sleep(next_scan, next_check))
            self._wakeup.clear()

    def _sleep(self, next_scan: float, next_check: float) -> float:
        now = time.monotonic()
        deadline = next_scan
        if self._left_out and not self.waiting:
            deadline = now  # take the files left out now
        if self._settling:
            deadline = min(deadline, next_check)
        if self._queued:  # retry now and then, should a slot ever free without `room`
            deadline = min(deadline, now + self._config.poll_interval_s)
        return max(0.01, min(deadline - now, 3600.0))

    def _scan(self, now: float, *, first: bool) -> None:
        """List the folder: forget what left, note what is new or changed, queue what settled."""
        left_out_before, self._left_out = self._left_out, False  # reset before listing
        found = {
            path: (info.st_size, info.st_mtime_ns)
            for path, info in self._rules.scan(self.ignored.tell)
        }
        settled: list[tuple[int, Path, tuple[int, int]]] = []
        with self._lock:
            for path in [p for p in self._settling if p not in found]:
                del self._settling[path]
            # An event may have queued a file after the listing began: keep those.
            gone = [p for p, seen in self._queued.items() if seen.since < now and p not in found]
            for path in gone:
                del self._queued[path]
            for path, signature in found.items():
                self._found(path, signature, now, settled)
        self._settle(self._not_held(settled), now)
        if first:
            log.info("startup_scan", folder=self._name, found=len(found))
        if self._left_out and not left_out_before:
            log.info("scan_left_out", folder=self._name, found=len(found), tracked=self.waiting)

    def _found(
        self,
        path: Path,
        signature: tuple[int, int],
        now: float,
        settled: list[tuple[int, Path, tuple[int, int]]],
    ) -> None:
        """Note a file the listing found (lock held)."""
        queued = self._queued.get(path)
        if queued is None:
            self._observe(path, signature, now, settled, add=True)
        elif queued.since >= now:
            pass  # queued by an event during the listing, which may predate its close
        elif queued.signature is None and signature[0] == 0:  # maybe a placeholder
            del self._queued[path]
            self._settling[path] = _Seen(signature, now)
        elif queued.signature is None:  # queued by its event: remember what it looks like
            self._queued[path] = _Seen(signature, queued.since)
        elif queued.signature != signature:  # written to again: settle again
            del self._queued[path]
            self._settling[path] = _Seen(signature, now)

    def _refresh(self, now: float) -> None:
        """Look again at the files still settling; queue those that stayed the same long enough."""
        with self._lock:
            paths = list(self._settling)
        settled: list[tuple[int, Path, tuple[int, int]]] = []
        for path in paths:
            try:
                info = path.lstat()
            except (FileNotFoundError, NotADirectoryError):
                info = None
            with self._lock:
                if info is None or stat.S_ISDIR(info.st_mode):
                    self._settling.pop(path, None)
                else:
                    signature = (info.st_size, info.st_mtime_ns)
                    self._observe(path, signature, now, settled, add=False)
        self._settle(self._not_held(settled), now)

    def _observe(
        self,
        path: Path,
        signature: tuple[int, int],
        now: float,
        settled: list[tuple[int, Path, tuple[int, int]]],
        *,
        add: bool,
    ) -> None:
        """Note a settling file's signature (lock held); a change restarts its stability clock.

        A file whose signature was the same at an earlier look and has not changed for
        ``stable_s`` (0 bytes: ``max(stable_s, grace_s)``) goes into ``settled``. With ``add``, a
        file not remembered yet starts settling (if there is room in memory).
        """
        seen = self._settling.get(path)
        if seen is None:
            if not add:
                return  # taken through an event meanwhile
            if len(self._settling) + len(self._queued) >= MAX_TRACKED:
                self._left_out = True
                return
        if seen is None or seen.signature != signature:
            self._settling[path] = _Seen(signature, now)
            return  # a first look at this signature: never enough
        config = self._config
        needed = config.stable_s if signature[0] else max(config.stable_s, config.grace_s)
        if now - seen.since >= needed:
            settled.append((signature[1], path, signature))

    def _not_held(
        self, settled: list[tuple[int, Path, tuple[int, int]]]
    ) -> list[tuple[int, Path, tuple[int, int]]]:
        """The settled files no process holds open for writing (one ``/proc`` pass for all).

        Those held stay settling and are looked at again in a later round.
        """
        if not settled:
            return settled
        real = {
            self._real_root / path.relative_to(self.root): path
            for _, path, _ in settled
            if path.is_relative_to(self.root)
        }
        check = held_for_writing(real)
        if not check.complete and not self._writers_partial_logged:
            self._writers_partial_logged = True
            log.info(
                "writer_check_partial",
                folder=self.name,
                note="some processes' open files cannot be read: size and mtime alone decide",
            )
        if not check.held:
            return settled
        held = {real[path] for path in check.held}
        log.debug("held_for_writing", folder=self.name, files=len(held))
        return [item for item in settled if item[1] not in held]

    def _settle(self, settled: list[tuple[int, Path, tuple[int, int]]], now: float) -> None:
        """Move settled files to the back of the queue, oldest mtime first."""
        with self._lock:
            for _, path, signature in sorted(settled):
                if self._settling.get(path, _GONE).signature != signature:
                    continue  # changed or taken while its writers were looked for
                del self._settling[path]
                self._returned.discard(path)
                if path not in self._queued:
                    self._queued[path] = _Seen(signature, now)

    def _queue(self, path: Path, signature: tuple[int, int] | None, now: float) -> None:
        """Queue a complete file (lock held); one already queued keeps its place."""
        if path in self._queued or len(self._settling) + len(self._queued) < MAX_TRACKED:
            self._queued[path] = _Seen(signature, now)  # complete (again): as it is now
        else:
            self._left_out = True

    def _offer_queued(self) -> None:
        """Offer queued files from the front until the pipeline answers BUSY.

        Each is looked at first: gone or turned into a folder, it is forgotten; written to since
        it was found complete, it settles again.
        """
        while not self._stop.is_set():
            rooms = self._rooms
            with self._lock:
                if not self._queued:
                    return
                path, seen = next(iter(self._queued.items()))
            try:
                info = path.lstat()
            except (FileNotFoundError, NotADirectoryError):
                info = None
            if info is None or stat.S_ISDIR(info.st_mode):
                self._forget(path, seen)
                continue
            signature = (info.st_size, info.st_mtime_ns)
            if seen.signature is None and info.st_size == 0 and stat.S_ISREG(info.st_mode):
                with self._lock:  # queued by its close event: maybe a placeholder
                    if self._forget_locked(path, seen):
                        self._settling[path] = _Seen(signature, time.monotonic())
                continue
            if seen.signature is not None and seen.signature != signature:
                with self._lock:
                    if self._forget_locked(path, seen):
                        self._settling[path] = _Seen(signature, time.monotonic())
                continue
            if self._offer(path) is Offer.BUSY:
                self._full_at = rooms
                return
            self._forget(path, seen)  # claimed, gone, or failed (a later scan retries it)

    def _forget(self, path: Path, seen: _Seen) -> None:
        with self._lock:
            self._forget_locked(path, seen)

    def _forget_locked(self, path: Path, seen: _Seen) -> bool:
        """Unqueue ``path`` unless an event queued it again meanwhile (a new file of that name)."""
        if self._queued.get(path) is not seen:
            return False
        del self._queued[path]
        return True
