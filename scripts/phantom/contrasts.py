"""Contrasts: DWI (b0, b1000, ADC), T1, FLAIR and CT images from tissue fractions."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from phantom.ranges import FAT_SUPPRESSION, RANGES
from phantom.sampling import slice_fractions

if TYPE_CHECKING:
    from phantom.acquisition import DiffusionProtocol, Geometry
    from phantom.anatomy import Anatomy
    from phantom.arrays import Floats
    from phantom.lesions import Lesion
    from phantom.subject import Subject


def mr_signal(
    t: dict[str, float], te: float, tr: float, b: float = 0.0, ti: float | None = None
) -> float:
    """Spin-echo (or inversion-recovery) signal of one tissue at diffusion weighting b (s/mm2)."""
    if ti is None:
        longitudinal = 1.0 - math.exp(-tr / t["t1"])
    else:
        longitudinal = abs(1.0 - 2.0 * math.exp(-ti / t["t1"]) + math.exp(-tr / t["t1"]))
    return t["pd"] * longitudinal * math.exp(-te / t["t2"]) * math.exp(-b * t["adc"] * 1e-6)


def compose(
    fractions: dict[str, Any],
    subject: Subject,
    signal_of: dict[str, float],
    lesion_signal: Any,
) -> Floats:
    """The noise-free image: tissue fractions times each tissue's signal, with a fine texture."""
    image: Floats = np.zeros_like(fractions["gm"])
    for name in ("gm", "wm", "csf", "skull", "scalp"):
        image += fractions[name] * signal_of[name]
    for les, frac in fractions["lesions"]:
        image += frac * lesion_signal(les)
    rng = np.random.default_rng(subject.texture_seed)
    texture: npt.NDArray[np.float64] = ndimage.gaussian_filter(rng.normal(size=image.shape), 1.5)
    texture /= texture.std() + 1e-9
    return image * (1.0 + 0.035 * texture)


def dwi_signals(subject: Subject, proto: DiffusionProtocol, b: float) -> dict[str, float]:
    """Per-tissue signal of the DWI series at b (fat-suppressed scalp)."""
    sig = {
        n: mr_signal(subject.tissues[n], proto.te, proto.tr, b)
        for n in ("gm", "wm", "csf", "skull")
    }
    sig["scalp"] = FAT_SUPPRESSION * mr_signal(subject.tissues["scalp"], proto.te, proto.tr, b)
    return sig


def lesion_dwi(subject: Subject, proto: DiffusionProtocol, b: float) -> Any:
    """The signal of a lesion at b, from its own ADC and T2."""

    def signal(les: Lesion) -> float:
        t = dict(subject.tissues["lesion"], adc=les.adc, t2=les.t2)
        return mr_signal(t, proto.te, proto.tr, b)

    return signal


def bias_field(shape: tuple[int, int], coeffs: Floats) -> Floats:
    """A smooth receive-coil field: exp of a quadratic polynomial over the image."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    terms = np.stack([xx, yy, xx * yy, xx**2, yy**2, np.ones_like(xx)])
    exponent: Floats = np.tensordot(coeffs[:6], terms, axes=1) - coeffs[5]
    return np.exp(exponent)


def epi_distort(image: Floats, shift_px: float, geom: Geometry, z_mni: float) -> Floats:
    """Shift pixels along the phase axis (rows, AP) near the frontal skull base."""
    if shift_px <= 0 or z_mni > 15:
        return image
    strength = shift_px * min(1.0, (15 - z_mni) / 30)
    rr, cc = np.mgrid[0 : geom.rows, 0 : geom.cols].astype(np.float32)
    bump = np.exp(
        -(((rr - 0.25 * geom.rows) / (0.15 * geom.rows)) ** 2)
        - ((cc - 0.5 * geom.cols) / (0.3 * geom.cols)) ** 2
    )
    shifted: Floats = ndimage.map_coordinates(
        image, [rr + strength * bump, cc], order=1, mode="nearest"
    )
    return shifted


def acquire(
    image: Floats, geom: Geometry, sigma: float, taper: float, rng: np.random.Generator
) -> Floats:
    """Cut k-space to the acquired matrix (blur, ringing), add complex noise, take the magnitude.

    The noise is drawn white at the reconstructed grid, filtered by the same k-space window and
    scaled so that each of its real and imaginary parts has standard deviation ``sigma``.
    """
    window = _kspace_window(geom, taper)
    k = np.fft.fftshift(np.fft.fft2(image)) * window
    clean = np.fft.ifft2(np.fft.ifftshift(k))
    noise = rng.normal(size=image.shape) + 1j * rng.normal(size=image.shape)
    noise = np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(noise)) * window))
    noise *= sigma / (np.sqrt(np.mean(window**2)) + 1e-12)
    return np.abs(clean + noise).astype(np.float32)


def _kspace_window(geom: Geometry, taper: float) -> Floats:
    """Ones over the acquired central k-space (Tukey-tapered edges), zeros outside."""

    def one(n: int, keep: int) -> Floats:
        w = np.zeros(n)
        start = (n - keep) // 2
        ramp = np.ones(keep)
        edge = int(taper * keep / 2)
        if edge > 0:
            t = 0.5 * (1 - np.cos(np.pi * np.arange(edge) / edge))
            ramp[:edge], ramp[-edge:] = t, t[::-1]
        w[start : start + keep] = ramp
        return w

    return np.outer(one(geom.rows, geom.acq_rows), one(geom.cols, geom.acq_cols))


def render_diffusion(
    anat: Anatomy,
    subject: Subject,
    geom: Geometry,
    proto: DiffusionProtocol,
    z: float,
    *,
    rng: np.random.Generator,
    fractions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """b0 and b1000 magnitudes, the scanner's ADC map (1e-6 mm2/s) and the lesion fraction."""
    fr = fractions or slice_fractions(anat, subject, geom, z)
    z_mni = (z - subject.shift_mm[2]) / subject.scale
    bias = bias_field(fr["gm"].shape, proto.bias)
    b = RANGES["b_value"]
    sigma = dwi_signals(subject, proto, b)["wm"] / proto.snr
    images: dict[str, Any] = {}
    for name, bval in (("b0", 0.0), ("b1000", b)):
        clean = compose(
            fr, subject, dwi_signals(subject, proto, bval), lesion_dwi(subject, proto, bval)
        )
        clean = epi_distort(clean * bias, proto.epi_shift_px, geom, z_mni)
        images[name] = acquire(clean, geom, sigma, proto.gibbs_taper, rng)
    s0, s1 = images["b0"], images["b1000"]
    head = ndimage.binary_opening(s0 > 6 * sigma, iterations=1)
    adc = np.where(head, np.log(np.maximum(s0, 1e-6) / np.maximum(s1, 1e-6)) / b * 1e6, 0.0)
    images["adc"] = np.clip(adc, 0, 4095).astype(np.float32)
    images["lesion"] = epi_distort(fr["lesion"], proto.epi_shift_px, geom, z_mni)
    images["brain"] = fr["gm"] + fr["wm"] + fr["lesion"]
    images["sigma"] = sigma
    return images


