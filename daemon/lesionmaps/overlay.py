"""Pictures of lesion maps: one slice with its lesions outlined, and a series' montage.

**Overlay** (one slice with a lesion): the slice in grey (its minimum black, its 99.5th percentile
white), enlarged by a whole factor to about 512 pixels, each lesion outlined just outside its
edge (its own pixels untouched) by a bright yellow line with a black border on both sides, so that
the outline stays visible on any grey and when printed in greyscale; below, a black band with
the location label and finding, a note when the map disagrees with the finding, the model, and
the research-use disclaimer.

**Summary** (a series with a lesion, like a vendor's key images): the overlays of its slices with
a lesion, without their bands, side by side (at most `MONTAGE_COLUMNS` a row) with the slice's
InstanceNumber (or position in the series), under one band with the series' total lesion volume
and the disclaimer.

Overlays are palette PNGs (one byte a pixel: `PALETTE`, 252 greys and four yellows), which
encode in about a third of the time of RGB; a viewer shows them like any PNG.

Pillow and numpy only; deterministic (the same inputs give the same bytes).
"""

from __future__ import annotations

import functools
import io
import math
import textwrap
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from daemon import DISCLAIMER

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

DISPLAY_PX = 512
"""An overlay's image is enlarged by the whole factor that brings its long side nearest this."""
OUTLINE = (255, 230, 0)
"""Bright yellow: light in greyscale (luma ~210), framed in black."""
BORDER = (0, 0, 0)
BAND = (0, 0, 0)
TEXT = (255, 255, 255)
NOTE = (255, 230, 0)
FONT_PX = 14
LINE_PX = 18
MONTAGE_COLUMNS = 4
TILE_PX = 256
_PNG_LEVEL = 1
"""zlib level of the pictures: level 1 encodes in about half the time of 6, files ~25 % larger."""
GREYS = 252
"""Palette entries 0..251 are greys from black to white; the rest are yellows."""
OUTLINE_INDEX = GREYS + 3
PALETTE = [
    *(round(i * 255 / (GREYS - 1)) for i in range(GREYS) for _ in range(3)),
    *(round(c * level / 4) for level in (1, 2, 3, 4) for c in OUTLINE),
]
"""An overlay's 256 colours: `GREYS` greys, then `OUTLINE` at a quarter, half, three quarters
and full brightness (the last the outline; the others for the edges of yellow text)."""
_GREY_INDEX = np.array([round(v * (GREYS - 1) / 255) for v in range(256)], np.uint8)


