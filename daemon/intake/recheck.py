"""Looking again, after ``watch.grace_s``, at files found truncated or empty.

A file still being written when it was claimed reads as truncated (or empty). The scan worker
does not report it; it hands back the file's fingerprint from before it read it (size, mtime,
inode: `daemon.scan.read.fingerprint`), and `Rechecker` calls the pipeline back once the grace
period has passed. The pipeline then compares: a file that changed meanwhile is put back into
incoming to settle again (`daemon.intake.claims.ClaimArea.unclaim`), one that stayed the same gets
its ``TRUNCATED_IMAGE`` or ``EMPTY_FILE`` report. Its pipeline slot stays taken meanwhile.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import TYPE_CHECKING, Generic, TypeVar

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger("infarctwatch.pipeline")

T = TypeVar("T")


class Rechecker(Generic[T]):
    """Calls ``decide(item)`` on its own thread ``delay_s`` after each `add`, in order."""

    def __init__(self, delay_s: float, decide: Callable[[T], None]) -> None:
        self._delay = delay_s
        self._decide = decide
        self._due: list[tuple[float, int, T]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="infarctwatch-recheck", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False when the thread died (or was never started)."""
        return self._thread.is_alive() or self._stopped

    def add(self, item: T) -> None:
        """Look at ``item`` again in ``delay_s``."""
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + self._delay, next(self._order), item))
            self._cond.notify()

    def close(self) -> list[T]:
        """Stop; return the items not looked at yet (they stay claimed)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
        with self._cond:
            left = [item for _, _, item in sorted(self._due)]
            self._due.clear()
        return left

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, _, item = heapq.heappop(self._due)
            try:
                self._decide(item)
            except Exception:
                log.exception("recheck_failed")