def structural_timing(kind: str, rng: np.random.Generator) -> dict[str, float]:
    """TE, TR (and TI) in ms of a T1 spin echo, a T1 MPRAGE-like IR, or a FLAIR."""
    if kind == "t1_se":
        return {"te": float(rng.uniform(8, 15)), "tr": float(rng.uniform(450, 700))}
    if kind == "t1_ir":
        return {
            "te": float(rng.uniform(2.2, 4)),
            "tr": float(rng.uniform(1800, 2300)),
            "ti": float(rng.uniform(850, 1100)),
        }
    return {  # flair (also the EPI-FLAIR variant)
        "te": float(rng.uniform(80, 125)),
        "tr": float(rng.uniform(8000, 11000)),
        "ti": float(rng.uniform(2300, 2800)),
    }


def render_structural(
    fr: dict[str, Any],
    subject: Subject,
    geom: Geometry,
    timing: dict[str, float],
    rng: np.random.Generator,
) -> Floats:
    """A T1 or FLAIR magnitude image of the same anatomy (no fat suppression, no EPI warp).

    An infarct hours old is barely seen on FLAIR: its T2 lies between the grey matter's and the
    lesion's own, by a share fixed per head (``texture_seed``).
    """
    te, tr, ti = timing["te"], timing["tr"], timing.get("ti")
    sig = {n: mr_signal(subject.tissues[n], te, tr, ti=ti) for n in ("gm", "wm", "csf", "skull")}
    sig["scalp"] = mr_signal(subject.tissues["scalp"], te, tr, ti=ti)
    visible = (subject.texture_seed % 101) / 100.0
    gm_t2 = subject.tissues["gm"]["t2"]

    def lesion(les: Lesion) -> float:
        t = dict(subject.tissues["lesion"], t2=gm_t2 + visible * (les.t2 - gm_t2))
        return mr_signal(t, te, tr, ti=ti)

    clean = compose(fr, subject, sig, lesion)
    field_rng = np.random.default_rng(subject.texture_seed + 1)
    clean *= bias_field(clean.shape, field_rng.normal(0, 0.08, 6))
    snr = 20.0 + (subject.texture_seed % 25)
    return acquire(clean, geom, sig["wm"] / snr, 0.2, rng)


def render_ct(fr: dict[str, Any], subject: Subject, rng: np.random.Generator) -> Floats:
    """Hounsfield units of the same anatomy: brain, CSF, skull, scalp, air; quantum noise."""
    hu = {n: subject.tissues[n]["hu"] for n in ("gm", "wm", "csf", "skull", "scalp")}
    filled = fr["gm"] + fr["wm"] + fr["csf"] + fr["skull"] + fr["scalp"] + fr["lesion"]
    image = compose(fr, subject, hu, lambda _les: subject.tissues["lesion"]["hu"])
    image = image + (1 - np.clip(filled, 0, 1)) * -1000.0
    noisy: Floats = ndimage.gaussian_filter(image, 0.6) + rng.normal(
        0, float(rng.uniform(2.5, 5)), image.shape
    )
    return noisy.astype(np.float32)
