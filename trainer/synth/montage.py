"""PNG contact sheets for looking at what the generator makes.

* ``regions.png``: axial levels of the anatomy with every lesion region in colour (left sites in
  warm, right sites in cool colours), displayed like the images (radiological: the patient's right
  on the image left, anterior up), so the region rules can be checked by eye;
* ``<class>.png`` per class: the first generated DWI slices of that class side by side with their
  ADC maps, lesion outlined in the ADC copy.

Pillow only; no matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from trainer.synth.regions import REGION_NAMES

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from trainer.synth.anatomy import Anatomy

_TILE = 256
_LABEL_H = 16


@dataclass(frozen=True)
class Tile:
    """One cell of a class montage."""

    dwi: npt.NDArray[np.uint8]
    adc: npt.NDArray[np.uint8]
    lesion: npt.NDArray[np.bool_]
    caption: str


def axial(volume: npt.NDArray[Any], k: int) -> npt.NDArray[Any]:
    """Axial slice ``k`` of an ``[x, y, z]`` volume in display orientation (radiological, A up)."""
    return np.ascontiguousarray(volume[:, :, k].T[::-1, ::-1])


_SITE_COLOURS = (
    (230, 25, 75),  # frontal
    (60, 180, 75),  # parietal
    (255, 225, 25),  # temporal
    (0, 130, 200),  # occipital
    (245, 130, 48),  # insula
    (145, 30, 180),  # centrum semiovale
    (70, 240, 240),  # internal capsule
    (240, 50, 230),  # basal ganglia
    (210, 245, 60),  # thalamus
    (250, 190, 212),  # cerebellar hemisphere
    (0, 128, 128),  # pons
    (255, 255, 255),  # genu
    (170, 110, 40),  # splenium
)


def _colour(index: int) -> tuple[int, int, int]:
    """One colour per site: both sides of a site share it (the side is plain from the position)."""
    return _SITE_COLOURS[min(index // 2, len(_SITE_COLOURS) - 3) if index < 22 else index - 11]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def region_overview(anatomy: Anatomy, path: Path, z_levels: Sequence[float] | None = None) -> Path:
    """Write ``regions.png``: region colours over the grey-matter map at several z levels."""
    levels = list(z_levels) if z_levels is not None else list(range(-44, 61, 8))
    palette = np.zeros((len(REGION_NAMES) + 1, 3), dtype=np.float32)
    for index in range(len(REGION_NAMES)):
        palette[index + 1] = _colour(index)
    tiles: list[Image.Image] = []
    for z in levels:
        k = round(z - anatomy.affine[2, 3])
        if not 0 <= k < anatomy.shape[2]:
            continue
        grey = axial(anatomy.gm, k).astype(np.float32) * 0.6 + axial(anatomy.wm, k) * 0.35
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        codes = axial(anatomy.regions, k).astype(np.intp)
        coloured = codes > 0
        rgb[coloured] = 0.45 * rgb[coloured] + 0.55 * palette[codes[coloured]]
        tile = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).resize(
            (_TILE, round(_TILE * rgb.shape[0] / rgb.shape[1])), Image.Resampling.NEAREST
        )
        draw = ImageDraw.Draw(tile)
        draw.text((4, 2), f"z={z:+.0f}  R|L", fill=(255, 255, 255), font=_font(12))
        tiles.append(tile)
    legend = Image.new("RGB", (_TILE * 2, 14 * len(REGION_NAMES) + 8), (0, 0, 0))
    draw = ImageDraw.Draw(legend)
    for index, name in enumerate(REGION_NAMES):
        draw.rectangle((4, 4 + 14 * index, 14, 14 + 14 * index), fill=_colour(index))
        draw.text((20, 3 + 14 * index), name, fill=(255, 255, 255), font=_font(11))
    return _save_grid([*tiles, legend], path, columns=5)


def _outline(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    return np.asarray(mask & ~inner)


def class_montage(tiles: Sequence[Tile], title: str, path: Path) -> Path:
    """Write one class's sheet: DWI and ADC (lesion outlined in red) per slice."""
    cells: list[Image.Image] = []
    for tile in tiles:
        dwi = Image.fromarray(tile.dwi).convert("RGB").resize((_TILE, _TILE))
        adc_rgb = np.repeat(tile.adc[:, :, None], 3, axis=2)
        adc_rgb[_outline(tile.lesion)] = (255, 0, 0)
        adc = Image.fromarray(adc_rgb).resize((_TILE, _TILE), Image.Resampling.NEAREST)
        cell = Image.new("RGB", (2 * _TILE, _TILE + _LABEL_H))
        cell.paste(dwi, (0, _LABEL_H))
        cell.paste(adc, (_TILE, _LABEL_H))
        ImageDraw.Draw(cell).text((2, 1), tile.caption, fill=(255, 255, 0), font=_font(11))
        cells.append(cell)
    header = Image.new("RGB", (2 * _TILE, _TILE + _LABEL_H))
    ImageDraw.Draw(header).text((6, 8), title, fill=(255, 255, 255), font=_font(14))
    return _save_grid([header, *cells], path, columns=4)


def _save_grid(images: Sequence[Image.Image], path: Path, columns: int) -> Path:
    width = max(im.width for im in images)
    height = max(im.height for im in images)
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (width * min(columns, len(images)), height * rows))
    for index, image in enumerate(images):
        sheet.paste(image, ((index % columns) * width, (index // columns) * height))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=False)
    return path
