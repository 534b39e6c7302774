"""Pictures that are not brain scans at all, made procedurally (no image is downloaded).

* ``photo``: a photo-like RGB scene: a sky-to-ground gradient with a horizon, fractal (1/f)
  texture, blurred coloured objects and a vignette;
* ``document``: a white page of black text lines (random words), a title, sometimes a table;
* ``noise``: Gaussian, uniform, salt-and-pepper or smooth (1/f) noise, grey or colour;
* ``blank``: a black or dark grey frame with viewer text in the corners and no image;
* ``ruler``: a dark frame with one or two measuring rulers, ticks and centimetre labels.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter, ImageFont

PICTURE_KINDS = ("photo", "document", "noise", "blank", "ruler")
_WORDS = (
    "the", "patient", "report", "synthetic", "page", "invoice", "total", "date", "meeting",
    "notes", "summary", "research", "only", "protocol", "section", "table", "figure", "result",
    "method", "data", "value", "item", "list", "reference", "number",
)  # fmt: skip


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def fractal(rng: np.random.Generator, size: int, slope: float = 2.0) -> npt.NDArray[np.float32]:
    """A 1/f^(slope/2) noise field scaled to 0..1 (natural-image-like texture)."""
    spectrum = rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1.0
    field = np.real(np.fft.ifft2(spectrum / radius ** (slope / 2.0)))
    field -= field.min()
    return np.asarray(field / max(float(field.max()), 1e-9), dtype=np.float32)


def photo(rng: np.random.Generator, size: int) -> Image.Image:
    """A photo-like RGB scene."""
    rows = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    sky = rng.uniform(0.4, 1.0, size=3).astype(np.float32)
    ground = rng.uniform(0.05, 0.6, size=3).astype(np.float32)
    horizon = float(rng.uniform(0.3, 0.7))
    base = np.where(rows < horizon, sky * (1.0 - 0.4 * rows), ground * (0.6 + 0.4 * rows))
    texture = np.stack([fractal(rng, size) for _ in range(3)], -1)
    image = np.clip(base + (texture - 0.5) * rng.uniform(0.2, 0.6), 0.0, 1.0)
    canvas = Image.fromarray(np.asarray(image * 255, dtype=np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 9))):
        x, y = rng.uniform(0, size, 2)
        w, h = rng.uniform(size * 0.05, size * 0.35, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        else:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
    canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 3.0))))
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    vignette = 1.0 - 0.35 * (xx * xx + yy * yy)[..., None]
    out = np.asarray(canvas, dtype=np.float32) * vignette
    return Image.fromarray(np.asarray(np.clip(out, 0, 255), dtype=np.uint8), "RGB")


def document(rng: np.random.Generator, size: int) -> Image.Image:
    """A page of text."""
    shade = int(rng.integers(225, 256))
    page = Image.new("L", (size, size), shade)
    draw = ImageDraw.Draw(page)
    margin = int(size * rng.uniform(0.05, 0.12))
    text_size = max(8, int(size * rng.uniform(0.02, 0.035)))
    draw.text(
        (margin, margin),
        "REPORT " + str(int(rng.integers(100, 999))),
        fill=0,
        font=_font(text_size * 2),
    )
    y = margin + text_size * 3
    font = _font(text_size)
    while y < size - margin - text_size:
        words = [_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), int(rng.integers(4, 14)))]
        draw.text((margin, y), " ".join(words), fill=int(rng.integers(0, 60)), font=font)
        y += int(text_size * rng.uniform(1.3, 1.8))
    if rng.random() < 0.4:
        top = int(size * 0.55)
        for k in range(5):
            draw.line(
                (margin, top + k * text_size * 2, size - margin, top + k * text_size * 2), fill=0
            )
    return page


def noise(rng: np.random.Generator, size: int) -> Image.Image:
    """A noise frame (grey or colour)."""
    channels = 3 if rng.random() < 0.4 else 1
    kind = int(rng.integers(4))
    shape = (size, size, channels)
    if kind == 0:
        data = rng.normal(0.5, rng.uniform(0.05, 0.3), shape)
    elif kind == 1:
        data = rng.uniform(0.0, 1.0, shape)
    elif kind == 2:  # salt and pepper on grey
        data = np.full(shape, rng.uniform(0.2, 0.8))
        flip = rng.random(shape) < rng.uniform(0.02, 0.2)
        data[flip] = rng.integers(0, 2, int(flip.sum()))
    else:
        data = np.stack(
            [fractal(rng, size, float(rng.uniform(1.0, 3.0))) for _ in range(channels)], -1
        )
    pixels = np.asarray(np.clip(data, 0, 1) * 255, dtype=np.uint8)
    return Image.fromarray(
        pixels[..., 0] if channels == 1 else pixels, "L" if channels == 1 else "RGB"
    )


def blank(rng: np.random.Generator, size: int) -> Image.Image:
    """An empty viewer frame with burned-in text in the corners."""
    frame = Image.new("L", (size, size), int(rng.choice([0, 0, 10, 25])))
    draw = ImageDraw.Draw(frame)
    font = _font(max(9, size // 40))
    step = max(11, size // 32)
    lines = ["SYNTH Viewer", f"Se {int(rng.integers(1, 20))}", "No image", "research use only"]
    for index, text in enumerate(lines):
        corner = index % 4
        x = 6 if corner in (0, 2) else size - 6 - int(draw.textlength(text, font=font))
        y = 5 + (index // 4) * step if corner < 2 else size - 5 - step
        draw.text((x, y), text, fill=int(rng.integers(160, 256)), font=font)
    return frame


def ruler(rng: np.random.Generator, size: int) -> Image.Image:
    """One or two rulers with ticks and centimetre labels on a dark frame."""
    frame = Image.new("L", (size, size), int(rng.integers(0, 40)))
    draw = ImageDraw.Draw(frame)
    font = _font(max(9, size // 40))
    shade = int(rng.integers(170, 256))
    for axis in range(int(rng.integers(1, 3))):
        length = size * rng.uniform(0.4, 0.85)
        start = size * rng.uniform(0.05, 0.95 - length / size)
        at = size * rng.uniform(0.2, 0.8)
        for tick in range(11):
            pos = start + tick * length / 10
            long = 10 if tick % 5 == 0 else 5
            if axis == 0:
                draw.line((pos, at, pos, at - long), fill=shade)
                if tick % 5 == 0:
                    draw.text((pos - 4, at + 3), f"{tick}", fill=shade, font=font)
            else:
                draw.line((at, pos, at + long, pos), fill=shade)
        if axis == 0:
            draw.line((start, at, start + length, at), fill=shade)
            draw.text((start + length + 4, at - 6), "cm", fill=shade, font=font)
        else:
            draw.line((at, start, at, start + length), fill=shade)
    return frame


def picture(kind: str, rng: np.random.Generator, size: int) -> Image.Image:
    """One picture of ``kind`` (`PICTURE_KINDS`), ``size`` x ``size``."""
    makers = {"photo": photo, "document": document, "noise": noise, "blank": blank, "ruler": ruler}
    return makers[kind](rng, size)
