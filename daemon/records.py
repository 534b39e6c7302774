"""The values a scan carries from claim to report. Frozen: no step changes another step's data.

Claim ──decode──> Decoded ──infer──> ScanResult ──report──> JSON + outcome ──> Finished
   ├──────────────(bad input)──────> ScanResult(failure=...)
   └──(not a DWI b1000 slice)──────> ScanResult(reason=...)

A scan worker process goes the whole way and sends the daemon a `Finished` per claim
(`daemon.scan.protocol`, with every other message that crosses the pipe).
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt
    from pathlib import Path

    import numpy as np
    import numpy.typing as npt

    from daemon.shared.decode import DicomInfo
    from daemon.shared.dicom_scope import OutOfScope
    from daemon.shared.preprocess import Placement


@dataclass(frozen=True)
class Claim:
    """A file the daemon has taken: it sits in ``processing/<claim_id>~<name>`` until reported."""

    claim_id: str
    path: Path
    name: str
    """Where the file was found, relative to the incoming folder (POSIX separators)."""
    received_at: dt.datetime
    received_monotonic: float


@dataclass(frozen=True)
class Source:
    """What the report says about the input file. Never a DICOM patient attribute."""

    name: str
    bytes: int | None = None
    sha256: str | None = None
    """``None`` when the file was not read (not a regular file, too large, unreadable)."""
    format: str | None = None
    width: int | None = None
    height: int | None = None
    bits: int | None = None
    dicom: DicomInfo | None = None


@dataclass(frozen=True)
class SegmenterInfo:
    """What makes the lesion maps: the segmenter of a format 2 bundle, as compiled."""

    variant: str
    weights_precision: str
    precision: str
    threshold: float
    """A pixel is lesion at or above this probability."""
    min_lesion_px: int
    """Connected parts smaller than this (input pixels) are dropped."""
    channels: tuple[str, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What made a prediction: the bundle, the precision actually used and the device."""

    name: str
    version: str
    bundle_sha256: str
    variant: str
    weights_precision: str
    precision: str
    """The inference precision OpenVINO really uses (``bf16`` on many CPUs for an FP32 IR)."""
    device_requested: str
    device_used: str
    labels: tuple[str, ...]
    segmenter: SegmenterInfo | None = None
    """The bundle's lesion segmenter; None for a classifier-only bundle (no lesion maps)."""

    @property
    def name_version(self) -> str:
        """``name version (variant, first 12 hex of the bundle sha256)``, for pictures."""
        return f"{self.name} {self.version} ({self.variant}, {self.bundle_sha256[:12]})"


@dataclass(frozen=True)
class Decoded:
    """A scan read, hashed, decoded and preprocessed: ready for inference."""

    claim: Claim
    source: Source
    tensor: npt.NDArray[np.float32]
    """``(H, W, C)``, or ``(H, W, 1)`` standing for C identical channels (how the scan worker
    processes send it); `daemon.scan.inference.Engine.submit` takes either."""
    decode_ms: float
    frames: tuple[tuple[int, npt.NDArray[np.float32]], ...] = ()
    """``(frame index, tensor)`` of each frame of an enhanced multi-frame object to analyse as a
    slice of its own (b-value in range, or none given); empty for any other file."""
    pixels: npt.NDArray[np.float32] | None = None
    """The decoded grey image the tensor was made from (for the lesion map and its overlay)."""
    placement: Placement | None = None
    """Where the tensor's square lies in `pixels` (`daemon.shared.preprocess.Placement`)."""
    header_dwi: bool = False
    """A DICOM MR image whose header passed every header rule and gives a b-value in the accepted
    range (an enhanced object: the frame it is classified by does): the image-level check applies
    its DICOM DWI threshold (`daemon.scan.decision.Rule.answer`)."""
    header_dwi_frames: frozenset[int] = frozenset()
    """The same for the frames of an enhanced multi-frame MR object: the indices of its frames to
    analyse whose own b-value (per-frame MR Diffusion) is in the accepted range."""


@dataclass(frozen=True)
class Failure:
    """Why a scan has no prediction: a stable code from `daemon.errors` and a message."""

    code: str
    message: str


@dataclass(frozen=True)
class Prediction:
    """The answer for one scan: probabilities in label order and the finding."""

    labels: tuple[str, ...]
    probabilities: tuple[float, ...]
    """Calibrated when `calibrated` is true (`daemon.scan.decision`)."""
    calibrated: bool = False
    finding: str = "indeterminate"
    """``acute_infarct``, ``no_acute_infarct`` or ``indeterminate`` (`daemon.scan.decision`)."""

    @functools.cached_property
    def index(self) -> int:
        """Index of the most probable label (the first one on a tie)."""
        return max(range(len(self.probabilities)), key=self.probabilities.__getitem__)

    @property
    def label(self) -> str:
        """The most probable label."""
        return self.labels[self.index]

    @property
    def probability(self) -> float:
        """Its probability."""
        return self.probabilities[self.index]

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable labels, most probable first (ties keep label order)."""
        order = sorted(range(len(self.labels)), key=lambda i: -self.probabilities[i])
        return [(self.labels[i], self.probabilities[i]) for i in order[:k]]


@dataclass(frozen=True)
class FramePrediction:
    """The network's output for one frame of an enhanced multi-frame object (or why none)."""

    index: int
    prediction: Prediction | None
    error: str | None = None


