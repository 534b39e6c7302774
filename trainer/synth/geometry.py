"""Per-case head geometry: where the scanner's slices cut the MNI anatomy.

Scanner space is millimetres in the patient's frame (RAS: +x towards the patient's right, which the
radiological display puts on the image's left; +y anterior; +z superior) with the origin at the
centre of the field of view. A case's
`CaseGeometry` maps scanner points to MNI points:

    mni = centre + R @ (scale * p) + warp(p)

with a small random rotation ``R`` (head tilt in the coil), an anisotropic ``scale`` (head size and
shape) and a smooth elastic ``warp`` (a sum of a few random plane waves, a few mm in amplitude).
The inverse is found by fixed-point iteration, which converges because the warp is small and
smooth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trainer.synth.profiles import TRAIN, Profile, draw, signed

Points = npt.NDArray[np.float64]

BRAIN_CENTRE_MNI = (0.0, -18.0, 8.0)
"""Roughly the middle of the MNI152 brain; the field of view is centred near it."""
_WAVES = 6
_INVERSE_ITERATIONS = 6


@dataclass(frozen=True)
class CaseGeometry:
    """The scanner-to-MNI mapping of one case (see the module docstring)."""

    centre: Points
    rotation: Points
    scale: Points
    wave_vectors: Points
    """(n, 3) spatial frequencies of the warp, radians per mm."""
    wave_amplitudes: Points
    """(n, 3) displacement amplitude of each wave along x, y, z, mm."""
    wave_phases: Points
    yaw_deg: float = 0.0
    """In-plane rotation of the head (about the scanner's z axis)."""
    pitch_deg: float = 0.0
    """Through-plane tilt: nodding (about the left-right axis)."""
    roll_deg: float = 0.0
    """Through-plane tilt: ear towards shoulder (about the front-back axis)."""
    size: float = 1.0
    """Overall head size relative to MNI152 (the mapping's ``scale`` is about 1 / size)."""

    def warp(self, points: Points) -> Points:
        """Elastic displacement (mm) at scanner points ``(..., 3)``."""
        phase = points @ self.wave_vectors.T + self.wave_phases
        return np.asarray(np.sin(phase) @ self.wave_amplitudes, dtype=np.float64)

    def to_mni(self, points: Points) -> Points:
        """Scanner mm -> MNI mm for ``(..., 3)`` points."""
        linear = (points * self.scale) @ self.rotation.T
        return np.asarray(self.centre + linear + self.warp(points), dtype=np.float64)

    def to_scanner(self, mni: Points) -> Points:
        """MNI mm -> scanner mm (fixed-point inverse of `to_mni`, sub-0.1 mm for these warps)."""
        inverse_linear = np.linalg.inv(self.rotation * self.scale[None, :])
        base = (mni - self.centre) @ inverse_linear.T
        points = base
        for _ in range(_INVERSE_ITERATIONS):
            points = base - self.warp(points) @ inverse_linear.T
        return np.asarray(points, dtype=np.float64)


def _rotation(yaw: float, pitch: float, roll: float) -> Points:
    cz, sz = np.cos(yaw), np.sin(yaw)
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    return np.asarray(rz @ rx @ ry, dtype=np.float64)


def random_geometry(rng: np.random.Generator, profile: Profile = TRAIN) -> CaseGeometry:
    """A plausible head drawn from ``profile``: rotation, tilt, size, a 1-3 mm warp, position.

    In-plane rotation: most heads (``yaw_core_share``) within ``yaw_core_deg``, the others
    anywhere in ``yaw_deg``. The head's centre lies off the field of view's by ``centre_sd_mm``
    (SD left-right, front-back, up-down).
    """
    core = rng.random() < profile.yaw_core_share
    yaw = signed(rng, profile.yaw_core_deg if core else profile.yaw_deg)
    pitch = signed(rng, profile.pitch_deg)
    roll = signed(rng, profile.roll_deg)
    size = draw(rng, profile.head_scale)
    # scanner mm -> MNI mm: a head larger than MNI152 maps fewer MNI mm to each scanner mm
    scale = rng.uniform(0.96, 1.04, size=3) / size
    directions = rng.normal(size=(_WAVES, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths = rng.uniform(45.0, 110.0, size=(_WAVES, 1))
    amplitudes = rng.normal(size=(_WAVES, 3))
    amplitudes *= (
        rng.uniform(1.0, 3.0)
        / np.sqrt(_WAVES)
        / np.linalg.norm(amplitudes, axis=1, keepdims=True).mean()
    )
    centre = np.array(BRAIN_CENTRE_MNI) + rng.normal(0.0, 1.0, size=3) * profile.centre_sd_mm
    return CaseGeometry(
        centre=centre,
        rotation=_rotation(np.deg2rad(yaw), np.deg2rad(pitch), np.deg2rad(roll)),
        scale=np.asarray(scale, dtype=np.float64),
        wave_vectors=directions * (2 * np.pi / wavelengths),
        wave_amplitudes=np.asarray(amplitudes, dtype=np.float64),
        wave_phases=rng.uniform(0, 2 * np.pi, size=_WAVES),
        yaw_deg=yaw,
        pitch_deg=pitch,
        roll_deg=roll,
        size=size,
    )
