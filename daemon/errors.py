"""Every error the edge runtime raises.

Two families:

* start-up errors (`ConfigError`, `BundleError`, `EngineError`, `AlreadyRunningError`) stop the
  service with exit code 2;
* `ScanError` subclasses describe one bad input. Each carries a stable ``code`` that goes into the
  error report, so downstream systems can count and route failures without parsing messages.
  A scan error never stops the service.
"""

from __future__ import annotations

from typing import ClassVar


class InfarctwatchError(Exception):
    """Base class for every error raised by the ``daemon`` package."""


class ConfigError(InfarctwatchError):
    """The configuration is invalid. Carries every problem found, each with its key path."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s){where}:\n{lines}")


class BundleError(InfarctwatchError):
    """A model bundle is missing, malformed or fails verification. Carries every problem found."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"model bundle {path} is not usable:\n{lines}")


class DatasetError(InfarctwatchError):
    """A labelled dataset folder is missing, empty, or has files without a case id."""


class LabelMapError(DatasetError):
    """The label map is malformed, or a dataset folder has a name it cannot map."""


class ScanError(InfarctwatchError):
    """One input file could not be turned into a prediction. Subclasses set a stable ``code``."""

    code: ClassVar[str] = "SCAN_FAILED"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"{self.code}: {message}")


class NotRegularFileError(ScanError):
    """The path is a symlink, fifo, socket, device or folder, never read."""

    code = "NOT_A_REGULAR_FILE"


class EmptyFileError(ScanError):
    """The file has zero bytes."""

    code = "EMPTY_FILE"


class FileTooLargeError(ScanError):
    """The file is larger than ``limits.max_file_bytes``."""

    code = "FILE_TOO_LARGE"


class ReadError(ScanError):
    """The file could not be read from disk (I/O error, permission)."""

    code = "READ_ERROR"


class NotAnImageError(ScanError):
    """The bytes are neither a supported raster image nor DICOM."""

    code = "NOT_AN_IMAGE"


class TruncatedImageError(ScanError):
    """The image header is valid but its pixel data ends early or is corrupt."""

    code = "TRUNCATED_IMAGE"


class ImageTooLargeError(ScanError):
    """The image declares more pixels than ``limits.max_pixels`` (decompression-bomb guard)."""

    code = "IMAGE_TOO_LARGE"


class BadDimensionsError(ScanError):
    """The image is too small to hold a brain slice, or has an absurd shape."""

    code = "BAD_DIMENSIONS"


class UnsupportedImageError(ScanError):
    """A raster image in a mode or layout infarctwatch does not read."""

    code = "UNSUPPORTED_IMAGE"


class BlankImageError(ScanError):
    """Every pixel has the same value: there is nothing to classify."""

    code = "BLANK_IMAGE"


class DicomInvalidError(ScanError):
    """The file looks like DICOM but cannot be parsed."""

    code = "DICOM_INVALID"


class DicomNoPixelDataError(ScanError):
    """The DICOM object carries no image (a structured report, presentation state...)."""

    code = "DICOM_NO_PIXEL_DATA"


class DicomUnsupportedTransferSyntaxError(ScanError):
    """The DICOM pixel data is compressed with a transfer syntax that has no decoder here."""

    code = "DICOM_UNSUPPORTED_TRANSFER_SYNTAX"


class InferenceError(ScanError):
    """OpenVINO failed on this input."""

    code = "INFERENCE_FAILED"


class DecoderCrashedError(ScanError):
    """The scan worker process died while reading this file (a crash in a native decoder)."""

    code = "DECODER_CRASHED"


class DecodeTimeoutError(ScanError):
    """Decoding this file took longer than ``limits.decode_timeout_s``; the worker was stopped."""

    code = "DECODE_TIMEOUT"


class InternalError(ScanError):
    """An unexpected error while processing one scan; the service goes on."""

    code = "INTERNAL_ERROR"


class RepeatedCrashError(ScanError):
    """The daemon or its worker died ``limits.max_attempts`` times in a row on this file."""

    code = "REPEATED_CRASH"


class EngineError(InfarctwatchError):
    """OpenVINO could not read or compile the bundle's network on the configured device.

    A start-up error like `BundleError`: the service stops with exit code 2.
    """


class WorkerStartError(InfarctwatchError):
    """A scan worker process could not be started (at start-up: exit code 2).

    After start-up, a worker that cannot be restarted stops the service with exit code 1, leaving
    its claim in processing/ for the next start.
    """


class AlreadyRunningError(InfarctwatchError):
    """Another infarctwatch daemon holds the lock on the same incoming or work folder."""


class SignatureError(InfarctwatchError):
    """A bundle's signature is missing while required, malformed, or made by another key or content.

    At start-up the service turns it into a `BundleError` (exit code 2); during a hot reload the
    new bundle is refused and the one in service keeps serving.
    """


class KeyFileError(InfarctwatchError):
    """The public key (``model.public_key``) is missing, unreadable, not PEM or not ed25519."""
