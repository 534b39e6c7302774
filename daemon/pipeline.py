"""Wires the stages: claim -> scan worker processes (decode, infer, report, outcome) -> log.

Threads and processes::

    observer / scanner ──offer()──> claim (rename) ──> claims queue
    one thread per scan worker (pipeline.decode_workers): takes every queued claim, up to
        `MAX_BATCH`, and hands the batch to its worker process (`daemon.decode_workers`), which
        decodes, infers, writes the reports (one group commit) and moves the inputs
        (`daemon.scan_worker`); back come one `Finished` per claim: counted, logged, slot freed
    report writer (one thread): the error reports of claims a worker died on or hung on
    recheck (one thread, `daemon.recheck`): claims found truncated or empty, looked at again
        after ``watch.grace_s``: changed, put back into incoming (the watcher lets them settle
        again); unchanged, reported by the report writer

Back-pressure: a claim takes one of ``pipeline.max_pending`` slots and gives it back once its
report is written. With no free slot `Pipeline.offer` answers `Offer.BUSY` and the file stays in
incoming/ (the watcher offers it again when `room` is called). Memory is therefore bounded by
``max_pending`` claims (a path each) plus `MAX_BATCH` files and tensors per worker process.

A batch takes whatever is queued: one claim when scans arrive one by one (no waiting for company,
so latency stays that of one scan), up to `MAX_BATCH` in a burst, where one group commit then
makes the whole batch's reports durable. A report is durable before its input leaves processing/,
so a crash can only cause a scan to be done again, never lost.

The daemon's own compiled model (`daemon.engine.EngineHolder`) checks a bundle before it goes into
service and says which model is in service; each batch names that model (`ModelChoice`), and a
worker compiles it when it changes (hot reload).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog

from daemon.decode_stage import Rejected, fingerprint
from daemon.errors import DecoderStartError
from daemon.intake import Offer
from daemon.jobs import ScanResult
from daemon.recheck import Rechecker
from daemon.scan_worker import ModelChoice, ScanSetup, commit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from daemon.claim import ClaimArea
    from daemon.config import DaemonConfig
    from daemon.decode_workers import DecodeWorker
    from daemon.engine import Engine, EngineHolder
    from daemon.jobs import Claim, Finished, ModelInfo
    from daemon.status import Counters

log = structlog.get_logger("infarctwatch.pipeline")

_STOP: Any = object()
_BATCH = 64
MAX_BATCH = 16
"""Claims per worker request at most. Larger batches mean fewer round trips and fewer flushes of
the file system (one per batch): in interleaved 2000-file rounds 8 gave 329-338, 16 gave 376-386,
32 gave 409 scans/s at best. 16 keeps half of the default 64 pending slots queued behind the
two workers' batches, so a worker never waits for the watcher to claim its next batch."""
_WRITE_FAILURES_UNHEALTHY = 3


