"""Write one rendered slice to disk in the requested acquisition style.

* ``png``: the scanner matrix as an 8-bit grey PNG, windowed like a viewer (normal brain mid-grey,
  infarcts near white);
* ``jpeg``: a 512 x 512 screenshot with burned-in annotations (`screenshot`);
* ``dicom``: an MR Image Storage object, 16-bit MONOCHROME2, with PixelSpacing, SliceThickness,
  SliceLocation, image position/orientation, DiffusionBValue = 1000 and UIDs derived from the seed
  and case (``2.25.<name-based UUID>``, never from a real device), PatientName
  ``SYNTHETIC^C000123``.

The ADC map is always a 16-bit grey PNG in 1e-6 mm2/s (scanner convention: white matter ~720,
CSF ~3000, 0 outside the brain). The lesion mask (`lesion_labels`) is an 8-bit PNG of the written
image's size: 0 where there is no acute lesion, ``k`` on the pixels of the case's ``k``-th lesion
(the order of the manifest's ``lesion_regions``); all zeros on a normal slice.
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

from trainer.synth.display import Display, brain_level, export8, resize, window
from trainer.synth.profiles import TRAIN, Profile
from trainer.synth.screenshot import Annotation, Viewport, burn_in, write_screenshot

if TYPE_CHECKING:
    from pathlib import Path

    from trainer.synth.render import RenderedSlice

FORMATS = ("png", "jpeg", "dicom")
EXTENSIONS = {"png": "png", "jpeg": "jpg", "dicom": "dcm"}
UID_NAMESPACE = "infarctwatch-synth"
VENDOR_B_TAGS = ("siemens", "ge", "philips")
"""Vendors whose private b-value tag DWI (and b0) DICOM files may carry."""
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


def lesion_labels(rendered: RenderedSlice, matrix: int) -> npt.NDArray[np.uint8]:
    """The slice's lesion mask at ``matrix`` x ``matrix``: 0 none, ``k`` the ``k``-th lesion.

    Each lesion's in-slice mask (`render.LESION_PIXEL_FRACTION` of the slab) at the acquired
    matrix, enlarged by pixel repetition (nearest) like the montage outlines.
    """
    labels = np.zeros_like(rendered.b1000, dtype=np.uint8)
    for number, mask in enumerate(rendered.lesions, start=1):
        labels[mask & (labels == 0)] = number
    if labels.shape[0] == matrix:
        return labels
    image = Image.fromarray(labels).resize((matrix, matrix), Image.Resampling.NEAREST)
    return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class WrittenSlice:
    """The files `write_slice` wrote (names within the case's folder) and the 8-bit image."""

    name: str
    adc_name: str | None
    mask_name: str
    dwi8: npt.NDArray[np.uint8]


def to_uint8(image: npt.NDArray[np.float32], white: float) -> npt.NDArray[np.uint8]:
    """Scale ``[0, white]`` to ``[0, 255]``, clipping."""
    return np.asarray(np.clip(np.rint(image * (255.0 / white)), 0, 255), dtype=np.uint8)


def adc_uint16(adc: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """ADC in 1e-3 mm2/s -> uint16 in 1e-6 mm2/s."""
    return np.asarray(np.clip(np.rint(adc * 1000.0), 0, 65535), dtype=np.uint16)


def write_png(path: Path, image: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]) -> None:
    """A grey PNG (8-bit ``L`` or 16-bit ``I;16``)."""
    Image.fromarray(image).save(path, format="PNG", compress_level=_PNG_LEVEL)


def uid(*parts: object) -> UID:
    """A ``2.25.`` UID from a name-based (v5) UUID of the namespace and ``parts``.

    Same inputs, same UID (pydicom's ``generateuid(prefix=None)`` is random whatever its
    entropy sources, so it is not used).
    """
    name = "/".join([UID_NAMESPACE, *map(str, parts)])
    return UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}")


def add_b_value_tags(ds: Dataset, b_value: float, tags: tuple[str, ...]) -> None:
    """The b-value in the standard attribute and/or the vendors' private tags.

    ``standard``: DiffusionBValue (0018,9087); ``siemens``: (0019,100C) IS under private creator
    ``SIEMENS MR HEADER``; ``ge``: (0043,1039) IS, first of four values, b itself; ``ge1e9``: the
    same tag with 1,000,000,000 + b (as some GE software writes it); ``philips``: (2001,1003) FL
    under ``Philips Imaging DD 001``.
    """
    b = round(b_value)
    if "standard" in tags:
        ds.DiffusionBValue = float(b_value)
    if "siemens" in tags:
        block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        block.add_new(0x0C, "IS", str(b))
    if "ge" in tags or "ge1e9" in tags:
        block = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        first = b + 1_000_000_000 if "ge1e9" in tags else b
        block.add_new(0x39, "IS", [str(first), "8", "0", "0"])
    if "philips" in tags:
        block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        block.add_new(0x03, "FL", float(b_value))


def random_b_tags(rng: np.random.Generator) -> tuple[str, ...]:
    """Which b-value tags a DWI DICOM carries.

    70 % the standard one only, 20 % the standard one and a vendor's private tag, 10 % only a
    vendor's private tag.
    """
    roll = rng.random()
    vendor = ("siemens", "ge", "ge1e9", "philips")[int(rng.integers(4))]
    if roll < 0.7:
        return ("standard",)
    if roll < 0.9:
        return ("standard", vendor)
    return (vendor,)


