"""Things on a DWI slice that are bright or odd but are NOT acute infarcts, and signs of age.

Grown in 3D like the infarcts (`trainer.synth.lesions`), with their own diffusion values:

* ``wmh`` (white-matter hyperintensities of the elderly): 2-6 small patches in lobar and
  centrum semiovale white matter; ADC 0.9-1.2 (1e-3 mm2/s), S0 x 1.4-1.8: mildly bright on b1000;
* ``chronic_infarct``: one lesion-sized site of any region; ADC 1.6-2.6, S0 x 1.5-2.2: dark;
* ``shine_through`` (T2 shine-through): one lesion-sized site; ADC 0.85-1.15, S0 x 2.4-3.2:
  bright on b1000 like an infarct, with a normal or high ADC;
* ``choroid_plexus``: the atria of both lateral ventricles (replacing CSF); ADC 0.6-1.2, S0
  1.0-1.4 x white matter's: bright against the CSF around it.

An acute infarct has ADC 0.38-0.55: the look-alikes are told apart by their normal or high ADC
(``shine_through``, ``wmh``) or by being dark (``chronic_infarct``), as a reader tells them apart.
The susceptibility and flow artefacts are 2-D effects of the slice (`trainer.synth.artefacts`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from trainer.errors import SynthError
from trainer.synth.lesions import Lesion, grow_lesion
from trainer.synth.regions import REGION_NAMES

if TYPE_CHECKING:
    from trainer.synth.anatomy import Anatomy

WMH_REGIONS = tuple(
    f"{side} {site}"
    for side in ("Left", "Right")
    for site in ("centrum semiovale", "frontal lobe", "parietal lobe")
)
ANY_REGIONS = tuple(name for name in REGION_NAMES if name.split(" ", 1)[0] in ("Left", "Right"))
DIFFUSION = {
    "wmh": ((0.9, 1.2), (1.4, 1.8)),
    "chronic_infarct": ((1.6, 2.6), (1.5, 2.2)),
    "shine_through": ((0.85, 1.15), (2.4, 3.2)),
    "choroid_plexus": ((0.6, 1.2), (1.0, 1.4)),
}
"""(ADC range, S0-factor range) per look-alike."""
CASE_SHARE = {
    "negative": {
        "wmh": 0.35,
        "chronic_infarct": 0.15,
        "shine_through": 0.3,
        "choroid_plexus": 0.35,
    },
    "infarct": {
        "wmh": 0.35,
        "chronic_infarct": 0.15,
        "shine_through": 0.08,
        "choroid_plexus": 0.2,
    },
}
"""Share of cases with each look-alike: 'No acute infarct' cases get the hard negatives more often
(age-related findings equally), so the negative class is where a model meets them most."""
_CHOROID_BOX = ((18.0, 36.0), (-52.0, -24.0), (0.0, 26.0))
"""|x|, y, z (MNI mm) of the lateral ventricles' atria, where the glomus of the plexus lies."""
_CHOROID_MIN_VOXELS = 12


def _choroid(
    rng: np.random.Generator, anatomy: Anatomy, side: float, values: dict[str, float]
) -> Lesion | None:
    """A plexus blob inside the ventricle's atrium on one side (sign of MNI x), or None."""
    inside = (anatomy.ventricle_distance == 0) & (anatomy.csf >= 128)
    voxels = np.argwhere(inside)
    world = anatomy.voxel_to_world(voxels)
    (x0, x1), (y0, y1), (z0, z1) = _CHOROID_BOX
    keep = (
        (side * world[:, 0] >= x0)
        & (side * world[:, 0] <= x1)
        & (world[:, 1] >= y0)
        & (world[:, 1] <= y1)
        & (world[:, 2] >= z0)
        & (world[:, 2] <= z1)
    )
    candidates = voxels[keep]
    if not len(candidates):
        return None
    centre = candidates[rng.integers(len(candidates))]
    radius = 7
    lo = np.maximum(centre - radius, 0)
    hi = np.minimum(centre + radius + 1, anatomy.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    grid = np.stack(
        np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"), -1
    )
    axes = rng.uniform(3.5, 6.5, size=3)
    blob = (((grid - centre) / axes) ** 2).sum(-1) <= 1.0
    mask = blob & inside[box]
    if int(mask.sum()) < _CHOROID_MIN_VOXELS:
        return None
    soft = ndimage.gaussian_filter(mask.astype(np.float32), 0.7)
    fraction = np.asarray(np.clip(soft * 1.5, 0.0, 1.0) * mask, dtype=np.float32)
    return Lesion(
        region="Left ventricle" if side < 0 else "Right ventricle",
        origin=np.asarray(lo, dtype=np.int64),
        fraction=fraction,
        centre_mni=anatomy.voxel_to_world(np.argwhere(mask).mean(axis=0) + lo),
        volume_ml=float(fraction.sum()) / 1000.0,
        adc=values["adc"],
        s0_factor=values["s0_factor"],
        kind="choroid_plexus",
        replaces="csf",
    )


AGE_KINDS = frozenset({"wmh", "chronic_infarct"})
"""Signs of age: as frequent on the slices of infarct cases as on those of normal cases."""
AGE_NEAR_MM = 20.0
"""In infarct cases, signs of age are centred within this many mm (MNI z) of the first lesion,
so that they show on the lesion's slices about as often as on a normal case's slices."""


def grow_mimics(
    rng: np.random.Generator,
    anatomy: Anatomy,
    *,
    negative: bool,
    enlargement_mm: float,
    near_z: float | None = None,
) -> tuple[Lesion, ...]:
    """The look-alikes of one case (see the module docstring); none that do not fit.

    ``near_z`` (MNI mm, infarct cases: the first lesion's centre) keeps the signs of age
    (`AGE_KINDS`) near that level.
    """
    window = None if near_z is None else (near_z - AGE_NEAR_MM, near_z + AGE_NEAR_MM)
    shares = CASE_SHARE["negative" if negative else "infarct"]
    out: list[Lesion] = []
    for kind, share in shares.items():
        if rng.random() >= share:
            continue
        diffusion = DIFFUSION[kind]
        try:
            if kind == "wmh":
                for _ in range(int(rng.integers(2, 7))):
                    region = WMH_REGIONS[int(rng.integers(len(WMH_REGIONS)))]
                    out.append(
                        grow_lesion(
                            rng,
                            anatomy,
                            region,
                            enlargement_mm=enlargement_mm,
                            diffusion=diffusion,
                            kind=kind,
                            size="small",
                            z_window=window,
                        )
                    )
            elif kind == "choroid_plexus":
                adc, s0 = diffusion
                values = {"adc": float(rng.uniform(*adc)), "s0_factor": float(rng.uniform(*s0))}
                for side in (-1.0, 1.0):
                    blob = _choroid(rng, anatomy, side, values)
                    if blob is not None:
                        out.append(blob)
            else:
                region = ANY_REGIONS[int(rng.integers(len(ANY_REGIONS)))]
                out.append(
                    grow_lesion(
                        rng,
                        anatomy,
                        region,
                        enlargement_mm=enlargement_mm,
                        diffusion=diffusion,
                        kind=kind,
                        z_window=window if kind in AGE_KINDS else None,
                    )
                )
        except SynthError:
            continue
    return tuple(out)
