"""Checking a bundle's ed25519 signature: the device's half of bundle signing.

``manifest.sig`` holds a base64 ed25519 signature of the exact bytes of ``manifest.json``; the
manifest pins the sha256 of every other file, so a valid signature vouches for the whole bundle.
The runtime owns this check because the runtime is what trusts a bundle, at start-up, on a hot
reload and for the model inbox. Making keys and signatures (keygen, signing with the private key)
is the workstation's job and lives in ``deploy.signing``, which re-exports what is here.

The policy (`SignaturePolicy`, from ``model.public_key`` and ``model.require_signature``):

* a public key is given and ``manifest.sig`` is present: it must verify, whatever
  ``require_signature`` says (a bad signature is never ignored);
* ``require_signature`` and no ``manifest.sig``: refused;
* no public key: a present signature cannot be checked and is reported as such.

All cryptography is the ``cryptography`` package's; nothing here is hand-rolled.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from daemon.errors import KeyFileError, SignatureError
from daemon.shared.bundle import MANIFEST, SIGNATURE

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


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an ed25519 public key (PEM).

    Raises:
        KeyFileError: unreadable, not PEM, or not ed25519.
    """
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an ed25519 key")
    return key


def check_signature(folder: Path, policy: SignaturePolicy) -> str:
    """Apply ``policy`` to a bundle folder; return a one-line description of the outcome.

    The outcome is ``unsigned``, ``signed, not checked (no public key given)`` or
    ``signature valid (key <key id>)``.

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
        manifest = (folder / MANIFEST).read_bytes()
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{SIGNATURE} is not base64: {exc}") from exc
    except OSError as exc:
        raise SignatureError(f"cannot read the signed files: {exc.strerror or exc}") from exc
    if len(signature) != _SIGNATURE_BYTES:
        raise SignatureError(f"{SIGNATURE} holds {len(signature)} bytes, not an ed25519 signature")
    try:
        public_key.verify(signature, manifest)
    except InvalidSignature:
        raise SignatureError(
            f"{SIGNATURE} does not verify with key {key_id(public_key)} ({policy.public_key}): "
            "the manifest was changed or another key signed it"
        ) from None
    return f"signature valid (key {key_id(public_key)})"
