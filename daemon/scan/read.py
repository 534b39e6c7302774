"""A scan's first step in its worker: read the claimed file safely, hash, decode and preprocess it.

Reading never follows a symlink and never blocks on a fifo: the path is ``lstat``-ed first and
only a regular file is opened, with ``O_NOFOLLOW | O_NONBLOCK``, then checked again with
``fstat`` (the name could have been swapped in between). A file larger than
``limits.max_file_bytes`` is refused from its size, without reading it.

A file found truncated or empty (`RECHECK_CODES`) comes back with its *fingerprint*: size, mtime
and inode as they were before it was read. The daemon looks again after ``watch.grace_s``
(`daemon.intake.recheck`): a file that changed since was still being written and goes back to wait.

Runs in the scan worker processes (`daemon.workers.process`), and in the benchmarks.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import math
import os
import stat
import time
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from daemon.errors import (
    EmptyFileError,
    FileTooLargeError,
    NotRegularFileError,
    ReadError,
    ScanError,
    TruncatedImageError,
)
from daemon.records import Claim, Decoded, Failure, Source
from daemon.scan.decision import OUT_OF_SCOPE_IMAGE
from daemon.shared.decode import (
    DecodedImage,
    DecodeLimits,
    DicomInfo,
    OpenedDicom,
    decode,
    looks_like_dicom,
    open_dicom,
)
from daemon.shared.dicom_scope import B_RANGE, NOT_B1000, OutOfScope, judge, names_adc_map
from daemon.shared.preprocess import PreprocessSpec, preprocess, preprocess_placed

if TYPE_CHECKING:
    import numpy.typing as npt

    from daemon.shared.dicom_series import FrameTags

_KINDS = (
    (stat.S_ISLNK, "a symbolic link (links are never followed)"),
    (stat.S_ISFIFO, "a fifo (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


_READ_CHUNK = 1 << 16
"""Bytes asked for by each read after the first (which asks for the whole file)."""

RECHECK_CODES = frozenset({TruncatedImageError.code, EmptyFileError.code})
"""Failures that a file still being written also gives: looked at again before reporting."""

Fingerprint = tuple[int, int, int]
"""``(size, mtime_ns, inode)`` of a file."""


def fingerprint(path: os.PathLike[str] | str) -> Fingerprint | None:
    """The file's ``(size, mtime_ns, inode)`` now (``lstat``), or None when it is gone."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns, info.st_ino)


def _kind(mode: int) -> str:
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


@dataclass(frozen=True)
class Rejected:
    """A claim that will get an error report: what is known about the file, and why."""

    claim: Claim
    source: Source
    failure: Failure
    decode_ms: float
    fingerprint: Fingerprint | None = None
    """Set for `RECHECK_CODES`: the file before it was read, to see whether it changes."""


@dataclass(frozen=True)
class NotAnalysed:
    """A claim whose header says it is not a DWI b1000 slice: a ``not_analysed`` report."""

    claim: Claim
    source: Source
    reason: OutOfScope
    decode_ms: float
    adc: npt.NDArray[np.float32] | None = None
    """An ADC map's values in 1e-6 mm²/s (`adc_values`), when the caller asked for them."""


class Refused(Exception):  # noqa: N818 - a signal carrying what was learnt before failing
    """`read_claimed` could not read the file: why, and what is known about it."""

    def __init__(self, source: Source, error: ScanError) -> None:
        self.source = source
        self.error = error


