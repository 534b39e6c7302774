"""Which files some process still holds open for writing, where Linux lets us tell.

`held_for_writing` walks ``/proc/<pid>/fd`` once for a whole set of paths: each descriptor's link
is compared with the paths (one ``readlink`` per descriptor), and only a descriptor that points at
one of them has its ``/proc/<pid>/fdinfo/<fd>`` read, whose ``flags`` say whether it was opened
for writing (``O_WRONLY`` or ``O_RDWR``). The cost is one pass over the machine's descriptors,
whatever the number of paths, so the watcher calls it once per settling round for the files that
settled in it.

Where a process's descriptors cannot be read (another user's process without ``CAP_SYS_PTRACE``,
``/proc`` mounted with ``hidepid``, no ``/proc`` at all), its writers cannot be seen: the answer
then covers only the processes that could be read, and `WriterCheck.complete` is False. The size
and mtime rule (``watch.stable_s``) alone decides for the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

_PROC = Path("/proc")
_WRITE_MODES = (os.O_WRONLY, os.O_RDWR)


@dataclass(frozen=True)
class WriterCheck:
    """The paths found open for writing, and whether every process could be looked at."""

    held: frozenset[Path]
    complete: bool


def held_for_writing(paths: Iterable[Path], proc: Path | None = None) -> WriterCheck:
    """The ``paths`` that a process (this one included) holds open for writing.

    Paths are compared as the kernel reports them (absolute, links resolved), so pass paths
    whose folders are resolved already (`resolved_folder`).
    """
    proc = _PROC if proc is None else proc
    wanted = {str(path): path for path in paths}
    if not wanted:
        return WriterCheck(frozenset(), complete=True)
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]  # noqa: PTH208 - strings, the hot path
    except OSError:
        return WriterCheck(frozenset(), complete=False)
    held: set[Path] = set()
    complete = True
    for pid in pids:
        fd_folder = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_folder)  # noqa: PTH208 - strings, the hot path
        except FileNotFoundError:
            continue  # the process ended meanwhile
        except OSError:
            complete = False
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_folder}/{fd}")  # noqa: PTH115 - strings: hot path
            except OSError:
                continue
            path = wanted.get(target)
            if path is not None and path not in held and _writing(proc, pid, fd):
                held.add(path)
    return WriterCheck(frozenset(held), complete)


def _writing(proc: Path, pid: str, fd: str) -> bool:
    """True when descriptor ``fd`` of ``pid`` was opened for writing (its fdinfo ``flags``)."""
    try:
        with open(f"{proc}/{pid}/fdinfo/{fd}", encoding="ascii") as fh:  # noqa: PTH123 - hot path
            for line in fh:
                if line.startswith("flags:"):
                    return (int(line.split()[1], 8) & os.O_ACCMODE) in _WRITE_MODES
    except (OSError, ValueError, IndexError):
        return False
    return False


def resolved_folder(folder: Path) -> Path:
    """``folder`` with its links resolved, as ``/proc/<pid>/fd`` links name files inside it."""
    return Path(os.path.realpath(folder))
