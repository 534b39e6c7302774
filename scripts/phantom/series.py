"""The series of one study: DWI (b0 + b1000) and its ADC, T1 and FLAIR, CT; their truth rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from phantom.acquisition import VENDORS, DiffusionProtocol, Geometry, make_geometry
from phantom.contrasts import render_ct, render_diffusion, render_structural, structural_timing
from phantom.dicom import (
    SeriesHeader,
    StudyIds,
    dicom_dataset,
    dicom_window,
    diffusion_header,
    new_uid,
    save_dicom,
    to_uint16,
)
from phantom.ranges import RANGES
from phantom.sampling import slice_fractions

if TYPE_CHECKING:
    from pathlib import Path

    from phantom.anatomy import Anatomy
    from phantom.subject import Subject


@dataclass
class Study:
    """One patient's study being written: the head, the DWI grid and slice positions, the ids."""

    folder: Path
    ids: StudyIds
    subject: Subject
    geom: Geometry
    zs: list[float]
    fractions: list[dict[str, Any]]
    label: str
    rng: np.random.Generator
    masks: Path | None = None
    """Where each DWI slice's lesion mask goes (None: nowhere); kept out of ``folder``."""


def diffusion_order(n: int, interleaved: bool) -> list[tuple[int, float]]:
    """(slice index, b) of each image of the DWI series, in InstanceNumber order."""
    b = RANGES["b_value"]
    if interleaved:
        return [(k, bv) for k in range(n) for bv in (0.0, b)]
    return [(k, 0.0) for k in range(n)] + [(k, b) for k in range(n)]


