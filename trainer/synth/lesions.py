"""Acute infarcts as irregular blobs inside one region of the anatomy.

A lesion is grown on the 1 mm MNI grid around a random voxel of its region:

1. a randomly oriented ellipsoid (semi-axes by site: lacunar-size in deep sites, larger in the lobes
   and the cerebellum), sometimes with a second overlapping lobule;
2. made irregular by adding smoothed random noise to the ellipsoid's implicit function;
3. cut to the region, to tissue (grey + white >= 0.5, never CSF) and to voxels beyond the case's
   enlarged ventricles, keeping the connected part that holds the centre;
4. given soft edges inside that mask (partial volume).

Every voxel of a lesion therefore lies inside its region and inside tissue; tests check it.
Diffusion values per lesion: ADC 0.38-0.55 x 1e-3 mm2/s, S0 (T2 shine-through) x 1.05-1.3, pairs
too faint to see (``MIN_PURE_CONTRAST``) redrawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from trainer.errors import SynthError
from trainer.synth.regions import GENU, SPLENIUM

if TYPE_CHECKING:
    from trainer.synth.anatomy import Anatomy

DEEP_SITES = frozenset(
    {"centrum semiovale", "internal capsule", "basal ganglia", "thalamus", "pons"}
)
SEMI_AXES_MM = {
    "deep": (4.0, 8.5),
    "insula": (5.0, 10.0),
    "cortical": (6.0, 16.0),
    "small": (2.5, 6.0),
}
"""Range of the ellipsoid's semi-axes by kind of site."""
MIN_VOXELS = {"deep": 60, "insula": 120, "cortical": 250, "small": 20}
ADC_RANGE = (0.38, 0.55)
S0_FACTOR_RANGE = (1.05, 1.3)
MIN_PURE_CONTRAST = 1.4
"""A lesion replacing white matter is at least this much brighter on b1000 (before partial volume,
blur and noise): S0 factor x exp(ADC_wm - ADC_lesion). Fainter (ADC, S0) pairs are redrawn."""
_WM_ADC = 0.72
NEAR_Z_MM = 4.0
"""A second lesion's centre lies within this many mm (MNI z) of the first one's."""
SHARED_LEVEL_FRACTION = 0.3
"""Two-lesion cases: the first centre lies where every region of the case has at least this share
of its largest per-level voxel count (so the second lesion finds room at the same level)."""
_TRIES = 40
_TISSUE_U8 = 128


@dataclass(frozen=True)
class Lesion:
    """One lesion: a soft mask in a box of the anatomy grid plus its diffusion values."""

    region: str
    origin: npt.NDArray[np.int64]
    """Voxel index (anatomy grid) of ``fraction[0, 0, 0]``."""
    fraction: npt.NDArray[np.float32]
    """Lesion fraction per voxel, 0..1; zero outside the region and outside tissue."""
    centre_mni: npt.NDArray[np.float64]
    volume_ml: float
    adc: float
    """Apparent diffusion coefficient, 1e-3 mm2/s."""
    s0_factor: float
    """T2 (b0) signal relative to the tissue it replaces (white matter's for ``replaces='csf'``)."""
    kind: str = "acute"
    """``acute`` (the class's infarct) or a look-alike of `trainer.synth.mimics`."""
    replaces: str = "tissue"
    """``tissue`` (grey + white matter) or ``csf`` (choroid plexus inside a ventricle)."""


def site_kind(region: str) -> str:
    """'deep', 'insula' or 'cortical': picks the size range."""
    if region in (GENU, SPLENIUM):
        return "deep"
    site = region.split(" ", 1)[1]
    if site in DEEP_SITES:
        return "deep"
    return "insula" if site == "insula" else "cortical"


def _random_rotation(rng: np.random.Generator) -> npt.NDArray[np.float64]:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return np.asarray(q * np.sign(np.diag(r)), dtype=np.float64)


