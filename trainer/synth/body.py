"""An axial CT slice of the trunk: a picture of a body that is not a head, for out-of-scope images.

Public test suites and PACS exports hold far more body CT than head MR; a reader of brain DWI must
refuse them. The slice is drawn from ellipses in Hounsfield units: the body outline (skin and
subcutaneous fat 8-30 mm), a muscle wall, soft tissue with organ blobs (liver or spleen 50-65 HU,
kidneys 30-40 HU, an aorta with contrast 150-300 HU), gas in the bowel (-1000 HU) and, behind, a
vertebra (cancellous bone 200-400 HU in a cortical rim of 800-1200 HU); below it, sometimes, the
curved table. Noise 5-15 HU. The field of view is the body's, 320-480 mm.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
AIR_HU = -1000.0


def _ellipse(
    yy: F32, xx: F32, centre: tuple[float, float], axes: tuple[float, float], angle: float = 0.0
) -> npt.NDArray[np.bool_]:
    dy, dx = yy - centre[0], xx - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    return np.asarray((u / axes[1]) ** 2 + (v / axes[0]) ** 2 <= 1.0)


def trunk_ct(rng: np.random.Generator, matrix: int) -> tuple[F32, float]:
    """A ``matrix`` x ``matrix`` trunk slice in HU, and its pixel size in mm."""
    fov = float(rng.uniform(320.0, 480.0))
    pixel = fov / matrix
    yy, xx = (np.mgrid[0:matrix, 0:matrix].astype(np.float32) - matrix / 2) * np.float32(pixel)
    half_width = float(rng.uniform(0.36, 0.46)) * fov
    half_depth = half_width * float(rng.uniform(0.6, 0.8))
    centre = (float(rng.uniform(-10, 20)), float(rng.uniform(-10, 10)))
    hu = np.full((matrix, matrix), AIR_HU, dtype=np.float32)
    body = _ellipse(yy, xx, centre, (half_depth, half_width))
    hu[body] = float(rng.uniform(-110, -90))  # subcutaneous fat
    fat = float(rng.uniform(8.0, 30.0))
    inner = (half_depth - fat, half_width - fat)
    hu[_ellipse(yy, xx, centre, inner)] = float(rng.uniform(45, 60))  # muscle wall
    wall = float(rng.uniform(6.0, 14.0))
    cavity = (inner[0] - wall, inner[1] - wall)
    hu[_ellipse(yy, xx, centre, cavity)] = float(rng.uniform(20, 40))  # soft tissue
    side = 1.0 if rng.random() < 0.5 else -1.0
    organ = (centre[0] - 0.1 * cavity[0], centre[1] - side * 0.45 * cavity[1])
    hu[_ellipse(yy, xx, organ, (0.6 * cavity[0], 0.45 * cavity[1]), rng.uniform(-0.4, 0.4))] = (
        float(rng.uniform(50, 65))  # liver or spleen
    )
    spine = (centre[0] + 0.55 * cavity[0], centre[1])
    for sign in (-1.0, 1.0):  # kidneys
        kidney = (spine[0] - 0.1 * cavity[0], spine[1] + sign * 0.45 * cavity[1])
        hu[_ellipse(yy, xx, kidney, (0.18 * cavity[0], 0.1 * cavity[1]), sign * 0.5)] = float(
            rng.uniform(30, 40)
        )
    aorta = (spine[0] - 0.28 * cavity[0], spine[1] + float(rng.uniform(-8, 8)))
    hu[_ellipse(yy, xx, aorta, (11.0, 11.0))] = float(rng.uniform(150, 300))
    for _ in range(int(rng.integers(3, 12))):  # bowel gas
        spot = (
            centre[0] + float(rng.uniform(-0.6, 0.2)) * cavity[0],
            centre[1] + float(rng.uniform(-0.6, 0.6)) * cavity[1],
        )
        size = float(rng.uniform(4, 18))
        hu[_ellipse(yy, xx, spot, (size, size * float(rng.uniform(0.6, 1.6))))] = AIR_HU
    radius = float(rng.uniform(18, 26))
    hu[_ellipse(yy, xx, spine, (radius, radius * 1.15))] = float(rng.uniform(800, 1200))
    hu[_ellipse(yy, xx, spine, (radius - 3, radius * 1.15 - 3))] = float(rng.uniform(200, 400))
    if rng.random() < 0.7:  # the table under the patient
        top = centre[0] + half_depth + float(rng.uniform(10, 40))
        table = (yy >= top) & (yy <= top + float(rng.uniform(6, 14))) & (np.abs(xx) < 0.45 * fov)
        hu[table] = float(rng.uniform(200, 600))
    hu += rng.normal(0.0, rng.uniform(5.0, 15.0), hu.shape).astype(np.float32)
    return hu, pixel
