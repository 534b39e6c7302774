"""Lesion sites: one region per canonical class site, from AAL3 labels and geometric rules.

The 27 canonical classes name 24 sites: 11 per side plus the genu and the splenium of the corpus
callosum (the two-lesion classes combine two of them, 'No acute infarct' has none). Regions are
disjoint; they are built in the order below and a voxel belongs to the first region that claims it.

=======================  ==========================================================================
site                     rule (MNI mm; *tissue* = grey + white fraction >= 0.5)
=======================  ==========================================================================
thalamus                 AAL3 ``Thal_*`` (the 30 thalamic nuclei)
basal ganglia            AAL3 ``Caudate``, ``Putamen``, ``Pallidum``, ``N_Acc``
internal capsule         white matter (>= 0.4) within 7 mm of the lentiform nucleus (putamen +
                         pallidum) *and* within 7 mm of the thalamus or caudate, inside the
                         lentiform's z range: the band between them (anterior limb, genu, posterior
                         limb)
pons                     tissue outside every AAL3 cortical/cerebellar label with |x| <= 14,
                         -42 <= y <= -12, -44 <= z <= -20 (largest connected part); by side of x,
                         leaving the midline 1 mm out
genu / splenium          the corpus callosum is the largest connected white-matter (>= 0.6) part in
                         the midline slab |x| <= 2, -4 <= z <= 36; its anterior 22 % in y is the
                         genu, its posterior 22 % the splenium; each extends sideways to |x| <= 14
                         over white matter with the same (y, z) footprint (+- 2 mm)
centrum semiovale        white matter (>= 0.5) above the top of that side's lateral ventricle and
                         at most 22 mm higher, at least 3 mm from grey matter, |x| >= 8
insula, lobes,           AAL3 labels grouped per lobe (see ``LOBE_PATTERNS``; the fusiform gyrus
                         behind y = -55 counts as occipital); then every
cerebellar hemisphere    unclaimed, unlabelled tissue voxel joins the nearest of these labels within
                         12 mm (insula: 4 mm), outside the brainstem box |x| <= 16,
                         -45 <= y <= -5, z <= -5: a territorial infarct reaches the white matter
                         under its cortex
=======================  ==========================================================================

Side follows the sign of MNI x (negative = Left); every lateral region is cut to its side, leaving
the midline plane |x| < 0.5 mm out (AAL3 labels and the extensions can cross it slightly).
`build_regions` returns the region codes and the ventricles' distance map (used for per-case
ventricle enlargement).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from trainer.errors import SynthError

SIDES = ("Left", "Right")
LATERAL_SITES = (
    "frontal lobe",
    "parietal lobe",
    "temporal lobe",
    "occipital lobe",
    "insula",
    "centrum semiovale",
    "internal capsule",
    "basal ganglia",
    "thalamus",
    "cerebellar hemisphere",
    "pons",
)
GENU = "Genu of the corpus callosum"
SPLENIUM = "Splenium of the corpus callosum"
REGION_NAMES: tuple[str, ...] = (
    *(f"{side} {site}" for site in LATERAL_SITES for side in SIDES),
    GENU,
    SPLENIUM,
)
"""Every region, named like the single-lesion canonical class it produces."""

CLASS_REGIONS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in REGION_NAMES},
    "Left centrum semiovale and right parietal lobe": (
        "Left centrum semiovale",
        "Right parietal lobe",
    ),
    "Right frontal and parietal lobes": ("Right frontal lobe", "Right parietal lobe"),
    "No acute infarct": (),
}
"""Canonical class -> the regions that hold its lesions (one lesion per region)."""

LOBE_PATTERNS: dict[str, tuple[str, ...]] = {
    "frontal lobe": (
        "Precentral_*",
        "Frontal_*",
        "Rolandic_Oper_*",
        "Supp_Motor_Area_*",
        "Olfactory_*",
        "Rectus_*",
        "OFC*",
    ),
    "parietal lobe": (
        "Postcentral_*",
        "Parietal_*",
        "SupraMarginal_*",
        "Angular_*",
        "Precuneus_*",
        "Paracentral_Lobule_*",
    ),
    "temporal lobe": ("Heschl_*", "Temporal_*", "Fusiform_*"),
    "occipital lobe": ("Calcarine_*", "Cuneus_*", "Lingual_*", "Occipital_*"),
    "insula": ("Insula_*",),
    "cerebellar hemisphere": ("Cerebellum_*",),
}
"""AAL3 label-name patterns (without the ``_L``/``_R`` suffix logic) per cortical site."""
DEEP_PATTERNS: dict[str, tuple[str, ...]] = {
    "thalamus": ("Thal_*",),
    "basal ganglia": ("Caudate_*", "Putamen_*", "Pallidum_*", "N_Acc_*"),
}
_EXTEND_MM = 12.0
_INSULA_EXTEND_MM = 4.0
_CAPSULE_MM = 7.0
_CSO_HEIGHT_MM = 22.0
_CSO_FROM_GM_MM = 3.0
_CC_END_FRACTION = 0.22
_CC_HALF_WIDTH_MM = 14
_MIN_CC_LENGTH_MM = 40
_PONS_HALF_WIDTH_MM = 14
_CSO_FROM_MIDLINE_MM = 8
_TEMPORO_OCCIPITAL_Y = -55
_MIN_VENTRICLE_VOXELS = 2000

BoolVolume = npt.NDArray[np.bool_]
FloatVolume = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TissueMaps:
    """Fractions on one grid (1 mm, axis-aligned, RAS) plus its affine."""

    gm: FloatVolume
    wm: FloatVolume
    csf: FloatVolume
    brain: BoolVolume
    affine: npt.NDArray[np.float64]


@dataclass(frozen=True)
class BuiltRegions:
    """What `build_regions` returns."""

    labels: npt.NDArray[np.uint8]
    names: tuple[str, ...]
    ventricle_distance: npt.NDArray[np.float32]


def _axes(tissue: TissueMaps) -> tuple[npt.NDArray[np.float64], ...]:
    affine = tissue.affine
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise SynthError("the anatomy grid must be 1 mm, axis-aligned RAS")
    nx, ny, nz = tissue.gm.shape
    x = (np.arange(nx) + affine[0, 3])[:, None, None]
    y = (np.arange(ny) + affine[1, 3])[None, :, None]
    z = (np.arange(nz) + affine[2, 3])[None, None, :]
    return x, y, z


def _match(names: dict[int, str], patterns: tuple[str, ...], side: str) -> list[int]:
    suffix = "_L" if side == "Left" else "_R"
    return sorted(
        code
        for code, name in names.items()
        if name.endswith(suffix) and any(fnmatch.fnmatch(name, p) for p in patterns)
    )


def _distance(mask: BoolVolume) -> FloatVolume:
    """Euclidean distance in mm from each voxel to the nearest voxel of ``mask``."""
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    return np.asarray(ndimage.distance_transform_edt(~mask), dtype=np.float32)


def _largest_component(mask: BoolVolume) -> BoolVolume:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return np.asarray(labels == int(np.argmax(sizes)) + 1)


def lateral_ventricles(tissue: TissueMaps) -> BoolVolume:
    """Lateral + third ventricles: the deep CSF component that fills the box beside the midline.

    CSF (>= 0.5) at least 8 mm inside the brain is split into connected parts; the ventricles are
    the part with the most voxels in the box 8 <= |x| <= 30, -40 <= y <= 10, 10 <= z <= 28 (the
    ventricle bodies).
    """
    x, y, z = _axes(tissue)
    depth = ndimage.distance_transform_edt(tissue.brain)
    deep_csf = (tissue.csf >= 0.5) & (depth >= 8)
    labels, count = ndimage.label(deep_csf)
    box = (np.abs(x) >= 8) & (np.abs(x) <= 30) & (y >= -40) & (y <= 10) & (z >= 10) & (z <= 28)
    hits = np.bincount(labels[box & deep_csf].ravel(), minlength=count + 1)[1:]
    if count == 0 or hits.max() < _MIN_VENTRICLE_VOXELS // 10:
        raise SynthError("could not find the lateral ventricles in the MNI152 template")
    ventricles = np.asarray(labels == int(np.argmax(hits)) + 1)
    if int(ventricles.sum()) < _MIN_VENTRICLE_VOXELS:
        raise SynthError(
            "the lateral ventricles found in the MNI152 template are implausibly small"
        )
    return ventricles


class _Builder:
    """Applies the rules one after the other; a voxel goes to the first region that claims it."""

    def __init__(
        self, tissue: TissueMaps, aal: npt.NDArray[np.int32], aal_names: dict[int, str]
    ) -> None:
        self.tissue = tissue
        self.aal = aal
        self.aal_names = aal_names
        self.x, self.y, self.z = _axes(tissue)
        self.labels = np.zeros(tissue.gm.shape, dtype=np.uint8)
        self.parenchyma = (tissue.gm + tissue.wm) >= 0.5
        self.side_of = {"Left": self.x < -0.5, "Right": self.x > 0.5}

    @staticmethod
    def code(name: str) -> int:
        return REGION_NAMES.index(name) + 1

    def sided(self, name: str, mask: BoolVolume) -> BoolVolume:
        """``mask`` cut to the named side (atlas labels and extensions may cross the midline)."""
        side = name.split(" ", 1)[0]
        return mask & self.side_of[side] if side in self.side_of else mask

    def claim(self, name: str, mask: BoolVolume) -> None:
        take = self.sided(name, mask) & (self.labels == 0)
        if not take.any():
            raise SynthError(f"region {name!r} is empty")
        self.labels[take] = self.code(name)

    def aal_mask(self, patterns: tuple[str, ...], side: str) -> BoolVolume:
        return np.isin(self.aal, _match(self.aal_names, patterns, side))

    def deep_grey(self) -> None:
        """Thalamus and basal ganglia, straight from the atlas."""
        for site, patterns in DEEP_PATTERNS.items():
            for side in SIDES:
                self.claim(f"{side} {site}", self.aal_mask(patterns, side) & self.tissue.brain)

    def internal_capsules(self) -> None:
        """White matter between the lentiform nucleus and the thalamus / caudate."""
        for side in SIDES:
            lentiform = self.aal_mask(("Putamen_*", "Pallidum_*"), side)
            medial = self.aal_mask(("Thal_*", "Caudate_*"), side)
            zs = np.flatnonzero(lentiform.any(axis=(0, 1))) + self.tissue.affine[2, 3]
            band = (
                (_distance(lentiform) <= _CAPSULE_MM)
                & (_distance(medial) <= _CAPSULE_MM)
                & (self.tissue.wm >= 0.4)
                & self.side_of[side]
                & (self.z >= zs.min())
                & (self.z <= zs.max())
            )
            self.claim(f"{side} internal capsule", band)

    def pons(self) -> None:
        """Brainstem tissue at pontine level, outside every cortical / cerebellar label."""
        cortical = [
            code
            for patterns in LOBE_PATTERNS.values()
            for side in SIDES
            for code in _match(self.aal_names, patterns, side)
        ]
        x, y, z = self.x, self.y, self.z
        pons = _largest_component(
            self.parenchyma
            & ~np.isin(self.aal, cortical)
            & (np.abs(x) <= _PONS_HALF_WIDTH_MM)
            & (y >= -42)
            & (y <= -12)
            & (z >= -44)
            & (z <= -20)
        )
        for side in SIDES:
            self.claim(f"{side} pons", pons & self.side_of[side])

    def corpus_callosum(self) -> None:
        """Midline white matter, its anterior and posterior ends, widened sideways."""
        x, y, z = self.x, self.y, self.z
        midline = _largest_component(
            (self.tissue.wm >= 0.6) & (np.abs(x) <= 2) & (z >= -4) & (z <= 36) & (self.labels == 0)
        )
        cc_y = np.flatnonzero(midline.any(axis=(0, 2))) + self.tissue.affine[1, 3]
        length = float(cc_y.max() - cc_y.min())
        if length < _MIN_CC_LENGTH_MM:
            raise SynthError("could not find the corpus callosum in the MNI152 template")
        for name, part in (
            (GENU, midline & (y >= cc_y.max() - _CC_END_FRACTION * length)),
            (SPLENIUM, midline & (y <= cc_y.min() + _CC_END_FRACTION * length)),
        ):
            footprint = ndimage.binary_dilation(part.any(axis=0), iterations=2)  # (y, z) shadow
            self.claim(
                name,
                footprint[None, :, :] & (self.tissue.wm >= 0.5) & (np.abs(x) <= _CC_HALF_WIDTH_MM),
            )

    def centrum_semiovale(self, ventricles: BoolVolume) -> None:
        """Deep white matter above each lateral ventricle."""
        from_gm = _distance(self.tissue.gm >= 0.5)
        for side in SIDES:
            levels = np.flatnonzero((ventricles & self.side_of[side]).any(axis=(0, 1)))
            top = float(levels.max() + self.tissue.affine[2, 3])
            self.claim(
                f"{side} centrum semiovale",
                (self.tissue.wm >= 0.5)
                & self.side_of[side]
                & (np.abs(self.x) >= _CSO_FROM_MIDLINE_MM)
                & (self.z > top)
                & (self.z <= top + _CSO_HEIGHT_MM)
                & (from_gm >= _CSO_FROM_GM_MM),
            )

    def cortical(self) -> None:
        """Lobes, insula, cerebellum: atlas labels, then the nearest-label extension."""
        cortex = np.zeros(self.labels.shape, dtype=np.uint8)
        free = self.labels == 0
        for site, patterns in LOBE_PATTERNS.items():
            for side in SIDES:
                cortex[self.aal_mask(patterns, side) & self.tissue.brain & free] = self.code(
                    f"{side} {site}"
                )
        x, y, z = self.x, self.y, self.z
        for side in SIDES:  # the fusiform gyrus behind the temporo-occipital line is occipital
            back = self.aal_mask(("Fusiform_*",), side) & (y < _TEMPORO_OCCIPITAL_Y) & free
            cortex[back & self.tissue.brain] = self.code(f"{side} occipital lobe")
        brainstem_box = (np.abs(x) <= 16) & (y >= -45) & (y <= -5) & (z <= -5)
        distance, nearest = ndimage.distance_transform_edt(cortex == 0, return_indices=True)
        nearest_code = cortex[tuple(nearest)]
        insula = [self.code(f"{side} insula") for side in SIDES]
        reach = np.where(np.isin(nearest_code, insula), _INSULA_EXTEND_MM, _EXTEND_MM)
        extend = (
            (cortex == 0)
            & free
            & (self.aal == 0)
            & self.parenchyma
            & ~brainstem_box
            & (distance <= reach)
        )
        cortex[extend] = nearest_code[extend]
        for index, name in enumerate(REGION_NAMES):
            stray = (cortex == index + 1) & ~self.sided(name, cortex == index + 1)
            cortex[stray] = 0
        self.labels[free] = cortex[free]


def build_regions(
    tissue: TissueMaps, aal: npt.NDArray[np.int32], aal_names: dict[int, str]
) -> BuiltRegions:
    """Region codes (index into ``REGION_NAMES`` + 1, 0 = none) on the tissue grid.

    Raises:
        SynthError: a rule finds nothing (the inputs are not the expected template and atlas).
    """
    builder = _Builder(tissue, aal, aal_names)
    ventricles = lateral_ventricles(tissue)
    builder.deep_grey()
    builder.internal_capsules()
    builder.pons()
    builder.corpus_callosum()
    builder.centrum_semiovale(ventricles)
    builder.cortical()
    for name in REGION_NAMES:
        if not (builder.labels == builder.code(name)).any():
            raise SynthError(f"region {name!r} is empty")
    return BuiltRegions(
        labels=builder.labels, names=REGION_NAMES, ventricle_distance=_distance(ventricles)
    )


def region_centroids(labels: npt.NDArray[np.uint8], affine: npt.NDArray[Any]) -> dict[str, Any]:
    """MNI centroid of every region (for docs and sanity checks)."""
    out: dict[str, Any] = {}
    for index, name in enumerate(REGION_NAMES):
        voxels = np.argwhere(labels == index + 1)
        if len(voxels):
            out[name] = (voxels.mean(axis=0) @ affine[:3, :3].T + affine[:3, 3]).round(1)
    return out
