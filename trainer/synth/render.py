"""Render one axial slice of one case, as the scanner would show it.

The scanner's image grid (``matrix`` x ``matrix`` pixels over ``fov_mm``) is placed in scanner
space, displayed radiologically: row 0 is anterior, column 0 is the patient's **right**. The slab
of ``thickness_mm`` is sampled at a few sub-planes; each sub-plane's points are mapped through the
case geometry into the MNI grid, where tissue fractions, the ventricles' distance (for the case's
ventricle enlargement) and every lesion are sampled trilinearly. `signal` turns fractions into the
b0 and b1000 images; the sub-planes are averaged, then bias, blur and Rician noise are applied.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from trainer.synth import artefacts as artefacts_module
from trainer.synth import sampling, signal
from trainer.synth.profiles import TRAIN, Profile, draw

if TYPE_CHECKING:
    from trainer.synth.anatomy import Anatomy
    from trainer.synth.artefacts import Artefacts
    from trainer.synth.geometry import CaseGeometry
    from trainer.synth.lesions import Lesion

LESION_PIXEL_FRACTION = 0.6
"""A pixel belongs to a lesion's in-slice mask when the slab-averaged fraction reaches this."""
_SUB_PLANES = 3
_MIMIC_PIXEL_FRACTION = 0.5
_MIMIC_MIN_PIXELS = 3
_RING_PARENCHYMA = 0.5


@dataclass(frozen=True)
class Scan:
    """Acquisition parameters of one case (one series)."""

    matrix: int
    """Acquired matrix: the image is rendered at this size."""
    fov_mm: float
    thickness_mm: float
    snr: float
    """Mean b1000 signal of brain tissue over the noise sigma."""
    blur_px: float
    ventricle_enlargement_mm: float
    tissue: signal.TissueSignal
    bias: npt.NDArray[np.float64]
    """Five coefficients of `signal.bias_field`."""
    b_value: float = signal.B_VALUE
    """s/mm2 of the diffusion-weighted image (the contrast follows it)."""
    display_matrix: int = 0
    """Matrix of the exported image (zero-fill interpolation); 0 = ``matrix``."""
    display_nearest: bool = False
    """Upscale to the display matrix by pixel repetition instead of smoothly."""
    bias_strength: float = 1.0
    ghost: float = 0.0
    """Amplitude of the Nyquist (N/2) ghost, 0 = none."""
    motion_px: float = 0.0
    """Largest shift (pixels) of the phase-encoding lines hit by motion, 0 = none."""
    sulcal: float = 0.0
    """Sulcal widening: share of grey matter next to CSF that turns into CSF."""

    @property
    def pixel_mm(self) -> float:
        """Acquired pixel spacing (square pixels)."""
        return self.fov_mm / self.matrix

    @property
    def shown_matrix(self) -> int:
        """The exported image's matrix."""
        return self.display_matrix or self.matrix


_BIAS_SD = np.array([0.12, 0.12, 0.08, 0.08, 0.06])
_MATRIX_TRIES = 50


def _matrix_and_pixel(
    rng: np.random.Generator, profile: Profile, matrix: int | None
) -> tuple[int, float]:
    """An acquired matrix and pixel size from the profile whose product is a head-sized FOV."""
    fov_low, fov_high = profile.fov_mm
    for _ in range(_MATRIX_TRIES):
        size = matrix if matrix is not None else 2 * round(draw(rng, profile.matrix) / 2)
        spans = tuple(
            (max(low, fov_low / size), min(high, fov_high / size))
            for low, high in profile.pixel_mm
            if max(low, fov_low / size) < min(high, fov_high / size)
        )
        if spans:
            return size, draw(rng, spans)
    size = matrix if matrix is not None else 2 * round(draw(rng, profile.matrix) / 2)
    return size, float(np.clip((fov_low + fov_high) / 2 / size, 0.3, 4.0))


def _display_matrix(rng: np.random.Generator, profile: Profile, matrix: int) -> int:
    """The reconstruction matrix: the acquired one, or interpolated up to ``display_max``."""
    if rng.random() >= profile.interpolate_share:
        return matrix
    options = sorted(
        {m for m in (2 * matrix, 256, 320, 384, 448, 512, 640) if matrix < m <= profile.display_max}
    )
    return int(rng.choice(options)) if options else matrix


