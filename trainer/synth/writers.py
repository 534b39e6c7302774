"""Write one rendered slice to disk in the requested acquisition style.

* ``png``: the scanner matrix as an 8-bit grey PNG, windowed like a viewer (normal brain mid-grey,
  infarcts near white);
* ``jpeg``: a 512 x 512 screenshot with burned-in annotations (`screenshot`);
* ``dicom``: an MR Image Storage object, 16-bit MONOCHROME2, with PixelSpacing, SliceThickness,
  SliceLocation, image position/orientation, DiffusionBValue = 1000 and UIDs derived from the seed
  and case (``2.25.<name-based UUID>``, never from a real device), PatientName
  ``SYNTHETIC^C000123``.

The ADC map is always a 16-bit grey PNG in 1e-6 mm2/s (scanner convention: white matter ~720,
CSF ~3000, 0 outside the brain).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from trainer.synth.screenshot import Annotation, write_screenshot

if TYPE_CHECKING:
    from pathlib import Path

    from trainer.synth.render import RenderedSlice

FORMATS = ("png", "jpeg", "dicom")
EXTENSIONS = {"png": "png", "jpeg": "jpg", "dicom": "dcm"}
UID_NAMESPACE = "infarctwatch-synth"
_PNG_LEVEL = 1
"""zlib level: 1 is ~4x faster than the default 6 for ~15 % larger files."""


@dataclass(frozen=True)
class SliceMeta:
    """Everything a writer needs to know besides the pixels."""

    case_id: str
    seed: int
    index: int
    """1-based slice number within the case."""
    count: int
    site: str
    study_date: str
    """``YYYYMMDD``."""
    study_time: str
    """``HHMMSS``."""


def display_window(rendered: RenderedSlice, rng: np.random.Generator) -> float:
    """The b1000 value shown as white: normal brain ends up mid-grey, infarcts near white."""
    brain = rendered.b1000[rendered.brain]
    level = float(np.median(brain)) if brain.size else float(rendered.b1000.max() or 1.0)
    return level * float(rng.uniform(1.7, 2.2))


def to_uint8(image: npt.NDArray[np.float32], white: float) -> npt.NDArray[np.uint8]:
    """Scale ``[0, white]`` to ``[0, 255]``, clipping."""
    return np.asarray(np.clip(np.rint(image * (255.0 / white)), 0, 255), dtype=np.uint8)


def adc_uint16(adc: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """ADC in 1e-3 mm2/s -> uint16 in 1e-6 mm2/s."""
    return np.asarray(np.clip(np.rint(adc * 1000.0), 0, 65535), dtype=np.uint16)


def write_png(path: Path, image: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]) -> None:
    """A grey PNG (8-bit ``L`` or 16-bit ``I;16``)."""
    Image.fromarray(image).save(path, format="PNG", compress_level=_PNG_LEVEL)


def _uid(*parts: object) -> UID:
    """A ``2.25.`` UID from a name-based (v5) UUID of the namespace and ``parts``.

    Same inputs, same UID (pydicom's ``generate_uid(prefix=None)`` is random whatever its
    entropy sources, so it is not used).
    """
    name = "/".join([UID_NAMESPACE, *map(str, parts)])
    return UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}")


def write_dicom(  # noqa: PLR0915 (one DICOM attribute per line reads best)
    path: Path, rendered: RenderedSlice, meta: SliceMeta, rng: np.random.Generator
) -> None:
    """Write an MR Image Storage object with the b1000 image (see the module docstring)."""
    brain = rendered.b1000[rendered.brain]
    level = float(np.median(brain)) if brain.size else 1.0
    scale = float(rng.uniform(300.0, 700.0)) / level
    pixels = np.asarray(np.clip(np.rint(rendered.b1000 * scale), 0, 65535), dtype=np.uint16)
    rows, cols = pixels.shape
    sop_uid = _uid(meta.seed, meta.case_id, "image", meta.index)
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = MRImageStorage
    file_meta.MediaStorageSOPInstanceUID = sop_uid
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = file_meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"]
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = meta.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = meta.study_time
    ds.Modality = "MR"
    ds.Manufacturer = "infarctwatch synth"
    ds.InstitutionName = meta.site
    ds.StudyDescription = "SYNTHETIC BRAIN MRI (research use only)"
    ds.SeriesDescription = "ep2d_diff_b1000_TRACEW (synthetic)"
    ds.PatientName = f"SYNTHETIC^{meta.case_id.upper()}"
    ds.PatientID = f"SYNTH-{meta.case_id.upper()}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "BRAIN"
    ds.ScanningSequence = "EP"
    ds.SequenceVariant = "SK"
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "*ep_b1000t"
    ds.SliceThickness = f"{rendered.thickness_mm:.1f}"
    ds.SpacingBetweenSlices = f"{rendered.thickness_mm * 1.2:.1f}"
    ds.MagneticFieldStrength = "1.5"
    ds.DiffusionBValue = 1000.0
    ds.StudyInstanceUID = _uid(meta.seed, meta.case_id, "study")
    ds.SeriesInstanceUID = _uid(meta.seed, meta.case_id, "series")
    ds.FrameOfReferenceUID = _uid(meta.seed, meta.case_id, "frame")
    ds.StudyID = "1"
    ds.SeriesNumber = 5
    ds.InstanceNumber = meta.index
    half = (rows - 1) * rendered.pixel_mm / 2.0
    # LPS: column 0 is the patient's right (x_L = -half), row 0 anterior (y_P = -half)
    ds.ImagePositionPatient = [f"{-half:.3f}", f"{-half:.3f}", f"{rendered.z_scanner:.3f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{rendered.z_scanner:.3f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [f"{rendered.pixel_mm:.6f}", f"{rendered.pixel_mm:.6f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter = str(round(level * scale))
    ds.WindowWidth = str(round(2 * level * scale))
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = "synthetic image made by infarctwatch synth; research use only"
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_slice(
    stem: Path,
    fmt: str,
    rendered: RenderedSlice,
    *,
    meta: SliceMeta,
    rng: np.random.Generator,
    adc: bool,
) -> tuple[str, str | None, npt.NDArray[np.uint8]]:
    """Write ``<stem>_dwi.<ext>`` (and ``<stem>_adc.png``).

    Returns:
        The two file names (the second None without ADC) and the 8-bit display image.
    """
    directory, stem_name = stem.parent, stem.name
    white = display_window(rendered, rng)
    dwi8 = to_uint8(rendered.b1000, white)
    name = f"{stem_name}_dwi.{EXTENSIONS[fmt]}"
    if fmt == "png":
        write_png(directory / name, dwi8)
    elif fmt == "jpeg":
        note = Annotation(
            site=meta.site,
            case_id=meta.case_id,
            study_date=f"{meta.study_date[:4]}-{meta.study_date[4:6]}-{meta.study_date[6:]}",
            study_time=f"{meta.study_time[:2]}:{meta.study_time[2:4]}",
            series=5,
            image=meta.index,
            images=meta.count,
            slice_location_mm=rendered.z_scanner,
            thickness_mm=rendered.thickness_mm,
            window=(round(white * 500), round(white * 1000)),
        )
        write_screenshot(directory / name, dwi8, note, rng)
    elif fmt == "dicom":
        write_dicom(directory / name, rendered, meta, rng)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    adc_name = None
    if adc:
        adc_name = f"{stem_name}_adc.png"
        write_png(directory / adc_name, adc_uint16(rendered.adc))
    return name, adc_name, dwi8
