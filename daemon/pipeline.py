"""Wires the stages: claim -> decode workers -> OpenVINO -> report writer.

Threads and processes::

    observer / scanner ──offer()──> claim (rename) ──> decode queue
    decode worker threads (pipeline.decode_workers), each with its child process
        (`daemon.decode_workers`: read, hash, decode, preprocess) ──> Engine.submit ──> OpenVINO
                         └──(bad input, decoder crash or timeout)───────────┐
    OpenVINO callback ──────────────────────────────────────────────> results queue
    report writer (one thread) ──> reports (group commit), outcomes (move/keep/delete), logs

Back-pressure: a claim takes one of ``pipeline.max_pending`` slots and gives it back once its
report is written. With no free slot `Pipeline.offer` answers `Offer.BUSY` and the file stays in
incoming/ (the watcher offers it again when `room` is called). Memory is therefore bounded by
``max_pending`` claims (a path each) plus one file and one 196 kB tensor per decode worker;
inference back-pressures the workers itself (``start_async`` waits for a free request).

The writer commits in groups: it takes every result that is ready, writes their reports as
temporary files, makes them all durable with one flush of the file system
(`daemon.files.write_atomic_group`), renames them into place, fsyncs the reports folder once, and
only then moves or deletes the inputs. A report is durable before its input leaves processing/,
so a crash can only cause a scan to be done again, never lost.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog

from daemon.decode_stage import Rejected
from daemon.errors import DecoderStartError, InferenceError
from daemon.files import write_atomic_group
from daemon.intake import Offer
from daemon.jobs import Decoded, Failure, ModelInfo, Prediction, ScanResult
from daemon.report import encode_report, report_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    import numpy as np
    import numpy.typing as npt

    from daemon.claim import ClaimArea
    from daemon.config import DaemonConfig
    from daemon.decode_workers import DecodeWorker
    from daemon.engine import EngineHolder
    from daemon.jobs import Claim
    from daemon.status import Counters

log = structlog.get_logger("infarctwatch.pipeline")

_STOP: Any = object()
_BATCH = 64
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
        self.on_room: Callable[[], None] = lambda: None
        """Called (writer thread) each time a slot frees; the watcher's `room`."""
        self._workers = [
            threading.Thread(
                target=self._decode_loop,
                args=(decoder,),
                name=f"infarctwatch-decode-{decoder.index}",
                daemon=True,
            )
            for decoder in decoders
        ]
        self._decoders = decoders
        self._writer = threading.Thread(
            target=self._write_loop, name="infarctwatch-report", daemon=True
        )

    def start(self) -> None:
        """Start the decode workers and the report writer."""
        for thread in (*self._workers, self._writer):
            thread.start()

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

    # -- decode workers -----------------------------------------------------------------------

    def _decode_loop(self, decoder: DecodeWorker) -> None:
        while True:
            claim = self._claims.get()
            if claim is _STOP:
                return
            engine = self._holder.acquire()
            try:
                outcome = decoder.decode(claim, engine.bundle.preprocess)
            except DecoderStartError as exc:
                # Without a decoder this thread is done: the service sees it (`healthy`) and stops
                # with exit code 1; the claim stays in processing/ and is taken up at restart.
                engine.release()
                log.error("decoder_unavailable", worker=decoder.index, error=str(exc))  # noqa: TRY400 - the message says it all
                self._forget(claim)
                return
            if isinstance(outcome, Rejected):
                engine.release()
                self._results.put(
                    ScanResult(
                        outcome.claim,
                        outcome.source,
                        engine.info,
                        failure=outcome.failure,
                        decode_ms=outcome.decode_ms,
                    )
                )
            else:
                engine.submit(
                    outcome.tensor, outcome, functools.partial(self._inferred, engine.info)
                )

    def _inferred(
        self,
        model: ModelInfo,
        job: Decoded,
        probabilities: npt.NDArray[np.float32] | None,
        latency_ms: float,
        error: str | None,
    ) -> None:
        """OpenVINO's callback thread: only build the result and queue it (no logging here)."""
        if probabilities is None:
            failure = Failure(InferenceError.code, error or "inference failed")
            result = ScanResult(job.claim, job.source, model, None, failure, job.decode_ms)
        else:
            prediction = Prediction(model.labels, tuple(probabilities.tolist()))
            result = ScanResult(
                job.claim, job.source, model, prediction, None, job.decode_ms, latency_ms
            )
        self._results.put(result)

    # -- report writer ------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            batch = [self._results.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < _BATCH:
                    batch.append(self._results.get_nowait())
            stop = any(item is _STOP for item in batch)
            self._commit([item for item in batch if item is not _STOP])
            if stop:
                return

    def _commit(self, results: list[ScanResult]) -> None:
        folder = self._config.reports
        top_k = self._config.inference.top_k
        encoded = [encode_report(result, top_k) for result in results]
        errors = write_atomic_group(
            [
                (report_path(folder, result), data)
                for result, (_, data) in zip(results, encoded, strict=True)
            ]
        )
        for result, (report, _), error in zip(results, encoded, errors, strict=True):
            if error is not None:
                self._write_failures += 1
                log.error(
                    "report_write_failed", scan=result.scan_id, error=error.strerror or str(error)
                )
                self._forget(result.claim)  # the file stays in processing/: retaken at restart
                continue
            self._write_failures = 0
            try:
                action = self._area.finish(result.claim, ok=result.ok, sha256=result.source.sha256)
            except OSError as exc:
                action = "left"  # stays in processing/, reported again (same report) at restart
                log.warning("outcome_failed", scan=result.scan_id, error=exc.strerror or str(exc))
            self._counters.record(ok=result.ok)
            self._log_scan(result, report, action)
            self._forget(result.claim)

    def _log_scan(self, result: ScanResult, report: dict[str, Any], action: str) -> None:
        timing = report["timing"]
        if result.prediction is not None:
            log.info(
                "scan",
                scan=result.scan_id,
                status="ok",
                label=result.prediction.label,
                probability=round(result.prediction.probability, 4),
                latency_ms=round(timing["total_ms"], 1),
                decode_ms=round(timing["decode_ms"], 1),
                infer_ms=round(timing["infer_ms"], 2),
                input=action,
            )
        elif result.failure is not None:
            log.warning(
                "scan",
                scan=result.scan_id,
                status="error",
                code=result.failure.code,
                message=result.failure.message,
                latency_ms=round(timing["total_ms"], 1),
                input=action,
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
        alive = all(t.is_alive() for t in (*self._workers, self._writer))
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
        with contextlib.suppress(queue.Empty):  # not started yet: leave them in processing/
            while True:
                self._claims.get_nowait()
        for _ in self._workers:
            self._claims.put(_STOP)
        for worker in self._workers:
            worker.join(timeout=None if self._idle.is_set() else 5.0)
        self._holder.current.close()  # wait_all(): in-flight requests deliver their results
        self._results.put(_STOP)
        self._writer.join(timeout=30.0)
        with self._open_lock:
            return list(self._open.values())
