"""The watcher's own CPU per file for a burst far larger than the pipeline's room.

``.venv/bin/python bench/watcher.py [--files 5000] [--slots 64] [--service-ms 1]
[--mode inotify|polling] [--rounds 3] [--only-new]``

A burst of ``--files`` files is renamed at once into a real folder watched by
`daemon.watch.Watcher`, whose ``offer`` is a fake pipeline holding at most ``--slots`` claims: a
claim renames the file out of the folder, and a finisher thread ends one claim every
``--service-ms`` (sleeping, not spinning), calling `Watcher.room` for each freed slot as the report
writer does. So most of the burst waits in the watcher while slots free one by one.

Measured per file, in CPU time (``/proc/self/task/<tid>/schedstat`` before and after the burst,
``time.thread_time_ns`` inside calls):

* **scanner**: the scanner thread, less the claims it made (the renames are the pipeline's work);
* **handler**: ``Watcher.arrived`` on watchdog's dispatcher thread, less the claims it made;
* **own** = scanner + handler: the cost of the watcher's code;
* **watchdog**: watchdog's threads outside ``arrived`` (reading inotify, building and queueing
  events; one move in and one move out per file), **claims**: the renames, **offers**: calls of
  ``offer`` per file (one claim, the rest answered BUSY).

The same burst runs through the watcher as it was before its work per file was made constant
(`OldWatcher`, a copy kept here only for this comparison) and through the current one, in
interleaved rounds; the round with the least CPU in the watcher's code is kept for each.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from daemon import watch
from daemon.config import WatchConfig
from daemon.intake import IntakeRules, Offer
from daemon.watch import Watcher

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from watchdog.observers.api import BaseObserver

SCANNER = "infarctwatch-scan-bench"


def thread_cpu_ns() -> dict[int, tuple[str, int]]:
    """CPU time so far of every thread of this process: ``{native id: (name, ns)}``."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    times: dict[int, tuple[str, int]] = {}
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        try:
            ns = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        times[tid] = (names.get(tid, "?"), ns)
    return times


class FakePipeline:
    """At most ``slots`` claims; `finish` ends them one by one and calls ``room`` per slot."""

    def __init__(self, claimed_dir: Path, slots: int) -> None:
        self._claimed_dir = claimed_dir
        self._free = slots
        self._lock = threading.Lock()
        self.claims = 0
        self.offers = 0
        self.claim_ns: dict[str, int] = {}
        """CPU spent on claims (the renames) by thread name: the pipeline's work, not the
        watcher's (a BUSY answer is counted as the watcher's: it could have been avoided)."""
        self.room: Callable[[], None] = lambda: None

    def offer(self, path: Path) -> Offer:
        started = time.thread_time_ns()
        with self._lock:
            self.offers += 1
            if self._free == 0:
                return Offer.BUSY
            self._free -= 1
        try:
            path.rename(self._claimed_dir / path.name)
            result = Offer.CLAIMED
        except FileNotFoundError:
            result = Offer.GONE
        with self._lock:
            if result is Offer.CLAIMED:
                self.claims += 1
            else:
                self._free += 1
            name = threading.current_thread().name
            self.claim_ns[name] = self.claim_ns.get(name, 0) + time.thread_time_ns() - started
        return result

    def finish(self, total: int, service_s: float, stop: threading.Event) -> None:
        """End ``total`` claims, one per ``service_s`` at most, freeing a slot each."""
        started = time.monotonic()
        finished = 0
        while finished < total and not stop.is_set():
            due = int((time.monotonic() - started) / service_s) if service_s > 0 else total
            with self._lock:
                ready = max(min(due, self.claims) - finished, 0)
                self._free += ready
            for _ in range(ready):  # the report writer calls `room` once per freed slot
                self.room()
            finished += ready
            if not ready:
                stop.wait(0.001)


@dataclass(frozen=True)
class Burst:
    """What one burst cost, in CPU nanoseconds per file."""

    wall_s: float
    scanner: float
    """The scanner thread, less the claims it made."""
    handler: float
    """``arrived`` on watchdog's dispatcher thread, less the claims it made."""
    watchdog: float
    """watchdog's own threads, less ``arrived``: reading inotify, making and queueing events."""
    claims: float
    offers: float
    """`offer` calls per file (one is the claim; the rest were answered BUSY)."""

    @property
    def own(self) -> float:
        """What the watcher's code costs: scanner and handler."""
        return self.scanner + self.handler


