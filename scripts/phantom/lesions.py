"""Infarcts: irregular blobs grown inside a region, and the lesions of a location class."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from phantom.placement import PLACEMENT
from phantom.ranges import MNI_ORIGIN, RANGES

if TYPE_CHECKING:
    from phantom.anatomy import Anatomy
    from phantom.arrays import Floats


@dataclass
class Lesion:
    """An infarct blob on the template grid: a soft mask in a box, and its own tissue values."""

    region: str
    corner: tuple[int, int, int]
    mask: Floats  # float32 0..1 in the box at ``corner``
    adc: float
    t2: float

    @property
    def voxels(self) -> float:
        """Template voxels (1 mm3) inside the lesion."""
        return float(self.mask.sum())

    def z_extent(self) -> tuple[float, float]:
        """Lowest and highest MNI z (mm) of the lesion's voxels (mask >= 0.5)."""
        zs = np.nonzero((self.mask >= 0.5).any(axis=(0, 1)))[0] + self.corner[2] + MNI_ORIGIN[2]
        return float(zs.min()), float(zs.max())

    def z_profile(self) -> dict[float, float]:
        """Lesion area (mm2, template space) per MNI z plane."""
        area = (self.mask >= 0.5).sum(axis=(0, 1))
        base = self.corner[2] + MNI_ORIGIN[2]
        return {float(base + k): float(a) for k, a in enumerate(area) if a}


def grow_lesion(
    anat: Anatomy,
    region_key: str,
    volume_ml: float,
    rng: np.random.Generator,
    z_band: tuple[float, float] | None = None,
) -> Lesion:
    """An irregular blob of about ``volume_ml`` (template space) inside a region.

    The centre is a random voxel of the region (within ``z_band`` when given); the shape is a
    random ellipsoid's radial field plus smoothed noise, thresholded at the target volume and
    kept inside the region; the largest connected part is kept and its edge softened.
    """
    allowed = anat.region(region_key)
    centres = np.argwhere(allowed)
    if z_band is not None:
        z = centres[:, 2] + MNI_ORIGIN[2]
        centres = centres[(z >= z_band[0]) & (z <= z_band[1])]
    if not len(centres):
        raise ValueError(f"region {region_key} has no voxel in {z_band}")
    volume_mm3 = min(volume_ml * 1000.0, 0.45 * float(allowed.sum()))
    radius = (3.0 * volume_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0)
    half = math.ceil(2.6 * radius) + 3
    centre = centres[rng.integers(len(centres))]
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, allowed.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    inside = allowed[box]

    ratios = np.exp(rng.normal(0.0, 0.3, 3))
    axes = radius * 1.3 * ratios / np.prod(ratios) ** (1.0 / 3.0)
    grid = np.stack(
        np.meshgrid(
            *(np.arange(a, b) - c for a, b, c in zip(lo, hi, centre, strict=True)), indexing="ij"
        ),
        -1,
    )
    local = grid @ Rotation.random(random_state=rng).as_matrix()
    radial = np.sqrt(((local / axes) ** 2).sum(-1))
    noise = ndimage.gaussian_filter(rng.normal(size=radial.shape), sigma=max(1.0, 0.35 * radius))
    noise /= noise.std() + 1e-9
    score = 1.0 - radial + 0.3 * noise
    score[~inside] = -np.inf
    target = max(round(volume_mm3), 8)
    flat = np.sort(score[np.isfinite(score)])[::-1]
    threshold = flat[min(target, len(flat)) - 1]
    blob = score >= threshold
    labels, n = ndimage.label(blob)
    if n > 1:
        sizes = ndimage.sum_labels(blob, labels, index=np.arange(1, n + 1))
        blob = labels == (1 + int(np.argmax(sizes)))
    soft = ndimage.gaussian_filter(blob.astype(np.float32), 0.6) * inside
    return Lesion(
        region=region_key,
        corner=(int(lo[0]), int(lo[1]), int(lo[2])),
        mask=soft.astype(np.float32),
        adc=float(rng.uniform(*RANGES["lesion_adc"])),
        t2=float(rng.uniform(*RANGES["lesion_t2_ms"])),
    )


def place_lesions(
    anat: Anatomy, label: str, rng: np.random.Generator
) -> tuple[list[Lesion], float]:
    """The lesions of a location class and the MNI z (mm) every one of them crosses."""
    placement = PLACEMENT[label]
    for _ in range(20):
        volume = math.exp(rng.uniform(*np.log(placement.volume_ml)))
        first = grow_lesion(anat, placement.regions[0], volume, rng)
        lo, hi = first.z_extent()
        lesions = [first]
        try:
            for key in placement.regions[1:]:
                other = math.exp(rng.uniform(*np.log(placement.volume_ml)))
                lesions.append(grow_lesion(anat, key, other, rng, z_band=(lo + 1, hi - 1)))
        except ValueError:
            continue
        extents = [les.z_extent() for les in lesions]
        lo, hi = max(e[0] for e in extents), min(e[1] for e in extents)
        if hi >= lo:
            return lesions, 0.5 * (lo + hi)
    raise RuntimeError(f"cannot place {label}")
