"""A series' lesions in 3-D, from the mask files of its slices, and its summary picture.

The slices of a series (in the series report's order, along the normal) each have a mask file
when the bundle that scanned them had a segmenter (`daemon.lesionmaps.files`). Stacked in that
order they are labelled in 3-D (`daemon.shared.lesions.label`: 8-connected in-plane, joined
through neighbouring slices when two parts share a pixel position). Each lesion gets:

``volume_ml``
    its voxels x PixelSpacing (rows x columns) x the slice spacing, in mL. The slice spacing is the
    median step between the slices' positions along the normal (each slice at a position of its
    own); with one slice, its SpacingBetweenSlices, else its SliceThickness. Null when a spacing
    is unknown (a PNG series, a slice without a position, two slices at one position) or the
    slices' PixelSpacing differ.
``slices``
    the slices it spans: their index in the report's ``slices``, SOPInstanceUID and
    InstanceNumber.
``label``
    its location: the non-negative class with the highest mean probability over those slices
    (the image reports' ``prediction.probabilities``).
``centroid_patient_mm``
    the mean patient position (x, y, z in mm, DICOM patient coordinates) of its voxels, each
    voxel at ImagePositionPatient + column x column spacing x row direction + row x row spacing x
    column direction (ImageOrientationPatient, PixelSpacing); null unless every slice has them.
``adc``
    when the study's ADC series is linked: its ADC against the tissue around it and whether it
    restricts diffusion (`daemon.series.adc`); the series then gets ``adc_slices``.

``lesion_volume_ml`` is their sum. With the ADC read (``adc_slices``), ``restricted_volume_ml`` is
the sum over the lesions whose ADC is restricted: the acute lesion volume, without the
look-alikes (0 when none is restricted; null without an ADC series, or when a lesion's ADC or
volume is unknown). ``summary_image`` is the montage of the overlays of the slices
with a lesion (`daemon.lesionmaps.overlay.render_summary`), ``overlays/<series id>_summary.png``;
null without a lesion.

When a slice has no readable mask (a segmenter that failed on it, a mask file gone, a slice
scanned by a bundle without a segmenter), or the masks differ in size, the 3-D lesions cannot be
told: ``lesions``, ``lesion_volume_ml`` and ``summary_image`` are null and ``lesion_maps_missing``
counts the slices without a map. A series none of whose slices has lesion map fields gets no
lesion fields at all (a bundle without a segmenter).
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
from PIL import Image

from daemon.fs import write_atomic
from daemon.lesionmaps.files import overlay_name, read_mask, summary_name
from daemon.lesionmaps.overlay import overlay_picture, render_summary
from daemon.series.adc import REFERENCE_ADC, adc_by_slice, lesion_adc
from daemon.shared.lesions import label

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

    from daemon.scan.slices import SliceRecord

log = structlog.get_logger("infarctwatch.series")

NEGATIVE = "No acute infarct"
"""The negative class: never a lesion's location."""
_SPACING_TOLERANCE = 1e-3
"""PixelSpacing values (mm) closer than this are the same."""


def _same(values: list[tuple[float, ...]]) -> tuple[float, ...] | None:
    first = values[0]
    ok = all(
        len(v) == len(first)
        and all(abs(a - b) <= _SPACING_TOLERANCE for a, b in zip(v, first, strict=True))
        for v in values
    )
    return first if ok else None


def pixel_spacing(slices: list[SliceRecord]) -> tuple[float, ...] | None:
    """The PixelSpacing all slices share, or None (unknown for one, or they differ)."""
    found = [r.pixel_spacing for r in slices]
    if not found or any(v is None for v in found):
        return None
    return _same([v for v in found if v is not None])


def slice_spacing(slices: list[SliceRecord]) -> float | None:
    """The distance between neighbouring slices in mm (module docstring), or None."""
    positions = sorted({round(r.slice_position, 3) for r in slices if r.slice_position is not None})
    if len(positions) >= 2 and len(positions) == len(slices):
        steps = [b - a for a, b in itertools.pairwise(positions)]
        spacing = statistics.median(steps)
        return spacing if spacing > 0 else None
    if len(slices) == 1:
        record = slices[0]
        return record.spacing_between_slices or record.slice_thickness
    return None


