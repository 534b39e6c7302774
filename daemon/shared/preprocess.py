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

`preprocess_placed` also returns the `Placement`: where the input square lies in the source
image. With it, an image of the same geometry (the ADC slice of a DWI slice, a lesion mask) is
cropped and resized exactly like the slice (`Placement.place`), and a map the model made on its
input square goes back onto the source pixels (`Placement.to_source`).

The code is written for CPU per scan (it runs once per file on the edge box): a selection instead
of `np.percentile`'s generic machinery, a separable opening, run-based labelling. Every change
keeps the tensors bit for bit: ``tests/test_preprocess_exact.py`` compares them with the version
the default model was trained with (``tests/preprocessing_reference.py``), and
``bench/preprocess.py`` measures both.
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
Mask = npt.NDArray[np.bool_]

PREPROCESS_VERSION = 1
_MIN_SIDE = 16
_CENTRE = 0.6
"""The central fraction of the small copy a part of the mask must reach to count as brain."""
_SAMPLE_STEP = 16
"""Stride of the sample that picks the threshold in `_order_pair`."""


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


def _order_pair(values: npt.NDArray[Any], low: int, high: int) -> tuple[Any, Any]:
    """``sorted(values)[low]`` and ``sorted(values)[high]`` (``low <= high``), with no NaN present.

    For a high percentile only the top of the order matters: the values at or above a threshold
    are exactly the last ``c`` of the sorted order, so when there are at least ``n - low`` of them
    the answer is found by partitioning those few. The threshold comes from a strided sample; when
    it turns out too high, the whole array is partitioned. Either way the values are exact.
    """
    count = values.size
    needed = count - low
    if count >= 64 * _SAMPLE_STEP and needed * 8 < count:
        sample = values[::_SAMPLE_STEP]
        spare = min(sample.size - 1, 3 * needed // _SAMPLE_STEP + 8)  # about 3x what is needed
        position = sample.size - 1 - spare
        threshold = np.partition(sample, (position, position + 1))[position]
        top = values[values >= threshold]
        if top.size >= needed:
            offset = count - top.size
            values, low, high = top, low - offset, high - offset
    # Two kth positions even when equal: numpy's multi-kth selection is the faster one here.
    selected = np.partition(values, (low, high))
    return selected[low], selected[high]


def _robust_range(image: npt.NDArray[Any], high_percentile: float) -> tuple[float, float]:
    """``image.min()`` and ``np.percentile(image, high_percentile)`` as floats, the same values.

    `np.percentile` spends most of its time on its generality (any axis, many methods, arrays of
    percentiles, a full partition). Here the two order statistics numpy interpolates between are
    selected directly (`_order_pair`), then combined with numpy 2's own arithmetic: the virtual
    index ``(n - 1) * q / 100`` and numpy's ``_lerp``, ``a + (b - a) * t``, or
    ``b - (b - a) * (1 - t)`` when ``t >= 0.5``. The operands keep numpy's types (``t`` is a
    Python float when the percentile is a Python ``float`` or ``int``, so the arithmetic runs in
    the image's dtype). A NaN anywhere makes both NaN, as in numpy. (Only a zero result may come
    out with the other sign, which neither a comparison nor a difference sees.)

    Raises:
        ValueError: the percentile is outside [0, 100] (numpy's message).
    """
    quantile = high_percentile / 100
    if not 0.0 <= quantile <= 1.0:
        raise ValueError("Percentiles must be in the range [0, 100]")
    lo = float(image.min())
    if math.isnan(lo):
        return lo, lo
    count = image.size
    virtual = (count - 1) * quantile
    if virtual >= count - 1:  # numpy takes the largest value on both sides, from index -1
        low_index = -1
        a, b = _order_pair(image.reshape(-1), count - 1, count - 1)
    else:
        low_index = math.floor(virtual)
        a, b = _order_pair(image.reshape(-1), low_index, low_index + 1)
    gamma = virtual - low_index
    diff = b - a
    hi = b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma
    return lo, float(hi)


def _scaling(image: FloatImage, high_percentile: float) -> tuple[np.float32, np.float32]:
    """``(offset, factor)`` that map the minimum to 0 and the percentile to 1.

    Raises:
        BlankImageError: every pixel has the same value.
    """
    lo, hi = _robust_range(image, high_percentile)
    if hi <= lo:
        hi = float(image.max())
    if hi <= lo:
        raise BlankImageError("every pixel has the same value")
    return np.float32(lo), np.float32(1.0 / (hi - lo))


def normalise(image: FloatImage, high_percentile: float) -> FloatImage:
    """Scale so the minimum maps to 0 and the given percentile to 1, clipping above.

    Raises:
        BlankImageError: every pixel has the same value.
    """
    offset, factor = _scaling(image, high_percentile)
    out = image - offset
    out *= factor
    return np.clip(out, 0.0, 1.0, out=out)


def opening(mask: Mask, radius: int) -> Mask:
    """Binary opening by a ``2 * radius + 1`` square, pixels outside the image counting as 0.

    A square is separable, so erosion and dilation each take one pass along rows and one along
    columns, on a copy framed by ``radius`` zeros. This equals ``radius`` rounds of erosion by the
    3x3 square followed by ``radius`` rounds of dilation (what preprocessing version 1 is defined
    with): the square of side ``2r + 1`` is the r-fold Minkowski sum of the 3x3 one, and with
    outside pixels 0 the rounds agree at the image's edge too (``tests/test_preprocess_exact.py``).
    """
    if radius <= 0:
        return mask
    h, w = mask.shape
    side = 2 * radius + 1
    framed = np.zeros((h + 2 * radius, w + 2 * radius), dtype=np.bool_)
    inner = framed[radius : radius + h, radius : radius + w]
    inner[...] = mask
    for erode in (True, False):
        along = framed[:, :w].copy()  # pass 1: the window along each row, on every framed row
        for shift in range(1, side):
            if erode:
                along &= framed[:, shift : shift + w]
            else:
                along |= framed[:, shift : shift + w]
        across = along[:h].copy()  # pass 2: the window down each column
        for shift in range(1, side):
            if erode:
                across &= along[shift : shift + h]
            else:
                across |= along[shift : shift + h]
        inner[...] = across  # the frame stays 0 for the dilation
    return across


@dataclass(frozen=True)
class _Runs:
    """Horizontal runs of a mask, in row-major order; ``stop`` is end-exclusive."""

    row: npt.NDArray[np.intp]
    start: npt.NDArray[np.intp]
    stop: npt.NDArray[np.intp]
    first: npt.NDArray[np.intp]
    """Flat index of each run's first pixel in the mask with one 0 column appended."""
    last: npt.NDArray[np.intp]
    """Flat index one past each run's last pixel, in the same layout."""
    stride: int


def _runs(mask: Mask) -> _Runs:
    """Every run of ``mask``, from the positions where a row-major scan changes value."""
    h, w = mask.shape
    stride = w + 1  # a 0 column after each row: no run crosses into the next row
    padded = np.zeros((h, stride), dtype=np.bool_)
    padded[:, :w] = mask
    flat = padded.reshape(-1)
    change = np.empty(flat.size, dtype=np.bool_)
    change[0] = flat[0]
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    edges = np.flatnonzero(change)  # start, stop, start, stop... (every run stops in its row)
    first, last = edges[::2], edges[1::2]
    row = first // stride
    return _Runs(row, first - row * stride, last - row * stride, first, last, stride)


def _components(runs: _Runs) -> npt.NDArray[np.intp]:
    """Label each run with the smallest run index of its 8-connected part."""
    # The runs of the row above that touch run i (diagonals included) are the contiguous range
    # [lo[i], hi[i]): their stop >= i's start and their start <= i's stop, in that row.
    lo = np.searchsorted(runs.last, runs.first - runs.stride, side="left")
    hi = np.searchsorted(runs.first, runs.last - runs.stride, side="right")
    parent = list(range(len(runs.first)))  # always at or before the child: roots are smallest

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (above_lo, above_hi) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        if above_lo >= above_hi:
            continue
        root = parent[i] = find(above_lo)  # i joins the first part it touches
        for j in range(above_lo + 1, above_hi):  # and merges the others into it
            other = find(j)
            if other < root:
                parent[root] = other
                root = other
            elif other > root:
                parent[other] = root
    for i, up in enumerate(parent):  # in index order, each parent already points at its root
        parent[i] = parent[up]
    return np.array(parent, dtype=np.intp)


def label_parts(mask: Mask) -> tuple[npt.NDArray[np.int32], int]:
    """The 8-connected parts of a 2-D ``mask`` and how many there are.

    Labels are 0 outside, 1..n inside, in raster order of each part's first pixel.
    """
    h, w = mask.shape
    runs = _runs(np.asarray(mask, dtype=np.bool_))
    roots = _components(runs)
    unique, part = np.unique(roots, return_inverse=True)  # roots ascend with first pixels
    steps = np.zeros(h * runs.stride + 1, dtype=np.int32)
    np.add.at(steps, runs.first, part + 1)
    np.subtract.at(steps, runs.last, part + 1)
    labels = np.cumsum(steps[:-1], dtype=np.int32).reshape(h, runs.stride)[:, :w]
    return np.ascontiguousarray(labels), len(unique)


def _central_runs(mask: Mask, centre: float) -> tuple[_Runs, Mask]:
    """The runs of ``mask`` and which of them belong to a part that reaches the centre."""
    h, w = mask.shape
    runs = _runs(mask)
    labels = _components(runs)
    lo_y, hi_y = round((1 - centre) / 2 * h), round((1 + centre) / 2 * h)
    lo_x, hi_x = round((1 - centre) / 2 * w), round((1 + centre) / 2 * w)
    central = (lo_y <= runs.row) & (runs.row < hi_y) & (runs.start < hi_x) & (runs.stop > lo_x)
    if not central.any():
        return runs, np.ones(len(labels), dtype=np.bool_)
    reached = np.zeros(len(labels), dtype=np.bool_)
    reached[labels[central]] = True
    return runs, reached[labels]


def central_parts(mask: Mask, centre: float = _CENTRE) -> Mask:
    """Keep the 8-connected parts of ``mask`` that reach the central ``centre`` fraction.

    Burned-in annotation blocks sit in the corners and survive the opening when their lines merge;
    the brain always reaches the middle of the image. Labelling works on the runs of each row,
    joined by union-find, so it costs a few tens of microseconds on the small copy. Returns
    ``mask`` unchanged when no part reaches the centre.
    """
    runs, kept = _central_runs(mask, centre)
    if kept.all():
        return mask
    h, w = mask.shape
    steps = np.zeros(h * runs.stride, dtype=np.int8)  # +1 where a kept run starts, -1 after it
    steps[runs.first[kept]] = 1
    steps[runs.last[kept]] = -1
    inside = np.cumsum(steps, dtype=np.int8).astype(np.bool_)
    return np.ascontiguousarray(inside.reshape(h, runs.stride)[:, :w])


def brain_box(image: FloatImage, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """Return ``(top, left, bottom, right)`` of the brain in ``image`` (end-exclusive).

    Works on a box-filtered copy whose long side is about ``spec.box_work_size``. Falls back to the
    whole image when nothing survives the opening (a tiny or unusual image).

    Raises:
        BlankImageError: the small copy holds a single value.
    """
    h, w = image.shape
    factor = max(1, math.ceil(max(h, w) / spec.box_work_size))
    small = image
    if factor > 1:
        small = np.asarray(Image.fromarray(image).reduce(factor), dtype=np.float32)
    offset, scale = _scaling(small, spec.high_percentile)
    normed = small - offset
    normed *= scale
    # Above the threshold before clipping to [0, 1] exactly when after it (NaN is never above).
    opened = opening(normed > spec.tissue_threshold, spec.opening_radius)
    runs, kept = _central_runs(opened, _CENTRE)
    if not kept.any():
        return 0, 0, h, w
    rows = runs.row[kept]
    top, bottom = int(rows[0]) * factor, (int(rows[-1]) + 1) * factor
    left, right = int(runs.start[kept].min()) * factor, int(runs.stop[kept].max()) * factor
    pad = round(spec.margin * max(bottom - top, right - left))
    return max(0, top - pad), max(0, left - pad), min(h, bottom + pad), min(w, right + pad)


def _pad_square(image: FloatImage, fill: float) -> FloatImage:
    """``image`` centred on a square filled with ``fill`` (C-contiguous float32 either way)."""
    h, w = image.shape
    if h == w:
        return np.ascontiguousarray(image, dtype=np.float32)
    side = max(h, w)
    out = np.empty((side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    out[:top] = fill  # only one pair of margins is not empty
    out[top + h :] = fill
    out[:, :left] = fill
    out[:, left + w :] = fill
    return out


def resize(image: FloatImage, size: int) -> FloatImage:
    """Resize a float image to ``size`` x ``size`` with Pillow's antialiased bilinear filter."""
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.float32)


def _single_value(image: FloatImage) -> bool:
    """``image.min() == image.max()`` (so False when a NaN is present), mostly without a full pass.

    Every pixel equals the first one, NaN equalling nothing: the middle row settles it for any
    real image, and only when that row holds nothing else is the whole image compared.
    """
    first = image[0, 0]
    middle = image[image.shape[0] // 2]
    return not (middle != first).any() and not (image != first).any()


@dataclass(frozen=True)
class Placement:
    """Where the model's input square lies in a source image of ``shape`` (rows, columns).

    The crop ``[top:bottom, left:right]`` sits at ``(pad_top, pad_left)`` inside a square of
    ``side`` source pixels, which is resized to ``size`` x ``size`` input pixels.
    """

    shape: tuple[int, int]
    top: int
    left: int
    bottom: int
    right: int
    side: int
    pad_top: int
    pad_left: int
    size: int
    high_percentile: float

    @property
    def source_per_input(self) -> float:
        """Source pixels per input pixel along each side."""
        return self.side / self.size

    def place(self, image: npt.NDArray[Any], *, mask: bool = False) -> FloatImage:
        """``image`` (same shape as the source) cropped, padded and resized like the source.

        A grey image (an ADC slice) is padded with its crop's minimum and normalised like the
        slice; a ``mask`` is padded with 0, resized and kept as 0/1 (at least half covered).

        Raises:
            BadDimensionsError: ``image`` does not have the source's shape.
            BlankImageError: a grey image's crop holds a single value.
        """
        if image.shape != self.shape:
            raise BadDimensionsError(
                f"expected an image of {self.shape[1]}x{self.shape[0]} pixels like the slice, "
                f"got {image.shape[1] if image.ndim > 1 else 0}x{image.shape[0]}"
            )
        crop = np.ascontiguousarray(
            image[self.top : self.bottom, self.left : self.right], dtype=np.float32
        )
        if mask:
            square = resize(_pad_square(np.minimum(crop, 1.0), 0.0), self.size)
            return (square >= 0.5).astype(np.float32)
        square = resize(_pad_square(crop, float(crop.min())), self.size)
        return normalise(square, self.high_percentile)

    def to_source(self, plane: npt.NDArray[Any], threshold: float) -> Mask:
        """A ``size`` x ``size`` map on the input square, back on the source pixels, as a mask.

        Pixels of the source image outside the crop are False.
        """
        side = self.side
        upsampled = Image.fromarray(np.asarray(plane, np.float32)).resize(
            (side, side), Image.Resampling.BILINEAR
        )
        square = np.asarray(upsampled) >= threshold
        h, w = self.bottom - self.top, self.right - self.left
        out = np.zeros(self.shape, np.bool_)
        out[self.top : self.bottom, self.left : self.right] = square[
            self.pad_top : self.pad_top + h, self.pad_left : self.pad_left + w
        ]
        return out


def preprocess(grey: npt.NDArray[Any], spec: PreprocessSpec) -> FloatImage:
    """Turn a 2-D grey image of any numeric dtype into a ``(size, size, channels)`` float32 tensor.

    Raises:
        BadDimensionsError: the image is not 2-D or is smaller than 16 pixels on a side.
        BlankImageError: the image (or the brain crop) holds a single value.
    """
    return preprocess_placed(grey, spec)[0]


def preprocess_placed(grey: npt.NDArray[Any], spec: PreprocessSpec) -> tuple[FloatImage, Placement]:
    """`preprocess`, and where its input square lies in ``grey`` (see `Placement`).

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
    if _single_value(image):
        raise BlankImageError("every pixel has the same value")
    top, left, bottom, right = brain_box(image, spec)
    crop = image[top:bottom, left:right]
    h, w = crop.shape
    side = max(h, w)
    placement = Placement(
        image.shape,
        top,
        left,
        bottom,
        right,
        side,
        (side - h) // 2,
        (side - w) // 2,
        spec.input_size,
        spec.high_percentile,
    )
    square = resize(_pad_square(crop, float(crop.min())), spec.input_size)
    square = normalise(square, spec.high_percentile)
    if spec.channels == 1:
        return square[:, :, np.newaxis], placement
    if spec.channels > 1:  # np.stack lays the planes out a little faster than np.repeat
        return np.stack([square] * spec.channels, axis=2), placement
    return np.repeat(square[:, :, np.newaxis], spec.channels, axis=2), placement  # as version 1
