"""The DICOM Storage SCP: a scanner or PACS pushes images, they land as files in incoming.

`DicomReceiver` listens on ``dicom.listen`` (pynetdicom's threaded association server, one thread
per association) while ``infarctwatch run`` serves. It answers C-ECHO, and C-STORE of the classes
and transfer syntaxes of `daemon.receive.contexts`; each instance is kept by
`daemon.receive.store.IncomingStore` (a file in incoming, durable before the sender hears
"success"), so the watch folder stays the one way in.

* **Who may send**: the called AE title must be ``ae_title``; with ``allowed_calling_ae_titles``
  set, an association from any other calling AE title is rejected (rejected-permanent, "calling
  AE title not recognised").
* **Answers** to C-STORE: ``0x0000`` stored; ``0xA700`` out of resources when incoming's file
  system would keep less than ``min_free_mb`` free (or filled up while writing), and while the
  receiver is stopping: the sender keeps the instance and retries later; ``0x0110`` processing
  failure when the write failed otherwise (I/O error, permission). Nothing half-written is ever
  left in incoming.
* **Logs**: one ``dicom_association`` line per association when it ends (how it ended, the
  calling and called AE titles, the peer's address, how many instances were stored or refused,
  bytes, duration) and one ``dicom_association_rejected`` line per rejection; never a UID or any
  other value of a dataset. A refusal for space is also logged (``dicom_store_refused``), once
  per association.
* **Stopping** (`close`): the listening socket closes at once; a store being received or written
  is finished and answered, later requests are answered ``0xA700``; each association is aborted
  as soon as it has nothing in flight (all of them once ``timeout_s`` has passed).

pynetdicom's own per-message logging is switched off (``LOG_HANDLER_LEVEL``): its warnings and
errors still reach the daemon's log as ``library_log`` lines (`daemon.logs`).
"""

from __future__ import annotations

import socketserver
import threading
import time
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import structlog
from pynetdicom import AE, _config, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.transport import ThreadedAssociationServer

from daemon.clock import iso, utc_now
from daemon.errors import ConfigError
from daemon.receive.contexts import STORAGE_CLASSES, TRANSFER_SYNTAXES, UNCOMPRESSED, VERIFICATION
from daemon.receive.store import IncomingStore, Outcome

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    from pynetdicom.association import Association
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.events import Event

    from daemon.config import ListenConfig

log = structlog.get_logger("infarctwatch.receive")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110
_POLL_S = 0.02
MAX_PDU = 1 << 20
"""The largest PDU a sender may send us (pynetdicom's default is 16 kB): a slice of a few hundred
kB then crosses in one or a few PDUs, which cut the receiver's CPU per instance by a fifth
(bench/cstore.py). The dataset is held in memory whole anyway."""

_config.LOG_HANDLER_LEVEL = "none"  # no per-PDU/per-message log records: they cost CPU per image


@dataclass
class _Session:
    """One accepted association, while it lasts."""

    calling_ae: str
    called_ae: str
    peer: str
    started: float
    stored: int = 0
    no_space: int = 0
    failed: int = 0
    echoes: int = 0
    bytes: int = 0
    in_flight: bool = False
    """A request is being received, handled or answered: not to be aborted by `close`."""
    finish_current: bool = False
    """`close` came while a request was in flight: that one store is still written."""
    refusal_logged: bool = False


@dataclass
class ReceiverCounters:
    """What the receiver did since start-up (the status file's ``receiver``)."""

    associations: int = 0
    rejected: int = 0
    echoes: int = 0
    stored: int = 0
    stored_bytes: int = 0
    no_space: int = 0
    failed: int = 0
    last_association_at: str | None = None
    last_refusal: dict[str, str | None] | None = None


