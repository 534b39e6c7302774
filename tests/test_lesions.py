"""Connected lesions in 2-D and 3-D (daemon.shared.lesions), checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.shared.lesions import label


def _flood(mask: np.ndarray) -> int:
    """Count parts by flood fill (8-connected in-plane, face-connected across slices)."""
    seen = np.zeros(mask.shape, bool)
    count = 0
    steps = [
        (dz, dy, dx)
        for dz in (-1, 0, 1)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dz, dy, dx) != (0, 0, 0) and (dz == 0 or (dy == 0 and dx == 0))
    ]
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        seen[start] = True
        while stack:
            z, y, x = stack.pop()
            for dz, dy, dx in steps:
                n = (z + dz, y + dy, x + dx)
                if all(0 <= n[i] < mask.shape[i] for i in range(3)) and mask[n] and not seen[n]:
                    seen[n] = True
                    stack.append(n)
    return count


@pytest.mark.parametrize("seed", range(8))
def test_random_masks_match_a_flood_fill(seed: int) -> None:
    """Random sparse 3-D masks: the same number of lesions, each label one connected set."""
    rng = np.random.default_rng(seed)
    mask = rng.random((4, 24, 31)) < 0.2
    labels, count = label(mask)
    assert count == _flood(mask)
    assert ((labels > 0) == mask).all()
    for i in range(1, count + 1):
        assert _flood(labels == i) == 1
    plane, plane_count = label(mask[1])
    assert plane_count == _flood(mask[1][None])
    assert ((plane > 0) == mask[1]).all()


def test_a_lesion_through_three_slices_is_one_and_diagonal_slices_are_two() -> None:
    """Overlap across slices joins; a shift with no shared pixel position does not."""
    mask = np.zeros((3, 10, 10), bool)
    mask[0, 2:4, 2:4] = mask[1, 3:5, 3:5] = mask[2, 4:6, 4:6] = True  # overlapping: one
    mask[0, 7, 7] = mask[1, 8, 8] = True  # diagonal through the slab: two
    labels, count = label(mask)
    assert count == 3
    assert len(np.unique(labels[:, 2:6, 2:6])) == 2  # 0 and one label
    assert labels[0, 2, 2] == 1  # numbered by first pixel


def test_empty_and_wrong_shapes() -> None:
    """No lesion gives 0; a 1-D mask is an error."""
    assert label(np.zeros((2, 5, 5), bool))[1] == 0
    assert label(np.zeros((5, 5), bool))[1] == 0
    with pytest.raises(ValueError, match="2-D or 3-D"):
        label(np.zeros(5, bool))