def read_claimed(claim: Claim, max_bytes: int) -> tuple[bytes, Source]:
    """Read a claimed file's bytes; never follows links, never opens anything but a file.

    Raises:
        Refused: with the `ScanError` and what the report can say about the file.
    """
    source = Source(name=claim.name)
    try:
        info = os.lstat(claim.path)
    except OSError as exc:
        raise Refused(source, ReadError(f"cannot stat the file: {exc.strerror}")) from exc
    source = Source(name=claim.name, bytes=info.st_size)
    if not stat.S_ISREG(info.st_mode):
        raise Refused(source, NotRegularFileError(f"the path is {_kind(info.st_mode)}"))
    if info.st_size > max_bytes:
        message = f"the file has {info.st_size:,} bytes, more than {max_bytes:,} (max_file_bytes)"
        raise Refused(source, FileTooLargeError(message))
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(claim.path, flags)
    except OSError as exc:
        error: ScanError = (
            NotRegularFileError("the path became a symbolic link")
            if exc.errno == errno.ELOOP
            else ReadError(f"cannot open the file: {exc.strerror}")
        )
        raise Refused(source, error) from exc
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode):
            raise Refused(source, NotRegularFileError(f"the path became {_kind(now.st_mode)}"))
        try:
            data = _read_up_to(fd, now.st_size, max_bytes + 1)
        except OSError as exc:
            raise Refused(source, ReadError(f"reading failed: {exc.strerror}")) from exc
    finally:
        os.close(fd)
    source = Source(name=claim.name, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    if len(data) > max_bytes:
        message = f"the file grew beyond {max_bytes:,} bytes (max_file_bytes) while being read"
        raise Refused(source, FileTooLargeError(message))
    return data, source


def _read_up_to(fd: int, size: int, limit: int) -> bytes:
    """``fd``'s bytes until its end, or its first ``limit`` bytes, whichever comes first.

    The first read asks for ``size + 1`` bytes (``size`` from ``fstat``), so a file that did not
    change is one read and one empty read, and no buffer of ``limit`` bytes is allocated (a
    buffered ``read(limit)`` allocates it whole before shrinking it).
    """
    chunks: list[bytes] = []
    total, want = 0, min(size + 1, limit)
    while total < limit:
        chunk = os.read(fd, want)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = min(_READ_CHUNK, limit - total)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_claim(
    claim: Claim,
    spec: PreprocessSpec,
    limits: DecodeLimits,
    max_bytes: int,
    b_range: tuple[float, float] | None = B_RANGE,
    *,
    adc_maps: bool = False,
) -> Decoded | Rejected | NotAnalysed:
    """Read, hash, decode and preprocess one claimed file.

    A picture of exactly two grey levels (`TWO_LEVELS`) is a `NotAnalysed` before inference.
    A DICOM file whose header is not a DWI b1000 MR slice's (`daemon.shared.dicom_scope.judge`,
    b-values accepted in ``b_range``) becomes a `NotAnalysed` from its header alone: its pixels
    are never decoded, so a CT, T1 or report in a whole-study push costs no decoding and cannot
    fail on its pixels (``b_range`` None: no header rule is applied). So does an enhanced object
    every frame of which has a b-value out of range, once decoded (`_no_frame_in_range`); any
    other enhanced object is classified by one of its frames to analyse
    (`_classified_by_a_wanted_frame`).
    An MR image whose header passed every rule with a b-value in range is `Decoded.header_dwi`; so
    are the frames of an enhanced MR object whose own b-value is in range
    (`Decoded.header_dwi_frames`). With ``adc_maps``, an ADC map's pixels are decoded after all
    (`NotAnalysed.adc`): the series' lesions are checked against them (`daemon.series.adc`);
    pixels that cannot be decoded leave it None.
    Every `ScanError` becomes a `Rejected`; anything else propagates (the worker reports it as an
    ``INTERNAL_ERROR`` and logs the traceback).
    """
    started = time.perf_counter()
    source = Source(name=claim.name)
    header_mr = False
    before = fingerprint(claim.path)
    try:
        data, source = read_claimed(claim, max_bytes)
        name = PurePosixPath(claim.name).name
        if data and looks_like_dicom(data, name):
            opened = open_dicom(data)
            reason = None if b_range is None else judge(opened.info.header, b_range)
            if reason is not None:
                source = _described(source, "dicom", opened, opened.info)
                adc = adc_values(opened, limits) if adc_maps else None
                return NotAnalysed(claim, source, reason, _ms_since(started), adc)
            image = opened.decode(limits)
            wanted = _frames_to_analyse(image, b_range)
            if image.frame_pixels and not wanted:
                source = _described(source, image.format, image, image.dicom)
                reason = _no_frame_in_range(image, b_range)
                return NotAnalysed(claim, source, reason, _ms_since(started))
            image = _classified_by_a_wanted_frame(image, wanted)
            header_mr = b_range is not None and (
                (opened.info.header.modality or "").strip().upper() == "MR"
            )
        else:
            image, wanted = decode(data, name, limits), []
        source = _described(source, image.format, image, image.dicom)
        if _two_levels(image.pixels):
            return NotAnalysed(claim, source, TWO_LEVELS, _ms_since(started))
        tensor, placement = preprocess_placed(image.pixels, spec)
        frames = tuple((t.index, preprocess(image.frame_pixels[t.index], spec)) for t in wanted)
    except Refused as refused:
        source, error = refused.source, refused.error
    except ScanError as exc:
        error = exc
    else:
        # a frame's own b-value in range (wanted holds frames in range or without one)
        dwi_frames = frozenset(t.index for t in wanted if header_mr and t.b_value is not None)
        return Decoded(
            claim,
            source,
            tensor,
            _ms_since(started),
            frames,
            image.pixels,
            placement,
            header_dwi=_header_dwi(image, header_mr, dwi_frames),
            header_dwi_frames=dwi_frames,
        )
    failure = Failure(error.code, error.message)
    again = before if error.code in RECHECK_CODES else None
    return Rejected(claim, source, failure, _ms_since(started), again)


TWO_LEVELS = OutOfScope(
    OUT_OF_SCOPE_IMAGE,
    "the picture has only two grey levels (a mask or a line drawing), not an MR slice",
)
"""Why a picture of exactly two grey levels is refused before inference: no MR image, however
windowed, is two values; a lesion mask, a binary segmentation or a drawing is. (One level is a
`BlankImageError`.)"""


def _two_levels(pixels: npt.NDArray[np.float32]) -> bool:
    """Exactly two distinct values; a sample of every 8th row and column settles most images."""
    for grid in (pixels[::8, ::8], pixels):
        low, high = grid.min(), grid.max()
        if not np.logical_or(grid == low, grid == high).all():
            return False
    return bool(pixels.min() != pixels.max())


def adc_values(opened: OpenedDicom, limits: DecodeLimits) -> npt.NDArray[np.float32] | None:
    """A single-frame ADC map's pixels in 1e-6 mm²/s, or None (not one, or not decodable).

    Scanners write ADC in 1e-6 mm²/s (Siemens, GE, most), some in 1e-3 mm²/s or in mm²/s through
    the rescale slope: the unit is told from the median of the positive pixels (brain and CSF lie
    between 300 and 3,500 x 1e-6 mm²/s): below 0.05 it is mm²/s, below 50 it is 1e-3 mm²/s.
    """
    if opened.info.frames != 1 or not names_adc_map(opened.info.header):
        return None  # an enhanced multi-frame ADC object is one file for many positions
    try:
        pixels = opened.decode(limits).pixels
    except ScanError:
        return None
    positive = pixels[pixels > 0]
    if positive.size == 0:
        return None
    typical = float(np.median(positive))
    scale = 1e6 if typical < 0.05 else 1e3 if typical < 50 else 1.0
    values: npt.NDArray[np.float32] = np.clip(pixels * np.float32(scale), 0, None)
    return values.astype(np.float32, copy=False)


def _described(
    source: Source, fmt: str, size: DecodedImage | OpenedDicom, dicom: DicomInfo | None
) -> Source:
    """``source`` with what decoding (or the header alone) told about the file."""
    return dataclasses.replace(
        source, format=fmt, width=size.width, height=size.height, bits=size.bits, dicom=dicom
    )


def _frames_to_analyse(image: DecodedImage, b_range: tuple[float, float] | None) -> list[FrameTags]:
    """The frames of an enhanced object to analyse: b-value in range, or none given."""
    if not image.frame_pixels or image.dicom is None:
        return []
    low, high = b_range if b_range is not None else (-math.inf, math.inf)
    return [
        tag
        for tag in image.dicom.series.frames
        if tag.b_value is None or low <= tag.b_value <= high
    ]


def _no_frame_in_range(image: DecodedImage, b_range: tuple[float, float] | None) -> OutOfScope:
    """Why an enhanced object none of whose frames is in range is not analysed (``NOT_B1000``).

    A b0-only object, say: none of its frames is a slice to analyse, and its pixels are not one.
    Every frame has a b-value then (one without would be analysed).
    """
    low, high = b_range if b_range is not None else (-math.inf, math.inf)
    frames = image.dicom.series.frames if image.dicom is not None else ()
    found = ", ".join(
        f"{b:g}" for b in sorted({t.b_value for t in frames if t.b_value is not None})
    )
    return OutOfScope(
        NOT_B1000, f"every frame's b-value ({found} s/mm²) lies outside {low:g}-{high:g}"
    )


def _classified_by_a_wanted_frame(image: DecodedImage, wanted: list[FrameTags]) -> DecodedImage:
    """``image``, classified by one of its ``wanted`` frames when it is an enhanced object.

    An enhanced object whose middle frame is not one to analyse (a b0 frame, say) is classified by
    the middle one of the frames to analyse instead; the report's ``frame_used`` says which.
    """
    indices = [t.index for t in wanted]
    if not indices or image.dicom is None or image.dicom.frame_used in indices:
        return image
    chosen = indices[len(indices) // 2]
    return dataclasses.replace(
        image,
        pixels=image.frame_pixels[chosen],
        dicom=dataclasses.replace(image.dicom, frame_used=chosen),
    )


def _header_dwi(image: DecodedImage, header_mr: bool, frames: frozenset[int]) -> bool:
    """`Decoded.header_dwi`: an MR header that passed the rules and a b-value in range.

    For an enhanced object, the b-value of the frame it is classified by (``frames``: those of
    its frames whose own b-value is in range); for any other image, the header's.
    """
    if not header_mr or image.dicom is None:
        return False
    if image.frame_pixels:
        return image.dicom.frame_used in frames
    return image.dicom.header.b_value is not None


def configure_decoders() -> None:
    """Process-wide decoder settings for the daemon (call once, from the entry point).

    Pillow's ``DecompressionBombWarning`` becomes an error (an ``IMAGE_TOO_LARGE`` report instead
    of a warning), and pydicom stops validating element values on read: its warnings could quote
    values such as a patient's birth date, and the daemon reads no value it does not check itself.
    """
    import pydicom.config  # noqa: PLC0415 - pydicom is loaded lazily everywhere else
    from PIL import Image  # noqa: PLC0415

    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def warm_up() -> None:
    """Load Pillow's parsers and pydicom's pixel handlers now, not on the first scan (~0.1 s)."""
    import pydicom.pixels  # noqa: F401, PLC0415
    from PIL import Image  # noqa: PLC0415

    Image.init()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
