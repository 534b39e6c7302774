"""A scan from end to end inside a worker process: decode, infer, report, outcome.

The daemon hands each worker process (`daemon.workers.process`) a batch of claims: every claim
that is queued, up to a handful. The worker

1. reads, hashes, decodes and preprocesses each claim (`daemon.scan.read.decode_claim`, the
   code the trainer shares);
2. runs the decoded ones through its own compiled model (`daemon.scan.inference.Engine`: an
   ``AsyncInferQueue`` whose callback stores each result) while the other workers decode: with
   one worker per core, decoding and inference overlap across the workers; the bundle's `Rule`
   (`daemon.scan.decision`) turns each image's outputs into a calibrated prediction with its
   finding, or refuses the image (``not_analysed``, ``OUT_OF_SCOPE_IMAGE``);
3. with a bundle that has a lesion segmenter, runs every image with a prediction through it
   (`daemon.scan.segment`): its lesion map, mask file and overlay;
4. waits for the last inference, then writes the batch's lesion map files and then its reports,
   each folder with one group commit (`daemon.fs.write_atomic_group`), and only then moves or
   deletes the inputs (`daemon.intake.claims.ClaimArea.finish`): a report is durable before its
   input leaves processing/;
5. answers with a `Finished` per claim, from which the daemon logs and counts.

Steps 1 to 3 are `scan_claims`, which ``infarctwatch evaluate`` (`daemon.evaluate.scoring`) runs
too, so that an evaluation scores exactly what the daemon would report.

Why here and not in the daemon process: a worker that owns its scans hands nothing but claims and
short answers across the pipe; pixels, probabilities and reports stay in the process that made
them (docs/performance.md has the measurements).

A worker's network runs in one stream of one thread (`Engine.compile` with ``one_thread``): the
workers share the cores between them, one scan each at a time.
"""

from __future__ import annotations

import dataclasses
import traceback
from typing import TYPE_CHECKING, Any

import structlog

from daemon.errors import InferenceError, InternalError
from daemon.fs import link_or_copy, write_atomic_group
from daemon.lesionmaps.files import encode_adc, write_map_files
from daemon.records import Decoded, Failure, FramePrediction, Prediction, ScanResult, Source
from daemon.scan.decision import Rule, resolve
from daemon.scan.inference import Engine, Outputs
from daemon.scan.protocol import Finished, ModelChoice, ModelFailed, ScanRequest, ScanSetup
from daemon.scan.read import NotAnalysed, Refused, Rejected, decode_claim, read_claimed
from daemon.scan.report import encode_report, report_path
from daemon.scan.segment import segment_batch
from daemon.scan.slices import slice_records
from daemon.shared.bundle import load_bundle

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from daemon.records import Claim, ModelInfo
    from daemon.scan.slices import SliceRecord
    from daemon.shared.decode import DecodeLimits
    from daemon.shared.preprocess import PreprocessSpec

log = structlog.get_logger("infarctwatch.worker")


