"""Turn one decoded grey image into the model's input tensor.

This module is the single definition of preprocessing: the trainer imports it to build its
datasets and the daemon imports it to serve, so the two can never drift apart. It depends on numpy
and Pillow only (never OpenVINO, never TensorFlow).

Steps, each a function below:

1. ``normalise``: robust min / 99.5th-percentile scaling to [0, 1] (used on the small copy
   that finds the brain, and last, on the resized crop).
2. ``brain_box``: find the brain on a small copy of the image. A morphological opening removes
   thin bright structures (annotation text, rulers, borders); of what survives, only the connected
   parts that reach the image's central 60 % are kept (merged text blocks live in the corners);
   their bounding box is the crop. The study did this by hand on its screenshots.
3. crop to that box plus a margin and pad to a square with the crop's background value;
4. resize with Pillow's antialiased bilinear filter (the one resize used by training and serving;
   OpenVINO's RESIZE_LINEAR gives different pixels, so it is not used), then normalise;
5. repeat the grey channel to the model's channel count (the study trained on RGB screenshots).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from daemon.errors import BadDimensionsError, BlankImageError

FloatImage = npt.NDArray[np.float32]

PREPROCESS_VERSION = 1
_MIN_SIDE = 16


@dataclass(frozen=True)
class PreprocessSpec:
    """Parameters of the preprocessing, stored in every model bundle as ``preprocess.json``."""

    input_size: int = 128
    channels: int = 3
    high_percentile: float = 99.5
    tissue_threshold: float = 0.08
    """Fraction of the normalised range above which a pixel counts as tissue (box finding)."""
    box_work_size: int = 128
    """The long side of the small copy on which the brain box is found."""
    opening_radius: int = 2
    """Radius (pixels of the small copy) of the opening that removes text and thin lines."""
    margin: float = 0.04
    """Margin added on each side of the brain box, as a fraction of the box's long side."""
    version: int = PREPROCESS_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """Build from ``preprocess.json``; unknown keys are an error, missing ones take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {', '.join(unknown)}")
        spec = cls(**data)
        if spec.version != PREPROCESS_VERSION:
            raise ValueError(
                f"preprocessing version {spec.version} is not supported "
                f"(this build implements version {PREPROCESS_VERSION})"
            )
        return spec


def normalise(image: FloatImage, high_percentile: float) -> FloatImage:
    """Scale so the minimum maps to 0 and the given percentile to 1, clipping above.

    Raises:
        BlankImageError: every pixel has the same value.
    """
    lo = float(image.min())
    hi = float(np.percentile(image, high_percentile))
    if hi <= lo:
        hi = float(image.max())
    if hi <= lo:
        raise BlankImageError("every pixel has the same value")
    out = (image - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def _shift_reduce(
    mask: npt.NDArray[np.bool_], radius: int, *, erode: bool
) -> npt.NDArray[np.bool_]:
    """Binary erosion (AND) or dilation (OR) by a 3x3 square, ``radius`` times; outside is 0."""
    out = mask
    h, w = mask.shape
    for _ in range(radius):
        padded = np.pad(out, 1, constant_values=False)
        acc = padded[1 : 1 + h, 1 : 1 + w].copy()
        for dy in range(3):
            for dx in range(3):
                if erode:
                    acc &= padded[dy : dy + h, dx : dx + w]
                else:
                    acc |= padded[dy : dy + h, dx : dx + w]
        out = acc
    return out


def central_parts(mask: npt.NDArray[np.bool_], centre: float = 0.6) -> npt.NDArray[np.bool_]:
    """Keep the 8-connected parts of ``mask`` that reach the central ``centre`` fraction.

    Burned-in annotation blocks sit in the corners and survive the opening when their lines merge;
    the brain always reaches the middle of the image. Labelling works on runs of each row joined by
    union-find, so it costs well under a millisecond on the small copy. Returns ``mask`` unchanged
    when no part reaches the centre.
    """
    h, w = mask.shape
    runs: list[tuple[int, int, int]] = []  # (row, start, end)
    parent: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edge_rows, edge_cols = np.nonzero(np.diff(padded, axis=1))  # row-major: start, end, start...
    previous: list[int] = []
    current: list[int] = []
    row = -1
    for y, start, end in zip(
        edge_rows[::2].tolist(), edge_cols[::2].tolist(), edge_cols[1::2].tolist(), strict=True
    ):
        if y != row:
            previous = current if y == row + 1 else []
            current, row = [], y
        index = len(runs)
        runs.append((y, start, end))
        parent.append(index)
        for other in previous:
            _, o_start, o_end = runs[other]
            if o_start <= end and start <= o_end:  # touching, diagonals included
                parent[find(index)] = find(other)
        current.append(index)
    lo_y, hi_y = round((1 - centre) / 2 * h), round((1 + centre) / 2 * h)
    lo_x, hi_x = round((1 - centre) / 2 * w), round((1 + centre) / 2 * w)
    central = {
        find(i)
        for i, (y, start, end) in enumerate(runs)
        if lo_y <= y < hi_y and start < hi_x and end > lo_x
    }
    if not central:
        return mask
    kept = np.zeros_like(mask)
    for i, (y, start, end) in enumerate(runs):
        if find(i) in central:
            kept[y, start:end] = True
    return kept


def brain_box(image: FloatImage, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """Return ``(top, left, bottom, right)`` of the brain in ``image`` (end-exclusive).

    Works on a box-filtered copy whose long side is about ``spec.box_work_size``. Falls back to the
    whole image when nothing survives the opening (a tiny or unusual image).
    """
    h, w = image.shape
    factor = max(1, math.ceil(max(h, w) / spec.box_work_size))
    small_img = Image.fromarray(image)
    if factor > 1:
        small_img = small_img.reduce(factor)
    small = normalise(np.asarray(small_img, dtype=np.float32), spec.high_percentile)
    mask = small > spec.tissue_threshold
    radius = spec.opening_radius
    opened = _shift_reduce(_shift_reduce(mask, radius, erode=True), radius, erode=False)
    opened = central_parts(opened)
    if not opened.any():
        return 0, 0, h, w
    rows = np.flatnonzero(opened.any(axis=1))
    cols = np.flatnonzero(opened.any(axis=0))
    top, bottom = int(rows[0]) * factor, (int(rows[-1]) + 1) * factor
    left, right = int(cols[0]) * factor, (int(cols[-1]) + 1) * factor
    pad = round(spec.margin * max(bottom - top, right - left))
    return max(0, top - pad), max(0, left - pad), min(h, bottom + pad), min(w, right + pad)


def _pad_square(image: FloatImage, fill: float) -> FloatImage:
    h, w = image.shape
    if h == w:
        return image
    side = max(h, w)
    out = np.full((side, side), fill, dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def resize(image: FloatImage, size: int) -> FloatImage:
    """Resize a float image to ``size`` x ``size`` with Pillow's antialiased bilinear filter."""
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.float32)