def random_scan(
    rng: np.random.Generator, matrix: int | None = None, profile: Profile = TRAIN
) -> Scan:
    """An acquisition drawn from ``profile`` (see `trainer.synth.profiles`).

    ``matrix`` fixes the acquired and the displayed matrix (no interpolation); the pixel size is
    then drawn so that the field of view stays head-sized.
    """
    size, pixel = _matrix_and_pixel(rng, profile, matrix)
    display = size if matrix is not None else _display_matrix(rng, profile, size)
    nearest = display != size and rng.random() < profile.nearest_display_share
    thickness = round(draw(rng, profile.slab_mm) * 2) / 2
    snr = draw(rng, profile.snr, log=True)
    b_value = float(round(draw(rng, profile.b_value) / 50) * 50)
    blur = draw(rng, profile.blur_px)
    atrophic = rng.random() < profile.atrophy_share
    enlargement = draw(rng, profile.ventricle_mm) if atrophic else 0.0
    sulcal = draw(rng, profile.sulcal) if atrophic else 0.0
    tissue = signal.random_tissue(rng)
    strength = draw(rng, profile.bias_strength)
    bias = rng.normal(0.0, _BIAS_SD * strength)
    ghost = draw(rng, profile.ghost_amplitude) if rng.random() < profile.ghost_share else 0.0
    motion = draw(rng, profile.motion_px) if rng.random() < profile.motion_share else 0.0
    return Scan(
        matrix=size,
        fov_mm=pixel * size,
        thickness_mm=thickness,
        snr=snr,
        blur_px=blur,
        ventricle_enlargement_mm=enlargement,
        tissue=tissue,
        bias=bias,
        b_value=b_value,
        display_matrix=display,
        display_nearest=bool(nearest),
        bias_strength=strength,
        ghost=ghost,
        motion_px=motion,
        sulcal=sulcal,
    )


@dataclass(frozen=True)
class RenderedSlice:
    """One slice in display orientation (row 0 anterior, column 0 the patient's right)."""

    b1000: npt.NDArray[np.float32]
    """Magnitude image, white matter ~0.5 before the bias field; noise included."""
    adc: npt.NDArray[np.float32]
    """ADC map, 1e-3 mm2/s, 0 outside the brain."""
    lesions: tuple[npt.NDArray[np.bool_], ...]
    """In-slice mask of every lesion of the case (empty masks for lesions the slice misses)."""
    brain: npt.NDArray[np.bool_]
    z_scanner: float
    z_mni: float
    """MNI z of the slice's centre point."""
    pixel_mm: float
    thickness_mm: float
    b0: npt.NDArray[np.float32] | None = None
    """The noisy b0 image (same scaling as ``b1000``)."""
    b_value: float = signal.B_VALUE
    findings: tuple[str, ...] = ()
    """Look-alikes and artefacts visible on this slice (`trainer.synth.mimics`, `artefacts`)."""
    mimic_masks: tuple[npt.NDArray[np.bool_], ...] = ()
    """In-slice mask of every look-alike of the case (same order as the case's mimics)."""


def plane_points(scan: Scan, z: float, size: int | None = None) -> npt.NDArray[np.float64]:
    """Scanner coordinates ``(n, n, 3)`` of the plane at ``z``.

    ``n`` = ``size`` samples evenly spaced from the first to the last pixel centre; by default
    ``matrix``, i.e. every pixel centre.
    """
    half = scan.fov_mm / 2.0 - scan.pixel_mm / 2.0
    # row 0 is anterior (+y), column 0 the patient's right (+x)
    line = np.linspace(half, -half, size or scan.matrix)
    yy, xx = np.meshgrid(line, line, indexing="ij")
    return np.stack([xx, yy, np.full_like(xx, z)], axis=-1)


@functools.lru_cache(maxsize=8)
def _upsampler(matrix: int) -> tuple[int, sampling.Weights]:
    coarse = sampling.coarse_size(matrix)
    return coarse, sampling.interpolation_weights(matrix, coarse)


def plane_voxels(
    anatomy: Anatomy,
    geometry: CaseGeometry,
    scan: Scan,
    z: float,
    window: Window | None = None,
) -> npt.NDArray[np.float64]:
    """Anatomy voxel coordinates ``(rows, cols, 3)`` of the pixel centres of the plane at z.

    The whole image by default, else the ``window`` (same values as cropping the whole).
    """
    coarse, (low, weight) = _upsampler(scan.matrix)
    voxels = anatomy.world_to_voxel(geometry.to_mni(plane_points(scan, z, coarse)))
    rows, cols = window or (slice(None), slice(None))
    return np.asarray(
        sampling.upsample(voxels, (low[rows], weight[rows]), (low[cols], weight[cols])),
        dtype=np.float64,
    )


