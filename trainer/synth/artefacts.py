"""Acquisition artefacts of an EPI diffusion slice, applied to the noise-free b0 / b1000 pair.

* **Susceptibility** at air-bone interfaces (frontal sinus, sphenoid sinus / skull base, both
  temporal bones): EPI piles signal up next to the interface, displaced along the phase-encoding
  direction (front-back, the image's rows), with a signal void at the interface itself. The same
  field multiplies b0 and b1000, so the spot is bright on b1000 while its ADC stays normal: a hard
  negative. Every head has the sources; how much a slice shows depends on its distance from them
  (slices near the skull base show most) and on the case's strength.
* **Flow**: slow or pulsatile flow in a large vessel (basilar artery, straight and transverse
  sinuses, carotid siphons) is a bright dot with faint copies (pulsation ghosts) along the
  phase-encoding direction.
* **Nyquist (N/2) ghost**: a faint copy of the image shifted by half the field of view along the
  phase-encoding direction (EPI odd/even echo mismatch).
* **Motion**: a few phase-encoding lines of k-space acquired with the head shifted (a phase ramp),
  which smears and ghosts the b1000 image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from trainer.synth.geometry import CaseGeometry

FloatImage = npt.NDArray[np.float32]

SUSCEPTIBILITY_SOURCES = {
    "frontal sinus": ((0.0, 62.0, 2.0), 1.0),
    "sphenoid sinus": ((0.0, 18.0, -28.0), 1.0),
    "left temporal bone": ((-44.0, -28.0, -30.0), -1.0),
    "right temporal bone": ((44.0, -28.0, -30.0), -1.0),
}
"""MNI point of the air-bone interface and the direction the pile-up is pushed along the image's
rows (+1: towards the back of the head, into the brain behind a sinus; -1: forwards)."""
VESSELS = {
    "basilar artery": (0.0, -14.0, -32.0),
    "straight sinus": (0.0, -64.0, 6.0),
    "left transverse sinus": (-42.0, -84.0, -12.0),
    "right transverse sinus": (42.0, -84.0, -12.0),
    "left carotid siphon": (-18.0, 4.0, -22.0),
    "right carotid siphon": (18.0, 4.0, -22.0),
}
SUSCEPTIBILITY_REACH_MM = 12.0
"""Through-plane reach: a slab this far from a source shows e^-1 of its strength."""
VISIBLE_PILE_UP = 1.4
"""A slice counts as showing a susceptibility artefact when the field exceeds this in the brain."""
FLOW_SHARE = {"negative": 0.3, "infarct": 0.12}
"""Share of cases with a visible flow artefact."""
SUSCEPTIBILITY_SHARE = {"negative": 0.6, "infarct": 0.3}
"""Share of cases with a marked susceptibility artefact (strength 0.5-2.5); the others get a
faint one (0-0.3), as every EPI shows some distortion at the skull base."""


@dataclass(frozen=True)
class Artefacts:
    """The artefacts of one case."""

    susceptibility: float
    """Strength of the pile-up (marked 0.5-2.5: 1.5-3.5 x the signal at its peak; faint 0-0.3)."""
    susceptibility_jitter: tuple[tuple[float, float, float], ...]
    """Per-source offset (mm) of the interface from its nominal MNI point."""
    flow_vessel: str | None
    flow_strength: float


def random_artefacts(rng: np.random.Generator, *, negative: bool) -> Artefacts:
    """Susceptibility strength for the case, and perhaps one vessel with a flow artefact.

    Marked susceptibility and flow artefacts are more frequent in 'No acute infarct' cases
    (``negative``): that is where a model must learn they are not infarcts.
    """
    jitter = tuple(
        (float(a), float(b), float(c))
        for a, b, c in rng.normal(0.0, 3.0, size=(len(SUSCEPTIBILITY_SOURCES), 3))
    )
    marked = rng.random() < SUSCEPTIBILITY_SHARE["negative" if negative else "infarct"]
    strength = float(rng.uniform(0.5, 2.5) if marked else rng.uniform(0.0, 0.3))
    names = tuple(VESSELS)
    vessel = None
    if rng.random() < FLOW_SHARE["negative" if negative else "infarct"]:
        vessel = names[int(rng.integers(len(names)))]
    return Artefacts(strength, jitter, vessel, float(rng.uniform(0.8, 2.0)))


def _pixel(point: npt.NDArray[np.float64], fov_mm: float, matrix: int) -> tuple[float, float]:
    """Row, column of a scanner point (row 0 anterior, column 0 the patient's right)."""
    pixel = fov_mm / matrix
    half = fov_mm / 2.0 - pixel / 2.0
    return (half - point[1]) / pixel, (half - point[0]) / pixel


def susceptibility_field(
    artefacts: Artefacts,
    geometry: CaseGeometry,
    *,
    z: float,
    fov_mm: float,
    matrix: int,
) -> FloatImage:
    """Multiplicative field (1 = no effect) of the case's air-bone interfaces on the slab at z."""
    pixel = fov_mm / matrix
    rows, cols = np.mgrid[0:matrix, 0:matrix].astype(np.float32)
    field = np.ones((matrix, matrix), dtype=np.float32)
    for (mni, push), jitter in zip(
        SUSCEPTIBILITY_SOURCES.values(), artefacts.susceptibility_jitter, strict=True
    ):
        point = geometry.to_scanner(np.asarray(mni, dtype=np.float64) + jitter)
        weight = float(np.exp(-(((point[2] - z) / SUSCEPTIBILITY_REACH_MM) ** 2)))
        if weight < 0.05:
            continue
        row, col = _pixel(point, fov_mm, matrix)
        # pile-up pushed along the phase-encoding direction, elongated across it
        pile_row = row + push * 9.0 / pixel
        d_pile = ((rows - pile_row) * pixel / 5.0) ** 2 + ((cols - col) * pixel / 14.0) ** 2
        d_void = ((rows - row) * pixel / 6.0) ** 2 + ((cols - col) * pixel / 10.0) ** 2
        pile = 1.0 + artefacts.susceptibility * weight * np.exp(-d_pile)
        void = 1.0 - 0.85 * weight * np.exp(-d_void)
        field *= (pile * void).astype(np.float32)
    return field


def flow_spot(
    artefacts: Artefacts,
    geometry: CaseGeometry,
    *,
    z: float,
    fov_mm: float,
    matrix: int,
    level: float,
    rng: np.random.Generator,
) -> FloatImage | None:
    """Additive bright vessel plus pulsation ghosts along the rows, or None off this slab."""
    if artefacts.flow_vessel is None:
        return None
    point = geometry.to_scanner(np.asarray(VESSELS[artefacts.flow_vessel], dtype=np.float64))
    if abs(point[2] - z) > 6.0:
        return None
    pixel = fov_mm / matrix
    row, col = _pixel(point, fov_mm, matrix)
    rows, cols = np.mgrid[0:matrix, 0:matrix].astype(np.float32)
    radius = 2.5 / pixel
    out = np.zeros((matrix, matrix), dtype=np.float32)
    copies = int(rng.integers(2, 5))
    spacing = matrix / copies
    for k in range(copies):
        amplitude = artefacts.flow_strength * (1.0 if k == 0 else float(rng.uniform(0.15, 0.4)))
        shifted = (row + k * spacing) % matrix
        d = ((rows - shifted) ** 2 + (cols - col) ** 2) / radius**2
        out += np.float32(amplitude * level) * np.exp(-d).astype(np.float32)
    return out


def nyquist_ghost(image: FloatImage, amplitude: float) -> FloatImage:
    """Add a copy shifted by half the field of view along the phase-encoding direction."""
    shift = image.shape[0] // 2
    return np.asarray(image + np.float32(amplitude) * np.roll(image, shift, axis=0), np.float32)


def motion(image: FloatImage, shift_px: float, rng: np.random.Generator) -> FloatImage:
    """Magnitude after shifting a random 10-30 % of the phase-encoding lines by up to shift_px."""
    rows = image.shape[0]
    spectrum = np.fft.fft2(image)
    hit = np.asarray(rng.random(rows) < rng.uniform(0.1, 0.3), dtype=bool)
    ky = np.fft.fftfreq(rows)[:, None]
    shifts = rng.uniform(-shift_px, shift_px, size=(rows, 1))
    phase = np.where(hit[:, None], np.exp(-2j * np.pi * ky * shifts), 1.0)
    return np.asarray(np.abs(np.fft.ifft2(spectrum * phase)), dtype=np.float32)