@functools.cache
def _font(size: int = FONT_PX) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def display_grey(pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """The slice as 8-bit grey: its minimum 0, its 99.5th percentile 255 (clipped).

    The percentile is taken on every other row and column of a slice over 64x64 pixels (a quarter
    of the work; a window, not a measurement).
    """
    finite = np.nan_to_num(np.asarray(pixels, np.float32))
    sample = finite[::2, ::2] if finite.size > 4096 else finite  # the percentile of a quarter
    lo, hi = float(finite.min()), float(np.percentile(sample, 99.5))
    if hi <= lo:
        hi = lo + 1.0
    scaled = (finite - lo) * np.float32(255.0 / (hi - lo))
    grey: npt.NDArray[np.uint8] = np.clip(scaled + 0.5, 0.0, 255.0).astype(np.uint8)  # rounded
    return grey


def _grow(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """``mask`` dilated by one pixel (8 neighbours)."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def _paletted(indices: npt.NDArray[np.uint8]) -> Image.Image:
    picture = Image.fromarray(indices, "P")
    picture.putpalette(PALETTE)
    return picture


def outlined(grey: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_], factor: int) -> Image.Image:
    """``grey`` enlarged ``factor`` times (nearest), on `PALETTE`, each part of ``mask`` outlined.

    The outline is drawn on the source pixels, then enlarged with them: a dark pixel next to the
    lesion, a bright one beyond it, a dark one beyond that (each ``factor`` display pixels wide).
    """
    indices = _GREY_INDEX[grey]
    if mask.any():
        inner = _grow(mask)  # a dark ring touching the lesion
        line = _grow(inner)  # the bright ring, all outside the lesion
        outer = _grow(line)  # a dark ring outside it
        indices[outer & ~line] = 0  # grey 0: BORDER
        indices[line & ~inner] = OUTLINE_INDEX
        indices[inner & ~mask] = 0
    picture = _paletted(indices)
    if factor == 1:
        return picture
    size = (picture.width * factor, picture.height * factor)
    return picture.resize(size, Image.Resampling.NEAREST)


Line = tuple[str, tuple[int, int, int]]
"""A line of a picture's band: its text and colour."""


def _wrapped(lines: Sequence[Line], width: int) -> list[Line]:
    font = _font()
    chars = max(20, int(width / max(1.0, font.getlength("n"))) - 2)
    out: list[Line] = []
    for text, colour in lines:
        out += [(part, colour) for part in textwrap.wrap(text, chars) or [""]]
    return out


@functools.lru_cache(maxsize=256)
def _band(width: int, lines: tuple[Line, ...]) -> Image.Image:
    """A black band ``width`` pixels wide holding ``lines`` (wrapped).

    Kept for the next picture: most lines repeat (the model, the disclaimer), and drawing text is
    a good part of a picture's cost.
    """
    wrapped = _wrapped(lines, width)
    band = Image.new("RGB", (width, LINE_PX * len(wrapped) + 8), BAND)
    draw = ImageDraw.Draw(band)
    for row, (text, colour) in enumerate(wrapped):
        draw.text((6, 4 + row * LINE_PX), text, fill=colour, font=_font())
    return band.quantize(palette=_palette_image(), dither=Image.Dither.NONE)


@functools.cache
def _palette_image() -> Image.Image:
    return _paletted(np.zeros((1, 1), np.uint8))


def _with_band(picture: Image.Image, lines: Sequence[Line]) -> Image.Image:
    """``picture`` above a black band holding ``lines`` (wrapped to the picture's width).

    On `PALETTE` when ``picture`` is (an overlay), else RGB (a montage).
    """
    width = max(picture.width, 320)
    band = _band(width, tuple(lines))
    if picture.mode == "P":
        canvas = _paletted(np.zeros((picture.height + band.height, width), np.uint8))
        canvas.paste(picture, (0, 0))
        canvas.paste(band, (0, picture.height))
        return canvas
    canvas = Image.new("RGB", (width, picture.height + band.height), BAND)
    canvas.paste(picture, (0, 0))
    canvas.paste(band, (0, picture.height))
    return canvas


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", compress_level=_PNG_LEVEL)
    return buffer.getvalue()


def enlargement(shape: tuple[int, ...]) -> int:
    """The whole factor that brings the long side of ``shape`` nearest `DISPLAY_PX` (at least 1)."""
    return max(1, round(DISPLAY_PX / max(shape[0], shape[1])))


def render_overlay(
    pixels: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    *,
    label: str,
    finding: str,
    map_disagrees: bool,
    model: str,
) -> bytes:
    """The overlay PNG of one slice (module docstring)."""
    factor = enlargement(mask.shape)
    picture = outlined(display_grey(pixels), mask, factor)
    lesions = "lesion map (outlined in yellow)"
    lines = [(f"{label} - finding: {finding.replace('_', ' ')}", TEXT), (lesions, TEXT)]
    if map_disagrees:
        lines.append(("The lesion map disagrees with the finding: it marks a lesion.", NOTE))
    lines += [(f"model: {model}", TEXT), (DISCLAIMER, NOTE)]
    return _png(_with_band(picture, lines))


def overlay_picture(overlay: Image.Image, shape: tuple[int, int]) -> Image.Image:
    """The picture part of an overlay (without its band), for a slice of ``shape``."""
    factor = enlargement(shape)
    return overlay.crop((0, 0, shape[1] * factor, shape[0] * factor))


def render_summary(tiles: Sequence[tuple[Image.Image, str]], *, title: str, model: str) -> bytes:
    """The montage PNG of a series (module docstring): ``tiles`` are (picture, caption)."""
    columns = max(1, min(MONTAGE_COLUMNS, len(tiles)))
    rows = max(1, math.ceil(len(tiles) / columns))
    sheet = Image.new("RGB", (columns * TILE_PX, rows * (TILE_PX + LINE_PX)), BAND)
    draw = ImageDraw.Draw(sheet)
    for index, (picture, caption) in enumerate(tiles):
        scale = TILE_PX / max(picture.width, picture.height)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        tile = picture.resize(size, Image.Resampling.BILINEAR)
        x, y = (index % columns) * TILE_PX, (index // columns) * (TILE_PX + LINE_PX)
        sheet.paste(tile, (x + (TILE_PX - size[0]) // 2, y))
        draw.text((x + 4, y + TILE_PX + 1), caption, fill=TEXT, font=_font())
    return _png(_with_band(sheet, [(title, TEXT), (f"model: {model}", TEXT), (DISCLAIMER, NOTE)]))