def sample_lesions(
    lesions: tuple[Lesion, ...], voxels: npt.NDArray[np.float64]
) -> list[npt.NDArray[np.float32]]:
    """Each lesion's fraction at anatomy voxel coordinates ``(..., 3)``."""
    out = []
    for lesion in lesions:
        local = voxels - lesion.origin
        inside = np.all((local > -1.0) & (local < np.array(lesion.fraction.shape)), axis=-1)
        fraction = np.zeros(voxels.shape[:-1], dtype=np.float32)
        if inside.any():
            fraction[inside] = ndimage.map_coordinates(
                lesion.fraction, local[inside].T, order=1, mode="constant", cval=0.0
            )
        out.append(fraction)
    return out


@dataclass(frozen=True)
class LesionView:
    """How one lesion shows on a slice, from the noise-free, bias-free (but blurred) slab."""

    area_mm2: float
    """Area of the lesion's in-slice mask."""
    contrast: float
    """Mean b1000 inside the mask over mean b1000 of the tissue ring 1-3 pixels around it."""
    adc_ratio: float
    """Mean ADC inside the mask over mean ADC of that ring (below 1: darker on the ADC map)."""


def lesion_views(
    anatomy: Anatomy,
    geometry: CaseGeometry,
    scan: Scan,
    lesions: tuple[Lesion, ...],
    z: float,
    *,
    window: Window | None = None,
    mimics: tuple[Lesion, ...] = (),
) -> list[LesionView]:
    """How every lesion shows on the slab at ``z`` (used to place slices where lesions show).

    ``window`` limits the work to the pixels around the lesions (see `lesion_window`); the
    values are those of the full slab there.
    """
    slab = _slab(anatomy, geometry, scan, lesions, z, window=window, mimics=mimics)
    b0 = signal.blur(slab.b0, scan.blur_px)
    b1000 = signal.blur(slab.b1000, scan.blur_px)
    adc = np.log(np.maximum(b0, 1e-6) / np.maximum(b1000, 1e-6)) * np.float32(1000.0 / scan.b_value)
    views = []
    for mask in slab.lesions:
        area = float(mask.sum()) * scan.pixel_mm**2
        near = ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_dilation(mask)
        ring = near & (slab.parenchyma > _RING_PARENCHYMA)
        if not mask.any() or not ring.any():
            views.append(LesionView(area, 0.0, np.inf))
            continue
        views.append(
            LesionView(
                area_mm2=area,
                contrast=float(b1000[mask].mean()) / max(float(b1000[ring].mean()), 1e-6),
                adc_ratio=float(adc[mask].mean()) / max(float(adc[ring].mean()), 1e-6),
            )
        )
    return views


Window = tuple[slice, slice]
"""Rows and columns of a part of the image."""


def lesion_window(scan: Scan, lesion_points: npt.NDArray[np.float64], margin_px: int = 8) -> Window:
    """The image rows and columns around scanner points ``(n, 3)`` (a lesion's voxels)."""
    half = scan.fov_mm / 2.0 - scan.pixel_mm / 2.0
    rows = (half - lesion_points[:, 1]) / scan.pixel_mm
    cols = (half - lesion_points[:, 0]) / scan.pixel_mm

    def span(values: npt.NDArray[np.float64]) -> slice:
        low = int(np.clip(np.floor(values.min()) - margin_px, 0, scan.matrix - 1))
        high = int(np.clip(np.ceil(values.max()) + margin_px + 1, low + 1, scan.matrix))
        return slice(low, high)

    return span(rows), span(cols)


@dataclass(frozen=True)
class _Slab:
    b0: npt.NDArray[np.float32]
    b1000: npt.NDArray[np.float32]
    parenchyma: npt.NDArray[np.float32]
    """Slab-averaged grey + white (+ lesion) fraction."""
    lesions: tuple[npt.NDArray[np.bool_], ...]
    mimics: tuple[npt.NDArray[np.bool_], ...] = ()


def sub_plane_offsets(scan: Scan) -> npt.NDArray[np.float64]:
    """Offsets along z (mm) of the sub-planes that sample the slab."""
    step = scan.thickness_mm / _SUB_PLANES
    return np.asarray((np.arange(_SUB_PLANES) + 0.5) * step - scan.thickness_mm / 2.0, np.float64)


