"""Output 1: the labelled slice set (class folders + manifest.csv) for ``infarctwatch evaluate``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from phantom.acquisition import DiffusionProtocol, Geometry, make_geometry
from phantom.anatomy import load_anatomy
from phantom.contrasts import render_diffusion
from phantom.dicom import (
    StudyIds,
    dicom_dataset,
    dicom_window,
    diffusion_header,
    new_study,
    new_uid,
    save_dicom,
    to_uint16,
)
from phantom.lesions import place_lesions
from phantom.pictures import write_picture
from phantom.placement import NORMAL, PLACEMENT
from phantom.ranges import RANGES
from phantom.subject import Subject, make_subject
from phantom.tables import write_csv

if TYPE_CHECKING:
    from pathlib import Path


def case_plan(n_cases: int, rng: np.random.Generator) -> list[str]:
    """Half normal, half infarct cases spread round-robin over the placeable classes."""
    locations = list(PLACEMENT)
    n_infarct = n_cases // 2
    order = [locations[i % len(locations)] for i in range(n_infarct)]
    labels = [NORMAL] * (n_cases - n_infarct) + order
    rng.shuffle(labels)
    return labels


def choose_slice_positions(
    subject: Subject, geom: Geometry, centre_mni_z: float, n: int, rng: np.random.Generator
) -> list[float]:
    """Patient z of ``n`` slices that all cut every lesion (or anywhere in the brain if none)."""
    if not subject.lesions:
        z_mni = rng.uniform(-35, 60)
        return [subject.patient_z(z_mni) + k * geom.spacing_mm for k in range(n)]
    profiles = [les.z_profile() for les in subject.lesions]

    def slab_area(z_mni: float) -> float:
        half = 0.5 * geom.thickness_mm / subject.scale
        return float(
            min(
                np.mean(
                    [
                        p.get(float(z), 0.0)
                        for z in np.arange(round(z_mni - half), round(z_mni + half) + 1)
                    ]
                )
                for p in profiles
            )
        )

    best = max(np.arange(centre_mni_z - 12, centre_mni_z + 12, 0.5), key=slab_area)
    step = geom.spacing_mm / subject.scale
    for first in (best, best - step):
        zs = [first + k * step for k in range(n)]
        if all(slab_area(z) >= max(12.0, 0.3 * slab_area(best)) for z in zs):
            return [subject.patient_z(z) for z in zs]
    # a lesion thinner than the slice spacing: the second slice is a repeat shifted by 1-2 mm
    return [subject.patient_z(best + k * rng.uniform(-2.0, 2.0)) for k in range(n)]


def make_slices(
    out: Path, n_cases: int, seed: int, slices_per_case: int = 2
) -> list[dict[str, Any]]:
    """Write the labelled slice set; returns the manifest rows."""
    rng = np.random.default_rng(seed)
    anat = load_anatomy()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    formats = list(RANGES["formats"])
    shares = np.array(list(RANGES["formats"].values()))
    for index, label in enumerate(case_plan(n_cases, rng), start=1):
        subject = make_subject(rng)
        centre = 0.0
        if label != NORMAL:
            subject.lesions, centre = place_lesions(anat, label, rng)
        case = SliceCase(
            case_id=f"iph{seed}c{index:04d}",
            label=label,
            subject=subject,
            geom=make_geometry(rng),
            proto=DiffusionProtocol.random(rng),
            fmt=str(rng.choice(formats, p=shares)),
            ids=new_study(index, rng),
        )
        (out / label).mkdir(exist_ok=True)
        positions = choose_slice_positions(subject, case.geom, centre, slices_per_case, rng)
        header = diffusion_header(case.proto.vendor, RANGES["b_value"], new_uid(), case.timing, rng)
        header.implicit = rng.random() < 0.2
        top = float(rng.uniform(800, 3000))
        for k, z in enumerate(positions, start=1):
            img = render_diffusion(anat, subject, case.geom, case.proto, z, rng=rng)
            name = f"{case.case_id}_s{k}.{EXTENSION[case.fmt]}"
            if case.fmt == "dicom":
                pixels, _ = to_uint16(img["b1000"], top)
                ds = dicom_dataset(
                    case.ids,
                    header,
                    pixels,
                    case.geom,
                    z,
                    instance=k,
                    window=dicom_window(pixels),
                )
                save_dicom(ds, out / label / name)
                info = {"vendor": case.proto.vendor, "implicit_vr": header.implicit}
            else:
                info = write_picture(out / label / name, img["b1000"], case.fmt, rng)
            rows.append(case.manifest_row(f"{label}/{name}", z, img, info))
    write_csv(out / "manifest.csv", rows)
    return rows


EXTENSION = {"png": "png", "jpeg": "jpg", "dicom": "dcm"}


@dataclass
class SliceCase:
    """One case of the slice set: a head, its DWI series settings and its export format."""

    case_id: str
    label: str
    subject: Subject
    geom: Geometry
    proto: DiffusionProtocol
    fmt: str
    ids: StudyIds

    @property
    def timing(self) -> dict[str, float]:
        """EchoTime and RepetitionTime of the series."""
        return {"te": self.proto.te, "tr": self.proto.tr}

    def manifest_row(
        self, file: str, z: float, img: dict[str, Any], info: dict[str, Any]
    ) -> dict[str, Any]:
        """The manifest.csv row of one exported slice."""
        geom, subject = self.geom, self.subject
        return {
            "file": file,
            "case_id": self.case_id,
            "label": self.label,
            "finding": "no_acute_infarct" if self.label == NORMAL else "acute_infarct",
            "format": self.fmt,
            "lesion_volume_ml": f"{subject.lesion_volume_ml():.2f}",
            "lesion_area_mm2": f"{(img['lesion'] >= 0.5).sum() * geom.pixel_mm**2:.0f}",
            "lesion_regions": "+".join(les.region for les in subject.lesions),
            "slice_z_mm": f"{z:.1f}",
            "rows": geom.rows,
            "cols": geom.cols,
            "pixel_mm": f"{geom.pixel_mm:.3f}",
            "thickness_mm": geom.thickness_mm,
            "snr": f"{self.proto.snr:.1f}",
            "rotation_deg": f"{subject.rotation_deg:.1f}",
            "head_scale": f"{subject.scale:.3f}",
            "atrophy_mm": f"{subject.atrophy_mm:.1f}",
            "details": ";".join(f"{a}={b}" for a, b in info.items()),
        }
