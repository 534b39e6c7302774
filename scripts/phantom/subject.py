"""A subject: one head made from the template (scale, rotation, shift, atrophy, lesions)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from phantom.ranges import RANGES, TISSUES

if TYPE_CHECKING:
    from phantom.arrays import Floats
    from phantom.lesions import Lesion


@dataclass
class Subject:
    """One head: how the template is scaled, turned and shifted, atrophy, tissue jitter, lesions."""

    scale: float
    rotation_deg: float
    shift_mm: tuple[float, float, float]
    atrophy_mm: float
    tissues: dict[str, dict[str, float]]
    lesions: list[Lesion] = field(default_factory=list)
    texture_seed: int = 0

    def to_patient(self, mni: Floats) -> Floats:
        """MNI RAS mm (..., 3) to DICOM patient LPS mm."""
        lps = mni * np.array([-1.0, -1.0, 1.0], np.float64) * self.scale
        return lps @ self._rotation().T + np.array(self.shift_mm, np.float64)

    def to_mni(self, patient: Floats) -> Floats:
        """DICOM patient LPS mm (..., 3) to MNI RAS mm."""
        lps = (patient - np.array(self.shift_mm, np.float64)) @ self._rotation() / self.scale
        return lps * np.array([-1.0, -1.0, 1.0], np.float64)

    def _rotation(self) -> npt.NDArray[np.float64]:
        a = math.radians(self.rotation_deg)
        return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])

    def lesion_volume_ml(self) -> float:
        """The lesions' total volume in the subject (template voxels x scale^3), in mL."""
        return sum(les.voxels for les in self.lesions) * self.scale**3 / 1000.0

    def patient_z(self, mni_z: float) -> float:
        """Patient z (mm, head-foot) of an MNI z plane (no tilt: rotation is in plane)."""
        return mni_z * self.scale + self.shift_mm[2]


def make_subject(rng: np.random.Generator) -> Subject:
    """A random head from the template (no lesion yet)."""
    tissues = {
        name: {k: v * float(rng.uniform(0.93, 1.07)) for k, v in values.items()}
        for name, values in TISSUES.items()
    }
    atrophic = rng.random() < RANGES["atrophy_share"]
    return Subject(
        scale=float(rng.uniform(*RANGES["head_scale"])),
        rotation_deg=float(rng.uniform(*RANGES["rotation_deg"])),
        shift_mm=(
            float(rng.uniform(*RANGES["shift_mm"])),
            float(rng.uniform(*RANGES["shift_mm"])),
            float(rng.uniform(-5.0, 5.0)),
        ),
        atrophy_mm=float(rng.uniform(*RANGES["atrophy_mm"])) if atrophic else 0.0,
        tissues=tissues,
        texture_seed=int(rng.integers(2**31)),
    )
