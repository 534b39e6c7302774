"""The repeat guard: a file that keeps killing the daemon is set aside instead of looping.

Claims a crash leaves in processing/ are taken up again at the next start. A file that kills the
daemon (or hangs it until systemd's watchdog does) would then kill every restart, while good files
wait. So the daemon counts, per claim, how many times in a row it died with that claim *in
flight*:

* before a worker thread hands a batch to its worker process (or the report writer commits one),
  it writes the batch's claims into ``<work>/inflight/<stage>`` and blanks the file once the
  batch is answered. No fsync: the point is surviving the death of a process (``kill -9``, a
  segfault, the watchdog), and the page cache outlives any process;
* at start, every leftover claim named in one of those files gets its count raised, in
  ``<work>/attempts.json``, written durably **before** any claim is taken up again; a claim that
  was only queued keeps its count. Entries of claims no longer in processing/ (reported) are
  dropped there too, so a count lives exactly as long as its claim;
* a claim whose count reached ``limits.max_attempts`` is not scanned again: it gets a
  ``REPEATED_CRASH`` error report and goes to failed/ (the outcome of a failure);
* a claim with a count (a *suspect*) is scanned in a batch of its own, so the files that happened
  to share its batch are reported and cleared, and only the suspect is counted again;
* a count is cleared once its claim is reported.

Claims are keyed by their entry below processing/ (claim id and escaped name, as raw bytes): stable
across restarts, unique to one claim.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from daemon.fs import write_atomic

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from daemon.records import Claim

log = structlog.get_logger("infarctwatch.attempts")

ATTEMPTS_FILE = "attempts.json"
INFLIGHT_FOLDER = "inflight"


def claim_key(claim: Claim, processing: Path) -> str:
    """The claim's entry below processing/, as base64 of its raw bytes."""
    try:
        relative = claim.path.relative_to(processing)
    except ValueError:
        relative = claim.path
    return base64.b64encode(os.fsencode(relative)).decode("ascii")


@dataclass(frozen=True)
class TakeUp:
    """What to do with the leftovers of the previous run."""

    resume: list[Claim]
    """Taken up again, oldest first (suspects among them)."""
    set_aside: list[tuple[Claim, int]]
    """With the number of deaths: reported ``REPEATED_CRASH`` without a scan."""
    suspects: set[str] = field(default_factory=set)
    """Keys of resumed claims that were in flight at least once when the daemon died."""