class ScanWorker:
    """The worker process's state: its limits, its setup and its compiled model."""

    def __init__(
        self, limits: DecodeLimits, max_bytes: int, alive: Callable[[], bool] = lambda: True
    ) -> None:
        self._limits = limits
        self._alive = alive
        self._max_bytes = max_bytes
        self._setup: ScanSetup | None = None
        self._model: ModelChoice | None = None
        self._engine: Engine | None = None
        self._rule: Rule | None = None

    def handle(self, request: ScanRequest) -> list[Finished | Rejected] | ModelFailed:
        """Scan a batch (an empty one only loads the model), or say the model cannot be served.

        A claim found truncated or empty comes back unreported, as a `Rejected` with its
        fingerprint: the daemon looks at it again later (`daemon.intake.recheck`).
        """
        if request.setup is not None:
            self._setup = request.setup
        if request.model is not None and request.model != self._model:
            failed = self._load(request.model)
            if failed is not None:
                return failed
        if self._setup is None or self._engine is None or self._rule is None:
            return ModelFailed("the daemon sent claims before a setup and a model")
        return self._scan(request.claims, self._engine, self._rule, self._setup)

    def _load(self, model: ModelChoice) -> ModelFailed | None:
        assert self._setup is not None  # noqa: S101 - sent with the first request
        try:
            bundle = load_bundle(model.path)
            if bundle.sha256 != model.sha256:
                return ModelFailed(f"bundle {model.path} changed since the daemon loaded it")
            engine = Engine.compile(bundle, self._setup.inference, model.variant, one_thread=True)
            rule = resolve(bundle, self._setup.thresholds)
        except Exception as exc:  # noqa: BLE001 - any reason is reported to the daemon
            return ModelFailed(f"{type(exc).__name__}: {exc}")
        if self._engine is not None:
            self._engine.close()
        self._engine, self._rule, self._model = engine, rule, model
        return None

    def _scan(
        self, claims: tuple[Claim, ...], engine: Engine, rule: Rule, setup: ScanSetup
    ) -> list[Finished | Rejected]:
        spec = engine.bundle.preprocess

        adc_maps = engine.segmenter is not None  # the series' lesions are checked against ADC

        def decode(claim: Claim) -> Decoded | Rejected | NotAnalysed:
            return guarded_decode(
                claim, spec, self._limits, self._max_bytes, setup.b_range, adc_maps=adc_maps
            )

        results, later = scan_claims(claims, engine, rule, decode)
        if not self._alive():  # the daemon died: its successor takes these claims up
            raise SystemExit(0)
        return [*commit(results, setup), *later]


def guarded_decode(
    claim: Claim,
    spec: PreprocessSpec,
    limits: DecodeLimits,
    max_bytes: int,
    b_range: tuple[float, float] | None,
    *,
    adc_maps: bool = False,
) -> Decoded | Rejected | NotAnalysed:
    """`decode_claim`; an unexpected exception (a bug) is this claim's INTERNAL_ERROR."""
    try:
        return decode_claim(claim, spec, limits, max_bytes, b_range, adc_maps=adc_maps)
    except Exception as exc:  # noqa: BLE001 - one claim's bug must not take the batch down
        error = InternalError(f"unexpected {type(exc).__name__} while decoding: {exc}")
        trace = traceback.format_exc(limit=-3)
        failure = Failure(error.code, f"{error.message} ({trace.strip().splitlines()[-1]})")
        return Rejected(claim, source_of(claim, max_bytes), failure, 0.0)


def scan_claims(
    claims: Sequence[Claim],
    engine: Engine,
    rule: Rule,
    decode: Callable[[Claim], Decoded | Rejected | NotAnalysed],
) -> tuple[list[ScanResult], list[Rejected]]:
    """Decode each claim, infer the decoded ones on ``engine``: a result per claim, in order.

    ``rule`` turns each image's outputs into its prediction or refusal (`inferred_result`).
    What a worker runs for a batch before writing its reports, and what ``infarctwatch
    evaluate`` runs over a labelled folder. A claim found truncated or empty (a `Rejected` with a
    fingerprint: maybe still being written) gets no result; it is returned apart.
    """
    info = engine.info
    results: list[ScanResult | None] = [None] * len(claims)

    def inferred(
        job: tuple[int, Decoded], outputs: Outputs | None, latency_ms: float, error: str | None
    ) -> None:  # OpenVINO's callback thread: only store the result
        index, decoded = job
        results[index] = inferred_result(
            info, rule, decoded, outputs, latency_ms=latency_ms, error=error
        )

    frames = _Frames(rule, len(claims))
    decoded: list[Decoded | None] = [None] * len(claims)
    later: list[Rejected] = []
    for index, claim in enumerate(claims):
        outcome = decode(claim)
        if isinstance(outcome, Rejected) and outcome.fingerprint is not None:
            later.append(outcome)  # maybe still being written: the daemon looks again
        elif isinstance(outcome, Decoded):
            # The decoded image is kept only for a segmenter (its map and overlay): a batch of
            # large images must not stay in memory for nothing.
            keep = engine.segmenter is not None
            decoded[index] = outcome if keep else dataclasses.replace(outcome, pixels=None)
        else:
            results[index] = unscanned_result(info, outcome)
    # Inference after decoding, not interleaved with it: the callbacks then never wait for this
    # thread's GIL, and the other workers keep the cores busy meanwhile (docs/performance.md,
    # Experiments).
    for index, job in enumerate(decoded):
        if job is not None:
            engine.submit(job.tensor, (index, job), inferred)
            frames.submit(engine, index, job)
    engine.wait()
    for index, job in enumerate(decoded):
        if results[index] is None and job is not None:  # no callback: never seen, but no loss
            results[index] = inferred_result(
                info, rule, job, None, latency_ms=0.0, error="OpenVINO never answered"
            )
    frames.attach(results, decoded)
    if engine.segmenter is not None:
        segment_batch(engine.segmenter, engine.bundle.preprocess, results, decoded)
    return [r for r in results if r is not None], later


