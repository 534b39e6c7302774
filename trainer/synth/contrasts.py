"""Other contrasts of the same anatomy: T1, T2, FLAIR and CT, for out-of-scope images.

Tissue classes on the slice: grey matter, white matter and CSF from the MNI template (slab
averaged), plus a head drawn around the brain from its distance map (the template is
skull-stripped): extra-axial CSF 1-3 mm, inner table 1-2 mm, diploe (fatty marrow) 2-4 mm, outer
table 1-2 mm, scalp fat 3-6 mm, skin 1-2 mm, then air.

MR signal per tissue from textbook 1.5 T relaxation times (PD relative, T1 and T2 in ms):

| tissue | PD | T1 | T2 | CT (HU) |
|---|---|---|---|---|
| white matter | 0.69 | 600 | 80 | 29 |
| grey matter | 0.80 | 1000 | 100 | 38 |
| CSF | 1.00 | 4000 | 2000 | 8 |
| cortical bone | 0.05 | 300 | 1 | 1000-1600 |
| diploe (marrow) | 0.70 | 300 | 60 | 300-500 |
| fat | 0.90 | 260 | 80 | -100 |
| skin | 0.75 | 900 | 45 | 45 |

* T1 spin echo (TR 450-600, TE 10-20 ms): ``PD (1 - e^(-TR/T1)) e^(-TE/T2)``; CSF dark, white
  matter brighter than grey, fat bright.
* T1 3-D gradient echo, inversion-prepared (MPRAGE-like: TR 1900-2300, TI 900-1100, TE 2.5-4),
  half of the out-of-scope T1 images: the inversion formula below; white matter far brighter
  than grey, CSF black (the look of the MNI template itself).
* T2 turbo spin echo (TR 3500-6000, TE 80-110): same formula; CSF bright.
* FLAIR (TR 8000-10000, TI 2250-2450, TE 100-130): ``PD |1 - 2 e^(-TI/T1) + e^(-TR/T1)|
  e^(-TE/T2)``: the inversion nulls CSF (dark), grey brighter than white.
* CT: Hounsfield units per tissue plus Gaussian noise (SD 3-8 HU); air -1000.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

F32 = npt.NDArray[np.float32]
TISSUES = ("wm", "gm", "csf", "bone", "diploe", "fat", "skin")
PD = {"wm": 0.69, "gm": 0.80, "csf": 1.0, "bone": 0.05, "diploe": 0.70, "fat": 0.90, "skin": 0.75}
T1_MS = {"wm": 600, "gm": 1000, "csf": 4000, "bone": 300, "diploe": 300, "fat": 260, "skin": 900}
T2_MS = {"wm": 80, "gm": 100, "csf": 2000, "bone": 1, "diploe": 60, "fat": 80, "skin": 45}
HU = {
    "wm": (27.0, 31.0),
    "gm": (36.0, 41.0),
    "csf": (4.0, 12.0),
    "bone": (1000.0, 1600.0),
    "diploe": (300.0, 500.0),
    "fat": (-110.0, -90.0),
    "skin": (35.0, 55.0),
}
MR_KINDS = ("t1", "t2", "flair")
GRADIENT_ECHO_T1_SHARE = 0.5
"""Share of out-of-scope T1 images that are a 3-D inversion-prepared gradient echo
(MPRAGE-like)."""


@dataclass(frozen=True)
class Sequence:
    """Timing of one MR acquisition (ms); ``ti`` 0 without inversion."""

    kind: str
    tr: float
    te: float
    ti: float = 0.0


def random_sequence(
    rng: np.random.Generator, kind: str, gradient_echo_share: float = 0.0
) -> Sequence:
    """Typical 1.5 T timing of ``kind`` (t1, t2 or flair).

    A T1 is a 3-D gradient echo (MPRAGE-like) with probability ``gradient_echo_share`` (drawn only
    when it is above 0), else a spin echo.
    """
    if kind == "t1" and gradient_echo_share > 0 and rng.random() < gradient_echo_share:
        return Sequence(
            kind,
            float(rng.uniform(1900, 2300)),
            float(rng.uniform(2.5, 4.0)),
            float(rng.uniform(900, 1100)),
        )
    if kind == "t1":
        return Sequence(kind, float(rng.uniform(450, 600)), float(rng.uniform(10, 20)))
    if kind == "t2":
        return Sequence(kind, float(rng.uniform(3500, 6000)), float(rng.uniform(80, 110)))
    if kind == "flair":
        return Sequence(
            kind,
            float(rng.uniform(8000, 10000)),
            float(rng.uniform(100, 130)),
            float(rng.uniform(2250, 2450)),
        )
    raise ValueError(f"unknown MR kind {kind!r}")


def tissue_signal(sequence: Sequence, tissue: str) -> float:
    """Signal of one pure tissue (see the module docstring)."""
    pd, t1, t2 = PD[tissue], T1_MS[tissue], T2_MS[tissue]
    decay = float(np.exp(-sequence.te / t2))
    if sequence.ti > 0:
        recovery = abs(1.0 - 2.0 * np.exp(-sequence.ti / t1) + np.exp(-sequence.tr / t1))
    else:
        recovery = 1.0 - float(np.exp(-sequence.tr / t1))
    return float(pd * recovery * decay)


def head_maps(
    gm: F32, wm: F32, csf: F32, pixel_mm: float, rng: np.random.Generator, *, head: bool = True
) -> dict[str, F32]:
    """Fraction maps of every tissue of `TISSUES` on the slice: the brain's plus the head around.

    Layers outside the brain follow the distance (mm) from it, with thicknesses drawn per image.
    ``head=False``: the brain alone (skull-stripped), every layer outside it empty.
    """
    brain = np.asarray(ndimage.binary_fill_holes((gm + wm + csf) > 0.5), dtype=bool)
    outside = np.asarray(ndimage.distance_transform_edt(~brain), dtype=np.float32) * pixel_mm
    edges = np.cumsum(
        [
            rng.uniform(1.0, 3.0),  # extra-axial CSF
            rng.uniform(1.0, 2.0),  # inner table
            rng.uniform(2.0, 4.0),  # diploe
            rng.uniform(1.0, 2.0),  # outer table
            rng.uniform(3.0, 6.0),  # scalp fat
            rng.uniform(1.0, 2.0),  # skin
        ]
    )
    names = ("csf", "bone", "diploe", "bone", "fat", "skin")
    maps = {name: np.zeros_like(gm) for name in TISSUES}
    maps["gm"], maps["wm"] = gm.copy(), wm.copy()
    maps["csf"] = csf + (brain & ((gm + wm + csf) <= 0.5)).astype(np.float32)
    if not head:
        return maps
    start = 0.0
    ring = ~brain
    for name, end in zip(names, edges, strict=True):
        layer = ring & (outside > start) & (outside <= end)
        maps[name] = maps[name] + layer.astype(np.float32)
        start = float(end)
    return maps


def mr_image(maps: dict[str, F32], sequence: Sequence) -> F32:
    """Noise-free MR magnitude of the slice."""
    out = np.zeros_like(maps["wm"])
    for name in TISSUES:
        out += maps[name] * np.float32(tissue_signal(sequence, name))
    return out


def ct_image(maps: dict[str, F32], rng: np.random.Generator) -> F32:
    """Noise-free CT of the slice in HU (air -1000 where no tissue)."""
    covered = np.zeros_like(maps["wm"])
    out = np.zeros_like(maps["wm"])
    for name in TISSUES:
        out += maps[name] * np.float32(rng.uniform(*HU[name]))
        covered += maps[name]
    air = np.clip(1.0 - covered, 0.0, 1.0)
    return np.asarray(out + air * np.float32(-1000.0), dtype=np.float32)
