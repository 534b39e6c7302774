"""Connected lesions of a binary map, on one slice or through a stack of slices.

Shared by the trainer (segmentation metrics: lesion-wise F1, lesion counts) and the daemon
(lesions per slice, lesions of a series in 3-D). numpy only: in-plane parts are 8-connected runs
joined by union-find (`daemon.shared.preprocess.label_parts`); across slices, two parts of
neighbouring slices are one lesion when they share at least one pixel position (face
connectivity through the slab, as ISLES'22 counts lesions).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.shared.preprocess import label_parts

Labels = npt.NDArray[np.int32]


def label(mask: npt.NDArray[Any]) -> tuple[Labels, int]:
    """The connected lesions of a 2-D or 3-D (slices first) mask and how many there are.

    Labels are 0 outside, 1..n inside, numbered in the order of each lesion's first pixel.

    Raises:
        ValueError: ``mask`` is neither 2-D nor 3-D.
    """
    mask = np.asarray(mask, dtype=np.bool_)
    if mask.ndim == 2:
        return label_parts(mask)
    if mask.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D mask, got shape {mask.shape}")
    labels = np.zeros(mask.shape, np.int32)
    offset = 0
    for z in range(mask.shape[0]):
        plane, count = label_parts(mask[z])
        labels[z] = np.where(plane > 0, plane + offset, 0)
        offset += count
    if offset == 0:
        return labels, 0
    roots = _join_through_slices(labels, offset)
    unique, compact = np.unique(roots, return_inverse=True)  # root 0 stays 0
    return compact[labels].astype(np.int32), len(unique) - 1


def _join_through_slices(labels: Labels, count: int) -> npt.NDArray[np.intp]:
    """For each per-slice label 0..count, the smallest label of the lesion it belongs to."""
    parent = np.arange(count + 1)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for z in range(labels.shape[0] - 1):
        both = (labels[z] > 0) & (labels[z + 1] > 0)
        if not both.any():
            continue
        pairs = np.unique(np.stack([labels[z][both], labels[z + 1][both]], axis=1), axis=0)
        for a, b in pairs.tolist():
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(count + 1)])
