"""What the Storage SCP accepts: the SOP classes and the transfer syntaxes, as UIDs.

The storage classes are the MR and CT images a scanner or PACS sends with a DWI study: the
classic single-frame objects and the enhanced (multi-frame) ones. The transfer syntaxes are
exactly the ones the daemon decodes (docs/daemon.md, "DICOM transfer syntaxes"): a sender that
proposes only something else (video, a private syntax) is refused at association time, for that
class, rather than accepted and then reported ``DICOM_UNSUPPORTED_TRANSFER_SYNTAX``.
"""

from __future__ import annotations

VERIFICATION = "1.2.840.10008.1.1"
"""C-ECHO: "are you there?"."""

STORAGE_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}

UNCOMPRESSED = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian: every SCP must accept it
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
)
TRANSFER_SYNTAXES: tuple[str, ...] = (
    *UNCOMPRESSED,
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended 12-bit (processes 2 and 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless (process 14, SV1)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
)