HEADER = (
    f"{'':<4} {'scanner':>8} {'handler':>8} {'own':>8} {'watchdog':>9} {'claims':>7}"
    f" {'offers':>7} {'wall':>7}"
)


def row(label: str, burst: Burst) -> str:
    return (
        f"{label:<4} {burst.scanner / 1000:8.1f} {burst.handler / 1000:8.1f}"
        f" {burst.own / 1000:8.1f} {burst.watchdog / 1000:9.1f} {burst.claims / 1000:7.1f}"
        f" {burst.offers:7.2f} {burst.wall_s:6.2f}s"
    )


def run_burst(
    factory: Callable[..., Watcher | OldWatcher],
    files: int,
    slots: int,
    service_s: float,
    mode: str,
) -> Burst:
    """Rename ``files`` files at once into a watched folder with ``slots`` slots; measure."""
    with tempfile.TemporaryDirectory(prefix="iw-bench-watcher-") as tmp:
        root = Path(tmp)
        folder, staging, claimed = root / "in", root / "staging", root / "claimed"
        for sub in (folder, staging, claimed):
            sub.mkdir()
        names = [f"scan{i:06d}.dcm" for i in range(files)]
        for name in names:
            (staging / name).write_bytes(b"x" * 64)
        pipeline = FakePipeline(claimed, slots)
        config = WatchConfig(
            mode="polling" if mode == "polling" else "inotify",
            poll_interval_s=0.1 if mode == "polling" else 1.0,
            stable_s=0.2,
            reconcile_interval_s=3600.0,
        )
        rules = IntakeRules(folder, recursive=False, ignore_suffixes=())
        watcher = factory(config, rules, pipeline.offer, name="bench")
        pipeline.room = watcher.room
        handler_ns = [0]
        arrived = watcher.arrived

        def timed_arrived(path: Path) -> None:
            started = time.thread_time_ns()
            try:
                arrived(path)
            finally:
                handler_ns[0] += time.thread_time_ns() - started

        watcher.arrived = timed_arrived  # type: ignore[method-assign]
        stop = threading.Event()
        finisher = threading.Thread(
            target=pipeline.finish, args=(files, service_s, stop), name="bench-finisher"
        )
        with watcher:
            time.sleep(0.3)  # the start-up scan (of an empty folder) is over
            before = thread_cpu_ns()
            finisher.start()
            started = time.perf_counter()
            for name in names:
                (staging / name).rename(folder / name)
            finisher.join(timeout=600)
            wall = time.perf_counter() - started
            after = thread_cpu_ns()
            stop.set()
            if finisher.is_alive():
                finisher.join()
                raise RuntimeError("the burst was not taken within 10 minutes")
        if any(folder.iterdir()):
            raise RuntimeError("files were left behind")
    scanner = others = 0
    for tid, (name, ns) in after.items():
        spent = ns - before.get(tid, (name, 0))[1]
        if name == SCANNER:
            scanner += spent
        elif name not in {"bench-finisher", "MainThread"}:
            others += spent
    scanner_claims = pipeline.claim_ns.get(SCANNER, 0)
    handler_claims = sum(ns for name, ns in pipeline.claim_ns.items() if name != SCANNER)
    return Burst(
        wall_s=wall,
        scanner=(scanner - scanner_claims) / files,
        handler=(handler_ns[0] - handler_claims) / files,
        watchdog=(others - handler_ns[0]) / files,
        claims=sum(pipeline.claim_ns.values()) / files,
        offers=pipeline.offers / files,
    )


def best(bursts: list[Burst]) -> Burst:
    """The round least disturbed by other jobs (least CPU in the watcher's own code)."""
    return min(bursts, key=lambda b: b.own)


# -- the watcher as it was (daemon/watch.py before the per-file work was made constant) ----------


@dataclass(frozen=True)
class _OldSeen:
    size: int
    mtime_ns: int
    since: float
    complete: bool = False


