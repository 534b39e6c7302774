"""From the scanner's float image to what a site exports: display matrix, window, gamma.

Window methods (8-bit exports; ``white`` is the value shown as 255):

* ``auto``: the scanner's auto-window, ``white`` = median brain x 1.7-2.2 (normal brain mid-grey);
* ``fixed``: a site's fixed window in absolute units, not adapted to the image (so the b-value,
  the bias field and the receive gain move the brain's grey level): ``white`` = 0.8-1.7 (white
  matter is ~0.5 at b1000);
* ``percentile``: black and white at the image's 0-2nd and the brain's 99-99.9th percentiles;
* ``gain``: a high gain, ``white`` = median brain x 1.3-1.6, so lesions saturate;
* ``minmax`` (shifted only): full range, black = minimum, white = maximum (a bright artefact
  darkens everything else);
* ``equalize`` (shifted only): histogram equalisation of the auto-windowed image;
* ``dark`` (shifted only): ``white`` = median brain x 3.2-5;
* ``overgain`` (shifted only): ``white`` = median brain x 0.75-1.05.

A gamma (``profile.gamma``) is applied to a share of the exports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from trainer.synth.profiles import Profile, draw

if TYPE_CHECKING:
    from trainer.synth.render import RenderedSlice

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
ALL_WINDOWS = ("auto", "fixed", "percentile", "gain", "minmax", "equalize", "dark", "overgain")


@dataclass(frozen=True)
class Display:
    """How one series is exported (drawn once per case)."""

    method: str
    factor: float
    """Multiplier of the brain's median (auto, gain, dark, overgain) or absolute white (fixed)."""
    low_percentile: float
    high_percentile: float
    gamma: float
    matrix: int
    nearest: bool


def random_display(
    rng: np.random.Generator, profile: Profile, *, matrix: int, nearest: bool
) -> Display:
    """A window method, its parameters and a gamma drawn from ``profile``."""
    method = str(profile.windows[int(rng.integers(len(profile.windows)))])
    factor = {
        "auto": (1.7, 2.2),
        "fixed": (0.8, 1.7),
        "gain": (1.3, 1.6),
        "dark": (3.2, 5.0),
        "overgain": (0.75, 1.05),
    }.get(method, (1.7, 2.2))
    gamma = draw(rng, profile.gamma) if rng.random() < profile.gamma_share else 1.0
    return Display(
        method=method,
        factor=float(rng.uniform(*factor)),
        low_percentile=float(rng.uniform(0.0, 2.0)),
        high_percentile=float(rng.uniform(99.0, 99.9)),
        gamma=gamma,
        matrix=matrix,
        nearest=nearest,
    )


def resize(image: F32, matrix: int, *, nearest: bool = False) -> F32:
    """Float image to ``matrix`` x ``matrix`` (bicubic, or pixel repetition with ``nearest``)."""
    if image.shape[0] == matrix:
        return image
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC
    out = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F").resize(
        (matrix, matrix), method
    )
    return np.asarray(out, dtype=np.float32)


def resize_mask(mask: npt.NDArray[np.bool_], matrix: int) -> npt.NDArray[np.bool_]:
    """A boolean mask to ``matrix`` x ``matrix`` (nearest)."""
    if mask.shape[0] == matrix:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (matrix, matrix), Image.Resampling.NEAREST
    )
    return np.asarray(image) > 0


def brain_level(rendered: RenderedSlice) -> float:
    """Median b-image value over the brain (the auto-window's reference)."""
    brain = rendered.b1000[rendered.brain]
    return float(np.median(brain)) if brain.size else float(rendered.b1000.max() or 1.0)


def window(rendered: RenderedSlice, display: Display) -> tuple[float, float]:
    """(black, white) in b-image units."""
    level = brain_level(rendered)
    image = rendered.b1000
    if display.method == "fixed":
        return 0.0, display.factor
    if display.method == "percentile":
        brain = image[rendered.brain] if rendered.brain.any() else image.ravel()
        low = float(np.percentile(image, display.low_percentile))
        high = float(np.percentile(brain, display.high_percentile))
        return low, max(high, low + 1e-6)
    if display.method == "minmax":
        low, high = float(image.min()), float(image.max())
        return low, max(high, low + 1e-6)
    return 0.0, level * display.factor


def to_uint8(image: F32, black: float, white: float) -> U8:
    """Scale ``[black, white]`` to ``[0, 255]``, clipping."""
    scale = 255.0 / max(white - black, 1e-9)
    return np.asarray(np.clip(np.rint((image - black) * scale), 0, 255), dtype=np.uint8)


def apply_gamma(image: U8, gamma: float) -> U8:
    """``255 * (v / 255) ** gamma`` through a lookup table."""
    if gamma == 1.0:
        return image
    table = np.rint(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    return np.asarray(table[image], dtype=np.uint8)


def export8(rendered: RenderedSlice, display: Display) -> tuple[U8, tuple[float, float]]:
    """The 8-bit display image at the display matrix, and the (black, white) window used."""
    black, white = window(rendered, display)
    shown = resize(rendered.b1000, display.matrix, nearest=display.nearest)
    image = to_uint8(shown, black, white)
    if display.method == "equalize":
        image = np.asarray(ImageOps.equalize(Image.fromarray(image)), dtype=np.uint8)
    return apply_gamma(image, display.gamma), (black, white)