def unscanned_result(model: ModelInfo, outcome: Rejected | NotAnalysed) -> ScanResult:
    """A claim that never reaches inference: its failure, or why it is out of scope."""
    if isinstance(outcome, NotAnalysed):
        return ScanResult(
            outcome.claim,
            outcome.source,
            model,
            decode_ms=outcome.decode_ms,
            reason=outcome.reason,
            adc_png=None if outcome.adc is None else encode_adc(outcome.adc),
        )
    return ScanResult(
        outcome.claim, outcome.source, model, failure=outcome.failure, decode_ms=outcome.decode_ms
    )


class _Frames:
    """The frames of a batch's enhanced multi-frame objects: each inferred as a slice of its own."""

    def __init__(self, rule: Rule, count: int) -> None:
        self._rule = rule
        self._found: list[dict[int, FramePrediction]] = [{} for _ in range(count)]
        self._header_dwi: list[frozenset[int]] = [frozenset()] * count

    def submit(self, engine: Engine, index: int, job: Decoded) -> None:
        """Start inference on each frame of ``job`` to analyse (none for most files)."""
        self._header_dwi[index] = job.header_dwi_frames
        for frame, tensor in job.frames:
            engine.submit(tensor, (index, frame), self._done)

    def _done(
        self, job: tuple[int, int], outputs: Outputs | None, _latency_ms: float, error: str | None
    ) -> None:  # OpenVINO's callback thread: only store the result
        index, frame = job
        self._found[index][frame] = frame_prediction(
            self._rule, frame, outputs, error, header_dwi=frame in self._header_dwi[index]
        )

    def attach(self, results: list[ScanResult | None], decoded: list[Decoded | None]) -> None:
        """Give each result of an enhanced object its frames' predictions, in frame order."""
        for index, job in enumerate(decoded):
            result = results[index]
            if job is None or not job.frames or result is None:
                continue
            found = self._found[index]
            results[index] = dataclasses.replace(
                result,
                frames=tuple(
                    found.get(frame)
                    or frame_prediction(self._rule, frame, None, "OpenVINO never answered")
                    for frame, _ in job.frames
                ),
            )


def frame_prediction(
    rule: Rule,
    index: int,
    outputs: Outputs | None,
    error: str | None,
    *,
    header_dwi: bool = False,
) -> FramePrediction:
    """The answer for one frame of an enhanced multi-frame object, by the bundle's `Rule`.

    ``header_dwi``: the frame's own header says DWI in range (`Decoded.header_dwi_frames`). A
    frame the rule refuses (``OUT_OF_SCOPE_IMAGE``) has no prediction; its reason is the error.
    """
    if outputs is None:
        return FramePrediction(index, None, error or "inference failed")
    answer = rule.answer(outputs.classes, outputs.in_scope, header_dwi=header_dwi)
    if isinstance(answer, Prediction):
        return FramePrediction(index, answer)
    return FramePrediction(index, None, f"{answer.code}: {answer.message}")


def inferred_result(
    model: ModelInfo,
    rule: Rule,
    job: Decoded,
    outputs: Outputs | None,
    *,
    latency_ms: float,
    error: str | None,
) -> ScanResult:
    """The result of one inference: a prediction, a refused image, or INFERENCE_FAILED."""
    if outputs is None:
        failure = Failure(InferenceError.code, error or "inference failed")
        return ScanResult(job.claim, job.source, model, None, failure, job.decode_ms)
    answer = rule.answer(outputs.classes, outputs.in_scope, header_dwi=job.header_dwi)
    if isinstance(answer, Prediction):
        return ScanResult(job.claim, job.source, model, answer, None, job.decode_ms, latency_ms)
    return ScanResult(
        job.claim, job.source, model, decode_ms=job.decode_ms, infer_ms=latency_ms, reason=answer
    )


