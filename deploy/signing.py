"""Ed25519 keys and signatures over a bundle's ``manifest.json``: the workstation's half.

The manifest pins the sha256 of every other file, so signing its exact bytes signs the bundle.
``manifest.sig`` holds the 64-byte signature in base64 on one line. Keys are PEM files written by
``infarctwatch deploy keygen``: ``PREFIX.key`` (PKCS#8, unencrypted, mode 0600: keep it on the
workstation that builds releases) and ``PREFIX.pub`` (SubjectPublicKeyInfo: copy it to devices).

Checking a signature is the runtime's job (`daemon.shared.signature`: the device trusts a bundle,
not deploy); this module re-exports that check with deploy's error classes, so the CLI and the
install library see `deploy.errors.SignatureError` / `deploy.errors.KeyFileError` (both
subclasses of the runtime's).

All cryptography is the ``cryptography`` package's; nothing here is hand-rolled.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from daemon import errors as runtime
from daemon.shared import signature as _runtime
from daemon.shared.bundle import MANIFEST, SIGNATURE
from daemon.shared.signature import NO_POLICY, SignaturePolicy, key_id
from deploy.errors import KeyFileError, SignatureError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "NO_POLICY",
    "PRIVATE_SUFFIX",
    "PUBLIC_SUFFIX",
    "SignaturePolicy",
    "check_signature",
    "key_id",
    "keygen",
    "load_private_key",
    "load_public_key",
    "sign_folder",
    "signature_bytes",
]

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"


@contextlib.contextmanager
def _deploy_errors() -> Iterator[None]:
    """Re-raise the runtime's signature errors as deploy's (which subclass them)."""
    try:
        yield
    except (SignatureError, KeyFileError):
        raise
    except runtime.SignatureError as exc:
        raise SignatureError(str(exc)) from exc
    except runtime.KeyFileError as exc:
        raise KeyFileError(str(exc)) from exc


def check_signature(folder: Path, policy: SignaturePolicy) -> str:
    """`daemon.shared.signature.check_signature`, raising deploy's error classes.

    Raises:
        SignatureError: the policy refuses the bundle.
        KeyFileError: the public key cannot be read.
    """
    with _deploy_errors():
        return _runtime.check_signature(folder, policy)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """`daemon.shared.signature.load_public_key`, raising `deploy.errors.KeyFileError`."""
    with _deploy_errors():
        return _runtime.load_public_key(path)


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


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an ed25519 private key written by ``keygen``.

    Raises:
        KeyFileError: unreadable, not PEM, encrypted, or not ed25519.
    """
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
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