def _ellipsoid_level(
    line: npt.NDArray[np.float32],
    axes: npt.NDArray[np.float64],
    rotation: npt.NDArray[np.float64],
    shift: npt.NDArray[np.float64],
) -> npt.NDArray[np.float32]:
    """Root of a rotated ellipsoid's quadratic form on the cube ``line`` x ``line`` x ``line``.

    1 on the surface, below 1 inside. Computed separably: no (n, 3) point list.
    """
    form = (rotation / axes**2) @ rotation.T  # M = R diag(1/a^2) R^T
    x = (line - shift[0])[:, None, None]
    y = (line - shift[1])[None, :, None]
    z = (line - shift[2])[None, None, :]
    m = form.astype(np.float32)
    q = m[0, 0] * x * x + m[1, 1] * y * y + m[2, 2] * z * z
    q = q + 2 * m[0, 1] * x * y + 2 * m[0, 2] * x * z + 2 * m[1, 2] * y * z
    return np.asarray(np.sqrt(np.maximum(q, 0.0)), dtype=np.float32)


def _blob(
    rng: np.random.Generator, radius: int, axes: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """An irregular ellipsoid in a cube of side ``2 * radius + 1`` centred on the middle voxel."""
    line = np.arange(-radius, radius + 1, dtype=np.float32)
    level = _ellipsoid_level(line, axes, _random_rotation(rng), np.zeros(3))
    if rng.random() < 0.4:  # a second lobule, overlapping the first
        shift = rng.normal(size=3)
        shift *= 0.8 * axes.mean() / np.linalg.norm(shift)
        axes2 = axes * rng.uniform(0.5, 0.8)
        level = np.minimum(level, _ellipsoid_level(line, axes2, _random_rotation(rng), shift))
    noise = rng.standard_normal(level.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, max(1.2, axes.mean() / 3.0))
    noise /= max(float(noise.std()), 1e-6)
    return np.asarray(level + np.float32(0.28) * noise < 1.0)


_VOXELS: dict[tuple[str, int], npt.NDArray[np.intp]] = {}


def _allowed(
    anatomy: Anatomy, box: tuple[slice, ...], code: int, enlargement_mm: float
) -> npt.NDArray[np.bool_]:
    """Where a lesion of region ``code`` may lie inside ``box``: region, tissue, no ventricle."""
    tissue = anatomy.tissue[box]
    return np.asarray(
        (anatomy.regions[box] == code)
        & (tissue[..., 0].astype(np.uint16) + tissue[..., 1] >= _TISSUE_U8)
        & (tissue[..., 3] > enlargement_mm + 1.0)
    )


def _region_voxels(anatomy: Anatomy, code: int) -> npt.NDArray[np.intp]:
    """Tissue voxels of a region, ``(n, 3)``; memoised per process and anatomy."""
    key = (anatomy.key, code)
    if key not in _VOXELS:
        full = tuple(slice(0, n) for n in anatomy.shape)
        _VOXELS[key] = np.argwhere(_allowed(anatomy, full, code, -2.0))
    return _VOXELS[key]


def _diffusion(rng: np.random.Generator) -> dict[str, float]:
    """ADC and S0 factor, redrawn while the pair would be too faint (see ``MIN_PURE_CONTRAST``)."""
    while True:
        adc = float(rng.uniform(*ADC_RANGE))
        s0_factor = float(rng.uniform(*S0_FACTOR_RANGE))
        if s0_factor * np.exp(_WM_ADC - adc) >= MIN_PURE_CONTRAST:
            return {"adc": adc, "s0_factor": s0_factor}


def _values(
    rng: np.random.Generator, diffusion: tuple[tuple[float, float], tuple[float, float]]
) -> dict[str, float]:
    adc, s0 = diffusion
    return {"adc": float(rng.uniform(*adc)), "s0_factor": float(rng.uniform(*s0))}


def shared_levels(anatomy: Anatomy, regions: tuple[str, ...]) -> tuple[float, float]:
    """The MNI z range where every one of ``regions`` is well represented.

    Well: at least ``SHARED_LEVEL_FRACTION`` of the region's largest per-level voxel count.

    Raises:
        SynthError: the regions share no such level.
    """
    ok = np.ones(anatomy.shape[2], dtype=bool)
    for region in regions:
        voxels = _region_voxels(anatomy, anatomy.region_code(region))
        counts = np.bincount(voxels[:, 2], minlength=anatomy.shape[2])
        ok &= counts >= SHARED_LEVEL_FRACTION * counts.max()
    levels = np.flatnonzero(ok) + anatomy.affine[2, 3]
    if not len(levels):
        raise SynthError(f"regions {', '.join(regions)} share no axial level")
    return float(levels.min()), float(levels.max())


def grow_lesion(
    rng: np.random.Generator,
    anatomy: Anatomy,
    region: str,
    *,
    enlargement_mm: float = 0.0,
    z_window: tuple[float, float] | None = None,
    diffusion: tuple[tuple[float, float], tuple[float, float]] | None = None,
    kind: str = "acute",
    size: str | None = None,
) -> Lesion:
    """Grow one lesion in ``region`` (see the module docstring).

    ``z_window`` (MNI mm) restricts where the lesion's centre may lie, so that two lesions of a
    case can share one slice. ``diffusion`` (ADC range, S0-factor range) replaces the acute
    values for look-alikes of ``kind``; ``size`` picks another size class of ``SEMI_AXES_MM``.

    Raises:
        SynthError: no lesion of the minimum size fits (the region is too small or too thin).
    """
    code = anatomy.region_code(region)
    candidates = _region_voxels(anatomy, code)
    ventricle_distance = anatomy.ventricle_distance[tuple(candidates.T)]
    candidates = candidates[ventricle_distance > enlargement_mm + 1.0]
    if z_window is not None:
        z_mm = candidates[:, 2] + anatomy.affine[2, 3]
        inside = candidates[(z_mm >= z_window[0]) & (z_mm <= z_window[1])]
        candidates = inside if len(inside) else candidates
    if not len(candidates):
        raise SynthError(f"region {region!r} has no tissue left for a lesion")
    site = size or site_kind(region)
    low, high = SEMI_AXES_MM[site]
    for _ in range(_TRIES):
        centre = candidates[rng.integers(len(candidates))]
        axes = rng.uniform(low, high, size=3)
        radius = int(np.ceil(axes.max() * 1.6)) + 2
        blob = _blob(rng, radius, axes)
        lo = centre - radius
        box_lo = np.maximum(lo, 0)
        box_hi = np.minimum(centre + radius + 1, anatomy.shape)
        cut = tuple(
            slice(int(a - b), int(c - b)) for a, b, c in zip(box_lo, lo, box_hi, strict=True)
        )
        box = tuple(slice(int(a), int(b)) for a, b in zip(box_lo, box_hi, strict=True))
        mask = blob[cut] & _allowed(anatomy, box, code, enlargement_mm)
        labels, _ = ndimage.label(mask)
        seed = labels[tuple(centre - box_lo)]
        if seed == 0:
            continue
        mask = labels == seed
        if int(mask.sum()) < MIN_VOXELS[site]:
            continue
        soft = ndimage.gaussian_filter(mask.astype(np.float32), 0.8)
        fraction = np.asarray(np.clip(soft * 1.6, 0.0, 1.0) * mask, dtype=np.float32)
        voxels = np.argwhere(mask) + box_lo
        values = _diffusion(rng) if diffusion is None else _values(rng, diffusion)
        return Lesion(
            region=region,
            origin=np.asarray(box_lo, dtype=np.int64),
            fraction=fraction,
            centre_mni=anatomy.voxel_to_world(voxels.mean(axis=0)),
            volume_ml=float(fraction.sum()) / 1000.0,
            adc=values["adc"],
            s0_factor=values["s0_factor"],
            kind=kind,
        )
    raise SynthError(f"could not fit a lesion into region {region!r} after {_TRIES} tries")
