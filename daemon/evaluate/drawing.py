"""The two PNG figures of an evaluation, drawn with Pillow (the edge install has no matplotlib).

* `confusion_png`: the slice-level confusion matrix, true class down, predicted class across,
  each class named; cells shaded by the share of the true class, counts written in non-empty
  cells.
* `reliability_png`: reliability diagrams (accuracy against confidence in equal-width bins of
  the top probability), one panel per level (slice, case), with the ECE and the count per bin.

Pillow's own font (``ImageFont.load_default``) is used: scalable when Pillow has FreeType, the
fixed bitmap font otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from daemon.shared.metrics import reliability_bins

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import numpy.typing as npt

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (150, 150, 150)
LIGHT = (225, 225, 225)
BAR = (70, 130, 180)
GAP = (215, 60, 60)
CELL = 24
"""Side of a confusion-matrix cell, pixels."""
PANEL = 520
"""Side of a reliability panel's plot area, pixels."""


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # no FreeType: the bitmap font, one size
        return ImageFont.load_default()


def _width(font: Font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def _shade(share: float) -> tuple[int, int, int]:
    """White (0) to dark blue (1)."""
    top = np.array(WHITE, np.float64)
    bottom = np.array((8, 48, 107), np.float64)
    r, g, b = (top + (bottom - top) * min(max(share, 0.0), 1.0)).round().astype(int)
    return int(r), int(g), int(b)


def _vertical_text(text: str, font: Font, height: int) -> Image.Image:
    """``text`` written bottom to top, right-aligned to the image's top edge."""
    width = _width(font, text) + 4
    strip = Image.new("RGB", (width, height), WHITE)
    ImageDraw.Draw(strip).text((width - _width(font, text) - 2, 2), text, fill=BLACK, font=font)
    return strip.rotate(90, expand=True)


def confusion_png(
    matrix: npt.NDArray[np.integer], classes: Sequence[str], path: Path, title: Sequence[str]
) -> None:
    """Write the confusion matrix ``matrix[true, predicted]`` with class names to ``path``."""
    n = len(classes)
    font, small, heading = _font(12), _font(10), _font(14)
    label_w = max((_width(font, c) for c in classes), default=0) + 12
    top = 12 + 20 * len(title) + label_w + 18
    left = label_w + 22
    width = max(left + n * CELL + 20, max(_width(heading, t) for t in title) + 24)
    image = Image.new("RGB", (width, top + n * CELL + 40), WHITE)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(title):
        draw.text((12, 10 + 20 * i), line, fill=BLACK, font=heading)
    totals = matrix.sum(axis=1)
    draw.text((left, top - 16), "predicted", fill=GREY, font=font)
    draw.text((4, top + n * CELL + 8), "true class (rows)", fill=GREY, font=font)
    for j, name in enumerate(classes):
        strip = _vertical_text(name, font, CELL)
        image.paste(strip, (left + j * CELL + (CELL - strip.width) // 2, top - 20 - strip.height))
    for i, name in enumerate(classes):
        y = top + i * CELL
        draw.text((left - 6 - _width(font, name), y + 5), name, fill=BLACK, font=font)
        for j in range(n):
            count = int(matrix[i, j])
            share = count / totals[i] if totals[i] else 0.0
            box = (left + j * CELL, y, left + (j + 1) * CELL, y + CELL)
            draw.rectangle(box, fill=_shade(share), outline=LIGHT)
            if count:
                text = str(count)
                colour = WHITE if share > 0.5 else BLACK
                x = box[0] + (CELL - _width(small, text)) // 2
                draw.text((x, y + 6), text, fill=colour, font=small)
        draw.rectangle((left + i * CELL, y, left + (i + 1) * CELL, y + CELL), outline=BLACK)
    image.save(path, format="PNG", optimize=True)


def _panel(
    image: Image.Image,
    *,
    origin: tuple[int, int],
    probs: npt.NDArray[np.floating],
    truth: npt.NDArray[np.integer],
    bins: int,
    caption: str,
) -> None:
    x0, y0 = origin
    draw = ImageDraw.Draw(image)
    font = _font(12)
    conf, acc, count = reliability_bins(probs, truth, bins)

    def at(x: float, y: float) -> tuple[float, float]:
        return x0 + x * PANEL, y0 + (1.0 - y) * PANEL

    draw.text((x0, y0 - 22), caption, fill=BLACK, font=_font(14))
    for tick in np.linspace(0.0, 1.0, 6):
        draw.line([at(tick, 0), at(tick, 1)], fill=LIGHT)
        draw.line([at(0, tick), at(1, tick)], fill=LIGHT)
        label = f"{tick:.1f}"
        tx, ty = at(tick, 0)
        draw.text((tx - _width(font, label) / 2, ty + 4), label, fill=BLACK, font=font)
        lx, ly = at(0, tick)
        draw.text((lx - _width(font, label) - 6, ly - 7), label, fill=BLACK, font=font)
    step = 1.0 / bins
    for b in range(bins):
        if not count[b]:
            continue
        low, high = b * step, (b + 1) * step
        draw.rectangle([*at(low, acc[b]), *at(high, 0)], fill=BAR, outline=WHITE)
        cx, _ = at(conf[b], conf[b])
        draw.line([at(low, conf[b]), at(high, conf[b])], fill=GAP, width=3)
        text = str(int(count[b]))
        _, ty = at(0, max(acc[b], conf[b]))
        draw.text((cx - _width(font, text) / 2, ty - 16), text, fill=BLACK, font=font)
    draw.line([at(0, 0), at(1, 1)], fill=GREY, width=1)
    draw.rectangle([*at(0, 1), *at(1, 0)], outline=BLACK)
    axis = _vertical_text("accuracy", font, 16)
    image.paste(axis, (x0 - 52, y0 + PANEL // 2 - axis.height // 2))
    bx, by = at(0, 0)
    draw.text((bx + PANEL / 2 - 90, by + 22), "confidence (top probability)", fill=BLACK, font=font)


def reliability_png(
    levels: Sequence[tuple[str, npt.NDArray[np.floating], npt.NDArray[np.integer], float | None]],
    bins: int,
    path: Path,
    title: Sequence[str],
) -> None:
    """Write one reliability panel per ``(name, probs, truth, ece)`` of ``levels`` to ``path``.

    Bars: accuracy per bin; red line: the bin's mean confidence; grey diagonal: perfect
    calibration; number: files (or cases) in the bin.
    """
    margin, head = 60, 24 + 20 * len(title)
    width = margin + len(levels) * (PANEL + margin) + 10
    height = head + 40 + PANEL + 60 + 24
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    heading = _font(14)
    for i, line in enumerate(title):
        draw.text((12, 10 + 20 * i), line, fill=BLACK, font=heading)
    for i, (name, probs, truth, ece) in enumerate(levels):
        ece_text = "n/a" if ece is None else f"{ece:.3f}"
        caption = f"{name}: n = {len(truth)}, ECE ({bins} bins) = {ece_text}"
        _panel(
            image,
            origin=(margin + i * (PANEL + margin), head + 40),
            probs=probs,
            truth=truth,
            bins=bins,
            caption=caption,
        )
    legend = "bars: accuracy per bin   red: mean confidence   grey: perfect calibration"
    draw.text((margin, height - 22), legend, fill=GREY, font=_font(12))
    image.save(path, format="PNG", optimize=True)
