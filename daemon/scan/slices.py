"""What one image report tells about its place in a series: a `SliceRecord`.

The scan worker makes one from each report it writes and sends it back with the claim's
`daemon.scan.protocol.Finished`; the series tracker (`daemon.series`) makes them from the image
reports already on disk when it rebuilds the series left open by a stop or a crash. Both read the
same report fields (``series_id``, ``source.dicom``, ``prediction``...), so a series rebuilt
after a restart is the series the live daemon would have built.

A record holds no patient attribute; ``name`` (the file name the sender chose) is for ordering a
folder series and for nothing else: it never goes into a log line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SliceRecord:
    """One image of a series, as its report describes it."""

    series_id: str
    scan_id: str
    name: str
    status: str
    """The image report's ``status``: ``ok``, ``not_analysed`` or ``error``."""
    received_at: str
    """The image report's ``timing.received_at`` (ISO 8601, UTC)."""
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    instance_number: int | None = None
    slice_position: float | None = None
    orientation: tuple[float, ...] | None = None
    b_value: float | None = None
    image_type: tuple[str, ...] = ()
    modality: str | None = None
    series_description: str | None = None
    series_number: int | None = None
    manufacturer: str | None = None
    expected: int | None = None
    """ImagesInAcquisition: how many images the series should hold, when the header says."""
    reason_code: str | None = None
    reason_message: str | None = None
    error_code: str | None = None
    label: str | None = None
    probability: float | None = None
    finding: str | None = None
    """The image's ``prediction.finding`` (the bundle's calibrated thresholds), when it has one."""
    model: dict[str, Any] | None = field(default=None, compare=False)
    """The image report's ``model``."""
    frame: int | None = None
    """The frame's index in an enhanced multi-frame object (each frame is a slice); else None."""
    segmented: bool = False
    """The image report has lesion map fields (since 1.3: a bundle with a segmenter ran)."""
    lesion_mask: str | None = None
    """The report's ``lesion_mask``: the mask file, relative to the reports folder."""
    image_position: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, ...] | None = None
    """mm between rows, between columns (PixelSpacing)."""
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    probabilities: tuple[tuple[str, float], ...] = field(default=(), compare=False)
    """The report's ``prediction.probabilities`` (label, probability), in label order."""

    @property
    def key(self) -> str:
        """What makes two records the same image: the SOPInstanceUID (and frame), else the name."""
        base = self.sop_uid or f"name:{self.name}"
        return base if self.frame is None else f"{base}#{self.frame}"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    if not isinstance(value, list) or len(value) != count:
        return None
    numbers = tuple(_float(v) for v in value)
    return None if None in numbers else tuple(float(v) for v in numbers if v is not None)


def _probabilities(prediction: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    found = prediction.get("probabilities")
    if not isinstance(found, dict):
        return ()
    pairs = [(str(k), _float(v)) for k, v in found.items()]
    return tuple((k, v) for k, v in pairs if v is not None)


def slice_records(report: dict[str, Any]) -> tuple[SliceRecord, ...]:
    """The `SliceRecord` s of an image report.

    None when the image is in no series; one per frame of an enhanced multi-frame object (its
    report's ``frames``); else one.
    """
    record = slice_record(report)
    frames = report.get("frames")
    if record is None or not isinstance(frames, list) or not frames:
        return () if record is None else (record,)
    return tuple(_frame_record(record, frame) for frame in frames if isinstance(frame, dict))


def _frame_record(record: SliceRecord, frame: dict[str, Any]) -> SliceRecord:
    """One frame as a slice: its own position, b-value and prediction."""
    b_value = _float(frame.get("b_value"))
    one = dataclasses.replace(
        record,
        frame=_int(frame.get("index")),
        instance_number=None,
        slice_position=_float(frame.get("slice_position")),
        b_value=b_value,
        label=None,
        probability=None,
        finding=None,
        image_position=_floats(frame.get("image_position_patient"), 3),
        segmented=False,  # lesion maps are made for the image, not for each frame
        lesion_mask=None,
        probabilities=(),
    )
    if record.status != "ok":  # the whole object is out of scope or failed: so is each frame
        return one
    if frame.get("analysed"):
        label, probability = _str(frame.get("label")), _float(frame.get("probability"))
        finding = _str(frame.get("finding"))
        return dataclasses.replace(one, label=label, probability=probability, finding=finding)
    if frame.get("error"):
        return dataclasses.replace(one, status="error", error_code="INFERENCE_FAILED")
    message = (
        "frame not analysed"
        if b_value is None
        else f"frame b = {b_value:g} s/mm², outside the accepted range"
    )
    return dataclasses.replace(
        one, status="not_analysed", reason_code="NOT_B1000", reason_message=message
    )


def slice_record(report: dict[str, Any]) -> SliceRecord | None:
    """The `SliceRecord` of an image report as one image, or None when it is in no series."""
    series_id = report.get("series_id")
    if not isinstance(series_id, str) or report.get("kind", "image") != "image":
        return None
    source = report.get("source") or {}
    dicom = source.get("dicom") or {}
    prediction = report.get("prediction") or {}
    reason = report.get("reason") or {}
    error = report.get("error") or {}
    orientation = dicom.get("image_orientation_patient")
    return SliceRecord(
        series_id=series_id,
        scan_id=str(report.get("id")),
        name=str(source.get("name") or ""),
        status=str(report.get("status")),
        received_at=str((report.get("timing") or {}).get("received_at") or ""),
        study_uid=_str(dicom.get("study_instance_uid")),
        series_uid=_str(dicom.get("series_instance_uid")),
        sop_uid=_str(dicom.get("sop_instance_uid")),
        instance_number=_int(dicom.get("instance_number")),
        slice_position=_float(dicom.get("slice_position")),
        orientation=tuple(float(v) for v in orientation)
        if isinstance(orientation, list) and len(orientation) == 6
        else None,
        b_value=_float(dicom.get("diffusion_b_value")),
        image_type=tuple(str(v) for v in dicom.get("image_type") or ()),
        modality=_str(dicom.get("modality")),
        series_description=_str(dicom.get("series_description")),
        series_number=_int(dicom.get("series_number")),
        manufacturer=_str(dicom.get("manufacturer")),
        expected=_int(dicom.get("images_in_acquisition")),
        reason_code=_str(reason.get("code")),
        reason_message=_str(reason.get("message")),
        error_code=_str(error.get("code")),
        label=_str(prediction.get("label")),
        probability=_float(prediction.get("probability")),
        finding=_str(prediction.get("finding")),
        model=report.get("model") if isinstance(report.get("model"), dict) else None,
        segmented="lesion_mask" in report,
        lesion_mask=_str(report.get("lesion_mask")),
        image_position=_floats(dicom.get("image_position_patient"), 3),
        pixel_spacing=_floats(dicom.get("pixel_spacing"), 2),
        slice_thickness=_float(dicom.get("slice_thickness")),
        spacing_between_slices=_float(dicom.get("spacing_between_slices")),
        probabilities=_probabilities(prediction),
    )
