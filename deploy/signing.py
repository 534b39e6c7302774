"""Ed25519 signatures over a bundle's ``manifest.json``.

The manifest pins the sha256 of every other file, so signing its exact bytes signs the bundle.
``manifest.sig`` holds the 64-byte signature in base64 on one line. Keys are PEM files written by
``infarctwatch deploy keygen``: ``PREFIX.key`` (PKCS#8, unencrypted, mode 0600: keep it on the
workstation that builds releases) and ``PREFIX.pub`` (SubjectPublicKeyInfo: copy it to devices).

All cryptography is the ``cryptography`` package's; nothing here is hand-rolled.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from daemon.bundle import MANIFEST, SIGNATURE
from deploy.errors import KeyFileError, SignatureError

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
_SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class SignaturePolicy:
    """What a device demands of a bundle's signature (``model.public_key`` and friends)."""

    public_key: Path | None = None
    require_signature: bool = False


NO_POLICY = SignaturePolicy()
"""Accept unsigned bundles; report a signature as not checked."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a key: the first 16 hex digits of the sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(prefix: Path) -> tuple[Path, Path]:
    """Write a new key pair as ``PREFIX.key`` (mode 0600) and ``PREFIX.pub``; return both paths.

    Raises:
        KeyFileError: either file exists already (a key is never overwritten).
    """
    prefix = Path(prefix)
    private_path = prefix.with_name(prefix.name + PRIVATE_SUFFIX)
    public_path = prefix.with_name(prefix.name + PUBLIC_SUFFIX)
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise KeyFileError(f"{path} exists: refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(private_path, private_pem, 0o600)
    try:
        _write_new(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} exists: refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)  # exact mode whatever the umask
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _read_pem(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror}") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an ed25519 private key written by ``keygen``.

    Raises:
        KeyFileError: unreadable, not PEM, encrypted, or not ed25519.
    """
    try:
        key = serialization.load_pem_private_key(_read_pem(path), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an ed25519 public key (PEM).

    Raises:
        KeyFileError: unreadable, not PEM, or not ed25519.
    """
    try:
        key = serialization.load_pem_public_key(_read_pem(path))
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an ed25519 key")
    return key


def signature_bytes(manifest: bytes, key: Ed25519PrivateKey) -> bytes:
    """The content of ``manifest.sig`` for these exact manifest bytes."""
    return base64.b64encode(key.sign(manifest)) + b"\n"


def sign_folder(folder: Path, key_path: Path) -> Path:
    """Sign a bundle folder's ``manifest.json``: write ``manifest.sig`` beside it atomically."""
    folder = Path(folder)
    key = load_private_key(key_path)
    try:
        manifest = (folder / MANIFEST).read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read {folder / MANIFEST}: {exc.strerror}") from exc
    fd, tmp = tempfile.mkstemp(prefix=".sig-", dir=folder)
    with os.fdopen(fd, "wb") as fh:
        fh.write(signature_bytes(manifest, key))
        os.fchmod(fh.fileno(), 0o644)
    Path(tmp).replace(folder / SIGNATURE)
    return folder / SIGNATURE


def check_signature(folder: Path, policy: SignaturePolicy) -> str:
    """Apply ``policy`` to a bundle folder; return a one-line description of the outcome.

    * a public key is given and ``manifest.sig`` is present: it must verify, whatever
      ``require_signature`` says (a bad signature is never ignored);
    * ``require_signature`` and no ``manifest.sig``: refused;
    * no public key: a present signature cannot be checked and is reported as such.

    Raises:
        SignatureError: the policy refuses the bundle.
        KeyFileError: the public key cannot be read.
    """
    folder = Path(folder)
    if policy.require_signature and policy.public_key is None:
        raise SignatureError("a signature is required but no public key is configured")
    sig_path = folder / SIGNATURE
    present = sig_path.is_file() and not sig_path.is_symlink()
    if not present:
        if policy.require_signature:
            raise SignatureError(f"{SIGNATURE} is missing and a signature is required")
        return "unsigned"
    if policy.public_key is None:
        return "signed, not checked (no public key given)"
    public_key = load_public_key(policy.public_key)
    try:
        signature = base64.b64decode(sig_path.read_bytes().strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{SIGNATURE} is not base64: {exc}") from exc
    if len(signature) != _SIGNATURE_BYTES:
        raise SignatureError(f"{SIGNATURE} holds {len(signature)} bytes, not an ed25519 signature")
    try:
        public_key.verify(signature, (folder / MANIFEST).read_bytes())
    except InvalidSignature:
        raise SignatureError(
            f"{SIGNATURE} does not verify with key {key_id(public_key)} ({policy.public_key}): "
            "the manifest was changed or another key signed it"
        ) from None
    return f"signature valid (key {key_id(public_key)})"