class Pipeline:
    """The running stages. `start` it, `offer` it paths, `drain` it to stop."""

    def __init__(
        self,
        config: DaemonConfig,
        holder: EngineHolder,
        area: ClaimArea,
        counters: Counters,
        decoders: list[DecodeWorker],
    ) -> None:
        self._config = config
        self._holder = holder
        self._area = area
        self._counters = counters
        self._slots = threading.Semaphore(config.pipeline.max_pending)
        self._claims: queue.Queue[Claim] = queue.Queue()
        self._results: queue.SimpleQueue[ScanResult] = queue.SimpleQueue()
        self._open: dict[str, Claim] = {}
        self._open_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._accepting = True
        self._write_failures = 0
        self._health_lock = threading.Lock()
        self.on_room: Callable[[], None] = lambda: None
        """Called (writer thread) each time a slot frees; the watcher's `room`."""
        self.on_return: Callable[[Path], None] = lambda _path: None
        """Called when a claim was put back into incoming, with its path; the watcher's
        `returned`."""
        self._recheck: Rechecker[tuple[Rejected, ModelInfo]] = Rechecker(
            config.watch.grace_s, self._decide
        )
        self._workers = [
            threading.Thread(
                target=self._scan_loop,
                args=(decoder,),
                name=f"infarctwatch-decode-{decoder.index}",
                daemon=True,
            )
            for decoder in decoders
        ]
        self._decoders = decoders
        self._setup = ScanSetup(config.reports, config.inference.top_k, area, config.inference)
        self._writer = threading.Thread(
            target=self._write_loop, name="infarctwatch-report", daemon=True
        )

    def start(self) -> None:
        """Start the decode workers and the report writer."""
        for thread in (*self._workers, self._writer):
            thread.start()
        self._recheck.start()

    # -- intake ---------------------------------------------------------------------------------

    @property
    def decoder_restarts(self) -> int:
        """How many decode worker processes were replaced after a crash or a timeout."""
        return sum(decoder.restarts for decoder in self._decoders)

    @property
    def pending(self) -> int:
        """Claims taken and not yet reported (the queue depth)."""
        return len(self._open)

    def offer(self, path: Path) -> Offer:
        """Claim ``path`` if there is room (any thread)."""
        if not self._accepting or not self._slots.acquire(blocking=False):
            return Offer.BUSY
        try:
            claim = self._area.claim(path)
        except OSError as exc:
            self._give_back()
            log.warning("claim_failed", error=exc.strerror or str(exc), errno=exc.errno)
            return Offer.FAILED
        if claim is None:
            self._give_back()
            return Offer.GONE
        self._admit(claim)
        return Offer.CLAIMED

    def _give_back(self) -> None:
        """Return a slot taken for a claim that did not happen, and say there is room.

        Another offer may have been turned away while the slot was held.
        """
        self._slots.release()
        self.on_room()

    def resume(self, claims: Iterable[Claim], stop: threading.Event) -> int:
        """Queue claims left by a previous run, waiting for slots; returns how many were queued."""
        queued = 0
        for claim in claims:
            while not self._slots.acquire(timeout=0.2):
                if stop.is_set():
                    return queued
            if stop.is_set() or not self._accepting:
                self._slots.release()
                return queued
            self._admit(claim)
            queued += 1
        return queued

    def _admit(self, claim: Claim) -> None:
        with self._open_lock:
            self._open[claim.claim_id + "/" + claim.name] = claim
            self._idle.clear()
        log.debug("claimed", claim=claim.claim_id)
        self._claims.put(claim)

    # -- scan workers -------------------------------------------------------------------------

    def _scan_loop(self, worker: DecodeWorker) -> None:
        """Feed one worker process batches of claims and log what it finished, until stopped."""
        try:
            worker.scan((), self._model(), self._setup)  # compile the model before any scan
        except DecoderStartError as exc:
            log.error("decoder_unavailable", worker=worker.index, error=str(exc))  # noqa: TRY400 - the message says it all
            return
        while True:
            batch, stop = self._take_batch()
            if batch:
                engine = self._holder.acquire()  # the model in service for this whole batch
                try:
                    answers = worker.scan(batch, _choice(engine), self._setup)
                except DecoderStartError as exc:
                    # Without a worker this thread is done: the service sees it (`healthy`) and
                    # stops with exit code 1; the claims stay in processing/ for the next start.
                    log.error("decoder_unavailable", worker=worker.index, error=str(exc))  # noqa: TRY400 - the message says it all
                    for claim in batch:
                        self._forget(claim)
                    return
                finally:
                    engine.release()
                for answer in answers:
                    if isinstance(answer, Rejected) and answer.fingerprint is not None:
                        self._recheck.add((answer, engine.info))  # maybe still being written
                    elif isinstance(answer, Rejected):  # the worker died on it: reported here
                        self._results.put(
                            ScanResult(
                                answer.claim,
                                answer.source,
                                engine.info,
                                failure=answer.failure,
                                decode_ms=answer.decode_ms,
                            )
                        )
                    else:
                        self._finished(answer)
            if stop:
                return

    def _take_batch(self) -> tuple[tuple[Claim, ...], bool]:
        """The next claim (waiting for it) and those queued behind it, up to `MAX_BATCH`.

        Returns the batch and whether the stop marker came with it.
        """
        first = self._claims.get()
        if first is _STOP:
            return (), True
        batch = [first]
        with contextlib.suppress(queue.Empty):
            while len(batch) < MAX_BATCH:
                claim = self._claims.get_nowait()
                if claim is _STOP:
                    return tuple(batch), True
                batch.append(claim)
        return tuple(batch), False

    def _model(self) -> ModelChoice:
        return _choice(self._holder.current)

    def _decide(self, item: tuple[Rejected, ModelInfo]) -> None:
        """A claim found truncated or empty, ``watch.grace_s`` later: put back or report it."""
        rejected, model = item
        claim = rejected.claim
        now = fingerprint(claim.path)
        if now is not None and now != rejected.fingerprint:
            try:
                path = self._area.unclaim(claim)
            except OSError as exc:
                log.warning("put_back_failed", claim=claim.claim_id, error=exc.strerror or str(exc))
            else:
                log.info("put_back", claim=claim.claim_id, code=rejected.failure.code)
                self.on_return(path)
                self._forget(claim)
                return
        self._results.put(
            ScanResult(
                claim,
                rejected.source,
                model,
                failure=rejected.failure,
                decode_ms=rejected.decode_ms,
            )
        )

    # -- reports of scans the workers could not finish -----------------------------------------

    def _write_loop(self) -> None:
        while True:
            batch = [self._results.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < _BATCH:
                    batch.append(self._results.get_nowait())
            stop = any(item is _STOP for item in batch)
            results = [item for item in batch if item is not _STOP]
            if results:
                for finished in commit(results, self._setup):
                    self._finished(finished)
            if stop:
                return

    def _finished(self, finished: Finished) -> None:
        """Count and log a reported claim, and free its slot."""
        with self._health_lock:  # the worker threads and the writer all report here
            if finished.write_error is None:
                self._write_failures = 0
            else:
                self._write_failures += 1
        if finished.write_error is not None:
            log.error("report_write_failed", scan=finished.scan_id, error=finished.write_error)
            self._forget(finished.claim)  # the file stays in processing/: retaken at restart
            return
        if finished.action == "unknown":
            log.warning("scan_reported_before_worker_died", scan=finished.scan_id)
            self._forget(finished.claim)
            return
        if finished.outcome_error is not None:
            log.warning("outcome_failed", scan=finished.scan_id, error=finished.outcome_error)
        self._counters.record(ok=finished.ok)
        self._log_scan(finished)
        self._forget(finished.claim)

    def _log_scan(self, finished: Finished) -> None:
        timing = finished.timing or {}
        if finished.failure is None:
            log.info(
                "scan",
                scan=finished.scan_id,
                status="ok",
                label=finished.label,
                probability=round(finished.probability or 0.0, 4),
                latency_ms=round(timing["total_ms"], 1),
                decode_ms=round(timing["decode_ms"], 1),
                infer_ms=round(timing["infer_ms"], 2),
                input=finished.action,
            )
        else:
            log.warning(
                "scan",
                scan=finished.scan_id,
                status="error",
                code=finished.failure.code,
                message=finished.failure.message,
                latency_ms=round(timing["total_ms"], 1),
                input=finished.action,
            )

    def _forget(self, claim: Claim) -> None:
        with self._open_lock:
            self._open.pop(claim.claim_id + "/" + claim.name, None)
            if not self._open:
                self._idle.set()
        self._slots.release()
        self.on_room()

    # -- health and shutdown ------------------------------------------------------------------

    def healthy(self) -> bool:
        """Every stage thread alive, and reports can be written."""
        alive = all(t.is_alive() for t in (*self._workers, self._writer)) and self._recheck.alive
        return alive and self._write_failures < _WRITE_FAILURES_UNHEALTHY

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no claim is pending; False at the timeout."""
        return self._idle.wait(timeout)

    def drain(self, timeout: float, force: threading.Event) -> list[Claim]:
        """Stop taking files, finish what is pending within ``timeout``, stop every thread.

        Returns the claims abandoned (the timeout passed, or ``force`` was set): they stay in
        processing/ and are taken up again at the next start.
        """
        self._accepting = False
        deadline = time.monotonic() + timeout
        while not self._idle.is_set() and not force.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._idle.wait(min(remaining, 0.1))
        self._recheck.close()  # claims still waiting for their second look stay in processing/
        with contextlib.suppress(queue.Empty):  # not started yet: leave them in processing/
            while True:
                self._claims.get_nowait()
        for _ in self._workers:
            self._claims.put(_STOP)
        for worker in self._workers:
            worker.join(timeout=None if self._idle.is_set() else 5.0)
        self._results.put(_STOP)
        self._writer.join(timeout=30.0)
        with self._open_lock:
            return list(self._open.values())


def _choice(engine: Engine) -> ModelChoice:
    """What a worker must serve to match ``engine``."""
    return ModelChoice(engine.bundle.path, engine.info.variant, engine.bundle.sha256)