class OldWatcher:
    """The previous `Watcher`: one tracker, both list comprehensions over all of it per wake."""

    def __init__(
        self,
        config: WatchConfig,
        rules: IntakeRules,
        offer: Callable[[Path], Offer],
        *,
        name: str = "incoming",
    ) -> None:
        self._config = config
        self._name = name
        self._rules = rules
        self._offer = offer
        self._once = False
        self._polling = config.mode == "polling"
        self._tracked: dict[Path, _OldSeen] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._scan_requested = threading.Event()
        self._turned_away = False
        self._thread = threading.Thread(target=self._run, name=f"infarctwatch-scan-{name}")
        self._observer: BaseObserver | None = None
        self._log_bridge = watch.WatchdogLogBridge(name, self._stop.is_set)

    def __enter__(self) -> Self:
        if not self._polling:
            self._observer = self._make_observer()
            self._observer.start()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._wakeup.set()
        if self._observer is not None:
            watch.stop_observer(self._observer, self._log_bridge)
        self._thread.join()

    def _make_observer(self) -> BaseObserver:
        from watchdog.events import FileClosedEvent, FileMovedEvent  # noqa: PLC0415
        from watchdog.observers.inotify import InotifyObserver  # noqa: PLC0415
        from watchdog.observers.inotify_move_event_grouper import (  # noqa: PLC0415
            InotifyMoveEventGrouper,
        )

        InotifyMoveEventGrouper.delay = 0.0
        observer = InotifyObserver(generate_full_events=True)
        handler = watch._Handler(self)  # type: ignore[arg-type]  # noqa: SLF001 - duck-typed
        observer.schedule(
            handler, str(self._rules.root), event_filter=[FileClosedEvent, FileMovedEvent]
        )
        return observer

    def arrived(self, path: Path) -> None:
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
                if len(self._tracked) < watch.MAX_TRACKED:
                    seen = _OldSeen(info.st_size, info.st_mtime_ns, time.monotonic(), complete=True)
                    self._tracked[path] = seen
                self._turned_away = True

    def room(self) -> None:
        if self._turned_away:
            self._wakeup.set()

    def _run(self) -> None:
        interval = (
            self._config.poll_interval_s if self._polling else self._config.reconcile_interval_s
        )
        next_scan = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_scan or self._scan_requested.is_set():
                self._scan_requested.clear()
                self._scan(now)
                next_scan = math.inf if self._once else now + interval
            else:
                self._refresh(now)
            self._offer_ready(time.monotonic())
            self._wakeup.wait(self._sleep(next_scan))
            self._wakeup.clear()

    def _sleep(self, next_scan: float) -> float:
        timeout = next_scan - time.monotonic()
        if self._tracked:
            timeout = min(timeout, self._config.poll_interval_s, self._config.stable_s or 0.05)
        return max(0.01, min(timeout, 3600.0))

    def _scan(self, now: float) -> None:
        found = dict(self._rules.scan())
        with self._lock:
            for path in [p for p in self._tracked if p not in found]:
                del self._tracked[path]
            for path, info in found.items():
                self._note(path, info.st_size, info.st_mtime_ns, now)

    def _refresh(self, now: float) -> None:
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
        seen = self._tracked.get(path)
        if seen is not None and (seen.size, seen.mtime_ns) == (size, mtime_ns):
            return
        if seen is not None or len(self._tracked) < watch.MAX_TRACKED:
            self._tracked[path] = _OldSeen(size, mtime_ns, now)

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
            if self._offer(path) is Offer.BUSY:
                self._turned_away = True
                return
            with self._lock:
                self._tracked.pop(path, None)
        self._turned_away = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000, help="files in the burst")
    parser.add_argument("--slots", type=int, default=64, help="claims the fake pipeline holds")
    parser.add_argument(
        "--service-ms", type=float, default=1.0, help="time per claim before its slot frees"
    )
    parser.add_argument("--mode", choices=("inotify", "polling"), default="inotify")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, interleaved; best kept")
    parser.add_argument("--only-new", action="store_true", help="skip the old watcher")
    args = parser.parse_args(argv)
    print(
        f"burst of {args.files} files renamed in at once, {args.slots} slots, "
        f"{args.service_ms} ms per claim, {args.mode} mode; {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    factories: dict[str, Callable[..., Watcher | OldWatcher]] = {"new": Watcher}
    if not args.only_new:
        factories = {"old": OldWatcher, **factories}
    rounds: dict[str, list[Burst]] = {label: [] for label in factories}
    print("CPU per file in microseconds (own = scanner + handler: the watcher's code)")
    print(HEADER)
    for _ in range(args.rounds):
        for label, factory in factories.items():
            burst = run_burst(factory, args.files, args.slots, args.service_ms / 1000, args.mode)
            rounds[label].append(burst)
            print(row(label, burst), flush=True)
    print(f"best of {args.rounds}:")
    for label, bursts in rounds.items():
        print(row(label, best(bursts)))
    if "old" in rounds:
        old, new = best(rounds["old"]), best(rounds["new"])
        print(
            f"old/new: scanner {old.scanner / max(new.scanner, 1):.1f}x,"
            f" watcher's own code {old.own / max(new.own, 1):.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
