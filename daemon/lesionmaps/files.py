"""Where lesion maps and their pictures go under the reports folder, and their encoding.

``<reports>/lesions/<report id>_mask.png``
    The mask of every analysed slice of a bundle with a segmenter, lesion or not: an 8-bit
    greyscale PNG at the source image's matrix, 255 inside a lesion, 0 elsewhere.
``<reports>/lesions/<report id>_adc.png``
    For a DICOM ADC map scanned by a bundle with a segmenter (its report is ``not_analysed``):
    its values in 1e-6 mm²/s as a 16-bit greyscale PNG (clipped at 65,535), read back when the
    lesions of its study's DWI series are checked for restricted diffusion (`daemon.series.adc`).
``<reports>/overlays/<report id>_overlay.png``
    For a slice with a lesion: the slice with its lesions outlined (`daemon.lesionmaps.overlay`).
``<reports>/overlays/<series id>_summary.png``
    For a series with a lesion: the montage of its slices with lesions.

Reports name these files by their path relative to the reports folder (POSIX separators). Every
file is written atomically like the reports (`daemon.fs`): a temporary dotfile, made durable,
renamed into place. A file is named after its report, so a re-scan replaces it (never a second
copy), and the encoding is deterministic (the same mask gives the same bytes).
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from daemon.fs import write_atomic_group

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import numpy.typing as npt

    from daemon.records import LesionMap

LESIONS_FOLDER = "lesions"
OVERLAYS_FOLDER = "overlays"
_PNG_LEVEL = 1
"""zlib level of mask PNGs: masks are mostly zeros, level 1 is as small within a few percent and
several times faster than the default 6."""


def mask_name(report_id: str) -> str:
    """The mask file of an image report, relative to the reports folder."""
    return f"{LESIONS_FOLDER}/{report_id}_mask.png"


def overlay_name(report_id: str) -> str:
    """The overlay of an image report, relative to the reports folder."""
    return f"{OVERLAYS_FOLDER}/{report_id}_overlay.png"


def summary_name(series_id: str) -> str:
    """The montage of a series report, relative to the reports folder."""
    return f"{OVERLAYS_FOLDER}/{series_id}_summary.png"


def encode_mask(mask: npt.NDArray[np.bool_]) -> bytes:
    """``mask`` as an 8-bit greyscale PNG, 255 inside, 0 outside."""
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, np.uint8(255), np.uint8(0))).save(
        buffer, "PNG", compress_level=_PNG_LEVEL
    )
    return buffer.getvalue()


def adc_name(report_id: str) -> str:
    """The ADC values file of an ADC map's report, relative to the reports folder."""
    return f"{LESIONS_FOLDER}/{report_id}_adc.png"


def encode_adc(values: npt.NDArray[np.float32]) -> bytes:
    """ADC values (1e-6 mm²/s) as a 16-bit greyscale PNG, rounded and clipped to 0..65,535."""
    buffer = io.BytesIO()
    pixels = np.clip(np.rint(values), 0, 65535).astype(np.uint16)
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=_PNG_LEVEL)
    return buffer.getvalue()


def read_adc(path: Path) -> npt.NDArray[np.float32] | None:
    """An ADC values file as float32 (1e-6 mm²/s), or None when missing or unreadable."""
    try:
        with Image.open(path) as image:
            values = np.asarray(image, dtype=np.float32)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return values if values.ndim == 2 else None


def read_mask(path: Path) -> npt.NDArray[np.bool_] | None:
    """A mask file as a bool array (pixels at or above 128), or None when missing or unreadable."""
    try:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return grey >= 128


def write_map_files(
    reports: Path,
    maps: Sequence[tuple[str, LesionMap | None]],
    adc: Sequence[tuple[str, bytes | None]] = (),
) -> list[OSError | None]:
    """Write the mask and overlay files of ``maps`` (report id, map) under ``reports``.

    Masks (and the ADC values files of ``adc``, report id and PNG, in the same order as ``maps``)
    go first, then overlays, each folder one group commit (`daemon.fs.write_atomic_group`),
    before the reports that name them are written. A map without a lesion removes the overlay an
    earlier scan of the same file may have left. Returns one entry per map: None, or the error
    that kept one of its files out (its report must then wait: the caller does not write it).
    """
    errors: list[OSError | None] = [None] * len(maps)
    masks: list[tuple[int, Path, bytes]] = []
    overlays: list[tuple[int, Path, bytes]] = []
    stale: list[Path] = []
    for index, (report_id, png) in enumerate(adc):
        if png is not None:
            masks.append((index, reports / adc_name(report_id), png))
    for index, (report_id, found) in enumerate(maps):
        if found is None or found.mask_png is None:
            continue
        masks.append((index, reports / mask_name(report_id), found.mask_png))
        if found.overlay_png is not None:
            overlays.append((index, reports / overlay_name(report_id), found.overlay_png))
        else:
            stale.append(reports / overlay_name(report_id))
    for group in (masks, overlays):
        if group:
            _write_group(group, errors)
    for path in stale:
        with contextlib.suppress(OSError):  # none there (the usual case), or gone already
            path.unlink()
    return errors


def _write_group(group: list[tuple[int, Path, bytes]], errors: list[OSError | None]) -> None:
    """One folder's files in one group commit; each failure lands on its map's entry."""
    try:
        group[0][1].parent.mkdir(parents=True, exist_ok=True)  # reports/ too, if deleted
    except OSError as exc:
        for index, _, _ in group:
            errors[index] = errors[index] or exc
        return
    written = write_atomic_group([(path, data) for _, path, data in group])
    for (index, _, _), error in zip(group, written, strict=True):
        errors[index] = errors[index] or error
