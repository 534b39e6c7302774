"""Storage trouble as a state of the service, not a reason to exit.

When a report cannot be written or an input cannot be moved to its outcome folder (a full disk,
a read-only or unwritable folder, an I/O error, the folder gone), the pipeline hands the claim to
the `StorageGuard` instead of dropping it. The guard

* marks the service **degraded** with the reason (the status file, ``STATUS=``, one
  ``storage_degraded`` log line);
* **holds** the claim: it keeps its slot and stays in processing/; nothing is failed because of
  the disk, and no new file is claimed while degraded (`Pipeline.offer` answers busy, so files
  wait in incoming/);
* **probes** the folders it writes (reports, processing/, the outcome folders) with a small
  durable write, after 1 s, then 2, 4... at most `MAX_RETRY_S` apart, creating a folder that has
  gone;
* once a probe succeeds, logs ``storage_recovered`` and gives the held claims back to the
  pipeline, which scans them again (their reports are named from content and name, so a report
  written before the trouble is replaced, never duplicated).

The probe runs on the guard's own thread, so a slow or hanging file system never stalls the
service loop (which keeps feeding the systemd watchdog).
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from daemon.clock import iso, utc_now
from daemon.fs import TMP_SUFFIX

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from daemon.records import Claim

log = structlog.get_logger("infarctwatch.storage")

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0
_PROBE_BYTES = b"\0" * 4096
"""One page: on a full file system even this fails, where creating an empty file might not."""


def errno_name(code: int | None) -> str:
    """``ENOSPC`` for 28, ``EIO`` for 5...; ``?`` when unknown."""
    return errno.errorcode.get(code, "?") if code is not None else "?"


@dataclass(frozen=True)
class StorageState:
    """The guard at one moment (for the status file and the status line)."""

    degraded: bool
    reason: str | None
    since: dt.datetime | None
    held: int
    retries: int
    retry_in_s: float | None

    def to_status(self) -> dict[str, object]:
        """The status file's ``storage`` object."""
        return {
            "state": "degraded" if self.degraded else "ok",
            "reason": self.reason,
            "since": iso(self.since),
            "held": self.held,
            "retries": self.retries,
            "retry_in_s": None if self.retry_in_s is None else round(self.retry_in_s, 1),
        }


def probe_folder(folder: Path) -> None:
    """Prove ``folder`` takes a durable write now (created if it has gone).

    Raises:
        OSError: it does not.
    """
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".storage-probe-{secrets.token_hex(4)}{TMP_SUFFIX}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, _PROBE_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


class StorageGuard:
    """Holds claims while storage fails, probes it with back-off, and hands them back."""

    def __init__(
        self,
        folders: Sequence[Path],
        on_recovered: Callable[[list[Claim]], None],
        on_change: Callable[[StorageState], None] = lambda _state: None,
    ) -> None:
        self._folders = list(folders)
        self._on_recovered = on_recovered
        self._on_change = on_change
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._held: list[Claim] = []
        self._reason: str | None = None
        self._since: dt.datetime | None = None
        self._since_mono = 0.0
        self._delay = FIRST_RETRY_S
        self._next_probe = 0.0
        self._retries = 0
        self._recovered_at = -1e9
        self.degraded = False
        """True from the first failure until a probe succeeds (read without the lock)."""
        self._thread = threading.Thread(target=self._run, name="infarctwatch-storage", daemon=True)

    def start(self) -> None:
        """Start the probing thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop the probing thread (held claims stay in processing/)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)

    @property
    def alive(self) -> bool:
        """True while the probing thread runs."""
        return self._thread.is_alive()

    @property
    def held(self) -> int:
        """How many claims wait for storage."""
        with self._lock:
            return len(self._held)

    def trouble(self, claims: Sequence[Claim], reason: str) -> None:
        """Storage failed for ``claims``: hold them and, if it was fine, become degraded."""
        with self._lock:
            self._held.extend(claims)
            if self.degraded:
                return
            self.degraded = True
            self._reason = reason
            self._since, self._since_mono = utc_now(), time.monotonic()
            if time.monotonic() - self._recovered_at > 2 * MAX_RETRY_S:
                self._delay = FIRST_RETRY_S
            else:  # trouble again soon after a recovery: keep backing off, do not flap each second
                self._delay = min(self._delay * 2, MAX_RETRY_S)
            self._next_probe = time.monotonic() + self._delay
            self._retries = 0
        log.error(
            "storage_degraded",
            reason=reason,
            held=len(claims),
            note="no new file is claimed; claims stay in processing/; retrying with back-off",
        )
        self._on_change(self.snapshot())
        self._wake.set()

    def hold(self, claims: Sequence[Claim]) -> bool:
        """Hold ``claims`` if degraded (a batch taken meanwhile); False when storage is fine."""
        with self._lock:
            if not self.degraded:
                return False
            self._held.extend(claims)
            return True

    def held_claim(self, claim: Claim) -> bool:
        """True when ``claim`` is held for storage."""
        with self._lock:
            return any(held is claim or held == claim for held in self._held)

    def snapshot(self) -> StorageState:
        """The state now."""
        with self._lock:
            retry_in = max(0.0, self._next_probe - time.monotonic()) if self.degraded else None
            return StorageState(
                self.degraded, self._reason, self._since, len(self._held), self._retries, retry_in
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                wait = self._next_probe - time.monotonic() if self.degraded else None
            if wait is None or wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
                continue
            self._probe()

    def _probe(self) -> None:
        problem = None
        for folder in self._folders:
            try:
                probe_folder(folder)
            except OSError as exc:
                problem = f"{errno_name(exc.errno)} ({exc.strerror or exc}) writing into {folder}"
                break
        if problem is not None:
            with self._lock:
                self._retries += 1
                self._reason = problem
                self._delay = min(self._delay * 2, MAX_RETRY_S)
                self._next_probe = time.monotonic() + self._delay
            log.debug("storage_still_failing", reason=problem, retry_in_s=self._delay)
            self._on_change(self.snapshot())
            return
        with self._lock:
            held, self._held = self._held, []
            self.degraded = False
            reason, lasted = self._reason, time.monotonic() - self._since_mono
            self._reason, self._since = None, None
            self._recovered_at = time.monotonic()
        log.info(
            "storage_recovered",
            was=reason,
            degraded_s=round(lasted, 1),
            retries=self._retries,
            resumed=len(held),
        )
        self._on_recovered(held)
        self._on_change(self.snapshot())