def _slab(  # noqa: PLR0915 (one pass over the sub-planes keeps the sampling shared)
    anatomy: Anatomy,
    geometry: CaseGeometry,
    scan: Scan,
    lesions: tuple[Lesion, ...],
    z: float,
    *,
    window: Window | None = None,
    mimics: tuple[Lesion, ...] = (),
) -> _Slab:
    """Noise-free b0 and b1000 of the slab at ``z``, averaged over its sub-planes.

    Acute lesions claim tissue first, then the look-alikes (``mimics``: tissue, or CSF for the
    choroid plexus). Sulcal widening turns the case's share of grey matter next to CSF into CSF.
    """
    rows, cols = window or (slice(0, scan.matrix), slice(0, scan.matrix))
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    b0 = np.zeros(shape, np.float32)
    b1000 = np.zeros(shape, np.float32)
    parenchyma_sum = np.zeros(shape, np.float32)
    blobs = (*lesions, *mimics)
    lesion_sum = [np.zeros(shape, np.float32) for _ in blobs]
    tissue = scan.tissue
    enlargement = scan.ventricle_enlargement_mm
    offsets = sub_plane_offsets(scan)
    for dz in offsets:
        voxels = plane_voxels(anatomy, geometry, scan, z + dz, window)
        channels = sampling.trilinear(anatomy.packed, voxels)
        gm = channels[..., 0] / np.float32(255.0)
        wm = channels[..., 1] / np.float32(255.0)
        csf = channels[..., 2] / np.float32(255.0)
        if enlargement > 0:
            grow = np.clip(enlargement - channels[..., 3] + 0.5, 0.0, 1.0)
            csf += grow * (gm + wm)
            gm *= 1.0 - grow
            wm *= 1.0 - grow
        if scan.sulcal > 0:
            near_csf = ndimage.maximum_filter(csf, size=3)
            widen = np.float32(scan.sulcal) * gm * np.clip(near_csf * 2.0, 0.0, 1.0)
            gm -= widen
            csf += widen
        lesion = np.zeros(shape, np.float32)
        lesion_s0 = np.zeros(shape, np.float32)
        lesion_adc = np.ones(shape, np.float32)
        parenchyma = gm + wm
        parenchyma_sum += parenchyma
        plexus = np.zeros(shape, np.float32)
        plexus_s0 = np.zeros(shape, np.float32)
        plexus_adc = np.ones(shape, np.float32)
        for index, fraction in enumerate(sample_lesions(blobs, voxels)):
            lesion_sum[index] += fraction
            blob = blobs[index]
            if blob.replaces == "csf":
                take = np.minimum(fraction, csf - plexus)
                hit = take > 0
                plexus_s0 = np.where(hit, np.float32(tissue.s0_wm * blob.s0_factor), plexus_s0)
                plexus_adc = np.where(hit, np.float32(blob.adc), plexus_adc)
                plexus += np.maximum(take, 0.0)
                continue
            take = np.minimum(fraction, parenchyma - lesion)
            hit = take > 0
            if not hit.any():
                continue
            grey_share = np.where(parenchyma > 0, gm / np.maximum(parenchyma, 1e-6), 0.0)
            base_s0 = grey_share * tissue.s0_gm + (1.0 - grey_share) * tissue.s0_wm
            lesion_s0 = np.where(hit, base_s0 * blob.s0_factor, lesion_s0)
            lesion_adc = np.where(hit, blob.adc, lesion_adc)
            lesion += np.maximum(take, 0.0)
        keep = np.where(parenchyma > 0, 1.0 - lesion / np.maximum(parenchyma, 1e-6), 1.0)
        fractions = signal.Fractions(
            gm=gm * keep,
            wm=wm * keep,
            csf=csf - plexus,
            lesion=lesion,
            lesion_s0=lesion_s0.astype(np.float32),
            lesion_adc=lesion_adc,
        )
        b0 += signal.signal(fractions, tissue, 0.0)
        b1000 += signal.signal(fractions, tissue, scan.b_value)
        if mimics and plexus.any():
            b0 += plexus * plexus_s0
            b1000 += plexus * plexus_s0 * np.exp(-scan.b_value / 1000.0 * plexus_adc)
    scale = np.float32(1.0 / len(offsets))
    return _Slab(
        b0=b0 * scale,
        b1000=b1000 * scale,
        parenchyma=parenchyma_sum * scale,
        lesions=tuple(
            total * scale >= LESION_PIXEL_FRACTION for total in lesion_sum[: len(lesions)]
        ),
        mimics=tuple(
            total * scale >= _MIMIC_PIXEL_FRACTION for total in lesion_sum[len(lesions) :]
        ),
    )


