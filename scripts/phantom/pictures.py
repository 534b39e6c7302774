"""8-bit pictures: windowing a slice to PNG or JPEG as an export would."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from phantom.ranges import RANGES

if TYPE_CHECKING:
    from pathlib import Path

    from phantom.arrays import Floats


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
