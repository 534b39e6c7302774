"""Turn a training run's bundle folder into a verified, optionally signed ``NAME-VERSION.tar.gz``.

The folder is verified before packing (a bundle that would be refused on the device is never
shipped) and the archive is verified again after writing. Signing while packing never writes
into the training run: the signature is added to the archive only.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from daemon.shared.bundle import MANIFEST
from daemon.shared.signature import NO_POLICY, SignaturePolicy
from deploy.archive import (
    ARCHIVE_SUFFIX,
    find_bundle_folder,
    is_archive,
    manifest_mtime,
    pack,
    read_manifest,
    unpack,
)
from deploy.signing import load_private_key, sign_folder, signature_bytes
from deploy.verify import Verified, verify_bundle, verify_folder

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class Packed:
    """A bundle archive that was just written and verified."""

    path: Path
    verified: Verified


def archive_stem(name: str, version: str) -> str:
    """``NAME-VERSION`` with anything but ``[A-Za-z0-9._+-]`` replaced: the archive's top folder."""
    return f"{_UNSAFE_NAME.sub('_', name).strip('._') or 'bundle'}-{version}"


def pack_bundle(
    source: Path,
    output: Path | None = None,
    *,
    sign_key: Path | None = None,
    public_key: Path | None = None,
) -> Packed:
    """Verify the bundle at ``source`` (a run folder or a bundle folder) and pack it.

    ``output`` defaults to ``NAME-VERSION.tar.gz`` in the working folder. With ``sign_key`` the
    archive carries ``manifest.sig``; with ``public_key`` the written archive's signature is
    checked against it (catches signing with the wrong key before shipping).

    Raises:
        VerificationError: the folder is not a valid bundle.
        KeyFileError: the signing key cannot be read.
        SignatureError: the signature does not verify with ``public_key``.
    """
    folder = find_bundle_folder(Path(source))
    verified = verify_folder(folder, NO_POLICY)
    stem = archive_stem(verified.name, verified.version)
    output = Path(output) if output is not None else Path(stem + ARCHIVE_SUFFIX)
    signature = None
    if sign_key is not None:
        key = load_private_key(sign_key)
        signature = signature_bytes((folder / MANIFEST).read_bytes(), key)
    mtime = manifest_mtime(read_manifest(folder))
    pack(folder, output, top=stem, mtime=mtime, signature=signature)
    policy = SignaturePolicy(public_key, require_signature=public_key is not None)
    return Packed(output, verify_bundle(output, policy))


def sign_bundle(path: Path, key: Path, output: Path | None = None) -> Path:
    """Sign a bundle folder in place, or rewrite a bundle archive with a signature.

    An archive is rewritten to ``output`` (default: itself, replaced atomically).
    """
    path = Path(path)
    if not is_archive(path):
        sign_folder(find_bundle_folder(path), key)
        return path
    with tempfile.TemporaryDirectory(prefix="infarctwatch-sign-") as tmp:
        folder = unpack(path, Path(tmp))
        return pack_bundle(folder, output or path, sign_key=key).path
