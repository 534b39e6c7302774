"""Noticing that a folder the daemon works in was deleted, replaced or unmounted, and recovering.

`FolderGuard` remembers the identity (``st_dev``, ``st_ino``) of each folder the daemon owns: the
incoming folder, its claim area (``.infarctwatch`` with processing/, done/, failed/), the reports
folder and the work folder (with its done/, failed/ and the status file's folder). The service
calls `FolderGuard.check` once a second (and so at every reconciliation scan): a folder that is
missing or is another folder now (deleted and recreated, or a file system unmounted from under
it), or whose held lock file is gone, is

1. created again, with its parents (`daemon.fs.folder_problem`: created and proved writable);
2. locked again when it holds a lock (the claim area's and the work folder's), so two daemons
   still never share one;
3. logged at error level (``folder_replaced``, naming each folder by its config key, with the
   claims in flight) and counted in the status file (``folders``).

The caller then re-establishes the incoming folder's watch
(`daemon.intake.watcher.Watcher.rewatch`). When a folder cannot be created or written to, or another
daemon took its lock, `check` raises `FolderLostError` (after a few attempts over a second: a
deletion may still be under way) and the service exits with code 1, which systemd restarts.

The identity check is what notices, not watchdog: deleting incoming with the claim area inside
makes watchdog 7.1.1 report the sub-folder's deletion only, and its emitter lives on, watching
nothing. The guard holds each folder open (a descriptor) so that a folder deleted and made again
cannot take its inode number; a plain ``umount`` under a running daemon therefore fails with
"target is busy" (as it already did for incoming and work, whose lock files are held): stop the
daemon first, or ``umount -l``, which the check then sees as a replaced folder.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import structlog

from daemon.clock import iso, utc_now
from daemon.errors import AlreadyRunningError
from daemon.fs import folder_problem, hold_lock

if TYPE_CHECKING:
    import datetime as dt
    from pathlib import Path

log = structlog.get_logger("infarctwatch.folders")

_Identity = tuple[int, int] | None


class FolderLostError(Exception):
    """A folder the daemon owns vanished and cannot be made again; the message names it."""


@dataclass(frozen=True)
class Recovery:
    """One recovery: when, which folders (config keys) and what had happened to them."""

    at: dt.datetime
    folders: tuple[str, ...]
    what: tuple[str, ...]
    """Per folder: ``missing`` (deleted) or ``replaced`` (another folder, or unmounted)."""


_NOT_A_FOLDER = (-1, -1)


def _identity(path: Path, *, folder: bool = True) -> _Identity:
    """``(st_dev, st_ino)``; None when missing; `_NOT_A_FOLDER` for a file in a folder's place."""
    try:
        info = path.stat()
    except OSError:
        return None
    if folder and not stat.S_ISDIR(info.st_mode):
        return _NOT_A_FOLDER
    return (info.st_dev, info.st_ino)


_ATTEMPTS = 5
_PAUSE_S = 0.2


