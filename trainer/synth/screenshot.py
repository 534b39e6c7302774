"""512 x 512 JPEG "screenshots": a slice as a PACS viewer shows it, with burned-in text.

Like the study's exported screenshots: the scanner image scaled into a black viewport, annotation
text in the four corners (a synthetic site name, 'DWI b1000', series / image numbers, slice position
and thickness, window, a fake date), 'R' and 'L' markers at the left and right edges (radiological:
the patient's right on the image left), sometimes a thin border and a ruler, saved at a random JPEG
quality. Nothing here is a real identifier: the site names say SYNTH, the patient is the case id.
The daemon's brain crop removes this text before the model sees the image (tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from trainer.synth.profiles import TRAIN, Profile

if TYPE_CHECKING:
    from pathlib import Path

CANVAS = 512
SITES = (
    "SYNTH General Hospital",
    "SYNTH Valley Imaging",
    "SYNTH Neuro Centre",
    "SYNTH County MRI",
    "SYNTH University Clinic",
    "SYNTH Stroke Unit",
)
_COLOURS = ((255, 255, 255), (230, 230, 230), (255, 235, 120), (140, 230, 255), (190, 255, 190))


@dataclass(frozen=True)
class Annotation:
    """What the screenshot's corners say."""

    site: str
    case_id: str
    study_date: str
    """``YYYY-MM-DD``."""
    study_time: str
    """``HH:MM``."""
    series: int
    image: int
    images: int
    slice_location_mm: float
    thickness_mm: float
    window: tuple[int, int]
    """(centre, width) of the display window."""
    sequence: str = "DWI b1000 TRACEW"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def burn_in(
    image: npt.NDArray[np.uint8], lines: list[str], rng: np.random.Generator
) -> npt.NDArray[np.uint8]:
    """Grey viewer text in the top-left corner of an 8-bit image (a PNG export with overlay)."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    size = max(8, image.shape[0] // 24)
    font = _font(size)
    shade = int(rng.integers(180, 256))
    for index, text in enumerate(lines):
        draw.text((3, 2 + index * (size + 2)), text, fill=shade, font=font)
    return np.asarray(canvas, dtype=np.uint8)


@dataclass(frozen=True)
class Viewport:
    """Where the image sits on a screenshot: canvas side, image side and top-left corner."""

    canvas_side: int
    side: int
    left: int
    top: int

    def place(self, mask: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """An 8-bit label image (a lesion mask) placed like the image: nearest resize, cut."""
        canvas = Image.new("L", (self.canvas_side, self.canvas_side), 0)
        scaled = Image.fromarray(mask).resize((self.side, self.side), Image.Resampling.NEAREST)
        canvas.paste(scaled, (self.left, self.top))
        return np.asarray(canvas, dtype=np.uint8)


def render_screenshot(
    dwi: npt.NDArray[np.uint8],
    note: Annotation,
    rng: np.random.Generator,
    profile: Profile = TRAIN,
) -> tuple[Image.Image, Viewport]:
    """Compose the RGB screenshot (see the module docstring) and say where the image is on it.

    The canvas side comes from ``profile.screenshot_canvas``, the image's side inside it from
    ``profile.viewport`` (a share of the canvas; above 1 the image is zoomed and cut).
    """
    size_choices = profile.screenshot_canvas
    canvas_side = int(size_choices[int(rng.integers(len(size_choices)))])
    spans = profile.viewport
    low, high = spans[int(rng.integers(len(spans)))]
    side = round(canvas_side * float(rng.uniform(low, high)))
    return _compose(dwi, note, rng, canvas_side, side)


def _compose(
    dwi: npt.NDArray[np.uint8],
    note: Annotation,
    rng: np.random.Generator,
    canvas_side: int,
    side: int,
) -> tuple[Image.Image, Viewport]:
    canvas = Image.new("RGB", (canvas_side, canvas_side), (0, 0, 0))
    viewport = Image.fromarray(dwi).resize((side, side), Image.Resampling.BICUBIC)
    left = (canvas_side - side) // 2 + int(rng.integers(-8, 9))
    top = (canvas_side - side) // 2 + int(rng.integers(-8, 9))
    canvas.paste(viewport.convert("RGB"), (left, top))
    draw = ImageDraw.Draw(canvas)
    colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
    size = int(rng.integers(11, 15))
    font = _font(size)
    line = size + 3
    corners = {
        "tl": [note.site, note.sequence, f"Se {note.series}  Im {note.image}/{note.images}"],
        "tr": [f"SYNTHETIC^{note.case_id.upper()}", f"ID SYNTH-{note.case_id.upper()}", "MR"],
        "bl": [
            f"Z {note.slice_location_mm:+.1f} mm",
            f"ST {note.thickness_mm:.1f} mm",
            f"W {note.window[1]} L {note.window[0]}",
        ],
        "br": [note.study_date, note.study_time, "research use only"],
    }
    for corner, lines in corners.items():
        for index, text in enumerate(lines):
            width = draw.textlength(text, font=font)
            x = 6 if corner[1] == "l" else canvas_side - 6 - width
            y = (
                5 + index * line
                if corner[0] == "t"
                else canvas_side - 5 - (len(lines) - index) * line
            )
            draw.text((x, y), text, fill=colour, font=font)
    marker = _font(size + 5)
    draw.text((6, canvas_side // 2 - size), "R", fill=colour, font=marker)
    draw.text(
        (canvas_side - 6 - draw.textlength("L", font=marker), canvas_side // 2 - size),
        "L",
        fill=colour,
        font=marker,
    )
    if rng.random() < 0.35:
        draw.rectangle((left - 1, top - 1, left + side, top + side), outline=(90, 90, 90))
    if rng.random() < 0.4:  # a 10 cm ruler with 1 cm ticks on the right
        x = canvas_side - 24
        length = side * 0.45
        y0 = canvas_side // 2 + 30
        draw.line((x, y0, x, y0 + length), fill=colour, width=1)
        for tick in range(11):
            at = y0 + tick * length / 10
            draw.line((x - (6 if tick % 5 == 0 else 3), at, x, at), fill=colour, width=1)
    return canvas, Viewport(canvas_side, side, left, top)


def write_screenshot(
    path: Path,
    dwi: npt.NDArray[np.uint8],
    note: Annotation,
    rng: np.random.Generator,
    *,
    profile: Profile = TRAIN,
) -> Viewport:
    """Write the screenshot as JPEG at the profile's quality (4:2:0 or 4:4:4 chroma).

    Returns where the image sits on it (to place the lesion mask the same way).
    """
    image, viewport = render_screenshot(dwi, note, rng, profile)
    low, high = profile.jpeg_quality
    quality = int(rng.integers(low, high + 1))
    subsampling = int(rng.choice([0, 2]))
    image.save(path, format="JPEG", quality=quality, subsampling=subsampling, optimize=False)
    return viewport
