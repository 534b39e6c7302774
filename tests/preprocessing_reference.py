"""Decode and preprocessing exactly as the default model was trained with: the reference.

A verbatim copy of `daemon.shared.preprocess` (from ``normalise`` on) and of the parts of
`daemon.shared.decode` that were later made cheaper, as of commit 7aeb86e (preprocessing version 1).
The daemon's faster code must give the same tensors and boxes, and `daemon.shared.decode` the same
pixels and errors: the tests in ``test_preprocess_exact.py`` hold it to that, and
``bench/preprocess.py`` measures both. The decode helpers it calls are copied here as they were at
that commit, so a change to the live code cannot change the reference; only the result types
(`DecodedImage`, `DecodeLimits`, `DicomInfo`) and the error classes come from the daemon. Never
import this from daemon or trainer code.
"""

from __future__ import annotations

import io
import math
import re
import struct
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from daemon.errors import (
    BadDimensionsError,
    BlankImageError,
    DicomInvalidError,
    DicomNoPixelDataError,
    DicomUnsupportedTransferSyntaxError,
    EmptyFileError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)
from daemon.shared.decode import DecodedImage, DecodeLimits, DicomInfo

if TYPE_CHECKING:
    from daemon.shared.preprocess import PreprocessSpec

FloatImage = npt.NDArray[np.float32]

_MIN_SIDE = 16

# Helpers of daemon/decode.py at commit 7aeb86e, copied verbatim (the live ones may change).
RASTER_FORMATS = {"PNG": "png", "JPEG": "jpeg", "BMP": "bmp", "TIFF": "tiff", "MPO": "jpeg"}


_PILLOW_PARSERS = ["PNG", "JPEG", "BMP", "TIFF"]  # the JPEG parser also yields MPO images


_CORRUPT = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, ZeroDivisionError)


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def looks_like_dicom(data: bytes, name: str = "") -> bool:
    """True for a DICOM Part 10 file (``DICM`` at offset 128) or a file named ``*.dcm``."""
    return data[128:132] == b"DICM" or name.lower().endswith((".dcm", ".dicom"))


def _check_dimensions(width: int, height: int, frames: int, limits: DecodeLimits) -> None:
    if width <= 0 or height <= 0:
        raise BadDimensionsError(f"image declares {width}x{height} pixels")
    if width * height * frames > limits.max_pixels:
        raise ImageTooLargeError(
            f"image declares {width}x{height} pixels x {frames} frame(s), more than the limit of "
            f"{limits.max_pixels:,} (limits.max_pixels)"
        )
    if min(width, height) < limits.min_side:
        raise BadDimensionsError(
            f"image is {width}x{height} pixels; at least {limits.min_side} per side are needed"
        )
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise BadDimensionsError(
            f"image is {width}x{height} pixels, an aspect ratio above {limits.max_aspect:g}"
        )


