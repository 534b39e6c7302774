"""One slice's lesion map: the segmenter's probability map on the input square, as source lesions.

1. Threshold the map at the segmenter's ``threshold``; drop the connected parts (8-connected,
   `daemon.shared.lesions.label`) smaller than ``min_lesion_px`` input pixels.
2. Map what is left back onto the source pixels (`daemon.shared.preprocess.Placement.to_source`:
   bilinear upsampling of the map, thresholded again, outside the brain crop nothing).
3. Each connected lesion of the source mask: its area in pixels (and in mm² when PixelSpacing is
   known), its bounding box and its centroid, in source pixel coordinates (x = column, y = row).

Pure numpy; runs in the scan worker after the segmenter answered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from daemon.records import Lesion, LesionMap
from daemon.shared.lesions import label

if TYPE_CHECKING:
    import numpy.typing as npt

    from daemon.shared.preprocess import Placement


def keep_large_parts(above: npt.NDArray[np.bool_], min_px: int) -> npt.NDArray[np.bool_]:
    """``above`` without its 8-connected parts of fewer than ``min_px`` pixels."""
    if min_px <= 1 or not above.any():
        return above
    labels, count = label(above)
    sizes = np.bincount(labels.reshape(-1), minlength=count + 1)
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def source_lesions(
    mask: npt.NDArray[np.bool_], pixel_spacing: tuple[float, float] | None
) -> tuple[Lesion, ...]:
    """The connected lesions of a source mask (see the module docstring), in raster order."""
    labels, count = label(mask)
    if count == 0:
        return ()
    ys, xs = np.nonzero(labels)
    which = labels[ys, xs] - 1
    area = np.bincount(which, minlength=count)
    sum_x = np.bincount(which, weights=xs, minlength=count)
    sum_y = np.bincount(which, weights=ys, minlength=count)
    big = np.iinfo(np.int64).max
    x0 = np.full(count, big, np.int64)
    y0 = np.full(count, big, np.int64)
    x1 = np.full(count, -1, np.int64)
    y1 = np.full(count, -1, np.int64)
    np.minimum.at(x0, which, xs)
    np.minimum.at(y0, which, ys)
    np.maximum.at(x1, which, xs)
    np.maximum.at(y1, which, ys)
    pixel_mm2 = None if pixel_spacing is None else pixel_spacing[0] * pixel_spacing[1]
    return tuple(
        Lesion(
            area_px=int(area[i]),
            area_mm2=None if pixel_mm2 is None else round(float(area[i]) * pixel_mm2, 3),
            bbox=(int(x0[i]), int(y0[i]), int(x1[i]), int(y1[i])),
            centroid=(round(sum_x[i] / area[i], 2), round(sum_y[i] / area[i], 2)),
        )
        for i in range(count)
    )


def lesion_map(
    plane: npt.NDArray[np.float32],
    placement: Placement,
    *,
    threshold: float,
    min_lesion_px: int,
    pixel_spacing: tuple[float, float] | None,
    pixels: npt.NDArray[np.float32] | None = None,
    segment_ms: float | None = None,
) -> LesionMap:
    """The `LesionMap` of a segmenter's probability ``plane`` (module docstring).

    ``pixels``: the source image, kept in the map for its overlay when there is a lesion.
    """
    above = plane >= threshold
    kept = keep_large_parts(above, min_lesion_px)
    if kept is not above:
        plane = np.where(kept, plane, np.float32(0.0)).astype(np.float32)
    if kept.any():
        mask = placement.to_source(plane, threshold)
    else:
        mask = np.zeros(placement.shape, np.bool_)
    lesions = source_lesions(mask, pixel_spacing)
    return LesionMap(
        mask=mask,
        lesions=lesions,
        pixels=pixels if lesions else None,
        segment_ms=segment_ms,
    )
