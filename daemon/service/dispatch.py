"""Wires the stages: claim -> scan worker processes (decode, infer, report, outcome) -> log.

Threads and processes::

    observer / scanner ──offer()──> claim (rename) ──> claims queue
    one thread per scan worker (pipeline.decode_workers): takes every queued claim, up to
        `MAX_BATCH`, and hands the batch to its worker process (`daemon.workers.process`), which
        decodes, infers, writes the reports (one group commit) and moves the inputs
        (`daemon.scan.worker`); back come one `Finished` per claim: counted, logged, slot freed
    report writer (one thread): the error reports of claims a worker died on or hung on
    recheck (one thread, `daemon.intake.recheck`): claims found truncated or empty, looked at again
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

The model holder (`daemon.model.holder.ModelHolder`) says which model is in service; each batch
names that model (`ModelChoice`), and a worker compiles it when it changes (hot reload).

Faults: a report that cannot be written or an input that cannot be put away hands its claim to
the storage guard (`daemon.service.storage`): the service is degraded, claims wait in processing/
and are scanned again once storage is back. A bug in this process while handling a batch makes each
of its claims an ``INTERNAL_ERROR`` report; no stage thread ends before `drain`. Every batch is
recorded as in flight (`daemon.service.attempts`) while a worker or the writer has it, so a file
that kills the daemon is recognised at the next start.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog

from daemon.errors import InternalError, WorkerStartError
from daemon.intake.recheck import Rechecker
from daemon.intake.rules import Offer
from daemon.outbox.writer import staging_folder
from daemon.records import Failure, ScanResult
from daemon.scan.protocol import ModelChoice, ScanSetup
from daemon.scan.read import Rejected, fingerprint
from daemon.scan.worker import commit, source_of
from daemon.service.storage import StorageGuard, errno_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from daemon.config import DaemonConfig
    from daemon.intake.claims import ClaimArea
    from daemon.model.holder import ModelHolder
    from daemon.records import Claim, ModelInfo
    from daemon.scan.protocol import Finished
    from daemon.scan.slices import SliceRecord
    from daemon.service.attempts import AttemptLog
    from daemon.service.status import Counters
    from daemon.workers.process import WorkerProcess

log = structlog.get_logger("infarctwatch.pipeline")

_STOP: Any = object()
_BATCH = 64
MAX_BATCH = 16
"""Claims per worker request at most. Larger batches mean fewer round trips and fewer flushes of
the file system (one per batch); 16 keeps half of the default 64 pending slots queued behind the
two workers' batches, so a worker never waits for the watcher to claim its next batch
(docs/performance.md, Experiments)."""


class Pipeline:
    """The running stages. `start` it, `offer` it paths, `drain` it to stop."""

    def __init__(
        self,
        config: DaemonConfig,
        holder: ModelHolder,
        area: ClaimArea,
        counters: Counters,
        decoders: list[WorkerProcess],
        *,
        attempts: AttemptLog | None = None,
    ) -> None:
        self._config = config
        self._attempts = attempts
        self._holder = holder
        self._area = area
        self._counters = counters
        self._slots = threading.Semaphore(config.pipeline.max_pending)
        self._claims: queue.Queue[Claim] = queue.Queue()
        self._results: queue.SimpleQueue[ScanResult] = queue.SimpleQueue()
        self._open: dict[str, Claim] = {}
        self._in_flight: dict[int, tuple[Claim, ...]] = {}
        """The batch each worker process is scanning now, by worker index (under ``_open_lock``)."""
        self._open_lock = threading.Lock()
        self._aside: dict[str, ScanResult] = {}
        """Claims the repeat guard set aside, with their report (never scanned again)."""
        self._idle = threading.Event()
        self._idle.set()
        self._accepting = True
        self.storage = StorageGuard([config.reports, *area.folders()], on_recovered=self._requeue)
        """Holds claims while reports or outcomes cannot be written; probes; hands them back."""
        self.on_room: Callable[[], None] = lambda: None
        """Called (writer thread) each time a slot frees; the watcher's `room`."""
        self.on_series: Callable[[SliceRecord], None] = lambda _record: None
        """Called with the series record of each reported image of a series; the series
        tracker's `add`."""
        self.on_return: Callable[[Path], None] = lambda _path: None
        """Called when a claim was put back into incoming, with its path; the watcher's
        `returned`."""
        self.on_reported: Callable[[str], None] = lambda _scan_id: None
        """Called (worker or writer thread) with the scan id of each scan reported with a
        prediction; the outbox writer's `notify`."""
        self._recheck: Rechecker[tuple[Rejected, ModelInfo]] = Rechecker(
            config.watch.grace_s, self._decide
        )
        self._workers = [
            threading.Thread(
                target=self._scan_loop,
                args=(decoder,),
                name=f"infarctwatch-worker-{decoder.index}",
                daemon=True,
            )
            for decoder in decoders
        ]
        self._decoders = decoders
        self._setup = ScanSetup(
            config.reports,
            config.inference.top_k,
            area,
            config.inference,
            (config.limits.b_value_min, config.limits.b_value_max)
            if config.limits.dicom_header_rules
            else None,
            config.thresholds,
            None
            if config.outputs.dicom.outbox is None
            else staging_folder(config.outputs.dicom.outbox),
        )
        self._writer = threading.Thread(
            target=self._write_loop, name="infarctwatch-report", daemon=True
        )

    def start(self) -> None:
        """Start the scan workers, the report writer and the storage guard."""
        for thread in (*self._workers, self._writer):
            thread.start()
        self.storage.start()
        self._recheck.start()

    # -- intake ---------------------------------------------------------------------------------

    @property
    def decoder_restarts(self) -> int:
        """How many scan worker processes were replaced after a crash or a timeout."""
        return sum(decoder.restarts for decoder in self._decoders)

    @property
    def pending(self) -> int:
        """Claims taken and not yet reported (the queue depth)."""
        return len(self._open)

    def offer(self, path: Path) -> Offer:
        """Claim ``path`` if there is room and storage works (any thread)."""
        if not self._accepting or self.storage.degraded:
            return Offer.BUSY
        if not self._slots.acquire(blocking=False):
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

    def set_aside(self, claims: Iterable[tuple[Claim, Failure]], stop: threading.Event) -> None:
        """Report ``claims`` with their failure without scanning them (the repeat guard)."""
        model = self._holder.current
        for claim, failure in claims:
            while not self._slots.acquire(timeout=0.2):
                if stop.is_set():
                    return
            with self._open_lock:
                self._open[claim.claim_id + "/" + claim.name] = claim
                self._idle.clear()
            source = source_of(claim, self._config.limits.max_file_bytes)
            result = ScanResult(claim, source, model.info, failure=failure)
            self._aside[claim.claim_id + "/" + claim.name] = result
            self._results.put(result)

    def _admit(self, claim: Claim) -> None:
        with self._open_lock:
            self._open[claim.claim_id + "/" + claim.name] = claim
            self._idle.clear()
        log.debug("claimed", claim=claim.claim_id)
        self._claims.put(claim)

    # -- scan workers -------------------------------------------------------------------------

    def _scan_loop(self, worker: WorkerProcess) -> None:
        """Feed one worker process batches of claims and log what it finished, until stopped."""
        try:
            worker.scan((), self._model(), self._setup)  # compile the model before any scan
        except WorkerStartError as exc:
            log.error("decoder_unavailable", worker=worker.index, error=str(exc))  # noqa: TRY400 - the message says it all
            return
        carry: Claim | None = None
        while True:
            batch, stop, carry = self._take_batch(carry)
            if batch and not self.storage.hold(batch):  # held: scanned once storage is back
                try:
                    self._scan_batch(worker, batch)
                except WorkerStartError as exc:
                    # Without a worker this thread is done: the service sees it (`dead_stages`)
                    # and stops with exit code 1; the claims stay in processing/ for the next start.
                    log.error("decoder_unavailable", worker=worker.index, error=str(exc))  # noqa: TRY400 - the message says it all
                    for claim in batch:
                        self._forget(claim)
                    return
                except Exception as exc:  # a bug here: each claim gets its own error report
                    log.exception("batch_failed", worker=worker.index, claims=len(batch))
                    self._report_internal(batch, f"unexpected {type(exc).__name__}: {exc}")
            if stop:
                return

    def _scan_batch(self, worker: WorkerProcess, batch: tuple[Claim, ...]) -> None:
        """One batch through ``worker``: logged and counted, or handed to the writer."""
        stage = f"worker-{worker.index}"
        if self._attempts is not None:
            self._attempts.mark(stage, batch)
        with self._open_lock:
            self._in_flight[worker.index] = batch
        try:
            model = self._holder.current  # the model in service for this whole batch
            answers = worker.scan(batch, model.choice, self._setup)
            for answer in answers:
                if isinstance(answer, Rejected) and answer.fingerprint is not None:
                    self._recheck.add((answer, model.info))  # maybe still being written
                elif isinstance(answer, Rejected):  # the worker died on it: reported from here
                    self._results.put(
                        ScanResult(
                            answer.claim,
                            answer.source,
                            model.info,
                            failure=answer.failure,
                            decode_ms=answer.decode_ms,
                        )
                    )
                else:
                    self._finished(answer)
        finally:
            with self._open_lock:
                self._in_flight.pop(worker.index, None)
            if self._attempts is not None:
                self._attempts.unmark(stage)

    def _report_internal(self, claims: Iterable[Claim], message: str) -> None:
        """Hand ``claims`` to the writer as ``INTERNAL_ERROR`` (a bug in this process).

        Only those still open and still in processing/: the others were reported already.
        """
        info = self._holder.current.info
        for claim in claims:
            with self._open_lock:
                still_open = claim.claim_id + "/" + claim.name in self._open
            if not still_open or self.storage.held_claim(claim):
                continue
            if not os.path.lexists(claim.path):
                self._forget(claim)
                continue
            source = source_of(claim, self._config.limits.max_file_bytes)
            failure = Failure(InternalError.code, message)
            self._results.put(ScanResult(claim, source, info, failure=failure))

    def _alone(self, claim: Claim) -> bool:
        return self._attempts is not None and self._attempts.is_suspect(claim)

    def _take_batch(self, carry: Claim | None) -> tuple[tuple[Claim, ...], bool, Claim | None]:
        """The next claim (waiting for it) and those queued behind it, up to `MAX_BATCH`.

        A crash suspect (`service.attempts`) is a batch of its own; one met while collecting is
        carried over to the next batch. Returns the batch, whether the stop marker came with it,
        and the claim carried over.
        """
        first = carry if carry is not None else self._claims.get()
        if first is _STOP:
            return (), True, None
        batch = [first]
        if self._alone(first):
            return tuple(batch), False, None
        with contextlib.suppress(queue.Empty):
            while len(batch) < MAX_BATCH:
                claim = self._claims.get_nowait()
                if claim is _STOP:
                    return tuple(batch), True, None
                if self._alone(claim):
                    return tuple(batch), False, claim
                batch.append(claim)
        return tuple(batch), False, None

    def _model(self) -> ModelChoice:
        return self._holder.current.choice

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
                self._commit(results)
            if stop:
                return

    def _commit(self, results: list[ScanResult]) -> None:
        """The writer's group commit; a bug in it leaves the claims in processing/, logged."""
        if self._attempts is not None:
            self._attempts.mark("writer", (r.claim for r in results))
        try:
            finished = commit(results, self._setup)
        except Exception:  # never seen: `encode_report` does not raise
            log.exception("report_commit_failed", claims=len(results))
            for result in results:
                self._forget(result.claim)  # left in processing/: taken up at the next start
            return
        finally:
            if self._attempts is not None:
                self._attempts.unmark("writer")
        for one in finished:
            self._finished(one)

    def _finished(self, finished: Finished) -> None:
        """Count and log a reported claim, and free its slot; storage trouble holds it instead."""
        gone = finished.outcome_error is not None and not os.path.lexists(finished.claim.path)
        if gone and finished.write_error is None:  # removed by someone: nothing to retry
            log.warning("outcome_failed", scan=finished.scan_id, error=finished.outcome_error)
        elif finished.write_error is not None or finished.outcome_error is not None:
            doing = (
                f"writing a report into {self._config.reports}"
                if finished.write_error is not None
                else "moving an input to its outcome folder"
            )
            error = finished.write_error or finished.outcome_error
            log.warning(
                "report_write_failed" if finished.write_error else "outcome_failed",
                scan=finished.scan_id,
                error=error,
                errno=errno_name(finished.errno),
                note="kept in processing/, scanned again once storage works",
            )
            reason = f"{errno_name(finished.errno)} ({error}) {doing}"
            self.storage.trouble([finished.claim], reason)
            return
        if finished.action == "unknown":
            log.warning("scan_reported_before_worker_died", scan=finished.scan_id)
            self._forget(finished.claim)
            return
        self._counters.record(ok=finished.ok, not_analysed=finished.reason is not None)
        self._log_scan(finished)
        if finished.failure is None and finished.reason is None and finished.label is not None:
            self.on_reported(finished.scan_id)
        for record in finished.series:
            self.on_series(record)
        self._forget(finished.claim)

    def _requeue(self, claims: list[Claim]) -> None:
        """Storage is back: scan the held claims again (they kept their slots), take new files.

        A claim set aside by the repeat guard is reported again without a scan.
        """
        for claim in claims:
            aside = self._aside.get(claim.claim_id + "/" + claim.name)
            if aside is not None:
                self._results.put(aside)
            else:
                self._claims.put(claim)
        self.on_room()

    def _log_scan(self, finished: Finished) -> None:
        timing = finished.timing or {}
        if finished.failure is None and finished.reason is not None:
            log.info(
                "scan",
                scan=finished.scan_id,
                status="not_analysed",
                code=finished.reason.code,
                message=finished.reason.message,
                latency_ms=round(timing.get("total_ms") or 0.0, 1),
                decode_ms=round(timing.get("decode_ms") or 0.0, 1),
                input=finished.action,
            )
        elif finished.failure is None:
            maps = {} if finished.lesions is None else {"lesions": finished.lesions}
            log.info(
                "scan",
                scan=finished.scan_id,
                status="ok",
                label=finished.label,
                probability=round(finished.probability or 0.0, 4),
                latency_ms=round(timing.get("total_ms") or 0.0, 1),
                decode_ms=round(timing.get("decode_ms") or 0.0, 1),
                infer_ms=round(timing.get("infer_ms") or 0.0, 2),
                input=finished.action,
                **maps,
            )
        else:
            log.warning(
                "scan",
                scan=finished.scan_id,
                status="error",
                code=finished.failure.code,
                message=finished.failure.message,
                latency_ms=round(timing.get("total_ms") or 0.0, 1),
                input=finished.action,
            )

    def _forget(self, claim: Claim) -> None:
        if self._attempts is not None:
            self._attempts.forget(claim)
        if self._aside:
            self._aside.pop(claim.claim_id + "/" + claim.name, None)
        with self._open_lock:
            self._open.pop(claim.claim_id + "/" + claim.name, None)
            if not self._open:
                self._idle.set()
        self._slots.release()
        self.on_room()

    # -- health and shutdown ------------------------------------------------------------------

    def dead_stages(self) -> list[str]:
        """The names of the stage threads that have ended (none while the pipeline runs).

        Storage trouble is not in it: that is the storage guard's degraded state.
        """
        threads = (*self._workers, self._writer)
        dead = [t.name for t in threads if not t.is_alive()]
        if not self.storage.alive:
            dead.append("infarctwatch-storage")
        if not self._recheck.alive:
            dead.append("infarctwatch-recheck")
        return dead

    def healthy(self) -> bool:
        """Every stage thread alive."""
        return not self.dead_stages()

    def drain(self, timeout: float, force: threading.Event) -> tuple[list[Claim], list[Claim]]:
        """Stop taking files, finish what is pending within ``timeout``, stop every thread.

        Returns the claims left unreported (the timeout passed, or ``force`` was set): those never
        handed to a worker, which stay in processing/ and are taken up again at the next start,
        and those in a batch a worker process was still scanning, which it may yet report before
        it sees the daemon gone (else they too stay in processing/).
        """
        self._accepting = False
        deadline = time.monotonic() + timeout
        while not self._idle.is_set() and not force.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.storage.degraded and self.pending <= self.storage.held):
                break  # what is left waits for storage: it stays in processing/
            self._idle.wait(min(remaining, 0.1))
        self._recheck.close()  # claims still waiting for their second look stay in processing/
        self.storage.close()
        with contextlib.suppress(queue.Empty):  # not started yet: leave them in processing/
            while True:
                self._claims.get_nowait()
        for _ in self._workers:
            self._claims.put(_STOP)
        for worker in self._workers:
            worker.join(timeout=None if self._idle.is_set() else 5.0)
        self._results.put(_STOP)
        self._writer.join(timeout=30.0)
        if self._attempts is not None:
            self._attempts.close()
        with self._open_lock:
            running = {c.claim_id + "/" + c.name for b in self._in_flight.values() for c in b}
            left = list(self._open.values())
        in_flight = [c for c in left if c.claim_id + "/" + c.name in running]
        return [c for c in left if c.claim_id + "/" + c.name not in running], in_flight
