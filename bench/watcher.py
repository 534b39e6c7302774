"""The watcher's own CPU per file for a burst far larger than the pipeline's room.

``.venv/bin/python bench/watcher.py [--files 5000] [--slots 64] [--service-ms 1]
[--mode inotify|polling] [--rounds 3] [--scale 4]``

A burst of ``--files`` files is renamed at once into a real folder watched by
`daemon.intake.watcher.Watcher`, whose ``offer`` is a fake pipeline holding at most ``--slots``
claims: a claim renames the file out of the folder, and a finisher thread ends one claim every
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

Two bursts run in interleaved rounds, ``--files`` files and ``--scale`` times as many: the
watcher's work per file must not grow with the number of files waiting, so its own CPU per file
should be about the same for both (the ratio printed last). The round with the least CPU in the
watcher's code is kept for each size.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from machine import cpu_lines

from daemon.config import WatchConfig
from daemon.intake.rules import IntakeRules, Offer
from daemon.intake.watcher import Watcher

if TYPE_CHECKING:
    from collections.abc import Callable


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
    f"{'':<6} {'scanner':>8} {'handler':>8} {'own':>8} {'watchdog':>9} {'claims':>7}"
    f" {'offers':>7} {'wall':>7}"
)


def row(label: str, burst: Burst) -> str:
    return (
        f"{label:<6} {burst.scanner / 1000:8.1f} {burst.handler / 1000:8.1f}"
        f" {burst.own / 1000:8.1f} {burst.watchdog / 1000:9.1f} {burst.claims / 1000:7.1f}"
        f" {burst.offers:7.2f} {burst.wall_s:6.2f}s"
    )


def run_burst(
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
        watcher = Watcher(config, rules, pipeline.offer, name="bench")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000, help="files in the burst")
    parser.add_argument("--slots", type=int, default=64, help="claims the fake pipeline holds")
    parser.add_argument(
        "--service-ms", type=float, default=1.0, help="time per claim before its slot frees"
    )
    parser.add_argument("--mode", choices=("inotify", "polling"), default="inotify")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, interleaved; best kept")
    parser.add_argument(
        "--scale", type=int, default=4, help="the second burst has this many times the files"
    )
    args = parser.parse_args(argv)
    print("\n".join(cpu_lines()))
    print(
        f"burst of {args.files} files renamed in at once, {args.slots} slots, "
        f"{args.service_ms} ms per claim, {args.mode} mode; {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    sizes = {f"{args.files}": args.files, f"{args.files * args.scale}": args.files * args.scale}
    rounds: dict[str, list[Burst]] = {label: [] for label in sizes}
    print("CPU per file in microseconds (own = scanner + handler: the watcher's code)")
    print(HEADER)
    for _ in range(args.rounds):
        for label, files in sizes.items():
            burst = run_burst(files, args.slots, args.service_ms / 1000, args.mode)
            rounds[label].append(burst)
            print(row(label, burst), flush=True)
    print(f"best of {args.rounds}:")
    for label, bursts in rounds.items():
        print(row(label, best(bursts)))
    small, large = (best(rounds[label]) for label in sizes)
    print(
        f"{args.scale}x the files: watcher's own code per file"
        f" {large.own / max(small.own, 1):.2f}x,"
        f" scanner {large.scanner / max(small.scanner, 1):.2f}x (about 1 when the work per file"
        " is constant)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