def new_dataset(sop_class: UID, sop_uid: UID) -> Dataset:
    """An empty instance of ``sop_class`` with its file meta (explicit VR little endian)."""
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = sop_class
    file_meta.MediaStorageSOPInstanceUID = sop_uid
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    return ds


def write_dicom(  # noqa: PLR0915 (one DICOM attribute per line reads best)
    path: Path,
    rendered: RenderedSlice,
    meta: SliceMeta,
    rng: np.random.Generator,
    *,
    display: Display | None = None,
    profile: Profile = TRAIN,
    b_tags: tuple[str, ...] = ("standard",),
) -> None:
    """Write an MR Image Storage object with the b image (see the module docstring).

    The pixels are the scanner's float image at the display matrix, scaled so that the brain's
    median is ``profile.dicom_level``; the window attributes follow the display's method.
    """
    level = brain_level(rendered)
    scale = float(rng.uniform(*profile.dicom_level[int(rng.integers(len(profile.dicom_level)))]))
    scale /= level
    matrix = display.matrix if display is not None else rendered.b1000.shape[0]
    nearest = display.nearest if display is not None else False
    shown = resize(rendered.b1000, matrix, nearest=nearest)
    pixels = np.asarray(np.clip(np.rint(shown * scale), 0, 65535), dtype=np.uint16)
    rows, cols = pixels.shape
    spacing = rendered.pixel_mm * rendered.b1000.shape[0] / rows
    black, white = window(rendered, display) if display is not None else (0.0, 2 * level)
    ds = new_dataset(MRImageStorage, uid(meta.seed, meta.case_id, "image", meta.index))
    ds.ImageType = ["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = meta.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = meta.study_time
    ds.Modality = "MR"
    ds.Manufacturer = "infarctwatch synth"
    ds.InstitutionName = meta.site
    ds.StudyDescription = "SYNTHETIC BRAIN MRI (research use only)"
    ds.SeriesDescription = f"ep2d_diff_b{round(rendered.b_value)}_TRACEW (synthetic)"
    ds.PatientName = f"SYNTHETIC^{meta.case_id.upper()}"
    ds.PatientID = f"SYNTH-{meta.case_id.upper()}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "BRAIN"
    ds.ScanningSequence = "EP"
    ds.SequenceVariant = "SK"
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = f"*ep_b{round(rendered.b_value)}t"
    ds.SliceThickness = f"{rendered.thickness_mm:.1f}"
    ds.SpacingBetweenSlices = f"{rendered.thickness_mm * 1.2:.1f}"
    ds.MagneticFieldStrength = "1.5"
    add_b_value_tags(ds, rendered.b_value, b_tags)
    ds.StudyInstanceUID = uid(meta.seed, meta.case_id, "study")
    ds.SeriesInstanceUID = uid(meta.seed, meta.case_id, "series")
    ds.FrameOfReferenceUID = uid(meta.seed, meta.case_id, "frame")
    ds.StudyID = "1"
    ds.SeriesNumber = 5
    ds.InstanceNumber = meta.index
    half = (rows - 1) * spacing / 2.0
    # LPS: column 0 is the patient's right (x_L = -half), row 0 anterior (y_P = -half)
    ds.ImagePositionPatient = [f"{-half:.3f}", f"{-half:.3f}", f"{rendered.z_scanner:.3f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{rendered.z_scanner:.3f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter = str(round((black + white) / 2 * scale))
    ds.WindowWidth = str(max(1, round((white - black) * scale)))
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
    display: Display,
    profile: Profile = TRAIN,
    b_tags: tuple[str, ...] = ("standard",),
) -> WrittenSlice:
    """Write ``<stem>_dwi.<ext>``, ``<stem>_mask.png`` (and ``<stem>_adc.png``).

    The DWI and ADC images at the display matrix; the mask of the same size as the DWI file
    (for a JPEG screenshot: the canvas, the mask placed where the slice is on it).
    """
    directory, stem_name = stem.parent, stem.name
    dwi8, (black, white) = export8(rendered, display)
    name = f"{stem_name}_dwi.{EXTENSIONS[fmt]}"
    b = round(rendered.b_value)
    viewport: Viewport | None = None
    if fmt == "png":
        if rng.random() < profile.png_text_share:
            dwi8 = burn_in(dwi8, [meta.site, f"DWI b{b}", f"Im {meta.index}/{meta.count}"], rng)
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
            window=(round((black + white) * 500), round((white - black) * 1000)),
            sequence=f"DWI b{b} TRACEW",
        )
        viewport = write_screenshot(directory / name, dwi8, note, rng, profile=profile)
    elif fmt == "dicom":
        write_dicom(
            directory / name, rendered, meta, rng, display=display, profile=profile, b_tags=b_tags
        )
    else:
        raise ValueError(f"unknown format {fmt!r}")
    adc_name = None
    if adc:
        adc_name = f"{stem_name}_adc.png"
        shown = resize(rendered.adc, display.matrix, nearest=display.nearest)
        write_png(directory / adc_name, adc_uint16(shown))
    labels = lesion_labels(rendered, display.matrix)
    mask_name = f"{stem_name}_mask.png"
    write_png(directory / mask_name, viewport.place(labels) if viewport is not None else labels)
    return WrittenSlice(name, adc_name, mask_name, dwi8)
