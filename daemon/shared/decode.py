"""Read the bytes of one scan file into a 2-D float32 grey image.

Shared by the daemon (serving) and the trainer (reading datasets), so both see the same pixels.

Formats:

* raster: PNG, JPEG, BMP, TIFF in 8- or 16-bit grey, RGB(A) or palette. Colour is reduced to grey
  with ITU-R 601 luma (coloured annotation text in screenshots ends up grey). A multi-page TIFF is
  read from its first page.
* DICOM (detected by the ``DICM`` magic, or a ``.dcm`` name): the modality LUT (rescale slope and
  intercept) is applied and MONOCHROME1 is inverted so that bright always means high signal;
  PALETTE COLOR is expanded through its lookup table, then reduced to grey like RGB.
  A multi-frame object is one scan: its **middle frame** (index ``frames // 2``) is classified,
  and the report says which; an enhanced object whose per-frame functional groups place each
  frame (`daemon.shared.dicom_series.read_frame_tags`) is decoded whole, every frame also
  returned (`DecodedImage.frame_pixels`) as a slice of its series.
  Every transfer syntax a PACS sends is decoded by pydicom and its
  plugins: implicit/explicit VR little endian, explicit VR big endian and deflated (pydicom);
  RLE Lossless (pylibjpeg-rle, else pydicom's own); JPEG Baseline (Pillow); JPEG Extended
  12-bit and JPEG Lossless process 14 and 14 SV1 (pylibjpeg-libjpeg); JPEG-LS lossless and
  near-lossless (pyjpegls); JPEG 2000 lossless and lossy (Pillow, else pylibjpeg-openjpeg) and
  HTJ2K (pylibjpeg-openjpeg). A syntax without an installed decoder (MPEG, H.264, a private one) is
  refused from its header (``DICOM_UNSUPPORTED_TRANSFER_SYNTAX``); bytes that every installed
  plugin refuses are corrupt (``TRUNCATED_IMAGE``).

Every way a file can be bad maps to a `daemon.errors.ScanError` subclass with a stable code.
The pixel count is checked from the header before any pixel is decoded (decompression bombs), only
the four raster parsers above are ever tried, and pixels that are NaN or infinite are refused.

Safe to call from several threads at once: nothing here touches process-wide state (in particular
no ``warnings.catch_warnings``, which is not thread-safe). A caller that wants Pillow's
``DecompressionBombWarning`` as an error sets that filter once for the process; with this module's
own pixel limit at or below Pillow's threshold, the limit fires first either way.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from daemon.errors import (
    BadDimensionsError,
    DicomInvalidError,
    DicomNoPixelDataError,
    DicomUnsupportedTransferSyntaxError,
    EmptyFileError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
)
from daemon.shared.dicom_scope import Header, read_header
from daemon.shared.dicom_series import SeriesTags, read_series_tags

RASTER_FORMATS = {"PNG": "png", "JPEG": "jpeg", "BMP": "bmp", "TIFF": "tiff", "MPO": "jpeg"}
_PILLOW_PARSERS = ["PNG", "JPEG", "BMP", "TIFF"]  # the JPEG parser also yields MPO images
# What Pillow's parsers raise on corrupt data, besides OSError.
_CORRUPT = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, ZeroDivisionError)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MAX_ASPECT = 8.0
PREFERRED_PLUGINS = {"1.2.840.10008.1.2.5": "pylibjpeg"}
"""Plugins tried before pydicom's own order, by transfer syntax: pydicom tries its numpy RLE
decoder first, and pylibjpeg-rle decodes a 256x256 16-bit slice about 3x faster (0.23 against
0.73 ms, bench/dicom_codecs.py). Elsewhere pydicom's order already puts the fastest first."""


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds that keep one hostile file from exhausting the device."""

    max_pixels: int = 40_000_000
    """Largest pixel count (all frames) decoded; a 512x512 DWI slice has 262,144."""
    min_side: int = 16
    max_aspect: float = _MAX_ASPECT


@dataclass(frozen=True)
class DicomInfo:
    """Non-identifying DICOM attributes carried into the report."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    modality: str | None
    diffusion_b_value: float | None
    frames: int
    frame_used: int
    photometric: str
    header: Header = field(default_factory=Header, compare=False)
    """What `daemon.shared.dicom_scope` judges the file by (never written into reports; not part
    of equality, which stays that of the attributes reports carry)."""
    series: SeriesTags = field(default_factory=SeriesTags, compare=False)
    """The image's place in its series (`daemon.shared.dicom_series`), carried into reports (not
    part of equality either: the preprocessing reference of the tests predates it)."""


@dataclass(frozen=True)
class DecodedImage:
    """One decoded scan: a 2-D float32 grey image plus what the report needs to say about it."""

    pixels: npt.NDArray[np.float32]
    format: str
    width: int
    height: int
    bits: int
    dicom: DicomInfo | None = None
    frame_pixels: tuple[npt.NDArray[np.float32], ...] = ()
    """Every frame of an enhanced (multi-frame) DICOM object whose per-frame functional groups
    say where each lies (`DicomInfo.series.frames`), in frame order; empty otherwise."""


