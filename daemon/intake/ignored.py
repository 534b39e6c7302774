"""Saying, once per name, that something in incoming is ignored, without saying its name.

The intake never takes dotfiles, names with an ignored suffix, or folders (when not recursive).
Each scan (start-up, reconciliation, polling) tells `IgnoredNames` of those it finds; it counts
each name once and logs ``ignored_in_incoming`` with the reason and a
short hash of the name (never the name: it may carry a patient's identity), at most
`LINES_PER_MINUTE` lines a minute; lines held back are counted in the next line's
``suppressed``. The count of distinct names since start-up goes into the status file.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from pathlib import Path

log = structlog.get_logger("infarctwatch.watch")

LINES_PER_MINUTE = 10
_REMEMBERED = 100_000
"""Names remembered at most; beyond, the memory starts again (a name may then be told again)."""


def name_hash(path: Path) -> str:
    """A short, stable tag for a name that does not reveal it (12 hex digits of its sha256)."""
    return hashlib.sha256(os.fsencode(path)).hexdigest()[:12]


class IgnoredNames:
    """Counts and logs ignored names (any thread)."""

    def __init__(self, folder: str) -> None:
        self._folder = folder
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._count = 0
        self._window_start = -60.0
        self._lines = 0
        self._suppressed = 0

    @property
    def count(self) -> int:
        """Distinct names ignored since start-up."""
        return self._count

    def tell(self, path: Path, reason: str) -> None:
        """Note an ignored name: counted and logged the first time it is seen."""
        tag = name_hash(path)
        with self._lock:
            if tag in self._seen:
                return
            if len(self._seen) >= _REMEMBERED:
                self._seen.clear()
            self._seen.add(tag)
            self._count += 1
            now = time.monotonic()
            if now - self._window_start >= 60.0:
                self._window_start, self._lines = now, 0
            if self._lines >= LINES_PER_MINUTE:
                self._suppressed += 1
                return
            self._lines += 1
            suppressed, self._suppressed = self._suppressed, 0
        log.info(
            "ignored_in_incoming",
            folder=self._folder,
            reason=reason,
            name_sha256=tag,
            ignored=self._count,
            suppressed=suppressed,
        )