def _label(slices: list[SliceRecord]) -> str | None:
    totals: dict[str, float] = {}
    for record in slices:
        for name, probability in record.probabilities:
            if name != NEGATIVE:
                totals[name] = totals.get(name, 0.0) + probability
    if totals:
        return max(sorted(totals), key=lambda name: totals[name])
    labels = Counter(r.label for r in slices if r.label and r.label != NEGATIVE)
    return labels.most_common(1)[0][0] if labels else None


def _patient_centroid(
    slices: list[SliceRecord], sums: npt.NDArray[np.float64], spacing: tuple[float, ...] | None
) -> list[float] | None:
    """``sums[z] = (pixels, sum of columns, sum of rows)`` of one lesion on slice z."""
    if spacing is None:
        return None
    total = np.zeros(3)
    count = 0.0
    for record, (pixels, columns, rows) in zip(slices, sums, strict=True):
        if pixels == 0:
            continue
        if record.image_position is None or record.orientation is None:
            return None
        origin = np.asarray(record.image_position, np.float64)
        row_dir = np.asarray(record.orientation[:3], np.float64)
        col_dir = np.asarray(record.orientation[3:], np.float64)
        total += pixels * origin + columns * spacing[1] * row_dir + rows * spacing[0] * col_dir
        count += pixels
    return [round(float(v), 2) for v in total / count]


def lesions_3d(
    slices: list[SliceRecord],
    masks: list[npt.NDArray[np.bool_]],
    adc: list[npt.NDArray[np.float32] | None] | None = None,
) -> list[dict[str, Any]]:
    """The series' ``lesions`` from its slices and their masks, in the same order.

    ``adc``: the ADC values at each slice (`daemon.series.adc.adc_by_slice`), when the study
    has an ADC series: each lesion then gets ``adc`` (`daemon.series.adc.lesion_adc`).
    """
    labels, count = label(np.stack(masks))
    if count == 0:
        return []
    spacing = pixel_spacing(slices)
    step = slice_spacing(slices)
    voxel_ml = None if spacing is None or step is None else spacing[0] * spacing[1] * step / 1000
    flat = labels.reshape(len(slices), -1)
    values = _adc_stack(adc, masks[0].shape) if adc is not None else None
    columns = np.tile(np.arange(masks[0].shape[1]), masks[0].shape[0])
    rows = np.repeat(np.arange(masks[0].shape[0]), masks[0].shape[1])
    found = []
    for lesion in range(1, count + 1):
        inside = flat == lesion
        pixels = inside.sum(axis=1).astype(np.float64)
        sums = np.stack([pixels, inside @ columns, inside @ rows], axis=1).astype(np.float64)
        spanned = [z for z in range(len(slices)) if pixels[z] > 0]
        voxels = int(pixels.sum())
        found.append(
            {
                "voxels": voxels,
                "volume_ml": None if voxel_ml is None else round(voxels * voxel_ml, 4),
                "slices": [
                    {
                        "index": z,
                        "sop_instance_uid": slices[z].sop_uid,
                        "instance_number": slices[z].instance_number,
                    }
                    for z in spanned
                ],
                "label": _label([slices[z] for z in spanned]),
                "centroid_patient_mm": _patient_centroid(slices, sums, spacing),
                **({} if values is None else {"adc": _lesion_adc(values, flat, inside, voxel_ml)}),
            }
        )
    return found


def _lesion_adc(
    values: npt.NDArray[np.float32],
    labels: npt.NDArray[np.integer],
    inside: npt.NDArray[np.bool_],
    voxel_ml: float | None,
) -> dict[str, Any] | None:
    """`daemon.series.adc.lesion_adc` of one lesion (``inside``: its voxels).

    The reference is the tissue outside every lesion on the slices it spans.
    """
    spanned = inside.any(axis=1)
    known = ~np.isnan(values)
    low, high = REFERENCE_ADC
    around = values[spanned]
    tissue = (labels[spanned] == 0) & known[spanned] & (around > low) & (around < high)
    return lesion_adc(values[inside & known], around[tissue], voxel_ml)


def _adc_stack(
    adc: list[npt.NDArray[np.float32] | None], shape: tuple[int, ...]
) -> npt.NDArray[np.float32]:
    """The slices' ADC values flattened like the labels; NaN where a slice has none.

    An ADC image of another matrix than the masks counts as none.
    """
    stack = np.full((len(adc), shape[0] * shape[1]), np.nan, np.float32)
    for z, values in enumerate(adc):
        if values is not None and values.shape == shape:
            stack[z] = values.reshape(-1)
    return stack


