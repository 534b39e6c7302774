"""Names that appear in one folder, straight from Linux inotify (ctypes, no extra thread).

The benchmark times "file renamed into incoming" to "report visible". Reports are written to a
temporary dotfile and renamed into place, so a report becomes visible exactly at its
``IN_MOVED_TO`` event; reading the inotify descriptor wakes this process within microseconds of
the rename and costs nothing while waiting (unlike a tight poll, which would steal CPU from the
daemon it measures on a 2-core machine).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import time
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

IN_MOVED_TO = 0x00000080
IN_CLOSE_WRITE = 0x00000008
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class QueueOverflowError(RuntimeError):
    """The kernel dropped events: the count of what arrived is no longer exact."""


class FolderEvents:
    """Names moved into ``folder`` (``IN_MOVED_TO``), optionally filtered by suffix."""

    def __init__(self, folder: Path, suffix: str = "", mask: int = IN_MOVED_TO) -> None:
        self._suffix = suffix
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if _libc.inotify_add_watch(self._fd, os.fsencode(folder), mask) < 0:
            errno = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(errno, f"inotify_add_watch failed on {folder}")
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the inotify descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read(self, timeout_s: float) -> list[str]:
        """Names that arrived, waiting up to ``timeout_s`` for the first one ([] on timeout).

        Raises:
            QueueOverflowError: the kernel's event queue overflowed.
        """
        if not self._poll.poll(max(0, int(timeout_s * 1000))):
            return []
        try:
            buffer = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            return []
        names: list[str] = []
        offset = 0
        while offset < len(buffer):
            _wd, mask, _cookie, length = _HEADER.unpack_from(buffer, offset)
            offset += _HEADER.size
            raw = buffer[offset : offset + length].rstrip(b"\0")
            offset += length
            if mask & IN_Q_OVERFLOW:
                raise QueueOverflowError("inotify queue overflow")
            name = os.fsdecode(raw)
            if name and not name.startswith(".") and name.endswith(self._suffix):
                names.append(name)
        return names

    def drain(self) -> int:
        """Forget whatever arrived so far; returns how many names that was."""
        count = 0
        while names := self.read(0):
            count += len(names)
        return count

    def wait_for(self, count: int, timeout_s: float) -> float | None:
        """Wait until ``count`` names have arrived; the ``perf_counter`` time then, else None."""
        deadline = time.perf_counter() + timeout_s
        seen = 0
        while seen < count:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            seen += len(self.read(remaining))
        return time.perf_counter()
