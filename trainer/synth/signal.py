"""The diffusion signal model: tissue fractions -> b1000 magnitude image and ADC map.

Per voxel, with tissue fractions ``f_t`` (grey, white, CSF, lesion)::

    S(b) = sum_t f_t * S0_t * exp(-b * ADC_t)            b = 1000 s/mm2

ADC in 1e-3 mm2/s: grey matter ~0.82, white matter ~0.72, CSF ~3.0, acute lesion 0.38-0.55 with
its S0 raised 5-30 % over the tissue it replaces (T2 shine-through). The slab's sub-planes are
averaged (partial volume over the slice thickness), then a smooth multiplicative bias field, a
slight blur and Rician noise (complex Gaussian noise, magnitude taken) follow. The ADC map is
``ln(S(0) / S(1000)) / b`` from the noisy pair, zero where the b0 signal is noise (as scanners
mask it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

B_VALUE = 1000.0
"""s/mm2; with ADC in 1e-3 mm2/s, ``b * ADC`` is simply ``ADC``."""
LESION_ADC_RANGE = (0.38, 0.55)
FloatImage = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TissueSignal:
    """S0 (b0 signal, white matter = 1) and ADC (1e-3 mm2/s) of the normal tissues of one case."""

    s0_gm: float = 1.25
    s0_wm: float = 1.0
    s0_csf: float = 2.3
    adc_gm: float = 0.82
    adc_wm: float = 0.72
    adc_csf: float = 3.0


def random_tissue(rng: np.random.Generator) -> TissueSignal:
    """Case-to-case variation around the nominal values (a few per cent)."""
    return TissueSignal(
        s0_gm=float(rng.uniform(1.18, 1.32)),
        s0_wm=1.0,
        s0_csf=float(rng.uniform(2.0, 2.6)),
        adc_gm=float(rng.uniform(0.78, 0.86)),
        adc_wm=float(rng.uniform(0.69, 0.75)),
        adc_csf=float(rng.uniform(2.9, 3.1)),
    )


@dataclass(frozen=True)
class Fractions:
    """Tissue fractions on one plane (same shape each); ``lesion_*`` are per-voxel mixtures."""

    gm: FloatImage
    wm: FloatImage
    csf: FloatImage
    lesion: FloatImage
    """Lesion fraction (already taken out of gm and wm)."""
    lesion_s0: FloatImage
    """S0 of the lesion compartment (S0 of the tissue it replaced x the lesion's factor)."""
    lesion_adc: FloatImage


def signal(fractions: Fractions, tissue: TissueSignal, b_value: float) -> FloatImage:
    """Noise-free signal at ``b_value`` (0 for the b0 image)."""
    scale = b_value / 1000.0
    out = fractions.gm * np.float32(tissue.s0_gm * np.exp(-scale * tissue.adc_gm))
    out += fractions.wm * np.float32(tissue.s0_wm * np.exp(-scale * tissue.adc_wm))
    out += fractions.csf * np.float32(tissue.s0_csf * np.exp(-scale * tissue.adc_csf))
    out += fractions.lesion * fractions.lesion_s0 * np.exp(-scale * fractions.lesion_adc)
    return np.asarray(out, dtype=np.float32)


def bias_field(shape: tuple[int, int], coefficients: npt.NDArray[np.float64]) -> FloatImage:
    """A smooth multiplicative field: exp of a quadratic in normalised image coordinates."""
    v, u = np.mgrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j]
    a, b, c, d, e = coefficients
    return np.asarray(np.exp(a * u + b * v + c * u * u + d * v * v + e * u * v), dtype=np.float32)


def blur(image: FloatImage, sigma_px: float) -> FloatImage:
    """Gaussian blur (the acquisition's point-spread function, roughly)."""
    return np.asarray(ndimage.gaussian_filter(image, sigma_px, mode="nearest"), dtype=np.float32)


def rician(image: FloatImage, sigma: float, rng: np.random.Generator) -> FloatImage:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma``."""
    scale = np.float32(sigma)
    real = image + rng.standard_normal(image.shape, dtype=np.float32) * scale
    imag = rng.standard_normal(image.shape, dtype=np.float32) * scale
    return np.asarray(np.hypot(real, imag), dtype=np.float32)


def adc_map(
    b0: FloatImage, b1000: FloatImage, noise_sigma: float, b_value: float = B_VALUE
) -> FloatImage:
    """ADC (1e-3 mm2/s) from a noisy b0/b pair; 0 where b0 is below 5 noise sigmas."""
    valid = b0 > 5.0 * noise_sigma
    ratio = np.where(valid, b0 / np.maximum(b1000, np.float32(1e-6)), 1.0)
    adc = np.log(ratio) * np.float32(1000.0 / b_value)
    return np.asarray(np.where(valid, np.clip(adc, 0.0, 4.0), 0.0), dtype=np.float32)
