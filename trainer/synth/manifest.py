"""``manifest.csv`` (one row per DWI file) and ``synth.json`` (what made the dataset)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

MANIFEST_NAME = "manifest.csv"
PROVENANCE_NAME = "synth.json"
TRUTH_NAME = "series.json"
"""Series mode: per study and series, the slices that show a lesion and the lesion volumes."""
GENERATOR_VERSION = "5"
"""Bumped when the same options start producing different files."""


@dataclass(frozen=True)
class ManifestRow:
    """One DWI file of the dataset."""

    file: str
    """Path of the DWI file relative to the dataset folder, with '/' separators."""
    adc_file: str
    """The ADC map beside it ('' when ADC maps are off)."""
    raw_label: str
    """The folder the file is in (a raw variant of ``label`` from the label map)."""
    label: str
    """Canonical class."""
    case_id: str
    slice_index: int
    """1-based slice number within the case."""
    slice_mm: float
    """MNI z (mm) of the slice's centre point."""
    slice_location_mm: float
    """Scanner z (mm), the DICOM SliceLocation."""
    slice_thickness_mm: float
    pixel_mm: float
    matrix: int
    format: str
    lesion_count: int
    lesion_volume_ml: float
    """Total volume of the case's lesions (0 for 'No acute infarct')."""
    lesion_area_mm2: float
    """Lesion area visible on this slice."""
    lesion_regions: str
    """The lesions' regions, ';'-separated."""
    snr: float
    """The case's b-image signal-to-noise ratio (brain mean / noise sigma)."""
    profile: str = "train"
    """Acquisition profile the case was drawn from (`trainer.synth.profiles`)."""
    display_matrix: int = 0
    """Matrix of the written image (interpolated from ``matrix``)."""
    display_pixel_mm: float = 0.0
    """Pixel spacing of the written image (the DICOM PixelSpacing)."""
    fov_mm: float = 0.0
    b_value: int = 1000
    b_value_tags: str = ""
    """DICOM only: where the b-value is written (standard, siemens, ge, ge1e9, philips)."""
    window: str = ""
    """Window method of the 8-bit export (`trainer.synth.display`)."""
    gamma: float = 1.0
    rotation_deg: float = 0.0
    """In-plane rotation of the head."""
    tilt_deg: float = 0.0
    """Through-plane tilt (nodding)."""
    roll_deg: float = 0.0
    head_scale: float = 1.0
    bias_strength: float = 1.0
    ventricle_mm: float = 0.0
    """Ventricle enlargement (atrophy)."""
    sulcal_atrophy: float = 0.0
    findings: str = ""
    """Look-alikes and artefacts visible on this slice, ';'-separated (see docs/synth.md)."""
    mask_file: str = ""
    """The DWI file's lesion mask: an 8-bit PNG of the same size, 0 = no lesion, k = the k-th
    lesion of ``lesion_regions`` (all zeros on a normal slice)."""
    b0_file: str = ""
    """Series mode: the b0 image of the same position ('' for single slices)."""
    instance_number: int = 0
    """Series mode: InstanceNumber of the b1000 image (enhanced file: its frame number)."""
    b0_instance_number: int = 0
    adc_instance_number: int = 0

    @classmethod
    def columns(cls) -> list[str]:
        """CSV header, in field order."""
        return [f.name for f in fields(cls)]


def write_manifest(path: Path, rows: list[ManifestRow]) -> None:
    """Write rows sorted by file name (so the file does not depend on worker scheduling)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ManifestRow.columns(), lineterminator="\n")
        writer.writeheader()
        for row in sorted(rows, key=lambda r: (r.case_id, r.slice_index)):
            writer.writerow(asdict(row))


def write_rows(path: Path, rows: Sequence[Any], columns: list[str]) -> None:
    """Write dataclass rows in the given order with ``columns`` as the header."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def read_manifest(path: Path) -> list[dict[str, str]]:
    """The manifest's rows as dicts of strings."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_truth(path: Path, studies: list[dict[str, Any]], *, disclaimer: str) -> None:
    """``series.json``: the studies in case order (see docs/synth.md, *Series*)."""
    data = {
        "format": 1,
        "disclaimer": disclaimer,
        "studies": sorted(studies, key=lambda study: str(study["case_id"])),
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_provenance(path: Path, data: dict[str, Any]) -> None:
    """``synth.json``: sorted keys, no timestamps (same options -> same bytes)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
