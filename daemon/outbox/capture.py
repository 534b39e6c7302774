"""The Secondary Capture image of one analysed DICOM slice: the slice in grey, the answer burned in.

`secondary_capture` takes the source file's bytes and its report and returns the encoded DICOM
file (Explicit VR Little Endian) made with highdicom's ``SCImage.from_ref_dataset``:

* the pixels: the slice the model saw (`daemon.shared.decode.decode`: the modality LUT applied,
  MONOCHROME1 inverted, the middle frame of a multi-frame object), windowed from its 0.5th to its
  99.5th percentile into 8 bits, enlarged by a whole factor to at least `MIN_WIDTH` pixels; above
  it a black band with the answer (the location label and its probability, or "No acute
  infarct"), below it a band with the research-use disclaimer (`band_rows` says where each is);
* the patient and study modules copied from the source by highdicom (the same Study Instance UID,
  so the PACS files it with the study); nothing of them is ever logged;
* a new series and instance. Their UIDs are derived from the source's UIDs, the scan id and the
  model's sha256 (`pydicom.uid.generate_uid` with entropy sources), so writing the same result
  again, after a crash, gives the same object and a PACS keeps one copy;
* ``SourceImageSequence`` naming the source instance (and frame), ``DerivationDescription``,
  ``ContentQualification`` RESEARCH, ``ImageComments`` and ``SeriesDescription`` with the
  disclaimer, ``BurnedInAnnotation`` NO (the burned-in text identifies nobody).
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from daemon import DISCLAIMER, GENERATOR
from daemon.errors import ScanError
from daemon.scan.report import VERSION
from daemon.shared.decode import DecodeLimits, decode

if TYPE_CHECKING:
    import numpy.typing as npt

MIN_WIDTH = 512
"""The capture is at least this wide (a 256-pixel slice is shown twice as large): the text fits."""
FONT_PX = 18
_MARGIN = 8
_LINE = FONT_PX + 6
SERIES_NUMBER_OFFSET = 1000
"""The capture's series number is the source's plus this (a PACS lists it beside the source)."""
SERIES_DESCRIPTION = "infarctwatch result - RESEARCH USE ONLY"
_PATIENT_ORIENTATION = 0x00200020
_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))
"""The patient-orientation letters of the +x, +y, +z and -x, -y, -z axes (DICOM's LPS)."""


class CaptureError(ValueError):
    """The source or its report cannot make a capture (not DICOM, no prediction, no UIDs)."""


@dataclass(frozen=True)
class Capture:
    """An encoded Secondary Capture and the UIDs it carries."""

    data: bytes
    sop_instance_uid: str
    series_instance_uid: str


def answer_text(report: dict[str, Any]) -> str:
    """The answer line burned into the capture: the label and its probability."""
    prediction = report.get("prediction")
    if report.get("status") != "ok" or not isinstance(prediction, dict):
        raise CaptureError("the report holds no prediction")
    label, probability = prediction.get("label"), prediction.get("probability")
    if not isinstance(label, str) or not isinstance(probability, int | float):
        raise CaptureError("the report's prediction has no label or probability")
    return f"{label}  (p = {probability:.2f})"


def band_rows(image_rows: int, width: int) -> tuple[slice, slice, slice]:
    """Rows of the answer band, the slice and the disclaimer band, for a slice ``image_rows`` high.

    ``width`` is the capture's width (the disclaimer wraps to it).
    """
    top = _MARGIN * 2 + _LINE * 2
    bottom = _MARGIN * 2 + _LINE * len(_disclaimer_lines(width))
    return (
        slice(0, top),
        slice(top, top + image_rows),
        slice(top + image_rows, top + image_rows + bottom),
    )


def _disclaimer_lines(width: int) -> list[str]:
    characters = max(20, (width - 2 * _MARGIN) // (FONT_PX * 55 // 100))
    return textwrap.wrap(DISCLAIMER, characters)


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=FONT_PX)
    except ImportError:  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def windowed(pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """``pixels`` from their 0.5th to their 99.5th percentile onto 0-255."""
    low, high = np.percentile(pixels, [0.5, 99.5])
    span = float(high - low) or 1.0
    scaled = np.clip((pixels - low) * (255.0 / span), 0.0, 255.0)
    grey: npt.NDArray[np.uint8] = scaled.astype(np.uint8)
    return grey


def render(pixels: npt.NDArray[np.float32], answer: str, model: str) -> npt.NDArray[np.uint8]:
    """The capture's pixels: the answer band, the enlarged slice, the disclaimer band."""
    grey = windowed(pixels)
    factor = max(1, -(-MIN_WIDTH // grey.shape[1]))
    slice_image = Image.fromarray(grey).resize(
        (grey.shape[1] * factor, grey.shape[0] * factor), Image.Resampling.BILINEAR
    )
    width = max(slice_image.width, MIN_WIDTH)
    _, middle, bottom = band_rows(slice_image.height, width)
    canvas = Image.new("L", (width, bottom.stop), 0)
    canvas.paste(slice_image, ((width - slice_image.width) // 2, middle.start))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    draw.text((_MARGIN, _MARGIN), answer, fill=255, font=font)
    draw.text((_MARGIN, _MARGIN + _LINE), model, fill=200, font=font)
    for number, line in enumerate(_disclaimer_lines(width)):
        draw.text((_MARGIN, bottom.start + _MARGIN + number * _LINE), line, fill=255, font=font)
    return np.asarray(canvas, dtype=np.uint8)


def _orientation(source: Any) -> tuple[str, str] | None:
    """The patient orientation of the rows and columns from Image Orientation (Patient)."""
    cosines = source.get("ImageOrientationPatient")
    if cosines is None or len(cosines) != 6:
        return None
    letters = []
    for axis in (cosines[:3], cosines[3:]):
        values = [float(v) for v in axis]
        dominant = max(range(3), key=lambda i: abs(values[i]))
        positive, negative = _LETTERS[dominant]
        letters.append(positive if values[dominant] > 0 else negative)
    return letters[0], letters[1]


def secondary_capture(data: bytes, report: dict[str, Any], scan_id: str) -> Capture:
    """The Secondary Capture of the DICOM file ``data`` analysed in ``report``.

    Raises:
        CaptureError: not a DICOM slice with the UIDs a capture needs, or no prediction.
    """
    import highdicom as hd  # noqa: PLC0415 - heavy, and needed only with an outbox
    import pydicom  # noqa: PLC0415
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: PLC0415

    answer = answer_text(report)
    try:
        image = decode(data, "source.dcm", DecodeLimits())
    except ScanError as exc:
        raise CaptureError(f"the source does not decode ({exc.code})") from exc
    if image.dicom is None:
        raise CaptureError("the source is not DICOM")
    source = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    study, series = source.get("StudyInstanceUID"), source.get("SeriesInstanceUID")
    sop, sop_class = source.get("SOPInstanceUID"), source.get("SOPClassUID")
    if not (study and series and sop and sop_class):
        raise CaptureError("the source lacks a Study, Series, SOP Instance or SOP Class UID")
    model = report.get("model") or {}
    model_line = f"{GENERATOR} {VERSION}, model {model.get('name')} {model.get('version')}"
    pixels = render(image.pixels, answer, model_line)
    bundle = str(model.get("bundle_sha256"))
    series_uid = generate_uid(entropy_srcs=[str(series), bundle, "infarctwatch-sc-series"])
    sop_uid = generate_uid(entropy_srcs=[str(sop), scan_id, bundle, "infarctwatch-sc"])
    orientation = _orientation(source)
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="MONOCHROME2",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=int(source.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET,
        sop_instance_uid=sop_uid,
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=GENERATOR,
        patient_orientation=orientation or ("L", "P"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=SERIES_DESCRIPTION,
        manufacturer_model_name=str(model.get("name") or "unknown")[:64],
        software_versions=VERSION,
        content_qualification="RESEARCH",
    )
    if orientation is None:  # unknown: empty (type 2) rather than a guess
        capture[_PATIENT_ORIENTATION].value = None
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = sop_class
    reference.ReferencedSOPInstanceUID = sop
    if image.dicom.frames > 1:
        reference.ReferencedFrameNumber = image.dicom.frame_used + 1
    capture.SourceImageSequence = [reference]
    capture.DerivationDescription = (
        f"{GENERATOR} {VERSION} result burned into the analysed slice. {DISCLAIMER}"
    )[:1024]
    capture.ImageComments = DISCLAIMER
    capture.BurnedInAnnotation = "NO"
    buffer = io.BytesIO()
    capture.save_as(buffer, enforce_file_format=True)
    return Capture(buffer.getvalue(), str(sop_uid), str(series_uid))
