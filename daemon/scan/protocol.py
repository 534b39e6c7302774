"""Every message that crosses the pipe between the daemon and a scan worker process.

One request at a time, in order::

    daemon -> worker   READY is awaited first (the worker has started and warmed up)
    daemon -> worker   ScanRequest(claims, model or None, setup or None: sent when they change)
    worker -> daemon   [Finished, ...] one per claim, in the claims' order
                       | ModelFailed   the model named in the request cannot be served
                       | WorkerBug     the request raised outside any one claim
    daemon -> worker   STOP: exit

A claim the worker died or hung on never gets a `Finished`: the daemon scans the batch again a
claim at a time and reports the one that fails alone itself (`daemon.scan.read.Rejected`).
Messages are pickled: their classes live here, in one module both processes import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daemon.config import ThresholdsConfig
from daemon.shared.dicom_scope import B_RANGE

if TYPE_CHECKING:
    from pathlib import Path

    from daemon.config import InferenceConfig
    from daemon.intake.claims import ClaimArea
    from daemon.records import Claim, Failure
    from daemon.scan.slices import SliceRecord
    from daemon.shared.dicom_scope import OutOfScope

READY = "ready"
"""What a worker sends once it has started and warmed up its decoders."""
STOP = None
"""What the daemon sends to make a worker exit."""


@dataclass(frozen=True)
class ScanSetup:
    """What a worker needs to finish scans itself; fixed for the daemon's lifetime."""

    reports: Path
    top_k: int
    area: ClaimArea
    inference: InferenceConfig
    b_range: tuple[float, float] | None = B_RANGE
    """b-values (s/mm²) a DICOM file may declare and still be analysed (``limits.b_value_*``);
    ``None``: the DICOM header rules are off (``limits.dicom_header_rules: false``)."""
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)
    """The ``thresholds`` configuration: overrides of the bundle's (`daemon.scan.decision`)."""
    outbox_staging: Path | None = None
    """Where each analysed DICOM file gets a second name, ``<scan id>.dcm``, before its report is
    written, for the daemon's outbox writer (`daemon.outbox`); ``None``: no DICOM results."""


@dataclass(frozen=True)
class ModelChoice:
    """The bundle the daemon serves now: the worker compiles it when it changes."""

    path: Path
    variant: str
    sha256: str


@dataclass(frozen=True)
class ScanRequest:
    """A batch for a worker. ``setup`` and ``model`` travel only when they change (else None)."""

    claims: tuple[Claim, ...]
    model: ModelChoice | None = None
    setup: ScanSetup | None = None


@dataclass(frozen=True)
class ModelFailed:
    """The worker's answer when it cannot load or compile the model it was told to serve."""

    message: str


@dataclass(frozen=True)
class WorkerBug:
    """The worker's answer when a scan request raised outside any one claim (a bug in the worker).

    The daemon logs it with its traceback and scans the batch again a claim at a time.
    """

    kind: str
    message: str
    trace: str


@dataclass(frozen=True)
class Finished:
    """What a scan worker tells the daemon about a claim it has reported (for logs and counters).

    ``write_error`` set: the report could not be written, the input stays in processing/ (taken up
    again at the next start) and nothing else is set beyond the claim and the scan id.
    """

    claim: Claim
    scan_id: str
    label: str | None = None
    probability: float | None = None
    failure: Failure | None = None
    timing: dict[str, Any] | None = None
    """The report's ``timing``."""
    action: str = "left"
    """What happened to the input: ``moved``, ``kept``, ``deleted``, ``duplicate``, ``left`` (it
    stays in processing/), or ``unknown`` (a worker that died had already reported it)."""
    write_error: str | None = None
    outcome_error: str | None = None
    """Why the input could not be moved or deleted (it stays in processing/)."""
    errno: int | None = None
    """The ``errno`` of ``write_error`` or ``outcome_error`` (the storage guard's reason)."""
    reason: OutOfScope | None = None
    """Set for a ``not_analysed`` report: why the file got no prediction."""
    lesions: int | None = None
    """How many lesions the image's lesion map holds; None without a map (no segmenter)."""
    series: tuple[SliceRecord, ...] = ()
    """The image's place in its series (`daemon.scan.slices`): one record, one per frame of an
    enhanced multi-frame object, none for a single image."""

    @property
    def ok(self) -> bool:
        """True when nothing failed: a prediction, or a file found out of scope (``reason``)."""
        return self.failure is None
