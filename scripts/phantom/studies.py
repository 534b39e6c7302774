"""Output 2: whole DICOM studies, one folder each with its truth.csv."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from phantom.acquisition import Geometry, make_geometry
from phantom.anatomy import load_anatomy
from phantom.dicom import new_study
from phantom.lesions import place_lesions
from phantom.placement import NORMAL, PLACEMENT
from phantom.ranges import RANGES
from phantom.sampling import slice_fractions
from phantom.series import Study, write_ct, write_diffusion, write_structural
from phantom.subject import Subject, make_subject
from phantom.tables import uniform_rows, write_csv

if TYPE_CHECKING:
    from pathlib import Path


def study_positions(subject: Subject, geom: Geometry, n: int) -> list[float]:
    """Patient z of ``n`` axial slices from the skull base upward (to the vertex when n allows)."""
    bottom = subject.patient_z(-60.0)
    top = subject.patient_z(80.0)
    step = geom.spacing_mm
    if (top - bottom) / step + 1 < n:  # more slices than the head needs: start lower
        bottom = top - (n - 1) * step
    return [bottom + k * step for k in range(n)]


def study_slice_count(subject: Subject, geom: Geometry) -> int:
    """Slices from skull base to vertex, within ``RANGES['study_slices']`` (gap widened)."""
    low, high = RANGES["study_slices"]
    span = 140.0 * subject.scale
    while span / geom.spacing_mm + 1 > high:
        geom.gap_mm = round(geom.gap_mm + 0.5, 1)
    return int(min(max(math.ceil(span / geom.spacing_mm) + 1, low), high))


def make_study(
    out: Path,
    index: int,
    label: str,
    rng: np.random.Generator,
    *,
    n_slices: int | None = None,
    with_ct: bool | None = None,
    masks: Path | None = None,
) -> list[dict[str, Any]]:
    """One study folder: DWI (b0 + b1000), ADC, T1, FLAIR, sometimes CT; its truth.csv rows.

    ``masks``: a folder for the DWI slices' lesion masks (``masks/studyNNN/sKKK.png``).
    """
    anat = load_anatomy()
    subject = make_subject(rng)
    centre = 10.0
    if label != NORMAL:
        subject.lesions, centre = place_lesions(anat, label, rng)
    geom = make_geometry(rng, matrix=int(rng.choice([128, 160, 192, 256])))
    if n_slices:  # a short stack (tests): centred on the lesion, or mid-brain
        zs = [
            subject.patient_z(centre) + (k - n_slices // 2) * geom.spacing_mm
            for k in range(n_slices)
        ]
    else:
        zs = study_positions(subject, geom, study_slice_count(subject, geom))
    study = Study(
        folder=out / f"study{index:03d}",
        ids=new_study(index, rng),
        subject=subject,
        geom=geom,
        zs=zs,
        fractions=[slice_fractions(anat, subject, geom, z) for z in zs],
        label=label,
        rng=rng,
        masks=None if masks is None else masks / f"study{index:03d}",
    )
    truth = write_diffusion(study, anat)
    truth.extend(write_structural(study))
    if with_ct or (with_ct is None and rng.random() < 0.4):
        truth.append(write_ct(study, anat))
    for row in truth:
        row["study"] = study.folder.name
    write_csv(study.folder / "truth.csv", uniform_rows(truth))
    return truth


def make_studies(
    out: Path,
    n_studies: int,
    seed: int,
    n_slices: int | None = None,
    masks: Path | None = None,
) -> list[dict[str, Any]]:
    """Write ``n_studies`` study folders, half normal; returns every truth row.

    ``masks``: where the DWI slices' lesion masks go (`make_study`); outside ``out``, which a
    daemon reads as its incoming folder.
    """
    rng = np.random.default_rng(seed)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    locations = list(PLACEMENT)
    rng.shuffle(locations)
    labels = [
        NORMAL if i % 2 == 0 else locations[(i // 2) % len(locations)] for i in range(n_studies)
    ]
    rows = []
    for index, label in enumerate(labels, start=1):
        rows.extend(make_study(out, index, label, rng, n_slices=n_slices, masks=masks))
    write_csv(out / "truth.csv", uniform_rows(rows))
    return rows