class AttemptLog:
    """The in-flight files and the durable counts in the work folder."""

    def __init__(self, work: Path, processing: Path, max_attempts: int) -> None:
        self.path = work / ATTEMPTS_FILE
        self.inflight = work / INFLIGHT_FOLDER
        self.processing = processing
        self._prefix = os.fsencode(processing) + b"/"
        self.max_attempts = max_attempts
        self._suspects: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stages: dict[str, tuple[int, int]] = {}
        """Per stage (one thread each): its open in-flight file and how many bytes it used."""

    def key(self, claim: Claim) -> str:
        """`claim_key` below this log's processing/ (the same value, cheaper: bytes, no pathlib)."""
        raw = os.fsencode(claim.path)
        if raw.startswith(self._prefix):
            return base64.b64encode(raw[len(self._prefix) :]).decode("ascii")
        return claim_key(claim, self.processing)

    def is_suspect(self, claim: Claim) -> bool:
        """True for a claim that was in flight when a daemon died (it is scanned alone)."""
        return bool(self._suspects) and self.key(claim) in self._suspects

    def take_up(self, leftovers: Sequence[Claim]) -> TakeUp:
        """Count the deaths of the previous run, durably, and sort the leftovers.

        Raises:
            OSError: the counts could not be made durable (the caller waits for storage).
        """
        counts = self._read_counts()
        in_flight = self._read_inflight()
        resume: list[Claim] = []
        aside: list[tuple[Claim, int]] = []
        kept: dict[str, int] = {}
        for claim in leftovers:
            key = self.key(claim)
            count = counts.get(key, 0) + (1 if key in in_flight else 0)
            if count:  # kept until reported, set-aside ones too (a death meanwhile: still aside)
                kept[key] = count
            if count >= self.max_attempts:
                aside.append((claim, count))
            else:
                resume.append(claim)
        if kept or counts or self.path.exists():
            write_atomic(self.path, json.dumps(kept, indent=1).encode("ascii") + b"\n")
        self._suspects = dict(kept)
        self._clear_inflight()
        if kept:
            log.warning(
                "crash_suspects",
                suspects=len(kept) - len(aside),
                set_aside=len(aside),
                max_attempts=self.max_attempts,
                note="claims in flight when the daemon died: scanned alone, set aside at the limit",
            )
        return TakeUp(resume, aside, {self.key(c) for c in resume if self.key(c) in kept})

    def mark(self, stage: str, claims: Iterable[Claim]) -> None:
        """Record ``claims`` as in flight in ``stage`` (best effort: storage may be failing).

        The stage's file stays open and is overwritten in place (blanks after the keys), never
        truncated: a truncation makes ext4 flush the file on close (``auto_da_alloc``), 2 ms a
        batch, where an overwrite in the page cache costs a few microseconds.
        """
        data = "\n".join(self.key(c) for c in claims).encode("ascii") + b"\n"
        try:
            fd, used = self._open_stage(stage)
            os.pwrite(fd, data.ljust(used), 0)
            self._stages[stage] = (fd, max(used, len(data)))
        except OSError as exc:
            log.debug("inflight_not_recorded", error=exc.strerror or str(exc))

    def unmark(self, stage: str) -> None:
        """Nothing is in flight in ``stage`` any more."""
        opened = self._stages.get(stage)
        if opened is not None:
            with contextlib.suppress(OSError):
                os.pwrite(opened[0], b" " * opened[1], 0)

    def close(self) -> None:
        """Close the stages' files (nothing is in flight after a clean stop: they are blanked)."""
        for stage, (fd, _) in list(self._stages.items()):
            self.unmark(stage)
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stages.clear()

    def _open_stage(self, stage: str) -> tuple[int, int]:
        opened = self._stages.get(stage)
        if opened is not None:
            return opened
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.inflight / stage, flags, 0o600)
        except FileNotFoundError:
            self.inflight.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.inflight / stage, flags, 0o600)
        opened = (fd, os.fstat(fd).st_size)
        self._stages[stage] = opened
        return opened

    def forget(self, claim: Claim) -> None:
        """A claim left the pipeline: a suspect's count is cleared.

        Best effort: a count left behind is dropped at the next start anyway (its claim is gone).
        """
        if not self._suspects:
            return
        with self._lock:
            if self._suspects.pop(self.key(claim), None) is None:
                return
            data = json.dumps(self._suspects, indent=1).encode("ascii") + b"\n"
            try:
                write_atomic(self.path, data)
            except OSError as exc:
                log.debug("attempts_not_cleared", error=exc.strerror or str(exc))

    def _read_counts(self) -> dict[str, int]:
        try:
            document = json.loads(self.path.read_text(encoding="ascii"))
        except (OSError, ValueError):
            return {}
        if not isinstance(document, dict):
            return {}
        return {k: v for k, v in document.items() if isinstance(v, int) and v > 0}

    def _read_inflight(self) -> set[str]:
        keys: set[str] = set()
        with contextlib.suppress(OSError):
            for entry in self.inflight.iterdir():
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    keys.update(entry.read_text(encoding="ascii").split())
        return keys

    def _clear_inflight(self) -> None:
        with contextlib.suppress(OSError):
            self.inflight.mkdir(parents=True, exist_ok=True)
            for entry in self.inflight.iterdir():
                entry.unlink(missing_ok=True)