class FolderGuard:
    """The owned folders, their identities and their locks; a context manager for the locks.

    ``folders`` are ``(config key, path)`` pairs, parents before children; ``locks`` are
    ``(lock file, what it guards)`` pairs, held from `__enter__` to `__exit__`.
    """

    def __init__(self, folders: list[tuple[str, Path]], locks: list[tuple[Path, str]]) -> None:
        unique = {path: key for key, path in reversed(folders)}  # the first key of each path
        self._folders = [(key, path) for path, key in reversed(unique.items())]
        self._order = {path: index for index, (_, path) in enumerate(self._folders)}
        self._locks = locks
        self._stack = contextlib.ExitStack()
        self._identities: dict[Path, _Identity] = {}
        self._lock_files: dict[Path, _Identity] = {}
        self._held: list[int] = []
        self._lock = threading.Lock()
        self._recoveries = 0
        self._last: Recovery | None = None

    def __enter__(self) -> Self:
        """Take every lock and remember every folder's identity (call after preflight)."""
        for path, what in self._locks:
            self._stack.enter_context(hold_lock(path, what))
        self._remember()
        return self

    def _remember(self) -> None:
        """Note each folder's identity, and hold it open so that its inode number stays its own.

        A deleted folder's inode number is soon reused by the next one created (a folder made
        again in its place could look the same); an open descriptor keeps the deleted one alive.
        """
        self._close_folders()
        for _, path in self._folders:
            with contextlib.suppress(OSError):
                self._held.append(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        self._identities = {path: _identity(path) for _, path in self._folders}
        self._lock_files = {path: _identity(path, folder=False) for path, _ in self._locks}

    def _close_folders(self) -> None:
        for fd in self._held:
            os.close(fd)
        self._held.clear()

    def __exit__(self, *exc: object) -> None:
        self._close_folders()
        self._stack.close()

    def check(self, claims_in_flight: int = 0) -> tuple[str, ...]:
        """Recover every folder that vanished or was replaced; return their config keys.

        Raises:
            FolderLostError: a folder cannot be created or written to, or its lock is taken.
        """
        changed = self._changed()
        if not changed:
            return ()
        for attempt in range(_ATTEMPTS):  # a deletion may still be under way (``rm -r``)
            if attempt:
                again = {path for _, path, _ in changed}
                changed += [c for c in self._changed() if c[1] not in again]
                changed.sort(key=lambda c: self._order[c[1]])
            try:
                self._make_again(changed)
                break
            except FolderLostError:
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(_PAUSE_S)
        self._remember()
        keys = tuple(dict.fromkeys(key for key, _, _ in changed))
        changes = tuple(f"{key}: {why}" for key, _, why in changed)
        with self._lock:
            self._recoveries += 1
            self._last = Recovery(utc_now(), keys, changes)
        log.error(
            "folder_replaced",
            folders=list(keys),
            changes=list(changes),
            claims_in_flight=claims_in_flight,
            note="recreated; files claimed from a vanished folder get an error report",
        )
        return keys

    def _make_again(self, changed: list[tuple[str, Path, str]]) -> None:
        """Create the changed folders (parents first) and take their locks again.

        A lock taken is remembered at once, so that a second attempt does not take it twice.

        Raises:
            FolderLostError: naming the folder that cannot be made, or the lock that is taken.
        """
        for key, path, _ in changed:
            problem = folder_problem(path)
            if problem is not None:
                msg = f"the folder '{key}' ({path}) vanished and cannot be made again: {problem}"
                raise FolderLostError(msg)
        for lock, what in self._locks:
            now = _identity(lock, folder=False)
            if now is not None and now == self._lock_files.get(lock):
                continue  # still (or already again) ours
            try:
                self._stack.enter_context(hold_lock(lock, what))
            except (AlreadyRunningError, OSError) as exc:
                raise FolderLostError(str(exc)) from exc
            self._lock_files[lock] = _identity(lock, folder=False)

    def _changed(self) -> list[tuple[str, Path, str]]:
        """The folders missing or not the ones remembered: ``(key, path, what happened)``.

        A held lock file that is gone or another file marks its folder replaced too: the lock
        keeps its inode alive, so unlike a folder's inode number, it cannot be reused by a folder
        made again in its place.
        """
        changed = [
            (key, path, "missing" if now is None else "replaced")
            for key, path in self._folders
            if (now := _identity(path)) != self._identities.get(path)
        ]
        seen = {path for _, path, _ in changed}
        for lock in self._locks:
            lock_path = lock[0]
            if lock_path.parent in seen or (
                _identity(lock_path, folder=False) == self._lock_files.get(lock_path)
            ):
                continue
            key = next((k for k, p in self._folders if p == lock_path.parent), "?")
            changed.append((key, lock_path.parent, "replaced"))
        return changed

    def to_status(self) -> dict[str, Any]:
        """The ``folders`` field of the status file."""
        with self._lock:
            last = self._last
            return {
                "recoveries": self._recoveries,
                "last_recovery": None
                if last is None
                else {
                    "at": iso(last.at),
                    "folders": list(last.folders),
                    "changes": list(last.what),
                },
            }
