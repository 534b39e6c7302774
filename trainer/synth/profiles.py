"""Acquisition profiles: the ranges a case's scanner, head, display and export are drawn from.

``train`` spans what real sites produce (docs/synth.md gives the source of every range);
``shifted`` draws from ranges **outside** ``train`` (or wider, where documented), for a held-out
test set that measures how a model copes with acquisitions it has never seen. Each range is a
tuple of intervals (`Spans`): one interval for ``train``, usually one below and one above it for
``shifted``. A value is drawn by picking an interval with probability proportional to its length
(its log-length for log-uniform ranges) and then uniformly (log-uniformly) inside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Spans = tuple[tuple[float, float], ...]


def draw(rng: np.random.Generator, spans: Spans, *, log: bool = False) -> float:
    """One value from the union of ``spans`` (uniform, or log-uniform with ``log``)."""
    lows = np.array([low for low, _ in spans], dtype=np.float64)
    highs = np.array([high for _, high in spans], dtype=np.float64)
    if log:
        lows, highs = np.log(lows), np.log(highs)
    widths = highs - lows
    total = float(widths.sum())
    weights = widths / total if total > 0 else np.full(len(spans), 1.0 / len(spans))
    pick = int(rng.choice(len(spans), p=weights))
    value = float(rng.uniform(lows[pick], highs[pick]))
    return float(np.exp(value)) if log else value


def signed(rng: np.random.Generator, spans: Spans) -> float:
    """A magnitude from ``spans`` with a random sign (angles)."""
    return draw(rng, spans) * (1.0 if rng.random() < 0.5 else -1.0)


def within(value: float, spans: Spans, *, tolerance: float = 1e-9) -> bool:
    """Whether ``value`` lies in one of ``spans`` (inclusive)."""
    return any(low - tolerance <= value <= high + tolerance for low, high in spans)


@dataclass(frozen=True)
class Profile:
    """Every drawn range of one profile. Angles in degrees, lengths in mm."""

    name: str
    # acquisition
    matrix: Spans
    """Acquired matrix (pixels per side, rounded to even)."""
    pixel_mm: Spans
    """Acquired in-plane pixel size."""
    fov_mm: tuple[float, float]
    """Field of view the matrix x pixel product must fall in (a head-sized FOV)."""
    interpolate_share: float
    """Share of images reconstructed to a larger display matrix (zero-fill interpolation)."""
    display_max: int
    """Largest display matrix."""
    nearest_display_share: float
    """Share of interpolated images upscaled by pixel repetition instead of smoothly."""
    slab_mm: Spans
    snr: Spans
    """b1000 brain signal over noise sigma, drawn log-uniformly."""
    b_value: Spans
    """s/mm2; the diffusion contrast follows the drawn b."""
    blur_px: Spans
    """Point-spread function, Gaussian sigma in acquired pixels."""
    bias_strength: Spans
    """Multiplies the bias field's coefficient SDs (0.12, 0.12, 0.08, 0.08, 0.06)."""
    ghost_share: float
    """Share of cases with a Nyquist (N/2) ghost."""
    ghost_amplitude: Spans
    motion_share: float
    """Share of cases with motion (k-space lines shifted in phase)."""
    motion_px: Spans
    # head
    yaw_deg: Spans
    """In-plane rotation magnitude (sign random)."""
    yaw_core_share: float
    """Share of heads drawn from ``yaw_core_deg`` instead (most patients lie nearly straight)."""
    yaw_core_deg: Spans
    pitch_deg: Spans
    """Through-plane tilt (nodding) magnitude."""
    roll_deg: Spans
    """Through-plane tilt (ear to shoulder) magnitude."""
    head_scale: Spans
    """Overall head size relative to MNI152."""
    centre_sd_mm: tuple[float, float, float]
    """Head centre offset from the FOV centre, SD left-right, front-back, up-down."""
    # anatomy / age
    ventricle_mm: Spans
    """Ventricle enlargement of atrophic heads."""
    atrophy_share: float
    """Share of heads with atrophy (enlarged ventricles and widened sulci)."""
    sulcal: Spans
    """Sulcal widening: share of cortical grey matter next to CSF that becomes CSF."""
    # display and export
    windows: tuple[str, ...]
    """Window methods for 8-bit exports (see `display`)."""
    gamma: Spans
    gamma_share: float
    """Share of 8-bit exports with a gamma other than 1."""
    screenshot_canvas: tuple[int, ...]
    """Side of the screenshot (pixels)."""
    viewport: Spans
    """Side of the image inside the screenshot, as a share of the canvas (> 1: zoomed, cut)."""
    jpeg_quality: tuple[int, int]
    dicom_level: Spans
    """Median brain value of the 16-bit DICOM pixels (scanner scaling)."""
    png_text_share: float
    """Share of PNG exports with burned-in viewer text."""

    def describe(self) -> dict[str, Any]:
        """The ranges as plain data (for ``synth.json``)."""
        return asdict(self)