def looks_like_dicom(data: bytes, name: str = "") -> bool:
    """True for a DICOM Part 10 file (``DICM`` at offset 128) or a file named ``*.dcm``."""
    return data[128:132] == b"DICM" or name.lower().endswith((".dcm", ".dicom"))


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
    return image


def _refuse_non_finite(pixels: npt.NDArray[np.float32]) -> None:
    """Only float sources can hold NaN or infinity; integer pixels are not scanned again."""
    if not np.isfinite(pixels).all():
        raise UnsupportedImageError("the pixel data holds NaN or infinite values")


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


def _bomb_message(exc: Exception, limits: DecodeLimits) -> str:
    """The ``IMAGE_TOO_LARGE`` text for an image Pillow refused: the configured limit, not Pillow's.

    Pillow checks its own, higher threshold while reading the header, before this module sees the
    size; its message carries the pixel count, which is kept.
    """
    found = re.search(r"\((\d+) pixels\)", str(exc))
    declared = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow accepts"
    limit = f"{limits.max_pixels:,} (limits.max_pixels)"
    return f"image declares {declared}, more than the limit of {limit}"


def _decode_raster(data: bytes, limits: DecodeLimits) -> DecodedImage:
    try:
        image = Image.open(io.BytesIO(data), formats=_PILLOW_PARSERS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(_bomb_message(exc, limits)) from exc
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
        if mode == "F":  # float pixels: the one raster source that can hold NaN or infinity
            pixels = np.array(image)  # float32 already: this writeable copy is the result
            _refuse_non_finite(pixels)
            return DecodedImage(pixels, fmt, width, height, 32)
        # Integer pixels: a read-only view of Pillow's bytes, which _to_grey copies to float32.
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            array: npt.NDArray[Any] = np.asarray(image)
            bits = 16 if mode.startswith("I;16") else 32
        elif mode in ("L", "RGB"):
            array = np.asarray(image)
            bits = 8
        else:
            array = np.asarray(
                image.convert(
                    "RGB" if mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV") else "L"
                )
            )
            bits = 8
    # Drop Pillow's copy of the pixels before the float32 conversion allocates: freed later, it
    # leaves glibc's heap shaped so that each JPEG's buffers come back as fresh pages (about 500
    # page faults, ~1 ms of system CPU per 512x512 RGB file, measured with bench/preprocess.py).
    del image
    return DecodedImage(_to_grey(array), fmt, width, height, bits)


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _uid(ds: Any, keyword: str) -> str | None:
    """The UID, or None when absent or not a UID (digits and dots, at most 64 characters).

    Some writers put other text there (pydicom-data's ``bad_sequence.dcm`` has a hex digest):
    such a value identifies nothing a DICOM reader could resolve, and reports promise UIDs.
    """
    value = str(ds.get(keyword) or "").strip().rstrip("\x00")
    return value if len(value) <= 64 and _UID.fullmatch(value) else None


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
        if not (array.dtype.kind in "iu" and _identity_rescale(ds)):
            grey = np.asarray(apply_modality_lut(grey, ds), dtype=np.float32)
        if photometric == "MONOCHROME1":
            grey = np.float32(grey.max() + grey.min()) - grey
    return grey


def _identity_rescale(ds: Any) -> bool:
    """True when pydicom's modality LUT would give integer pixels back unchanged.

    That is: no Modality LUT Sequence, and either no rescale pair (pydicom returns the array) or
    slope 1 and intercept 0 (``x * 1.0 + 0.0`` is ``x`` for every integer-valued float). Then the
    float64 round trip through `apply_modality_lut` is skipped. Anything else, including values
    pydicom would refuse, goes through pydicom as before.
    """
    if ds.get("ModalityLUTSequence"):
        return False
    if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        return True
    slope, intercept = ds.RescaleSlope, ds.RescaleIntercept
    return (
        isinstance(slope, float) and isinstance(intercept, float) and slope == 1 and intercept == 0
    )


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


def _syntax_name(syntax: Any) -> str:
    name = getattr(syntax, "name", "") or ""
    return f"{name} ({syntax})" if name and name != str(syntax) else f"{syntax}"


def _reasons(exc: BaseException) -> str:
    """The reasons in a pydicom error: 'all plugins failed' lists each plugin's on its own line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[1:] if len(lines) > 1 else lines)[:300]


def _pixel_array(ds: Any, index: int | None, plugin: str) -> npt.NDArray[Any]:
    """The frame's pixels: with ``plugin`` first when one is preferred, else pydicom's order."""
    from pydicom.pixels import pixel_array  # type: ignore[attr-defined]  # noqa: PLC0415

    if plugin:
        try:
            # The function rather than Dataset.pixel_array: same decoder, without the property's
            # bookkeeping of element ids for its cache, which nothing here uses.
            return np.asarray(pixel_array(ds, index=index, decoding_plugin=plugin))
        except (*_CORRUPT, RuntimeError, NotImplementedError, AttributeError, TypeError, KeyError):
            pass  # the preferred plugin refused: every plugin, in pydicom's order, decides
    return np.asarray(pixel_array(ds, index=index))


def _require_decoder(syntax: Any) -> str:
    """Refuse a compressed transfer syntax that no installed plugin decodes, before decoding.

    Returns the plugin to try first (`PREFERRED_PLUGINS`), or "" for pydicom's own order.

    Raises:
        DicomUnsupportedTransferSyntaxError: naming the syntax and what it would need.
    """
    from pydicom.pixels import get_decoder  # type: ignore[attr-defined]  # noqa: PLC0415

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise DicomUnsupportedTransferSyntaxError(
            f"transfer syntax {_syntax_name(syntax)} has no pixel data decoder "
            "(supported: uncompressed, deflated, RLE, JPEG baseline/extended/lossless, JPEG-LS, "
            "JPEG 2000, HTJ2K)"
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise DicomUnsupportedTransferSyntaxError(
            f"transfer syntax {_syntax_name(syntax)} needs a decoder that is not installed "
            f"({missing})"
        )
    preferred = PREFERRED_PLUGINS.get(str(syntax), "")
    return preferred if preferred in decoder.available_plugins else ""


@dataclass(frozen=True)
class OpenedDicom:
    """A DICOM object read up to its pixels: what its header says, no pixel decoded yet.

    What a caller needs to decide whether the pixels are wanted at all (`info.header` for the
    rules of `daemon.shared.dicom_scope`) and what a report says about the file either way.
    """

    dataset: Any = field(repr=False)
    info: DicomInfo
    width: int
    height: int
    bits: int

    def decode(self, limits: DecodeLimits | None = None) -> DecodedImage:
        """The pixels: dimensions checked first, then the frame (or every frame) decoded.

        Raises:
            ScanError: absurd dimensions, a transfer syntax without a decoder, corrupt pixels.
        """
        return _decode_pixels(self, limits or DecodeLimits())


def open_dicom(data: bytes) -> OpenedDicom:
    """Parse a DICOM file's header (`OpenedDicom`); the pixel data is not touched.

    Raises:
        DicomInvalidError: not readable as DICOM, or neither pixel data nor a SOP class.
        DicomNoPixelDataError: a DICOM object without pixel data (a report, a plan, a DICOMDIR).
    """
    # pydicom is imported here so that raster-only callers do not pay for it.
    import pydicom  # noqa: PLC0415
    from pydicom.errors import InvalidDicomError  # noqa: PLC0415

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
    try:
        header = read_header(ds)
        tags = read_series_tags(ds)
        info = DicomInfo(
            study_instance_uid=_uid(ds, "StudyInstanceUID"),
            series_instance_uid=_uid(ds, "SeriesInstanceUID"),
            sop_instance_uid=_uid(ds, "SOPInstanceUID"),
            modality=str(ds.get("Modality")) if ds.get("Modality") else None,
            diffusion_b_value=header.b_value,
            frames=frames,
            frame_used=max(frames, 0) // 2,
            photometric=photometric,
            header=header,
            series=tags,
        )
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    except (EOFError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DicomInvalidError(f"not a readable DICOM header: {exc}") from exc
    return OpenedDicom(ds, info, cols, rows, bits)


def _decode_dicom(data: bytes, limits: DecodeLimits) -> DecodedImage:
    return _decode_pixels(open_dicom(data), limits)


def _decode_pixels(opened: OpenedDicom, limits: DecodeLimits) -> DecodedImage:
    ds, info = opened.dataset, opened.info
    frames, photometric = info.frames, info.photometric
    if frames < 1:
        raise BadDimensionsError(f"DICOM object declares {frames} frames")
    _check_dimensions(opened.width, opened.height, frames, limits)
    syntax = ds.file_meta.TransferSyntaxUID
    plugin = _require_decoder(syntax)
    every_frame = frames > 1 and len(info.series.frames) == frames
    try:
        if every_frame:  # each frame is a slice of its own: all of them, decoded once
            stack = _pixel_array(ds, None, plugin)
            array = stack[info.frame_used]
        else:
            array = _pixel_array(ds, info.frame_used if frames > 1 else None, plugin)
    except (NotImplementedError, RuntimeError) as exc:
        # A decoder is installed (checked above): every plugin refused these bytes.
        raise TruncatedImageError(
            f"DICOM pixel data ({_syntax_name(syntax)}) is corrupt or non-conformant: "
            f"{_reasons(exc)}"
        ) from exc
    except (*_CORRUPT, AttributeError, TypeError, KeyError) as exc:
        raise TruncatedImageError(f"DICOM pixel data is truncated or corrupt: {exc}") from exc
    try:
        grey = _dicom_grey(np.asarray(array), ds, photometric)
        frame_pixels = (
            tuple(
                np.ascontiguousarray(_dicom_grey(np.asarray(stack[i]), ds, photometric))
                for i in range(frames)
            )
            if every_frame
            else ()
        )
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise DicomInvalidError(f"cannot apply the DICOM lookup tables: {exc}") from exc
    pixels = np.ascontiguousarray(grey)
    _refuse_non_finite(pixels)
    for frame in frame_pixels:
        _refuse_non_finite(frame)
    return DecodedImage(
        pixels, "dicom", opened.width, opened.height, opened.bits, info, frame_pixels
    )