def write_masks(folder: Path, masks: list[np.ndarray]) -> None:
    """Each slice's lesion mask as ``folder/sKKK.png`` (8-bit, 255 inside).

    Inside: lesion fraction >= 0.5, as ``lesion_volume_ml_on_slices`` counts it; slices numbered
    from 1 in the order of ``slice_positions``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for k, mask in enumerate(masks, start=1):
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(folder / f"s{k:03d}.png")


def write_diffusion(study: Study, anat: Anatomy) -> list[dict[str, Any]]:
    """The DWI series (b0 and b1000 in one series) and its ADC series; returns their truth rows."""
    rng, geom, subject = study.rng, study.geom, study.subject
    proto = DiffusionProtocol.random(rng)
    timing = {"te": proto.te, "tr": proto.tr}
    dwi_uid, adc_uid = new_uid(), new_uid()
    headers = {b: diffusion_header(proto.vendor, b, dwi_uid, timing, rng) for b in (0.0, 1000.0)}
    for attribute in ("description", "scanning_sequence"):  # one series, one description
        setattr(headers[0.0], attribute, getattr(headers[1000.0], attribute))
    implicit = rng.random() < 0.2
    interleaved = rng.random() < 0.5
    order = diffusion_order(len(study.zs), interleaved)
    count = len(order) if rng.random() < 0.5 else None
    for header in headers.values():
        header.implicit, header.images_in_acquisition = implicit, count
    images = [
        render_diffusion(anat, subject, geom, proto, z, rng=rng, fractions=fr)
        for z, fr in zip(study.zs, study.fractions, strict=True)
    ]
    b0_max = float(np.percentile(np.stack([im["b0"] for im in images]), 99.9))
    scale = float(rng.uniform(1000, 3500)) / max(b0_max, 1e-9)
    for instance, (k, b) in enumerate(order, start=1):
        pixels = np.clip(np.round(images[k]["b1000" if b else "b0"] * scale), 0, 65535)
        ds = dicom_dataset(
            study.ids,
            headers[b],
            pixels,
            geom,
            study.zs[k],
            instance=instance,
            window=dicom_window(pixels),
        )
        save_dicom(ds, study.folder / "DWI" / f"IM{instance:04d}.dcm")
    adc_header = SeriesHeader(
        adc_uid,
        6,
        ADC_DESCRIPTION[proto.vendor],
        vendor=proto.vendor,
        image_type=("DERIVED", "PRIMARY", "DIFFUSION", "ADC"),
        sequence_name="*ep_b0_1000" if proto.vendor == "siemens" else None,
        timing=timing,
        implicit=implicit,
    )
    for k, z in enumerate(study.zs):
        pixels = np.round(images[k]["adc"]).astype(np.uint16)
        ds = dicom_dataset(
            study.ids, adc_header, pixels, geom, z, instance=k + 1, window=(1200.0, 2400.0)
        )
        save_dicom(ds, study.folder / "ADC" / f"IM{k + 1:04d}.dcm")
    if study.masks is not None:
        write_masks(study.masks, [im["lesion"] >= 0.5 for im in images])
    voxel_ml = geom.pixel_mm**2 * geom.spacing_mm / 1000.0
    on_slices = sum(float((im["lesion"] >= 0.5).sum()) for im in images) * voxel_ml
    lesion_slices = [k for k, im in enumerate(images) if (im["lesion"] >= 0.5).any()]
    dwi = {
        "series_uid": dwi_uid,
        "kind": "dwi",
        "series_number": 5,
        "modality": "MR",
        "description": headers[1000.0].description,
        "vendor": proto.vendor,
        "images": len(order),
        "finding": "acute_infarct" if subject.lesions else "no_acute_infarct",
        "label": study.label,
        "lesion_volume_ml": f"{subject.lesion_volume_ml():.2f}",
        "lesion_volume_ml_on_slices": f"{on_slices:.2f}",
        "lesion_slices": " ".join(str(k) for k in lesion_slices),
        "lesion_adc": " ".join(f"{les.adc:.0f}" for les in subject.lesions),
        "order": "interleaved" if interleaved else "b0_first",
        "geometry": f"{geom.rows}x{geom.cols} {geom.pixel_mm:.2f}mm "
        f"{geom.thickness_mm}+{geom.gap_mm}mm",
        "snr": f"{proto.snr:.1f}",
        "transfer_syntax": "implicit" if implicit else "explicit",
        "head_scale": f"{subject.scale:.3f}",
        "rotation_deg": f"{subject.rotation_deg:.1f}",
        "atrophy_mm": f"{subject.atrophy_mm:.1f}",
        "slice_positions": " ".join(f"{z:.1f}" for z in study.zs),
    }
    adc = {
        "series_uid": adc_uid,
        "kind": "adc",
        "series_number": 6,
        "modality": "MR",
        "description": adc_header.description,
        "vendor": proto.vendor,
        "images": len(study.zs),
        "dwi_series_uid": dwi_uid,
    }
    return [dwi, adc]


ADC_DESCRIPTION = {
    "siemens": "ep2d_diff_tra_ADC",
    "ge": "Apparent Diffusion Coefficient (mm2/s)",
    "philips": "dADC",
    "standard": "ADC",
}
STRUCTURAL = {
    # kind: ScanningSequence, SequenceVariant, descriptions a site may give
    "t1_se": ("SE", "SP", ("t1_se_tra", "AX T1", "T1W_SE_TRA", "T1 SE axial")),
    "t1_ir": ("GR\\IR", "SK\\SP\\MP", ("t1_mprage_tra", "AX 3D BRAVO", "T1W_3D_TFE", "MPRAGE")),
    "flair": ("SE\\IR", "SK\\SP\\MP", ("t2_tirm_tra_dark-fluid", "AX T2 FLAIR", "Ax FLAIR")),
    "flair_epi": ("EP\\IR", "SK\\SP", ("",)),  # EPI-FLAIR of fast stroke protocols, unnamed
}


def write_structural(study: Study) -> list[dict[str, Any]]:
    """A T1 and a FLAIR series of the same anatomy and geometry (sometimes without description)."""
    rng = study.rng
    rows = []
    t1_kind = "t1_se" if rng.random() < 0.6 else "t1_ir"
    flair_kind = "flair_epi" if rng.random() < 0.2 else "flair"
    for number, kind in ((2, t1_kind), (3, flair_kind)):
        scanning, variant, names = STRUCTURAL[kind]
        anonymous = rng.random() < 0.35
        timing = structural_timing(kind, rng)
        header = SeriesHeader(
            new_uid(),
            number,
            "" if anonymous else str(rng.choice(names)),
            vendor=str(rng.choice(VENDORS)),
            image_type=("ORIGINAL", "PRIMARY", "M", "ND"),
            scanning_sequence=scanning,
            sequence_variant=variant,
            timing=timing,
        )
        for k, (z, fr) in enumerate(zip(study.zs, study.fractions, strict=True), start=1):
            image = render_structural(fr, study.subject, study.geom, timing, rng)
            pixels, _ = to_uint16(image, 1500.0)
            ds = dicom_dataset(
                study.ids, header, pixels, study.geom, z, instance=k, window=dicom_window(pixels)
            )
            save_dicom(ds, study.folder / kind.upper() / f"IM{k:04d}.dcm")
        rows.append(
            {
                "series_uid": header.uid,
                "kind": kind,
                "series_number": number,
                "modality": "MR",
                "description": header.description,
                "vendor": header.vendor,
                "images": len(study.zs),
                "scanning_sequence": scanning,
                "timing": " ".join(f"{a}={b:.0f}" for a, b in timing.items()),
            }
        )
    return rows


def write_ct(study: Study, anat: Anatomy) -> dict[str, Any]:
    """A CT head series (512 matrix, 5 mm) of the same head: HU stored with intercept -1024.

    A CT is its own study (same patient, other StudyInstanceUID), as a scanner sends it.
    """
    rng = study.rng
    geom = make_geometry(rng, matrix=512, fov=float(rng.uniform(220, 250)))
    geom.cols, geom.thickness_mm, geom.gap_mm = 512, 5.0, 0.0
    ids = StudyIds(study.ids.index, new_uid(), new_uid(), study.ids.sex, study.ids.age)
    header = SeriesHeader(
        new_uid(),
        1,
        str(rng.choice(["Head 5.0 Hr38", "AX BRAIN 5mm", ""])),
        modality="CT",
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
    )
    positions = [float(z) for z in np.arange(study.zs[0], study.zs[-1] + 0.1, 5.0)]
    for k, z in enumerate(positions, start=1):
        hu = render_ct(slice_fractions(anat, study.subject, geom, z), study.subject, rng)
        pixels = np.clip(np.round(hu + 1024), 0, 4095).astype(np.uint16)
        ds = dicom_dataset(
            ids, header, pixels, geom, z, instance=k, rescale=(1.0, -1024.0), window=(40, 80)
        )
        save_dicom(ds, study.folder / "CT" / f"IM{k:04d}.dcm")
    return {
        "series_uid": header.uid,
        "kind": "ct",
        "series_number": 1,
        "modality": "CT",
        "description": header.description,
        "vendor": "siemens",
        "images": len(positions),
    }