class DicomReceiver:
    """The Storage SCP of ``dicom.listen``, writing into ``incoming``; a context manager."""

    def __init__(self, listen: ListenConfig, incoming: Path, *, timeout_s: float = 15.0) -> None:
        self.listen = listen
        self.store = IncomingStore(incoming, listen.min_free_mb << 20)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._sessions: dict[Association, _Session] = {}
        self._counters = ReceiverCounters()
        self._closing = threading.Event()
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None
        self._ae = AE(ae_title=listen.ae_title)
        self._ae.require_called_aet = True
        self._ae.maximum_pdu_size = MAX_PDU
        self._ae.require_calling_aet = list(listen.allowed_calling_ae_titles)
        self._ae.add_supported_context(VERIFICATION, list(UNCOMPRESSED))
        for uid in STORAGE_CLASSES:
            self._ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))

    @property
    def address(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6) the receiver listens on."""
        host = self.listen.address
        return f"[{host}]:{self.listen.port}" if ":" in host else f"{host}:{self.listen.port}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Bind the port and serve associations on a thread of its own.

        Raises:
            ConfigError: the port cannot be bound (in use, address not local, not permitted).
        """
        removed = self.store.remove_leftovers()
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._echo),
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_ESTABLISHED, self._established),
            (evt.EVT_REJECTED, self._rejected),
            (evt.EVT_RELEASED, self._released),
            (evt.EVT_ABORTED, self._aborted),
            (evt.EVT_CONN_CLOSE, self._closed),
            (evt.EVT_PDU_RECV, self._pdu_received),
            (evt.EVT_PDU_SENT, self._pdu_sent),
        ]
        try:
            server = self._ae.make_server(
                (self.listen.address, self.listen.port),
                evt_handlers=handlers,
                server_class=ThreadedAssociationServer,
            )
        except OSError as exc:
            problem = (
                f"At 'dicom.listen.port': cannot listen on {self.address}: {exc.strerror or exc}"
            )
            raise ConfigError([problem]) from exc
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_S * 5},  # how soon `close` ends the accept loop
            name="dicom receiver",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "dicom_listening",
            address=self.address,
            ae_title=self.listen.ae_title,
            allowed_calling_ae_titles=list(self.listen.allowed_calling_ae_titles) or "any",
            min_free_mb=self.listen.min_free_mb,
            temporaries_removed=removed,
        )

    @property
    def alive(self) -> bool:
        """False when the listening thread ended without `close`."""
        thread = self._thread
        return thread is None or thread.is_alive() or self._closing.is_set()

    def close(self) -> None:
        """Stop listening; finish what is in flight, then abort every association (idempotent)."""
        with self._lock:
            if self._closing.is_set() or self._server is None:
                self._closing.set()
                return
            self._closing.set()
            for session in self._sessions.values():
                session.finish_current = session.in_flight
        # socketserver's own shutdown (the accept loop ends), then the listening socket closes.
        # Not pynetdicom's override: it also unregisters the server from its AE's list, which
        # `make_server` never added it to.
        socketserver.BaseServer.shutdown(self._server)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        deadline = time.monotonic() + self.timeout_s
        aborted = 0
        while True:
            late = time.monotonic() >= deadline
            with self._lock:
                if not self._sessions:
                    break
                done = [a for a, s in self._sessions.items() if late or not s.in_flight]
                for assoc in done:
                    self._end(assoc, "aborted_at_stop")
            for assoc in done:
                assoc.abort()
                aborted += 1
            if late:
                break
            time.sleep(_POLL_S)
        for assoc in self._ae.active_associations:  # rejected, or still negotiating
            assoc.abort()
        log.info("dicom_stopped", address=self.address, aborted=aborted)

    def to_status(self) -> dict[str, Any]:
        """The status file's ``receiver`` object."""
        with self._lock:
            counters = self._counters
            return {
                "address": self.address,
                "ae_title": self.listen.ae_title,
                "listening": self._thread is not None and not self._closing.is_set(),
                "associations": counters.associations,
                "active": len(self._sessions),
                "rejected": counters.rejected,
                "echoes": counters.echoes,
                "stored": counters.stored,
                "stored_bytes": counters.stored_bytes,
                "no_space": counters.no_space,
                "failed": counters.failed,
                "last_association_at": counters.last_association_at,
                "last_refusal": counters.last_refusal,
            }

    # ------------------------------------------------------------------ pynetdicom's events

    def _established(self, event: Event) -> None:
        assoc = event.assoc
        session = _Session(
            calling_ae=assoc.requestor.ae_title,
            called_ae=assoc.acceptor.ae_title,
            peer=_peer(assoc),
            started=time.monotonic(),
        )
        with self._lock:
            self._sessions[assoc] = session
            self._counters.associations += 1
            self._counters.last_association_at = iso(utc_now())

    def _rejected(self, event: Event) -> None:
        assoc = event.assoc
        calling = assoc.requestor.ae_title
        allowed = self.listen.allowed_calling_ae_titles
        if allowed and calling not in allowed:
            reason = "calling AE title not allowed"
        else:
            reason = "called AE title is not ours, or too many associations"
        with self._lock:
            self._counters.rejected += 1
        log.warning(
            "dicom_association_rejected",
            calling_ae=calling,
            peer=_peer(assoc),
            reason=reason,
            ae_title=self.listen.ae_title,
        )

    def _released(self, event: Event) -> None:
        with self._lock:
            self._end(event.assoc, "released")

    def _aborted(self, event: Event) -> None:
        with self._lock:
            self._end(event.assoc, "aborted")

    def _closed(self, event: Event) -> None:
        with self._lock:
            self._end(event.assoc, "connection_closed")

    def _pdu_received(self, event: Event) -> None:
        if isinstance(event.pdu, P_DATA_TF):  # a request arriving (or part of its dataset)
            with self._lock:
                session = self._sessions.get(event.assoc)
                if session is not None:
                    session.in_flight = True

    def _pdu_sent(self, event: Event) -> None:
        if isinstance(event.pdu, P_DATA_TF):  # an answer has left: nothing in flight any more
            with self._lock:
                session = self._sessions.get(event.assoc)
                if session is not None:
                    session.in_flight = False

    def _echo(self, event: Event) -> int:
        with self._lock:
            self._counters.echoes += 1
            session = self._sessions.get(event.assoc)
            if session is not None:
                session.echoes += 1
        return SUCCESS

    def _store(self, event: Event) -> int:
        error: str | None
        with self._lock:
            session = self._sessions.get(event.assoc)
            current = session is not None and session.finish_current
            refuse = self._closing.is_set() and not current
            if session is not None:
                session.finish_current = False
        data = b""
        if refuse:
            kept_outcome, error = Outcome.NO_SPACE, "the receiver is stopping"
        else:
            try:
                data = event.encoded_dataset(include_meta=True)
                request = typing.cast("C_STORE", event.request)
                uid = str(request.AffectedSOPInstanceUID or "")
            except Exception as exc:  # noqa: BLE001 - a bad request is that request's failure
                kept_outcome, error = Outcome.FAILED, type(exc).__name__
            else:
                kept = self.store.keep(uid, data)
                kept_outcome, error = kept.outcome, kept.error
        return self._count(event.assoc, kept_outcome, error, len(data))

    def _count(self, assoc: Association, outcome: Outcome, error: str | None, size: int) -> int:
        """Count one C-STORE's outcome; its status for the sender."""
        log_refusal = False
        with self._lock:
            counters = self._counters
            session = self._sessions.get(assoc)
            if outcome is Outcome.STORED:
                counters.stored += 1
                counters.stored_bytes += size
                if session is not None:
                    session.stored += 1
                    session.bytes += size
                return SUCCESS
            if outcome is Outcome.NO_SPACE:
                counters.no_space += 1
            else:
                counters.failed += 1
            counters.last_refusal = {"at": iso(utc_now()), "reason": f"{outcome.value}: {error}"}
            if session is not None:
                if outcome is Outcome.NO_SPACE:
                    session.no_space += 1
                else:
                    session.failed += 1
                log_refusal = not session.refusal_logged
                session.refusal_logged = True
        if log_refusal:
            log.warning(
                "dicom_store_refused",
                outcome=outcome.value,
                reason=error,
                status=f"0x{_status(outcome):04X}",
                calling_ae=assoc.requestor.ae_title,
                note="the sender keeps the instance and may retry; logged once per association",
            )
        return _status(outcome)

    def _end(self, assoc: Association, how: str) -> None:
        """Log the end of ``assoc`` once (the first of released/aborted/closed); lock held."""
        session = self._sessions.pop(assoc, None)
        if session is None:
            return
        log.info(
            "dicom_association",
            outcome=how,
            calling_ae=session.calling_ae,
            called_ae=session.called_ae,
            peer=session.peer,
            stored=session.stored,
            no_space=session.no_space,
            failed=session.failed,
            echoes=session.echoes,
            bytes=session.bytes,
            duration_s=round(time.monotonic() - session.started, 3),
        )


def _status(outcome: Outcome) -> int:
    if outcome is Outcome.STORED:
        return SUCCESS
    return OUT_OF_RESOURCES if outcome is Outcome.NO_SPACE else PROCESSING_FAILURE


def _peer(assoc: Association) -> str:
    """The requestor's IP address (never a port: it changes with every connection)."""
    try:
        return str(assoc.requestor.address)
    except ValueError:
        return "unknown"