def preprocess(grey: npt.NDArray[Any], spec: PreprocessSpec) -> FloatImage:
    """Turn a 2-D grey image of any numeric dtype into a ``(size, size, channels)`` float32 tensor.

    Raises:
        BadDimensionsError: the image is not 2-D or is smaller than 16 pixels on a side.
        BlankImageError: the image (or the brain crop) holds a single value.
    """
    if grey.ndim != 2:
        raise BadDimensionsError(f"expected a 2-D grey image, got shape {grey.shape}")
    if min(grey.shape) < _MIN_SIDE:
        raise BadDimensionsError(
            f"image is {grey.shape[1]}x{grey.shape[0]} pixels; at least {_MIN_SIDE} per side needed"
        )
    image = np.ascontiguousarray(grey, dtype=np.float32)
    if float(image.min()) == float(image.max()):
        raise BlankImageError("every pixel has the same value")
    top, left, bottom, right = brain_box(image, spec)
    crop = image[top:bottom, left:right]
    square = resize(_pad_square(np.ascontiguousarray(crop), float(crop.min())), spec.input_size)
    square = normalise(square, spec.high_percentile)
    if spec.channels == 1:
        return square[:, :, np.newaxis]
    return np.repeat(square[:, :, np.newaxis], spec.channels, axis=2)
