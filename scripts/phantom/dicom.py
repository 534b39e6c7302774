"""DICOM: study identifiers, series headers as each vendor writes them, Part 10 files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from pathlib import Path

    from phantom.acquisition import Geometry
    from phantom.arrays import Floats, Pixels


@dataclass
class StudyIds:
    """Identifiers shared by every object of one patient and study."""

    index: int
    study_uid: str
    frame_uid: str
    sex: str
    age: int
    date: str = "20250314"


def new_study(index: int, rng: np.random.Generator) -> StudyIds:
    """Fresh UIDs and a synthetic patient (no real name)."""
    from pydicom.uid import generate_uid  # noqa: PLC0415

    return StudyIds(
        index,
        generate_uid(),
        generate_uid(),
        str(rng.choice(["M", "F"])),
        int(rng.integers(35, 92)),
    )


MANUFACTURER = {
    "siemens": ("SIEMENS", "Skyra"),
    "ge": ("GE MEDICAL SYSTEMS", "SIGNA Premier"),
    "philips": ("Philips Medical Systems", "Ingenia"),
    "standard": ("Canon Medical Systems", "Vantage Orian"),
}


@dataclass
class SeriesHeader:
    """What one series writes into each image's header."""

    uid: str
    number: int
    description: str
    modality: str = "MR"
    vendor: str = "siemens"
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY")
    scanning_sequence: str = "EP"
    sequence_variant: str = "SK\\SP"
    sequence_name: str | None = None
    timing: dict[str, float] = field(default_factory=dict)
    b_value: float | None = None
    b_style: str = "standard"
    implicit: bool = False
    images_in_acquisition: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def dicom_dataset(  # noqa: PLR0915 - one attribute a line, in the order of the DICOM modules
    ids: StudyIds,
    series: SeriesHeader,
    pixels: Pixels,
    geom: Geometry,
    z: float,
    *,
    instance: int,
    rescale: tuple[float, float] = (1.0, 0.0),
    window: tuple[float, float] | None = None,
) -> Any:
    """A single-frame MR or CT image object with the headers a scanner writes."""
    from pydicom.dataset import Dataset, FileMetaDataset  # noqa: PLC0415
    from pydicom.uid import (  # noqa: PLC0415
        CTImageStorage,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        MRImageStorage,
        generate_uid,
    )

    sop_class = CTImageStorage if series.modality == "CT" else MRImageStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if series.implicit else ExplicitVRLittleEndian
    )
    ds.SOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(series.image_type)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ids.date
    ds.StudyTime = "101500"
    ds.SeriesTime = ds.ContentTime = f"10{20 + series.number:02d}00"
    ds.AccessionNumber = f"PH{ids.index:05d}"
    ds.Modality = series.modality
    maker, model = (
        MANUFACTURER[series.vendor] if series.modality == "MR" else ("SIEMENS", "SOMATOM go.Up")
    )
    ds.Manufacturer, ds.ManufacturerModelName = maker, model
    ds.InstitutionName = "Phantom Hospital"
    ds.StudyDescription = "HEAD STROKE PROTOCOL" if series.modality == "MR" else "CT HEAD"
    ds.SeriesDescription = series.description
    if series.description:
        ds.ProtocolName = series.description
    ds.PatientName = f"PHANTOM^{ids.index}"
    ds.PatientID = f"PH{ids.index:05d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = ids.sex
    ds.PatientAge = f"{ids.age:03d}Y"
    ds.BodyPartExamined = "HEAD" if series.modality == "CT" else "BRAIN"
    ds.SliceThickness = f"{geom.thickness_mm:.1f}"
    ds.SpacingBetweenSlices = f"{geom.spacing_mm:.1f}"
    ds.PatientPosition = "HFS"
    if series.modality == "MR":
        _mr_attributes(ds, series)
    else:
        ds.KVP = "120"
        ds.ConvolutionKernel = "Hr38"
        ds.GantryDetectorTilt = "0"
    ds.StudyInstanceUID = ids.study_uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = "1"
    ds.SeriesNumber = series.number
    ds.InstanceNumber = instance
    if series.images_in_acquisition:
        ds.ImagesInAcquisition = series.images_in_acquisition
    ds.ImagePositionPatient = [f"{v:.4f}" for v in geom.position(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = ids.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{z:.4f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [f"{geom.pixel_mm:.6f}", f"{geom.pixel_mm:.6f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12 if series.modality == "CT" or pixels.max() < 4096 else 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:.0f}", f"{window[1]:.0f}"
    ds.RescaleIntercept, ds.RescaleSlope = f"{rescale[1]:g}", f"{rescale[0]:g}"
    ds.RescaleType = "HU" if series.modality == "CT" else "US"
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    for key, value in series.extra.items():
        setattr(ds, key, value)
    return ds


def _mr_attributes(ds: Any, series: SeriesHeader) -> None:
    """MR acquisition attributes and the vendor's way of writing the b-value."""
    ds.ScanningSequence = series.scanning_sequence
    ds.SequenceVariant = series.sequence_variant
    ds.ScanOptions = "FS" if series.scanning_sequence.startswith("EP") else ""
    ds.MRAcquisitionType = "2D"
    ds.MagneticFieldStrength = "3" if series.vendor in ("siemens", "philips") else "1.5"
    ds.ImagingFrequency = "123.2" if ds.MagneticFieldStrength == "3" else "63.9"
    ds.ImagedNucleus = "1H"
    ds.EchoTime = f"{series.timing.get('te', 0):.1f}"
    ds.RepetitionTime = f"{series.timing.get('tr', 0):.0f}"
    if "ti" in series.timing:
        ds.InversionTime = f"{series.timing['ti']:.0f}"
    ds.EchoTrainLength = "1" if series.scanning_sequence.startswith("EP") else "16"
    ds.FlipAngle = "90"
    if series.sequence_name:
        ds.SequenceName = series.sequence_name
    b = series.b_value
    if b is None:
        return
    if series.b_style == "standard":
        ds.DiffusionBValue = float(b)
        ds.DiffusionDirectionality = "ISOTROPIC" if b > 0 else "NONE"
    elif series.b_style == "siemens":
        block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        block.add_new(0x0C, "IS", str(int(b)))
        block.add_new(0x0D, "CS", "DIRECTIONAL" if b > 0 else "NONE")
    elif series.b_style == "ge":
        block = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        block.add_new(0x39, "IS", [str(1_000_000_000 + int(b)), "8", "0", "0"])
    elif series.b_style == "philips":
        block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        block.add_new(0x03, "FL", float(b))


def save_dicom(ds: Any, path: Path) -> None:
    """Write a Part 10 file (preamble, meta group) with the dataset's own transfer syntax."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def diffusion_header(
    vendor: str, b: float, uid: str, timing: dict[str, float], rng: np.random.Generator
) -> SeriesHeader:
    """A DWI series header as the vendor writes it (b-value tag, ImageType, names)."""
    nonzero = b > 0
    if vendor == "siemens":
        return SeriesHeader(
            uid,
            5,
            "ep2d_diff_tra_TRACEW" if rng.random() < 0.7 else "ep2d_diff_3scan_trace_p2",
            vendor=vendor,
            image_type=("ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW" if nonzero else "NONE"),
            sequence_name=f"*ep_b{int(b)}{'t' if nonzero else ''}",
            timing=timing,
            b_value=b,
            b_style="siemens",
        )
    if vendor == "ge":
        return SeriesHeader(
            uid,
            5,
            str(rng.choice(["DWI ASSET", "AX DWI 1000", "Ax DWI"])),
            vendor=vendor,
            image_type=("ORIGINAL", "PRIMARY", "OTHER"),
            sequence_variant="NONE",
            sequence_name="epi2_pepn",
            timing=timing,
            b_value=b,
            b_style="ge",
        )
    if vendor == "philips":
        return SeriesHeader(
            uid,
            5,
            str(rng.choice(["DWI_SENSE", "DWI b1000 SENSE", "sDWI"])),
            vendor=vendor,
            image_type=(
                "ORIGINAL",
                "PRIMARY",
                "DIFFUSION" if nonzero else "M",
                "ISOTROPIC" if nonzero else "SE",
            ),
            scanning_sequence="SE\\EP" if rng.random() < 0.5 else "EP",
            timing=timing,
            b_value=b,
            b_style="philips",
        )
    return SeriesHeader(
        uid,
        5,
        str(rng.choice(["DWI", "Diffusion b1000 trace", "DWI_TRACE"])),
        vendor=vendor,
        image_type=("ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW" if nonzero else "NONE"),
        timing=timing,
        b_value=b,
        b_style="standard",
    )


def to_uint16(image: Floats, top: float) -> tuple[npt.NDArray[np.uint16], float]:
    """Scale magnitudes so that the 99.9th percentile maps to ``top``; returns pixels and scale."""
    scale = top / max(float(np.percentile(image, 99.9)), 1e-9)
    return np.clip(np.round(image * scale), 0, 65535).astype(np.uint16), scale


def dicom_window(pixels: Pixels) -> tuple[float, float]:
    """A scanner-like default window: centre and width from the brain's intensities."""
    lo, hi = np.percentile(pixels, [2, 99.5])
    return float(0.5 * (lo + hi)), float(max(hi - lo, 1))


def new_uid() -> str:
    """A fresh UID (pydicom's, random)."""
    from pydicom.uid import generate_uid  # noqa: PLC0415

    return generate_uid()
