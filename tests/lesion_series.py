"""A small real DWI series with lesion masks and its series report, for the SEG and SR tests.

`write_series` writes single-frame MR Image Storage files (pydicom, Explicit VR Little Endian)
of one study, series and frame of reference: axial slices 5 mm apart at 1 x 1 mm pixels, each
with the patient attributes a scanner sends (name, ID, birth date, sex) and some a result must
not copy (age, weight, comments, other IDs, address). `lesion_masks` draws two lesions through
the slab; `series_report` is the series report of such a series in the shape the daemon writes
(``finding``, ``lesions``, ``lesion_volume_ml``, ``model``, the UIDs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from daemon_support import BIRTH_DATE, PATIENT_ID, PATIENT_NAME, new_dataset
from PIL import Image
from pydicom import dcmread
from pydicom.uid import MRImageStorage, generate_uid

if TYPE_CHECKING:
    from pathlib import Path

    import pydicom
    from pydicom.dataset import Dataset

SLICE_MM = 5.0
PIXEL_MM = 1.0
SIZE = 64
SERIES_NUMBER = 7
EXTRA_PATIENT = {
    "PatientAge": "081Y",
    "PatientWeight": "70",
    "PatientComments": "allergic to nothing",
    "OtherPatientIDs": "OTHER-4711",
    "PatientAddress": "1 Main Street",
    "AdmittingDiagnosesDescription": "stroke?",
}
"""Patient attributes of the source that a lesion result must not carry."""
MODEL = {"name": "seed", "version": "1.0.0", "sha256": "ab" * 32}


@dataclass(frozen=True)
class Series:
    """The written series: its files, datasets (as read back) and masks, slice by slice."""

    files: list[Path]
    sources: list[pydicom.Dataset]
    masks: list[np.ndarray]


def _slice(index: int, uids: dict[str, str], rng: np.random.Generator) -> Dataset:
    ds = new_dataset(MRImageStorage)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.Modality = "MR"
    ds.ImageType = ["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"]
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    for keyword, value in EXTRA_PATIENT.items():
        setattr(ds, keyword, value)
    ds.StudyDate, ds.StudyTime = "20261207", "041500"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC-1"
    ds.SeriesNumber = SERIES_NUMBER
    ds.InstanceNumber = index + 1
    ds.SeriesDescription = "ep2d_diff_b1000_TRACEW"
    ds.DiffusionBValue = 1000
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-SIZE / 2, -SIZE / 2, -20.0 + SLICE_MM * index]
    ds.PixelSpacing = [PIXEL_MM, PIXEL_MM]
    ds.SliceThickness = SLICE_MM
    ds.SpacingBetweenSlices = SLICE_MM
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = rng.integers(0, 4000, (SIZE, SIZE), dtype=np.uint16).tobytes()
    return ds


def lesion_masks(slices: int) -> list[np.ndarray]:
    """Two lesions: a left one on slices 2-4 (growing then shrinking), a right one on slice 6."""
    masks = [np.zeros((SIZE, SIZE), np.bool_) for _ in range(slices)]
    for index, half in ((2, 2), (3, 4), (4, 3)):
        masks[index][30 - half : 30 + half, 40 - half : 40 + half] = (
            True  # image right: patient left
        )
    masks[6][20:23, 10:14] = True
    return masks


def write_series(folder: Path, slices: int = 8, *, masks: list[np.ndarray] | None = None) -> Series:
    """Write ``slices`` MR files into ``folder`` (``IM<n>.dcm``) and read them back."""
    folder.mkdir(parents=True, exist_ok=True)
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    rng = np.random.default_rng(13)
    files = []
    for index in range(slices):
        path = folder / f"IM{index + 1}.dcm"
        _slice(index, uids, rng).save_as(path, enforce_file_format=True)
        files.append(path)
    planes = masks if masks is not None else lesion_masks(slices)
    return Series(files, [dcmread(path) for path in files], planes)


def write_mask_pngs(series: Series, folder: Path) -> list[Path]:
    """The masks as the daemon writes them: ``<stem>_mask.png``, 8-bit, 0/255."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, mask in zip(series.files, series.masks, strict=True):
        path = folder / f"{file.stem}_mask.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
        paths.append(path)
    return paths


def _slices(series: Series, indices: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "sop_instance_uid": str(series.sources[i].SOPInstanceUID),
            "instance_number": int(series.sources[i].InstanceNumber),
        }
        for i in indices
    ]


def series_report(series: Series, *, finding: str = "acute_infarct") -> dict[str, Any]:
    """The series report of ``series`` with the two lesions of `lesion_masks` (or none)."""
    voxel_ml = PIXEL_MM * PIXEL_MM * SLICE_MM / 1000.0
    lesions = []
    if any(mask.any() for mask in series.masks):
        left = sum(int(series.masks[i].sum()) for i in (2, 3, 4)) * voxel_ml
        right = int(series.masks[6].sum()) * voxel_ml
        lesions = [
            {
                "volume_ml": round(left, 3),
                "slices": _slices(series, [2, 3, 4]),
                "label": "Left parietal lobe",
                "centroid_patient_mm": [8.0, -2.0, -5.0],
            },
            {
                "volume_ml": round(right, 3),
                "slices": _slices(series, [6]),
                "label": "Right cerebellar hemisphere",
                "centroid_patient_mm": [-20.5, -10.5, 10.0],
            },
        ]
    first = series.sources[0]
    return {
        "kind": "series",
        "status": "ok",
        "study_instance_uid": str(first.StudyInstanceUID),
        "series_instance_uid": str(first.SeriesInstanceUID),
        "finding": finding,
        "lesions": lesions,
        "lesion_volume_ml": round(sum(lesion["volume_ml"] for lesion in lesions), 3),
        "model": dict(MODEL),
    }
