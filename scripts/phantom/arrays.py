"""The array types the phantom passes around."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.floating]
"""A float array of any precision: template volumes and slices are float32, geometry float64."""
Mask = npt.NDArray[np.bool_]
Pixels = npt.NDArray[np.number]
