"""Verify a bundle folder or archive: checksums, format, loadability and signature policy.

The checks are the daemon's own (`daemon.shared.bundle.load_bundle`: every file's sha256 against the
manifest, no unlisted file, a supported format version, labels/preprocessing/variants that fit
together), so a bundle deploy accepts is a bundle the daemon will load. The signature policy
comes on top, checked by the runtime's own code too (`daemon.shared.signature`, through
`deploy.signing.check_signature`, which raises deploy's error classes).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import BundleError
from daemon.shared.bundle import load_bundle
from daemon.shared.signature import NO_POLICY, SignaturePolicy
from deploy.archive import DEFAULT_LIMITS, Limits, is_archive, unpack
from deploy.errors import VerificationError
from deploy.signing import check_signature


@dataclass(frozen=True)
class Verified:
    """A bundle that passed every check."""

    source: Path
    name: str
    version: str
    sha256: str
    """sha256 of ``manifest.json``: the bundle's identity, named in every report."""
    created_at: str
    files: int
    bytes: int
    signature: str
    """One line: ``unsigned``, ``signature valid (key ...)``, ..."""


def verify_folder(folder: Path, policy: SignaturePolicy, *, source: Path | None = None) -> Verified:
    """Verify an unpacked bundle folder.

    Raises:
        VerificationError: checksums, format version or contents.
        SignatureError: the signature policy refuses it.
        KeyFileError: the public key cannot be read.
    """
    folder = Path(folder)
    try:
        bundle = load_bundle(folder)
    except BundleError as exc:
        raise VerificationError(str(source or folder), exc.problems) from None
    signature = check_signature(folder, policy)
    files = bundle.manifest["files"]
    return Verified(
        source=Path(source or folder),
        name=bundle.name,
        version=bundle.version,
        sha256=bundle.sha256,
        created_at=bundle.created_at,
        files=len(files),
        bytes=sum(int(entry.get("bytes", 0)) for entry in files.values()),
        signature=signature,
    )


def verify_bundle(
    path: Path, policy: SignaturePolicy = NO_POLICY, *, limits: Limits = DEFAULT_LIMITS
) -> Verified:
    """Verify a bundle folder, or a ``.tar.gz`` unpacked safely into a temporary folder.

    Raises:
        UnsafeArchiveError: the archive holds an entry that must not be unpacked.
        VerificationError, SignatureError, KeyFileError: see `verify_folder`.
    """
    path = Path(path)
    if not path.exists():
        raise VerificationError(str(path), ["no such file or folder"])
    if not is_archive(path):
        return verify_folder(path, policy)
    with tempfile.TemporaryDirectory(prefix="infarctwatch-verify-") as tmp:
        folder = unpack(path, Path(tmp), limits=limits)
        return verify_folder(folder, policy, source=path)
