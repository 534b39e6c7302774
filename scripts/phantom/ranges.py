"""Every range the phantom draws from (``RANGES``), the tissue table and the template grid."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

RANGES: dict[str, Any] = {
    "matrix": (128, 160, 192, 224, 256),  # reconstructed rows (AP); columns may be fewer
    "rect_fov": (1.0, 1.0, 0.875, 0.8125),  # columns / rows (rectangular FOV, square pixels)
    "fov_mm": (200.0, 260.0),
    "acq_fraction": (0.5, 1.0),  # acquired k-space lines / reconstructed matrix (zero filling)
    "thickness_mm": (4.0, 6.0),
    "gap_mm": (0.0, 1.5),
    "snr": (8.0, 40.0),  # white matter on b1000 / noise sigma
    "rotation_deg": (-15.0, 15.0),
    "head_scale": (0.9, 1.1),
    "shift_mm": (-12.0, 12.0),
    "atrophy_share": 0.35,  # share of heads with larger ventricles and sulci
    "atrophy_mm": (1.0, 3.5),
    "bias": (0.0, 0.3),  # peak relative bias field amplitude
    "epi_shift_px": (0.0, 3.0),
    "te_ms": (60.0, 110.0),
    "tr_ms": (3000.0, 9000.0),
    "b_value": 1000.0,
    "lesion_adc": (350.0, 550.0),  # x 1e-6 mm2/s
    "lesion_t2_ms": (110.0, 150.0),
    "jpeg_quality": (70, 95),
    "formats": {"png": 0.4, "jpeg": 0.3, "dicom": 0.3},
    "study_slices": (20, 30),
}

TISSUES: dict[str, dict[str, float]] = {
    # pd: proton density (relative); t1, t2 in ms at 1.5-3 T; adc in 1e-6 mm2/s; hu: CT number.
    "gm": {"pd": 0.82, "t1": 1350.0, "t2": 95.0, "adc": 800.0, "hu": 38.0},
    "wm": {"pd": 0.70, "t1": 830.0, "t2": 78.0, "adc": 700.0, "hu": 28.0},
    "csf": {"pd": 1.00, "t1": 4200.0, "t2": 1800.0, "adc": 3000.0, "hu": 6.0},
    "lesion": {"pd": 0.86, "t1": 1500.0, "t2": 125.0, "adc": 450.0, "hu": 24.0},
    "scalp": {"pd": 0.90, "t1": 380.0, "t2": 70.0, "adc": 300.0, "hu": 20.0},
    "skull": {"pd": 0.08, "t1": 500.0, "t2": 25.0, "adc": 400.0, "hu": 1100.0},
}
FAT_SUPPRESSION = 0.12  # what is left of the scalp's (fat) signal on a fat-saturated EPI
# world mm of voxel (0, 0, 0) of the 1 mm template
MNI_ORIGIN: npt.NDArray[np.float64] = np.array([-98.0, -134.0, -72.0])
ATLAS_OFFSET = (8, 8, 0)  # AAL3's 1 mm grid starts at (-90, -126, -72): template index - offset
