"""Every error the ``deploy`` package raises.

A refused bundle is always refused before anything in the models folder changes, so every error
below means "nothing was done" unless its docstring says otherwise. The signature errors are also
the runtime's own classes (``daemon.errors``), so one ``except`` catches a refusal from either side.
"""

from __future__ import annotations

from daemon import errors as runtime


class DeployError(Exception):
    """Base class for every error raised by the ``deploy`` package."""


class UnsafeArchiveError(DeployError):
    """A bundle archive holds an entry that must never be unpacked.

    An absolute path, a ``..`` component, a link, a device or fifo, a duplicate name, or more
    members or bytes than the limits allow. Carries every offending entry.
    """

    def __init__(self, archive: str, problems: list[str]) -> None:
        self.archive = archive
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"refusing to unpack {archive}:\n{lines}")


class VerificationError(DeployError):
    """The bundle fails verification: checksum, unlisted file, format version, manifest."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"bundle {path} failed verification:\n{lines}")


class SignatureError(DeployError, runtime.SignatureError):
    """The signature is missing while required, malformed, or made by another key or content.

    Also a `daemon.errors.SignatureError`: the check is the runtime's (`daemon.shared.signature`).
    """


class KeyFileError(DeployError, runtime.KeyFileError):
    """A key file is missing, unreadable, not PEM, not ed25519, or would overwrite a key.

    Also a `daemon.errors.KeyFileError`.
    """


class VersionConflictError(DeployError):
    """The models folder already holds this version with different content.

    A version number names one exact bundle forever: bump the version instead of reusing it.
    """


class ModelsDirError(DeployError):
    """The models folder is not in a state deploy can work with (e.g. ``current`` is a folder)."""


class RollbackError(DeployError):
    """There is no version to roll back to, or the requested one is not installed."""


class PushError(DeployError):
    """Copying a bundle to a device or installing it there failed. Carries the failing step."""


class DeviceInstallError(DeployError):
    """A step of the device installation failed. Files already written by earlier steps stay."""


class DeployConfigError(DeployError):
    """The daemon configuration file named with ``--config`` cannot be read for deploy's keys."""
