"""Keeping one received DICOM instance: a file in the incoming folder, or a refusal.

The instance's bytes (DICOM File Format, as the sender encoded them) become one file in incoming
the way a careful sender writes one (`daemon.fs.write_atomic`): a temporary dotfile the intake
ignores, written, fsynced, renamed into place, the folder fsynced. Only then is the sender told
"success": the file survives a power cut, and the watcher takes it like any file dropped there.

The file name is the first 32 hex digits of the sha256 of the SOPInstanceUID, plus ``.dcm``:
never patient data, and a resend of the same instance lands on the same name (replacing the copy
not yet claimed, or reported again under the same report id once claimed).

Before writing, the free space of incoming's file system is probed (`free_space`): an instance
that would leave less than ``min_free_bytes`` is refused, so the sender keeps it and retries,
instead of the daemon accepting what it cannot keep. A write that fails all the same (ENOSPC,
EDQUOT between the probe and the write, an I/O error) leaves no file behind.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daemon.fs import TMP_SUFFIX, write_atomic

if TYPE_CHECKING:
    from pathlib import Path

NAME_HEX = 32
"""Hex digits of the SOPInstanceUID's sha256 in a received file's name (128 bits)."""
SUFFIX = ".dcm"
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def instance_name(sop_instance_uid: str) -> str:
    """The incoming file name of the instance ``sop_instance_uid``: a hash, never patient data."""
    digest = hashlib.sha256(sop_instance_uid.strip().encode("ascii", "replace")).hexdigest()
    return digest[:NAME_HEX] + SUFFIX


def free_space(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on ``folder``'s file system (``statvfs``)."""
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


class Outcome(enum.Enum):
    """What became of one instance."""

    STORED = "stored"
    NO_SPACE = "no_space"
    """Refused: too little free space (probed), or the file system filled up while writing."""
    FAILED = "failed"
    """Refused: the write failed for another reason (I/O error, permission, folder gone)."""


@dataclass(frozen=True)
class Kept:
    """The outcome of `IncomingStore.keep`, and the error's text when it failed."""

    outcome: Outcome
    error: str | None = None


class IncomingStore:
    """Writes received instances into the incoming folder, or refuses them when space is short."""

    def __init__(self, incoming: Path, min_free_bytes: int) -> None:
        self.incoming = incoming
        self.min_free_bytes = min_free_bytes

    def remove_leftovers(self) -> int:
        """Delete the temporaries a crash left in incoming (our own suffix, top level only)."""
        removed = 0
        for path in self.incoming.glob(f".*{TMP_SUFFIX}"):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
        return removed

    def keep(self, sop_instance_uid: str, data: bytes) -> Kept:
        """Write ``data`` as the file of ``sop_instance_uid`` in incoming, durably, or refuse it."""
        try:
            room = free_space(self.incoming) - len(data)
        except OSError as exc:
            return Kept(Outcome.FAILED, _text(exc))
        if room < self.min_free_bytes:
            left = max(room + len(data), 0) // (1 << 20)
            return Kept(Outcome.NO_SPACE, f"{left} MiB free, {len(data):,} bytes to write")
        try:
            write_atomic(self.incoming / instance_name(sop_instance_uid), data)
        except OSError as exc:
            outcome = Outcome.NO_SPACE if exc.errno in _FULL else Outcome.FAILED
            return Kept(outcome, _text(exc))
        return Kept(Outcome.STORED)


def _text(exc: OSError) -> str:
    """An OSError as ``ENOSPC (No space left on device)``, without its path."""
    name = errno.errorcode.get(exc.errno or 0, "OSError")
    return f"{name} ({exc.strerror or exc})"
