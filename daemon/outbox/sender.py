"""The outbox sender: one thread that sends the outbox to a PACS by C-STORE (pynetdicom as SCU).

Every ``*.dcm`` file directly in the outbox is sent (captures the writer made, and whatever was
there at start: restart-safe); sub-folders (``sent/``, ``dead-letter/``, ``.staging/``) and
dotfiles (temporaries) never are. A round takes the files that are due, oldest name first, at most
`ROUND_FILES`, opens one association with the presentation contexts their SOP classes need, sends
each, and releases it.

A file the PACS accepts (status 0x0000, or a warning: 0xB000, 0xB006, 0xB007) moves to
``<outbox>/sent/`` or is deleted (``outputs.dicom.send.after_send``). A failed try (no connection,
association rejected or aborted, no answer within ``timeout_s``, a failure status) is counted
against that file: it is tried again after ``backoff_s``, then twice as long after each further
failure, at most ``backoff_max_s`` apart; after ``max_attempts`` tries it moves to
``<outbox>/dead-letter/`` and is never tried again by itself: no retry loop. Putting it back into
the outbox sends it again (counted from 0). The counts start from 0 again after a restart.

Delivery is at least once: a crash between the PACS's answer and the move sends that file again
at the next start, with the same SOP Instance UID (a PACS keeps one copy).

Logs (``outbox_sent``, ``outbox_send_failed``, ``outbox_dead_letter``) name the file (a scan id),
the destination and the reason, never a patient attribute; pynetdicom's own log lines are turned
off below CRITICAL because they can quote dataset contents.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import structlog

from daemon.clock import iso, utc_now
from daemon.fs import move_into
from daemon.threads import StageThread

if TYPE_CHECKING:
    from collections.abc import Callable

    from daemon.config import DicomSendConfig

log = structlog.get_logger("infarctwatch.outbox")

SENT = "sent"
DEAD_LETTER = "dead-letter"
ROUND_FILES = 64
"""Files sent over one association at most; the rest wait for the next round."""
RESCAN_S = 5.0
"""Seconds between looks at the outbox when nothing wakes the sender (a file put back by hand)."""
ACCEPTED = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
"""C-STORE statuses that mean stored: success and the three warnings of PS3.4 B.2.3."""
_OUR_NAME = re.compile(r"[0-9a-z]+-[0-9a-f]{8}(~\d+)?\.dcm")


def shown_name(name: str) -> str:
    """A file name fit for a log line: ours (a scan id) as it is, any other one as a hash."""
    if _OUR_NAME.fullmatch(name):
        return name
    return "sha256:" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:12]


@dataclass
class _Tries:
    attempts: int = 0
    next_at: float = 0.0


@dataclass(frozen=True)
class Outcome:
    """What one try at one file gave: accepted, or the reason it failed."""

    path: Path
    error: str | None = None


def _store_one(assoc: Any, path: Path) -> Outcome:
    """One C-STORE of ``path`` over the established ``assoc``."""
    if not assoc.is_established:
        return Outcome(path, "the association ended during the round")
    try:
        status = assoc.send_c_store(path)
    except (ValueError, RuntimeError, OSError) as exc:  # no context for it, I/O
        return Outcome(path, f"not sent: {type(exc).__name__}: {exc}")
    code = status.get("Status") if status else None
    if code is None:
        return Outcome(path, "no answer (timed out or aborted)")
    if int(code) in ACCEPTED:
        return Outcome(path)
    return Outcome(path, f"refused with status 0x{int(code):04X}")


class OutboxSender(StageThread):
    """Sends the outbox to one Storage SCP, with bounded retries and a dead-letter folder."""

    def __init__(
        self,
        outbox: Path,
        send: DicomSendConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("infarctwatch-sender")
        self.outbox = outbox
        self._send = send
        self._clock = clock
        self._tries: dict[str, _Tries] = {}
        self._kept: set[str] = set()
        """Files sent that could not be moved away: skipped until the next start."""
        self._lock = threading.Lock()
        self._sent = 0
        self._failed_tries = 0
        self._dead = 0
        self._queued = 0
        self._last_sent_at: str | None = None
        self._last_error: dict[str, str | None] | None = None
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)

    @property
    def destination(self) -> str:
        """``AE@host:port`` of the PACS."""
        return f"{self._send.ae_title}@{self._send.host}:{self._send.port}"

    def wake(self) -> None:
        """A file was added to the outbox (any thread): look now."""
        self._wakeup.set()

    def snapshot(self) -> dict[str, Any]:
        """The status file's ``outbox.send``: destination, counts, the last error."""
        with self._lock:
            return {
                "destination": self.destination,
                "sent": self._sent,
                "failed_tries": self._failed_tries,
                "dead_lettered": self._dead,
                "queued": self._queued,
                "last_sent_at": self._last_sent_at,
                "last_error": self._last_error,
            }

    def _ended_normally(self) -> bool:
        return self.stopping

    def _run(self) -> None:
        while not self.stopping:
            self._wakeup.clear()
            due, next_at = self._due()
            if due:
                self._round(due)
                continue  # more may be due at once
            self._wakeup.wait(max(0.0, min(next_at - self._clock(), RESCAN_S)))

    def _due(self) -> tuple[list[Path], float]:
        """The files due now (at most `ROUND_FILES`) and when the next one will be."""
        try:
            with os.scandir(self.outbox) as listing:
                entries = sorted(
                    Path(entry.path)
                    for entry in listing
                    if entry.name.endswith(".dcm") and not entry.name.startswith(".")
                    if entry.name not in self._kept and entry.is_file(follow_symlinks=False)
                )
        except OSError as exc:
            self._note_error(f"cannot list the outbox: {exc.strerror or exc}")
            return [], self._clock() + RESCAN_S
        names = {entry.name for entry in entries}
        for gone in set(self._tries) - names:  # sent, dead-lettered or removed by hand
            del self._tries[gone]
        now = self._clock()
        due, next_at = [], now + RESCAN_S
        for entry in entries:
            tries = self._tries.setdefault(entry.name, _Tries())
            if tries.next_at <= now:
                due.append(entry)
            else:
                next_at = min(next_at, tries.next_at)
        with self._lock:
            self._queued = len(entries)
        return due[:ROUND_FILES], next_at

    def _round(self, paths: list[Path]) -> None:
        """One association: send ``paths``, then file each by its outcome."""
        started = time.monotonic()
        try:
            outcomes = self.store(paths)
        except Exception as exc:  # a bug here or in pynetdicom: a failed try, never a dead thread
            log.exception("outbox_send_bug", files=len(paths))
            outcomes = [Outcome(path, f"{type(exc).__name__} while sending") for path in paths]
        for outcome in outcomes:
            if outcome.error is None:
                self._done(outcome.path, started)
            else:
                self._failed(outcome.path, outcome.error)

    def store(self, paths: list[Path]) -> list[Outcome]:
        """C-STORE each of ``paths`` over one association; one `Outcome` per path tried, in order.

        A stop ends the round after the file being sent: the others are not tried.
        """
        from pydicom import dcmread  # noqa: PLC0415 - pynetdicom only when sending
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian  # noqa: PLC0415
        from pynetdicom import AE  # noqa: PLC0415

        send = self._send
        outcomes: dict[Path, Outcome] = {}
        contexts: dict[str, set[str]] = {}
        for path in paths:
            try:
                header = dcmread(path, stop_before_pixels=True)
                syntax = str(header.file_meta.TransferSyntaxUID)
                contexts.setdefault(str(header.SOPClassUID), set()).add(syntax)
            except Exception as exc:  # noqa: BLE001 - an unreadable file fails alone
                outcomes[path] = Outcome(path, f"not a readable DICOM file ({type(exc).__name__})")
        ae = AE(ae_title=send.calling_ae_title)
        for timeout in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, timeout, send.timeout_s)
        for sop_class, syntaxes in contexts.items():
            ae.add_requested_context(
                sop_class, sorted(syntaxes | {ExplicitVRLittleEndian, ImplicitVRLittleEndian})
            )
        pending = [path for path in paths if path not in outcomes]
        if pending:
            outcomes.update(self._associate(ae, pending))
        return [outcomes[path] for path in paths if path in outcomes]

    def _associate(self, ae: Any, paths: list[Path]) -> dict[Path, Outcome]:
        from pynetdicom import evt  # noqa: PLC0415

        send = self._send
        connected = threading.Event()
        try:
            assoc = ae.associate(
                send.host,
                send.port,
                ae_title=send.ae_title,
                evt_handlers=[(evt.EVT_CONN_OPEN, lambda _event: connected.set())],
            )
        except OSError as exc:  # the host name does not resolve
            reason = f"no connection ({exc.strerror or type(exc).__name__})"
            return {path: Outcome(path, reason) for path in paths}
        if not assoc.is_established:
            if not connected.is_set():
                reason = "no connection (refused, unreachable or timed out)"
            elif assoc.is_rejected:
                reason = "the association was rejected"
            else:
                reason = "the association was aborted or timed out"
            return {path: Outcome(path, reason) for path in paths}
        outcomes = {}
        try:
            for path in paths:
                if self.stopping:  # the rest stays in the outbox for the next start
                    break
                outcomes[path] = _store_one(assoc, path)
        finally:
            if assoc.is_established:
                assoc.release()
        return outcomes

    def _done(self, path: Path, started: float) -> None:
        name = path.name
        try:
            if self._send.after_send == "delete":
                path.unlink(missing_ok=True)
            else:
                move_into(path, self.outbox / SENT, PurePosixPath(name))
        except OSError as exc:  # the PACS has it: never send it again in this run
            self._note_error(f"sent, but cannot move it to {SENT}/: {exc.strerror or exc}")
            self._kept.add(name)
        tries = self._tries.pop(name, _Tries())
        with self._lock:
            self._sent += 1
            self._last_sent_at = iso(utc_now())
        log.info(
            "outbox_sent",
            file=shown_name(name),
            destination=self.destination,
            attempt=tries.attempts + 1,
            round_ms=round((time.monotonic() - started) * 1000.0, 1),
        )

    def _failed(self, path: Path, error: str) -> None:
        name, send = path.name, self._send
        tries = self._tries.setdefault(name, _Tries())
        tries.attempts += 1
        with self._lock:
            self._failed_tries += 1
        self._note_error(f"{shown_name(name)} to {self.destination}: {error}")
        if tries.attempts >= send.max_attempts:
            try:
                move_into(path, self.outbox / DEAD_LETTER, PurePosixPath(name))
            except OSError as exc:
                self._note_error(f"cannot move to {DEAD_LETTER}/: {exc.strerror or exc}")
                tries.next_at = self._clock() + send.backoff_max_s
                return
            self._tries.pop(name, None)
            with self._lock:
                self._dead += 1
            log.error(
                "outbox_dead_letter",
                file=shown_name(name),
                destination=self.destination,
                attempts=tries.attempts,
                error=error,
                note=f"moved to {DEAD_LETTER}/; move it back into the outbox to send it again",
            )
            return
        delay = min(send.backoff_s * 2 ** (tries.attempts - 1), send.backoff_max_s)
        tries.next_at = self._clock() + delay
        log.warning(
            "outbox_send_failed",
            file=shown_name(name),
            destination=self.destination,
            attempt=tries.attempts,
            max_attempts=send.max_attempts,
            error=error,
            retry_in_s=round(delay, 3),
        )

    def _note_error(self, message: str) -> None:
        with self._lock:
            self._last_error = {"at": iso(utc_now()), "message": message}