@dataclass(frozen=True)
class Lesion:
    """One connected lesion on a slice, in source pixels."""

    area_px: int
    area_mm2: float | None
    """``area_px`` x the pixel's area from PixelSpacing; None when the spacing is unknown."""
    bbox: tuple[int, int, int, int]
    """``(x0, y0, x1, y1)``: first and last column, first and last row inside (inclusive)."""
    centroid: tuple[float, float]
    """``(x, y)``: the mean column and row of its pixels."""

    def to_report(self) -> dict[str, Any]:
        """As the image report holds it (``lesions[]``)."""
        return {
            "area_px": self.area_px,
            "area_mm2": self.area_mm2,
            "bbox": list(self.bbox),
            "centroid": list(self.centroid),
        }


@dataclass(frozen=True)
class LesionMap:
    """The lesion map of one analysed image, or why there is none."""

    mask: npt.NDArray[np.bool_] | None
    """The lesion pixels at the source matrix (rows, columns); None when segmenting failed."""
    lesions: tuple[Lesion, ...] = ()
    pixels: npt.NDArray[np.float32] | None = None
    """The source grey image, kept for the overlay when there is a lesion (else None)."""
    segment_ms: float | None = None
    """The segmenter's inference latency."""
    mask_png: bytes | None = None
    """The mask file's content (`daemon.lesionmaps.files.encode_mask`), once encoded."""
    overlay_png: bytes | None = None
    """The overlay file's content (`daemon.lesionmaps.overlay`) of a slice with a lesion."""
    error: str | None = None
    """Why there is no map (the segmenter failed); the image's prediction stands."""

    def disagrees_with(self, finding: str) -> bool:
        """True when ``finding`` is not ``acute_infarct`` but the map marks a lesion."""
        return finding != "acute_infarct" and bool(self.lesions)


@dataclass(frozen=True)
class ScanResult:
    """The end of the line for one claim: a prediction or a failure, and the timings."""

    claim: Claim
    source: Source
    model: ModelInfo
    """The model in service: the one that ran, or would have run on a scan that failed."""
    prediction: Prediction | None = None
    failure: Failure | None = None
    decode_ms: float | None = None
    infer_ms: float | None = None
    reason: OutOfScope | None = None
    """Set when the file is not a DWI b1000 slice (``not_analysed``): no prediction, no failure."""
    frames: tuple[FramePrediction, ...] = ()
    """Each frame analysed as a slice of its own (`Decoded.frames`), in frame order."""
    lesion_map: LesionMap | None = None
    """The segmenter's lesion map of an analysed image (`daemon.lesionmaps.slice`); None when
    the bundle has no segmenter or the image got no prediction."""
    adc_png: bytes | None = None
    """An ADC map's values as a 16-bit PNG (`daemon.lesionmaps.files.encode_adc`), kept for the
    lesions of its study's DWI series; None for every other file."""

    @property
    def ok(self) -> bool:
        """True when nothing failed: a prediction, or a file found out of scope."""
        return self.failure is None

    @property
    def status(self) -> str:
        """The report's ``status``: ``ok``, ``not_analysed`` or ``error``."""
        if self.failure is not None:
            return "error"
        return "ok" if self.reason is None else "not_analysed"

    @functools.cached_property
    def scan_id(self) -> str:
        """The scan's short id in logs and its report's file name (see `scan_id`)."""
        return scan_id(self.claim, self.source.sha256)


def _sha(text: str) -> str:
    """sha256 of a name's raw bytes (`os.fsencode`: the bytes the file system holds)."""
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a surrogate no file system produced
        raw = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()


def scan_id(claim: Claim, sha256: str | None) -> str:
    """``<16 hex of the content sha256>-<8 hex of the name's sha256>``.

    The content part makes a re-run after a crash land on the same report (idempotent); the name
    part keeps two files with the same bytes under different names apart ("one report per
    input") without putting the name, which may hold a patient name, into logs. A file that was
    never read has no content hash: ``unread<10 hex of the claim id's sha256>`` stands in, stable
    across restarts because the claim id is (it is part of the claimed file's name).
    """
    name_tag = _sha(claim.name)[:8]
    if sha256:
        return f"{sha256[:16]}-{name_tag}"
    return f"unread{_sha(claim.claim_id)[:10]}-{name_tag}"


def series_id(series_instance_uid: str | None, name: str) -> str | None:
    """The id of the series a scan belongs to, or None for a single image.

    A DICOM image with a SeriesInstanceUID belongs to that series, whatever folder it came in:
    ``<20 hex of sha256("dicom:" + uid)>``. Any other file in a sub-folder of incoming (``name``
    holds a ``/``) belongs to its folder's series: ``<20 hex of sha256("folder:" + folder)>``,
    the folder being the name's parent path. A loose file in the top folder is a single image.
    The id names the series report (`daemon.series`) and never reveals the UID or the folder.
    """
    if series_instance_uid:
        return hashlib.sha256(f"dicom:{series_instance_uid}".encode()).hexdigest()[:20]
    folder, _, _ = name.rpartition("/")
    if folder:
        return _sha("folder:" + folder)[:20]
    return None
