"""An acquisition: the slice grid of a series and the contrast settings of a DWI series."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from phantom.ranges import RANGES

if TYPE_CHECKING:
    from phantom.arrays import Floats

VENDORS = ("siemens", "ge", "philips", "standard")


@dataclass
class Geometry:
    """An axial slice grid: reconstructed matrix, pixel size, slab thickness, acquired k-space."""

    rows: int
    cols: int
    pixel_mm: float
    thickness_mm: float
    gap_mm: float
    acq_rows: int
    acq_cols: int
    centre_xy: tuple[float, float]

    @property
    def spacing_mm(self) -> float:
        """Distance between neighbouring slice centres."""
        return self.thickness_mm + self.gap_mm

    def position(self, z: float) -> tuple[float, float, float]:
        """ImagePositionPatient of the first pixel of the slice at patient z."""
        x0 = self.centre_xy[0] - 0.5 * (self.cols - 1) * self.pixel_mm
        y0 = self.centre_xy[1] - 0.5 * (self.rows - 1) * self.pixel_mm
        return (x0, y0, z)


def make_geometry(
    rng: np.random.Generator, matrix: int | None = None, fov: float | None = None
) -> Geometry:
    """A random DWI-like grid (rows run anterior to posterior, columns right to left)."""
    rows = int(matrix or rng.choice(RANGES["matrix"]))
    fov = float(fov or rng.uniform(*RANGES["fov_mm"]))
    cols = int(round(rows * float(rng.choice(RANGES["rect_fov"])) / 8) * 8)
    fraction = float(rng.uniform(*RANGES["acq_fraction"]))
    acq_rows = max(64, min(rows, int(round(rows * fraction / 2) * 2)))
    return Geometry(
        rows=rows,
        cols=cols,
        pixel_mm=fov / rows,
        thickness_mm=float(np.round(rng.uniform(*RANGES["thickness_mm"]), 1)),
        gap_mm=float(np.round(rng.uniform(*RANGES["gap_mm"]), 1)),
        acq_rows=acq_rows,
        acq_cols=max(48, int(round(acq_rows * cols / rows / 2) * 2)),
        centre_xy=(float(rng.uniform(-6, 6)), float(rng.uniform(-10, 6))),
    )


@dataclass
class DiffusionProtocol:
    """The contrast and image-quality settings of one DWI series."""

    te: float
    tr: float
    snr: float
    bias: Floats  # coefficients of the receive field
    epi_shift_px: float
    vendor: str
    gibbs_taper: float

    @staticmethod
    def random(rng: np.random.Generator) -> DiffusionProtocol:
        """Draw a protocol from ``RANGES``."""
        return DiffusionProtocol(
            te=float(rng.uniform(*RANGES["te_ms"])),
            tr=float(rng.uniform(*RANGES["tr_ms"])),
            snr=float(math.exp(rng.uniform(*np.log(RANGES["snr"])))),
            bias=rng.normal(0.0, 1.0, 6) * rng.uniform(*RANGES["bias"]) / 2,
            epi_shift_px=float(rng.uniform(*RANGES["epi_shift_px"])),
            vendor=str(rng.choice(VENDORS)),
            gibbs_taper=float(rng.uniform(0.0, 0.5)),
        )