def slab_fractions(
    anatomy: Anatomy, geometry: CaseGeometry, scan: Scan, z: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Slab-averaged grey, white and CSF fractions of the plane at ``z``.

    With the case's ventricle enlargement and sulcal widening: the input of the other contrasts
    (`trainer.synth.contrasts`).
    """
    shape = (scan.matrix, scan.matrix)
    total = [np.zeros(shape, np.float32) for _ in range(3)]
    offsets = sub_plane_offsets(scan)
    for dz in offsets:
        channels = sampling.trilinear(anatomy.packed, plane_voxels(anatomy, geometry, scan, z + dz))
        gm = channels[..., 0] / np.float32(255.0)
        wm = channels[..., 1] / np.float32(255.0)
        csf = channels[..., 2] / np.float32(255.0)
        if scan.ventricle_enlargement_mm > 0:
            grow = np.clip(scan.ventricle_enlargement_mm - channels[..., 3] + 0.5, 0.0, 1.0)
            csf += grow * (gm + wm)
            gm *= 1.0 - grow
            wm *= 1.0 - grow
        if scan.sulcal > 0:
            widen = np.float32(scan.sulcal) * gm * np.clip(ndimage.maximum_filter(csf, 3) * 2, 0, 1)
            gm -= widen
            csf += widen
        for index, part in enumerate((gm, wm, csf)):
            total[index] += part
    scale = np.float32(1.0 / len(offsets))
    return total[0] * scale, total[1] * scale, total[2] * scale


def render_slice(
    anatomy: Anatomy,
    geometry: CaseGeometry,
    scan: Scan,
    lesions: tuple[Lesion, ...],
    *,
    z: float,
    rng: np.random.Generator,
    mimics: tuple[Lesion, ...] = (),
    artefacts: Artefacts | None = None,
) -> RenderedSlice:
    """Render the slab centred at scanner ``z`` (see the module docstring).

    Order: the noise-free slab; susceptibility and flow artefacts (both images); bias field and
    blur; Nyquist ghost (both); motion (b1000); Rician noise (both).
    """
    slab = _slab(anatomy, geometry, scan, lesions, z, mimics=mimics)
    shape = (scan.matrix, scan.matrix)
    brain = slab.b0 > 0.3
    findings = [
        blob.kind
        for blob, mask in zip(mimics, slab.mimics, strict=True)
        if int(mask.sum()) >= _MIMIC_MIN_PIXELS
    ]
    b0_clean, b1000_clean = slab.b0, slab.b1000
    if artefacts is not None:
        field = artefacts_module.susceptibility_field(
            artefacts, geometry, z=z, fov_mm=scan.fov_mm, matrix=scan.matrix
        )
        if brain.any() and float(field[brain].max()) >= artefacts_module.VISIBLE_PILE_UP:
            findings.append("susceptibility")
        b0_clean, b1000_clean = b0_clean * field, b1000_clean * field
        level0 = float(b1000_clean[brain].mean()) if brain.any() else 0.5
        spot = artefacts_module.flow_spot(
            artefacts,
            geometry,
            z=z,
            fov_mm=scan.fov_mm,
            matrix=scan.matrix,
            level=level0,
            rng=rng,
        )
        if spot is not None:
            findings.append("flow")
            b0_clean = b0_clean + spot
            b1000_clean = b1000_clean + spot
    field = signal.bias_field(shape, scan.bias)
    b0 = signal.blur(b0_clean * field, scan.blur_px)
    b1000 = signal.blur(b1000_clean * field, scan.blur_px)
    if scan.ghost > 0:
        b0 = artefacts_module.nyquist_ghost(b0, scan.ghost)
        b1000 = artefacts_module.nyquist_ghost(b1000, scan.ghost)
        findings.append("nyquist_ghost")
    if scan.motion_px > 0:
        b1000 = artefacts_module.motion(b1000, scan.motion_px, rng)
        findings.append("motion")
    level = float(b1000[brain].mean()) if brain.any() else 1.0
    sigma = level / scan.snr
    noisy_b1000 = signal.rician(b1000, sigma, rng)
    noisy_b0 = signal.rician(b0, sigma, rng)
    centre_mni = geometry.to_mni(np.array([0.0, 0.0, z]))
    return RenderedSlice(
        b1000=noisy_b1000,
        adc=signal.adc_map(noisy_b0, noisy_b1000, sigma, scan.b_value),
        lesions=slab.lesions,
        brain=brain,
        z_scanner=z,
        z_mni=float(centre_mni[2]),
        pixel_mm=scan.pixel_mm,
        thickness_mm=scan.thickness_mm,
        b0=noisy_b0,
        b_value=scan.b_value,
        findings=tuple(dict.fromkeys(findings)),
        mimic_masks=slab.mimics,
    )