def _to_grey(array: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    if array.ndim == 2:
        return array.astype(np.float32, copy=False)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.asarray(array[:, :, :3].astype(np.float32) @ _LUMA, dtype=np.float32)
    if array.ndim == 3 and array.shape[2] in (1, 2):
        return array[:, :, 0].astype(np.float32)
    raise UnsupportedImageError(f"pixel array of shape {array.shape} is not a grey or RGB image")


def _uid(ds: Any, keyword: str) -> str | None:
    value = str(ds.get(keyword) or "").strip().rstrip("\x00")
    return value if len(value) <= 64 and re.fullmatch(r"[0-9]+(\.[0-9]+)*", value) else None


def _b_value(ds: Any) -> float | None:
    value = ds.get("DiffusionBValue")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _infer_transfer_syntax(ds: Any) -> None:
    """A raw dataset (no preamble, no file meta) says how it was encoded only by being read."""
    from pydicom.dataset import FileMetaDataset  # noqa: PLC0415
    from pydicom.uid import (  # noqa: PLC0415
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    )

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def normalise(image: FloatImage, high_percentile: float) -> FloatImage:
    """Scale so the minimum maps to 0 and the given percentile to 1, clipping above.

    Raises:
        BlankImageError: every pixel has the same value.
    """
    lo = float(image.min())
    hi = float(np.percentile(image, high_percentile))
    if hi <= lo:
        hi = float(image.max())
    if hi <= lo:
        raise BlankImageError("every pixel has the same value")
    out = (image - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def _shift_reduce(
    mask: npt.NDArray[np.bool_], radius: int, *, erode: bool
) -> npt.NDArray[np.bool_]:
    """Binary erosion (AND) or dilation (OR) by a 3x3 square, ``radius`` times; outside is 0."""
    out = mask
    h, w = mask.shape
    for _ in range(radius):
        padded = np.pad(out, 1, constant_values=False)
        acc = padded[1 : 1 + h, 1 : 1 + w].copy()
        for dy in range(3):
            for dx in range(3):
                if erode:
                    acc &= padded[dy : dy + h, dx : dx + w]
                else:
                    acc |= padded[dy : dy + h, dx : dx + w]
        out = acc
    return out


def central_parts(mask: npt.NDArray[np.bool_], centre: float = 0.6) -> npt.NDArray[np.bool_]:
    """Keep the 8-connected parts of ``mask`` that reach the central ``centre`` fraction.

    Burned-in annotation blocks sit in the corners and survive the opening when their lines merge;
    the brain always reaches the middle of the image. Labelling works on runs of each row joined by
    union-find, so it costs well under a millisecond on the small copy. Returns ``mask`` unchanged
    when no part reaches the centre.
    """
    h, w = mask.shape
    runs: list[tuple[int, int, int]] = []  # (row, start, end)
    parent: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edge_rows, edge_cols = np.nonzero(np.diff(padded, axis=1))  # row-major: start, end, start...
    previous: list[int] = []
    current: list[int] = []
    row = -1
    for y, start, end in zip(
        edge_rows[::2].tolist(), edge_cols[::2].tolist(), edge_cols[1::2].tolist(), strict=True
    ):
        if y != row:
            previous = current if y == row + 1 else []
            current, row = [], y
        index = len(runs)
        runs.append((y, start, end))
        parent.append(index)
        for other in previous:
            _, o_start, o_end = runs[other]
            if o_start <= end and start <= o_end:  # touching, diagonals included
                parent[find(index)] = find(other)
        current.append(index)
    lo_y, hi_y = round((1 - centre) / 2 * h), round((1 + centre) / 2 * h)
    lo_x, hi_x = round((1 - centre) / 2 * w), round((1 + centre) / 2 * w)
    central = {
        find(i)
        for i, (y, start, end) in enumerate(runs)
        if lo_y <= y < hi_y and start < hi_x and end > lo_x
    }
    if not central:
        return mask
    kept = np.zeros_like(mask)
    for i, (y, start, end) in enumerate(runs):
        if find(i) in central:
            kept[y, start:end] = True
    return kept


def brain_box(image: FloatImage, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """Return ``(top, left, bottom, right)`` of the brain in ``image`` (end-exclusive).

    Works on a box-filtered copy whose long side is about ``spec.box_work_size``. Falls back to the
    whole image when nothing survives the opening (a tiny or unusual image).
    """
    h, w = image.shape
    factor = max(1, math.ceil(max(h, w) / spec.box_work_size))
    small_img = Image.fromarray(image)
    if factor > 1:
        small_img = small_img.reduce(factor)
    small = normalise(np.asarray(small_img, dtype=np.float32), spec.high_percentile)
    mask = small > spec.tissue_threshold
    radius = spec.opening_radius
    opened = _shift_reduce(_shift_reduce(mask, radius, erode=True), radius, erode=False)
    opened = central_parts(opened)
    if not opened.any():
        return 0, 0, h, w
    rows = np.flatnonzero(opened.any(axis=1))
    cols = np.flatnonzero(opened.any(axis=0))
    top, bottom = int(rows[0]) * factor, (int(rows[-1]) + 1) * factor
    left, right = int(cols[0]) * factor, (int(cols[-1]) + 1) * factor
    pad = round(spec.margin * max(bottom - top, right - left))
    return max(0, top - pad), max(0, left - pad), min(h, bottom + pad), min(w, right + pad)


def _pad_square(image: FloatImage, fill: float) -> FloatImage:
    h, w = image.shape
    if h == w:
        return image
    side = max(h, w)
    out = np.full((side, side), fill, dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def resize(image: FloatImage, size: int) -> FloatImage:
    """Resize a float image to ``size`` x ``size`` with Pillow's antialiased bilinear filter."""
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.float32)


def preprocess(grey: npt.NDArray[Any], spec: PreprocessSpec) -> FloatImage:
    """Turn a 2-D grey image of any numeric dtype into a ``(size, size, channels)`` float32 tensor.

    Raises:
        BadDimensionsError: the image is not 2-D or is smaller than 16 pixels on a side.
        BlankImageError: the image (or the brain crop) holds a single value.
    """
    if grey.ndim != 2:
        raise BadDimensionsError(f"expected a 2-D grey image, got shape {grey.shape}")
    if min(grey.shape) < _MIN_SIDE:
        raise BadDimensionsError(
            f"image is {grey.shape[1]}x{grey.shape[0]} pixels; at least {_MIN_SIDE} per side needed"
        )
    image = np.ascontiguousarray(grey, dtype=np.float32)
    if float(image.min()) == float(image.max()):
        raise BlankImageError("every pixel has the same value")
    top, left, bottom, right = brain_box(image, spec)
    crop = image[top:bottom, left:right]
    square = resize(_pad_square(np.ascontiguousarray(crop), float(crop.min())), spec.input_size)
    square = normalise(square, spec.high_percentile)
    if spec.channels == 1:
        return square[:, :, np.newaxis]
    return np.repeat(square[:, :, np.newaxis], spec.channels, axis=2)


def decode(data: bytes, name: str = "", limits: DecodeLimits | None = None) -> DecodedImage:
    """Decode a scan file's bytes. ``name`` is only a hint (``.dcm`` without a preamble).

    Raises:
        ScanError: a subclass naming exactly what is wrong with the file.
    """
    limits = limits or DecodeLimits()
    if not data:
        raise EmptyFileError("the file is empty (0 bytes)")
    if looks_like_dicom(data, name):
        image = _decode_dicom(data, limits)
    else:
        image = _decode_raster(data, limits)
    if not np.isfinite(image.pixels).all():
        raise UnsupportedImageError("the pixel data holds NaN or infinite values")
    return image


def _decode_raster(data: bytes, limits: DecodeLimits) -> DecodedImage:
    try:
        image = Image.open(io.BytesIO(data), formats=_PILLOW_PARSERS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise NotAnImageError("not a PNG, JPEG, BMP, TIFF or DICOM file") from exc
    except _CORRUPT as exc:
        raise NotAnImageError(f"unreadable image header: {exc}") from exc
    with image:
        fmt = RASTER_FORMATS.get(image.format or "")
        if fmt is None:
            raise UnsupportedImageError(
                f"{image.format} images are not supported (use PNG, JPEG, BMP, TIFF or DICOM)"
            )
        width, height = image.size
        _check_dimensions(width, height, 1, limits)
        try:
            image.load()
        except _CORRUPT as exc:
            raise TruncatedImageError(f"pixel data is truncated or corrupt: {exc}") from exc
        mode = image.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            array: npt.NDArray[Any] = np.array(image)
            bits = 16 if mode.startswith("I;16") else 32
        elif mode in ("L", "RGB"):
            array = np.array(image)
            bits = 8
        else:
            array = np.array(
                image.convert(
                    "RGB" if mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV") else "L"
                )
            )
            bits = 8
    return DecodedImage(_to_grey(array), fmt, width, height, bits)


def _dicom_grey(array: npt.NDArray[Any], ds: Any, photometric: str) -> npt.NDArray[np.float32]:
    """Grey values where bright means high signal, whatever the photometric interpretation."""
    from pydicom.pixels import (  # type: ignore[attr-defined]  # noqa: PLC0415
        apply_color_lut,
        apply_modality_lut,
    )

    if photometric == "PALETTE COLOR":
        return _to_grey(np.asarray(apply_color_lut(array, ds)))
    grey = _to_grey(array)
    if photometric.startswith("MONOCHROME"):
        grey = np.asarray(apply_modality_lut(grey, ds), dtype=np.float32)
        if photometric == "MONOCHROME1":
            grey = np.float32(grey.max() + grey.min()) - grey
    return grey


def _decode_dicom(data: bytes, limits: DecodeLimits) -> DecodedImage:
    # pydicom is imported here so that raster-only callers do not pay for it.
    import pydicom  # noqa: PLC0415
    from pydicom.errors import InvalidDicomError  # noqa: PLC0415
    from pydicom.pixels import pixel_array  # type: ignore[attr-defined]  # noqa: PLC0415

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames = int(ds.get("NumberOfFrames") or 1)
        has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
        photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2")
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as exc:
        raise DicomInvalidError(f"not a readable DICOM file: {exc}") from exc
    if not has_pixels:
        sop = ds.get("SOPClassUID") or ds.get("file_meta", {}).get("MediaStorageSOPClassUID")
        if not sop:
            raise DicomInvalidError("not a DICOM object: no SOP class and no pixel data")
        raise DicomNoPixelDataError(f"DICOM object carries no pixel data (SOP class {sop})")
    _infer_transfer_syntax(ds)
    if frames < 1:
        raise BadDimensionsError(f"DICOM object declares {frames} frames")
    _check_dimensions(cols, rows, frames, limits)
    frame_used = frames // 2
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        array = pixel_array(ds, index=frame_used) if frames > 1 else ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        name = getattr(syntax, "name", str(syntax))
        raise DicomUnsupportedTransferSyntaxError(
            f"cannot decode pixel data with transfer syntax {name}: {exc}"
        ) from exc
    except (*_CORRUPT, AttributeError, TypeError, KeyError) as exc:
        raise TruncatedImageError(f"DICOM pixel data is truncated or corrupt: {exc}") from exc
    try:
        grey = _dicom_grey(np.asarray(array), ds, photometric)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise DicomInvalidError(f"cannot apply the DICOM lookup tables: {exc}") from exc
    info = DicomInfo(
        study_instance_uid=_uid(ds, "StudyInstanceUID"),
        series_instance_uid=_uid(ds, "SeriesInstanceUID"),
        sop_instance_uid=_uid(ds, "SOPInstanceUID"),
        modality=str(ds.get("Modality")) if ds.get("Modality") else None,
        diffusion_b_value=_b_value(ds),
        frames=frames,
        frame_used=frame_used,
        photometric=photometric,
    )
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    return DecodedImage(np.ascontiguousarray(grey), "dicom", cols, rows, bits, info)
