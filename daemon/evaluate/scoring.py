"""Run every file of an evaluation through the daemon's own scan path and keep what its report says.

Each file becomes a `daemon.records.Claim` pointing at the file where it is (nothing is moved or
renamed), and batches of claims go through `daemon.scan.worker.scan_claims`: the function a scan
worker runs for a batch (read, hash, decode, the DICOM header rules, preprocessing, inference on
the compiled bundle). Each result is turned into its report with `daemon.scan.report.build_report`,
and a `Row` is read from the report: status, reason or error code, label, probabilities, finding.
So whatever the daemon decides for a file (a header rule, a refusal, a calibration) is what
evaluate scores.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.records import Claim
from daemon.scan.report import build_report
from daemon.scan.worker import guarded_decode, scan_claims, unscanned_result

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from daemon.evaluate.inputs import Item
    from daemon.records import Decoded, ScanResult
    from daemon.scan.decision import Rule
    from daemon.scan.inference import Engine
    from daemon.scan.read import NotAnalysed, Rejected
    from daemon.shared.decode import DecodeLimits

BATCH = 32
"""Claims decoded, then inferred, together (`scan_claims`): the engine's requests stay busy."""


@dataclass(frozen=True)
class Row:
    """One scored file: the item and what the daemon's report says about it."""

    item: Item
    status: str
    """``ok``, ``not_analysed`` or ``error``."""
    code: str
    """``reason.code`` (not_analysed), ``error.code`` (error), '' (ok)."""
    format: str
    """``source.format`` (png, jpeg, dicom...), else the file's extension."""
    label: str = ""
    probability: float | None = None
    finding: str = ""
    """``prediction.finding`` when the report has one."""
    probabilities: tuple[float, ...] = ()
    """``prediction.probabilities`` in the model's label order (ok rows)."""


@dataclass(frozen=True)
class ScanSettings:
    """What the scan path needs besides the engine: the daemon's limits and header rules."""

    limits: DecodeLimits
    max_bytes: int
    b_range: tuple[float, float] | None
    top_k: int


def _extension_format(rel: str) -> str:
    suffix = rel.rsplit(".", 1)[-1].lower() if "." in rel else ""
    return {"jpg": "jpeg", "dcm": "dicom", "tif": "tiff"}.get(suffix, suffix or "none")


def row_of(item: Item, report: dict[str, Any], classes: Sequence[str]) -> Row:
    """The row of ``item`` read from its report."""
    status = str(report["status"])
    fmt = report["source"].get("format") or _extension_format(item.rel)
    if status == "error":
        return Row(item, status, str(report["error"]["code"]), fmt)
    if status != "ok" or report.get("prediction") is None:
        reason = report.get("reason") or {}
        return Row(item, status, str(reason.get("code", "")), fmt)
    prediction = report["prediction"]
    by_label = prediction["probabilities"]
    return Row(
        item,
        status,
        "",
        fmt,
        str(prediction["label"]),
        float(prediction["probability"]),
        str(prediction.get("finding") or ""),
        tuple(float(by_label[name]) for name in classes),
    )


def _claims(root: Path, items: Sequence[Item], start: int) -> list[Claim]:
    now, clock = dt.datetime.now(dt.UTC), time.monotonic()
    return [
        Claim(f"evaluate-{start + i:07d}", root / item.rel, item.rel, now, clock)
        for i, item in enumerate(items)
    ]


def score(
    root: Path,
    items: Sequence[Item],
    engine: Engine,
    rule: Rule,
    *,
    settings: ScanSettings,
    done: Callable[[int], None] = lambda _n: None,
) -> Iterator[Row]:
    """Score ``items`` (files under ``root``) in order, `BATCH` at a time; then ``done(n)``.

    ``rule`` is the bundle's decision rule with the configuration's thresholds
    (`daemon.scan.decision.resolve`): calibration, findings, the in_scope refusal.
    """
    spec = engine.bundle.preprocess
    classes = engine.info.labels

    def decode(claim: Claim) -> Decoded | Rejected | NotAnalysed:
        return guarded_decode(claim, spec, settings.limits, settings.max_bytes, settings.b_range)

    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        claims = _claims(root, batch, start)
        results, later = scan_claims(claims, engine, rule, decode)
        # A file found empty or truncated is final here: nobody is still writing it.
        by_claim: dict[str, ScanResult] = {r.claim.claim_id: r for r in results}
        by_claim.update({r.claim.claim_id: unscanned_result(engine.info, r) for r in later})
        for claim, item in zip(claims, batch, strict=True):
            report = build_report(by_claim[claim.claim_id], settings.top_k)
            yield row_of(item, report, classes)
        done(len(batch))