TRAIN = Profile(
    name="train",
    matrix=((96.0, 256.0),),
    pixel_mm=((0.8, 2.4),),
    fov_mm=(200.0, 260.0),
    interpolate_share=0.5,
    display_max=512,
    nearest_display_share=0.0,
    slab_mm=((3.0, 7.0),),
    snr=((5.0, 60.0),),
    b_value=((800.0, 1500.0),),
    blur_px=((0.3, 0.8),),
    bias_strength=((0.2, 2.0),),
    ghost_share=0.04,
    ghost_amplitude=((0.03, 0.12),),
    motion_share=0.03,
    motion_px=((1.0, 4.0),),
    yaw_deg=((0.0, 20.0),),
    yaw_core_share=0.6,
    yaw_core_deg=((0.0, 7.0),),
    pitch_deg=((0.0, 8.0),),
    roll_deg=((0.0, 5.0),),
    head_scale=((0.88, 1.12),),
    centre_sd_mm=(3.0, 6.0, 5.0),
    ventricle_mm=((0.5, 5.0),),
    atrophy_share=0.5,
    sulcal=((0.0, 0.6),),
    windows=("auto", "fixed", "percentile", "gain"),
    gamma=((0.8, 1.25),),
    gamma_share=0.5,
    screenshot_canvas=(512,),
    viewport=((0.6, 1.1),),
    jpeg_quality=(60, 95),
    dicom_level=((300.0, 700.0),),
    png_text_share=0.15,
)

SHIFTED = Profile(
    name="shifted",
    matrix=((64.0, 94.0), (258.0, 320.0)),
    pixel_mm=((0.6, 0.8), (2.4, 3.0)),
    fov_mm=(180.0, 300.0),
    interpolate_share=0.5,
    display_max=640,
    nearest_display_share=0.5,
    slab_mm=((2.0, 3.0), (7.0, 8.5)),
    snr=((3.0, 5.0), (60.0, 120.0)),
    b_value=((800.0, 1500.0),),
    blur_px=((0.8, 1.3),),
    bias_strength=((2.0, 3.5),),
    ghost_share=0.15,
    ghost_amplitude=((0.12, 0.25),),
    motion_share=0.12,
    motion_px=((4.0, 8.0),),
    yaw_deg=((20.0, 30.0),),
    yaw_core_share=0.0,
    yaw_core_deg=((20.0, 30.0),),
    pitch_deg=((8.0, 15.0),),
    roll_deg=((5.0, 10.0),),
    head_scale=((0.78, 0.88), (1.12, 1.2)),
    centre_sd_mm=(6.0, 10.0, 8.0),
    ventricle_mm=((5.0, 8.0),),
    atrophy_share=0.5,
    sulcal=((0.6, 0.9),),
    windows=("minmax", "equalize", "dark", "overgain"),
    gamma=((0.55, 0.8), (1.25, 1.8)),
    gamma_share=0.7,
    screenshot_canvas=(384, 768, 1024),
    viewport=((0.45, 0.6), (1.1, 1.3)),
    jpeg_quality=(30, 59),
    dicom_level=((60.0, 300.0), (700.0, 3000.0)),
    png_text_share=0.5,
)

PROFILES = {profile.name: profile for profile in (TRAIN, SHIFTED)}
STREAM_SALT = {"train": (), "shifted": (5_315_811,)}
"""Prepended to every random stream of a case: the same seed draws other cases per profile."""