def lesion_fields(
    reports: Path,
    series_id: str,
    slices: list[SliceRecord],
    model: str,
    adc_images: list[SliceRecord] | None = None,
) -> dict[str, Any] | None:
    """The series report's lesion fields (module docstring); None when no slice has a map.

    ``adc_images``: the images of the study's ADC series (None: no ADC series is linked); their
    values check each lesion for restricted diffusion (`daemon.series.adc`).
    """
    if not any(r.segmented for r in slices):
        return None
    masks = [read_mask(reports / r.lesion_mask) if r.lesion_mask else None for r in slices]
    missing = sum(m is None for m in masks)
    shapes = {m.shape for m in masks if m is not None}
    if missing or len(shapes) > 1:
        return {
            "lesions": None,
            "lesion_volume_ml": None,
            "restricted_volume_ml": None,
            "summary_image": None,
            "lesion_maps_missing": missing,
            "lesion_error": None,
            "adc_slices": None,
        }
    known = [m for m in masks if m is not None]
    adc = None if adc_images is None else adc_by_slice(reports, slices, adc_images)
    lesions = lesions_3d(slices, known, adc)
    volumes = [lesion["volume_ml"] for lesion in lesions]
    total = None if None in volumes else round(sum(volumes), 4)
    return {
        "lesions": lesions,
        "lesion_volume_ml": total,
        "restricted_volume_ml": None if adc is None else restricted_volume(lesions),
        "summary_image": write_summary(
            reports, series_id, slices, known, lesions=lesions, total_ml=total, model=model
        ),
        "lesion_maps_missing": 0,
        "lesion_error": None,
        "adc_slices": None
        if adc is None
        else sum(v is not None and v.shape == known[0].shape for v in adc),
    }


def restricted_volume(lesions: list[dict[str, Any]]) -> float | None:
    """The summed ``volume_ml`` of the lesions whose ADC is restricted.

    None when any lesion's ADC check, or a restricted lesion's volume, is unknown.
    """
    total = 0.0
    for lesion in lesions:
        check = lesion.get("adc")
        if check is None:
            return None
        if check["restricted"]:
            if lesion["volume_ml"] is None:
                return None
            total += lesion["volume_ml"]
    return round(total, 4)


def failed_fields(message: str) -> dict[str, Any]:
    """The lesion fields of a series whose lesions could not be worked out (a bug: ``message``)."""
    return {
        "lesions": None,
        "lesion_volume_ml": None,
        "restricted_volume_ml": None,
        "summary_image": None,
        "lesion_maps_missing": None,
        "lesion_error": message,
        "adc_slices": None,
    }


def model_text(model: dict[str, Any] | None) -> str:
    """A report's ``model`` as the pictures name it: name, version, variant, bundle sha256."""
    if not model:
        return "unknown"
    sha = str(model.get("bundle_sha256") or "")[:12]
    return f"{model.get('name')} {model.get('version')} ({model.get('variant')}, {sha})"


def write_summary(
    reports: Path,
    series_id: str,
    slices: list[SliceRecord],
    masks: list[npt.NDArray[np.bool_]],
    *,
    lesions: list[dict[str, Any]],
    total_ml: float | None,
    model: str,
) -> str | None:
    """Write the series' montage (module docstring); its name, or None (no lesion, or no file).

    A series without a lesion removes the montage an earlier report of it may have left.
    """
    path = reports / summary_name(series_id)
    if not lesions:
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    tiles = []
    for index, (record, mask) in enumerate(zip(slices, masks, strict=True)):
        if not mask.any():
            continue
        try:
            with Image.open(reports / overlay_name(record.scan_id)) as overlay:
                picture = overlay_picture(overlay.convert("RGB"), (mask.shape[0], mask.shape[1]))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # its overlay is gone: the montage goes without it
        number = record.instance_number
        tiles.append((picture, f"#{number}" if number is not None else f"slice {index + 1}"))
    if not tiles:
        return None
    volume = "volume unknown" if total_ml is None else f"{total_ml:.2f} mL in all"
    title = f"Lesion map: {len(lesions)} lesion(s), {volume}"
    try:
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, render_summary(tiles, title=title, model=model))
    except OSError as exc:
        log.warning("series_summary_failed", series=series_id, error=exc.strerror or str(exc))
        return None
    return summary_name(series_id)
