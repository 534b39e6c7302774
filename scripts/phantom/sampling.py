"""Sampling a slice: the tissue fractions of a slab on the slice grid."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from phantom.acquisition import Geometry
    from phantom.anatomy import Anatomy
    from phantom.arrays import Floats
    from phantom.lesions import Lesion
    from phantom.subject import Subject


def slice_fractions(
    anat: Anatomy, subject: Subject, geom: Geometry, z: float, pixel_mm: float | None = None
) -> dict[str, Any]:
    """Tissue fractions (gm, wm, csf, lesion, skull, scalp) of the slab centred at patient z.

    The slab is sampled every ~1 mm through its thickness with a soft (raised-cosine edged)
    profile; in plane every reconstructed pixel is sampled at its centre.
    """
    pixel_mm = pixel_mm or geom.pixel_mm
    cols = np.arange(geom.cols) * pixel_mm
    rows = np.arange(geom.rows) * pixel_mm
    x0, y0, _ = geom.position(z)
    px, py = np.meshgrid(x0 + cols, y0 + rows)  # (rows, cols): x along columns, y along rows
    n = max(3, round(geom.thickness_mm) + 1)
    offsets = np.linspace(-0.5, 0.5, n) * geom.thickness_mm
    weights = 0.6 + 0.4 * np.cos(np.pi * offsets / geom.thickness_mm) ** 2
    weights /= weights.sum()

    out = {
        k: np.zeros((geom.rows, geom.cols), np.float32)
        for k in ("gm", "wm", "csf", "lesion", "outside", "vent", "sulc")
    }
    lesion_channels: list[tuple[Lesion, Floats]] = [
        (les, np.zeros((geom.rows, geom.cols), np.float32)) for les in subject.lesions
    ]
    for off, w in zip(offsets, weights, strict=True):
        patient = np.stack([px, py, np.full_like(px, z + off)], -1)
        idx = anat.world_to_index(subject.to_mni(patient)).reshape(-1, 3).T
        coarse = idx / 2.0 - 0.25  # the 2 mm grid's voxel k covers 1 mm voxels 2k and 2k+1
        for key, volume, at, cval in (
            ("gm", anat.gm, idx, 0.0),
            ("wm", anat.wm, idx, 0.0),
            ("csf", anat.csf, idx, 0.0),
            ("outside", anat.outside, coarse, 99.0),
            ("vent", anat.ventricle_mm, coarse, 99.0),
            ("sulc", anat.sulcus_mm, coarse, 99.0),
        ):
            sample = ndimage.map_coordinates(volume, at, order=1, mode="constant", cval=cval)
            out[key] += w * sample.reshape(geom.rows, geom.cols)
        for les, acc in lesion_channels:
            local = idx - np.array(les.corner)[:, None]
            sample = ndimage.map_coordinates(les.mask, local, order=1, cval=0.0)
            np.add(acc, w * sample.reshape(acc.shape), out=acc)
    return _tissue_mix(out, lesion_channels, subject)


def _tissue_mix(
    raw: dict[str, Floats], lesions: list[tuple[Lesion, Floats]], subject: Subject
) -> dict[str, Any]:
    """Apply atrophy, the lesions and the extra-cerebral layers to sampled fractions."""
    gm, wm, csf = raw["gm"], raw["wm"], raw["csf"]
    if subject.atrophy_mm > 0:
        grow = np.clip(subject.atrophy_mm - raw["vent"] + 0.5, 0, 1)
        widen = np.clip(0.5 * subject.atrophy_mm - raw["sulc"] + 0.5, 0, 1) * 0.7
        loss = np.maximum(grow, widen)
        csf = csf + (gm + wm) * loss
        gm, wm = gm * (1 - loss), wm * (1 - loss)
    tissue = gm + wm
    lesion_total = np.zeros_like(gm)
    per_lesion = []
    for les, frac in lesions:
        take = np.minimum(frac, np.maximum(tissue - lesion_total, 0))
        lesion_total += take
        per_lesion.append((les, take))
    keep = np.where(tissue > 1e-6, 1 - lesion_total / np.maximum(tissue, 1e-6), 0)
    gm, wm = gm * keep, wm * keep
    d = raw["outside"]
    rim = np.clip(d, 0, 2.5) / 2.5 * (d < 2.5) + (d >= 2.5) * np.clip(3.5 - d, 0, 1)
    skull = np.clip(d - 2.5, 0, 1) * np.clip(8.5 - d, 0, 1)
    scalp = np.clip(d - 8.0, 0, 1) * np.clip(13.5 - d, 0, 1)
    return {
        "gm": gm,
        "wm": wm,
        "csf": csf + rim,
        "lesion": lesion_total,
        "lesions": per_lesion,
        "skull": skull,
        "scalp": scalp,
    }