def commit(results: list[ScanResult], setup: ScanSetup) -> list[Finished]:
    """Write the reports of ``results`` (one group commit), then apply the outcomes.

    Lesion map files (masks, overlays) are written before the reports that name them; a report
    whose map files could not be written is not written either (its input stays in processing/,
    like any report that cannot be written).

    With an outbox, each analysed DICOM file is first linked into its staging folder
    (`stage_for_outbox`), so that the link is as durable as the report and outlives the outcome.
    """
    encoded = [encode_report(result, setup.top_k) for result in results]
    if setup.outbox_staging is not None:
        stage_for_outbox(results, setup.outbox_staging)
    errors = write_map_files(
        setup.reports,
        [(r.scan_id, r.lesion_map) for r in results],
        adc=[(r.scan_id, r.adc_png) for r in results],
    )
    ready = [index for index, error in enumerate(errors) if error is None]
    written = write_atomic_group(
        [(report_path(setup.reports, results[index]), encoded[index][1]) for index in ready]
    )
    for index, error in zip(ready, written, strict=True):
        errors[index] = error
    finished = []
    for result, (report, _), error in zip(results, encoded, errors, strict=True):
        if error is not None:
            message = error.strerror or str(error)
            finished.append(
                Finished(result.claim, result.scan_id, write_error=message, errno=error.errno)
            )
            continue
        outcome_error, code = None, None
        failure = result.failure
        if failure is None and report["status"] == "error":  # a bug while building the report
            failure = Failure(report["error"]["code"], report["error"]["message"])
        try:
            action = setup.area.finish(
                result.claim, ok=failure is None, sha256=result.source.sha256
            )
        except OSError as exc:
            action = "left"  # stays in processing/: scanned again once storage is back
            outcome_error, code = exc.strerror or str(exc), exc.errno
        prediction = result.prediction if failure is None else None
        finished.append(
            Finished(
                result.claim,
                result.scan_id,
                label=None if prediction is None else prediction.label,
                probability=None if prediction is None else prediction.probability,
                failure=failure,
                timing=report["timing"],
                action=action,
                outcome_error=outcome_error,
                errno=code,
                reason=result.reason if failure is None else None,
                lesions=len(report["lesions"]) if isinstance(report.get("lesions"), list) else None,
                series=_series_records(report, result.scan_id),
            )
        )
    return finished


def stage_for_outbox(results: list[ScanResult], staging: Path) -> None:
    """Link each analysed DICOM file of ``results`` to ``<staging>/<scan id>.dcm``.

    Only a prediction on a DICOM source is staged. A file that cannot be staged is logged (by
    scan id) and loses its DICOM result only: the scan and its report go on.
    """
    for result in results:
        if result.status != "ok" or result.source.dicom is None or result.prediction is None:
            continue
        try:
            link_or_copy(result.claim.path, staging / f"{result.scan_id}.dcm")
        except OSError as exc:
            log.warning(
                "outbox_stage_failed",
                scan=result.scan_id,
                error=exc.strerror or str(exc),
                errno=exc.errno,
            )


def source_of(claim: Claim, max_bytes: int) -> Source:
    """What an error report can say about a file that could not be decoded: size and sha256.

    Read without decoding anything, so the report of a file that crashes its decoder gets the
    same content-based name after a restart (idempotent) like every other report.
    """
    try:
        _, source = read_claimed(claim, max_bytes)
    except Refused as refused:
        return refused.source
    return source


def _series_records(report: dict[str, Any], scan: str) -> tuple[SliceRecord, ...]:
    """`slice_records`; a bug there costs the series this image (logged), never the batch."""
    try:
        return slice_records(report)
    except Exception:
        log.exception("series_record_failed", scan=scan)
        return ()
