"""File-system primitives the pipeline stands on: atomic writes, safe moves, folder checks, locks.

* `write_atomic`: a temporary file in the same folder, fsync, rename, fsync the folder. A reader
  sees the old file or the new one, never half of one; after a power cut, one or the other.
* `write_atomic_group`: the same for many files of one folder with one flush of the file system
  (``syncfs``) and one folder fsync for all of them: a group commit.
* `move_into`: move a file into a folder without ever replacing a *different* file. A same-device
  move is one ``rename``; across devices the file is copied to a temporary name, fsynced, renamed
  into place, the folder fsynced, and only then is the source unlinked. A crash at any point
  leaves at least one complete copy.
* `hold_lock`: an exclusive ``flock`` so that two daemons never share a claim area or work folder.

Temporary files are dotfiles ending in `TMP_SUFFIX`: readers of the reports folder skip dotfiles,
and `remove_stale_temporaries` clears what a crash left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.errors import AlreadyRunningError
from daemon.shared.bundle import sha256_file

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import PurePosixPath

TMP_SUFFIX = ".iwtmp"
_COPY_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_TEMPORARY_TAG = secrets.token_hex(4)  # once per process: no random bytes drawn per file
_TEMPORARY_NUMBERS = itertools.count()


def _temporary_beside(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (always created with ``O_EXCL`` all the same)."""
    number = next(_TEMPORARY_NUMBERS)
    return path.with_name(f".{path.name}.{_TEMPORARY_TAG}{number:x}{TMP_SUFFIX}")


def write_atomic(path: Path, data: bytes, *, sync_folder: bool = True) -> None:
    """Write ``data`` to ``path`` so that it is never partially visible.

    ``sync_folder=False`` leaves the folder fsync to the caller, who can then make a whole batch
    of renames durable with one `fsync_dir` (a group commit).
    """
    tmp = _temporary_beside(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_folder:
        fsync_dir(path.parent)


def _load_syncfs() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # not glibc/Linux: fall back to one fsync per file
        return None


_SYNCFS = _load_syncfs()


def sync_filesystem(fd: int) -> bool:
    """Flush every file of the file system holding ``fd`` to storage (Linux ``syncfs(2)``).

    Returns False where ``syncfs`` does not exist (the caller fsyncs file by file instead).
    Linux reports write-back errors through it since 5.8.

    Raises:
        OSError: the flush failed.
    """
    if _SYNCFS is None:
        return False
    if _SYNCFS(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return True


def write_atomic_group(files: Sequence[tuple[Path, bytes]]) -> list[OSError | None]:
    """Write many files of one folder atomically, durable with one flush for all of them.

    Each file goes to a temporary dotfile beside it; then one ``syncfs`` makes all of them
    durable (a file-by-file fsync where there is no ``syncfs``); then each is renamed into place
    and the folder is fsynced once. Per file this costs a third of the CPU of `write_atomic`
    (measured on ext4: 0.05 ms against 0.15 ms) and one journal commit for the whole group. Files
    are created and renamed relative to one open descriptor of the folder (``openat``,
    ``renameat``): the kernel does not walk the folder's path again for each of them.

    Returns one entry per file: ``None`` once it is durable in place, else the error that kept it
    out (its temporary file is removed). A failed flush fails the whole group.
    """
    errors: list[OSError | None] = [None] * len(files)
    if not files:
        return errors
    folder = os.path.dirname(files[0][0]) or "."  # noqa: PTH120 - a str: names are relative to it
    try:
        dir_fd = _open_folder(folder)
    except OSError as exc:
        return [exc] * len(files)
    try:
        staged: list[tuple[int, str, str]] = []
        for index, (path, data) in enumerate(files):
            name = _name_in(path, folder)
            try:
                staged.append((index, _write_temporary_at(dir_fd, name, data), name))
            except OSError as exc:
                errors[index] = exc
        if not staged:
            return errors
        try:
            _flush(dir_fd, [tmp for _, tmp, _ in staged])
        except OSError as exc:
            return _abandon(dir_fd, staged, errors, exc)
        for index, tmp, name in staged:
            try:
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError as exc:
                errors[index] = exc
                _unlink_at(dir_fd, tmp)
        try:
            os.fsync(dir_fd)
        except OSError as exc:
            errors = [error or exc for error in errors]
    finally:
        os.close(dir_fd)
    return errors


def _open_folder(folder: str) -> int:
    """A descriptor of ``folder``, making it again first when it vanished (`intake.folders`)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        return os.open(folder, flags)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)  # noqa: PTH103 - a str, as openat wants
        return os.open(folder, flags)


def _name_in(path: Path, folder: str) -> str:
    """``path``'s name when it is in ``folder``, else its absolute path.

    ``openat`` ignores the folder's descriptor for an absolute path: a file of another folder
    still lands where it was asked to.
    """
    text = os.fspath(path)
    head, _, name = text.rpartition("/")
    if (head or ".") == folder and name:
        return name
    return os.path.abspath(text)  # noqa: PTH100 - a str for openat


def _write_temporary_at(dir_fd: int, name: str, data: bytes) -> str:
    """``data`` in a new temporary dotfile beside ``name`` (not flushed); removed on failure."""
    head, _, tail = name.rpartition("/")
    number = next(_TEMPORARY_NUMBERS)
    tmp = f"{head}{'/' if head else ''}.{tail}.{_TEMPORARY_TAG}{number:x}{TMP_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        _unlink_at(dir_fd, tmp)
        raise
    finally:
        os.close(fd)
    return tmp


def _unlink_at(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _flush(dir_fd: int, temporaries: list[str]) -> None:
    """Make ``temporaries`` (names in the folder ``dir_fd``) durable.

    One ``syncfs``; an fsync each where there is none.
    """
    if sync_filesystem(dir_fd):
        return
    for tmp in temporaries:
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _abandon(
    dir_fd: int,
    staged: list[tuple[int, str, str]],
    errors: list[OSError | None],
    error: OSError,
) -> list[OSError | None]:
    for index, tmp, _ in staged:
        errors[index] = error
        _unlink_at(dir_fd, tmp)
    return errors


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files a crash left in ``folder`` (recursively); return how many."""
    removed = 0
    for path in folder.rglob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def _same_content(existing: Path, size: int, sha256: str | None) -> bool:
    try:
        info = existing.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_size != size or sha256 is None:
        return False
    return sha256_file(existing) == sha256


def _free_target(target: Path, size: int, sha256: str | None) -> tuple[Path, bool]:
    """The first name from ``target``, ``stem~1.ext``, ``stem~2.ext``... that is free.

    Returns ``(path, True)`` instead when a file with the same content already holds one of
    those names: the move is then a duplicate that can simply be dropped.
    """
    for candidate in numbered_names(target):
        if not os.path.lexists(candidate):
            return candidate, False
        if _same_content(candidate, size, sha256):
            return candidate, True
    raise FileExistsError(errno.EEXIST, "no free name left", str(target))


def numbered_names(target: Path) -> Iterator[Path]:
    """``target``, then ``stem~1.ext``, ``stem~2.ext``...: names tried so as never to replace."""
    yield target
    for n in range(1, 100_000):
        yield target.with_name(f"{target.stem}~{n}{target.suffix}")


def write_new(path: Path, data: bytes) -> Path:
    """Write ``data`` durably at ``path`` or, when taken, at the first free `numbered_names`.

    Never replaces a file: each name is taken with a hard link, which fails on an existing name
    (no race). The temporary is removed, or cleaned by `remove_stale_temporaries` after a crash.
    Returns the path written.
    """
    tmp = _temporary_beside(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        for candidate in numbered_names(path):
            try:
                os.link(tmp, candidate)
            except FileExistsError:
                continue
            return candidate
        raise FileExistsError(errno.EEXIST, "no free name left", str(path))
    finally:
        tmp.unlink(missing_ok=True)


def _copy_regular(src: Path, target: Path) -> None:
    tmp = _temporary_beside(target)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(src, flags), "rb") as fin, tmp.open("xb") as fout:
            shutil.copyfileobj(fin, fout, _COPY_CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, tmp, follow_symlinks=False)
        tmp.rename(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def link_or_copy(src: Path, target: Path) -> bool:
    """Give the regular file ``src`` a second name ``target``: a hard link, or a copy elsewhere.

    A copy (another file system, or links not allowed) is fsynced and renamed into place. An
    existing ``target`` is left as it is. Returns False when ``target`` already existed.
    """
    try:
        os.link(src, target, follow_symlinks=False)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        if os.path.lexists(target):
            return False
        _copy_regular(src, target)
    return True


def move_into(
    src: Path, folder: Path, name: PurePosixPath, *, sha256: str | None = None
) -> tuple[Path | None, bool]:
    """Move ``src`` to ``folder / name`` (sub-folders created), never replacing a different file.

    A name already taken by another file gets a ``~N`` suffix; one taken by a file with the same
    content (``sha256`` of ``src``) makes ``src`` a duplicate, which is removed. A non-regular
    file (symlink, fifo, socket) that cannot be renamed across devices is removed, never opened.
    This is safe because one daemon alone writes into ``folder`` (`hold_lock`).

    Returns ``(where the file now is or None when it was removed, whether it was a duplicate)``.
    """
    info = src.lstat()
    target, duplicate = _free_target(folder / name, info.st_size, sha256)
    if duplicate:
        src.unlink()
        return target, True
    try:
        _rename_into(src, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    else:
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    landed: Path | None = target
    if stat.S_ISREG(info.st_mode):
        _copy_regular(src, target)
    elif stat.S_ISLNK(info.st_mode):
        target.symlink_to(src.readlink())
    else:
        landed = None
    src.unlink()
    return landed, False


def _rename_into(src: Path, target: Path) -> None:
    """``rename``, creating the target's folders when they are missing.

    Tried after the rename fails, not before: the folders almost always exist, and checking
    first costs more than the rename.
    """
    try:
        src.rename(target)
    except FileNotFoundError:
        if target.parent.is_dir():
            raise  # the source is gone
        target.parent.mkdir(parents=True, exist_ok=True)
        src.rename(target)


def remove_empty_parents(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents while they are empty, up to but excluding ``stop``."""
    current = path
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent


def folder_problem(folder: Path) -> str | None:
    """Create ``folder`` if missing and prove it takes a durable write; a problem or ``None``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{folder} cannot be created: {exc.strerror or exc}"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    probe = folder / f".write-test-{secrets.token_hex(4)}{TMP_SUFFIX}"
    try:  # a page of data, made durable: a full disk still lets an empty file be created
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, bytes(4096))
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        return f"{folder} is not writable: {exc.strerror or exc}"
    return None


@contextlib.contextmanager
def hold_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (which records our pid) for the ``with`` block.

    A file system without locks (some network shares) is tolerated: the block runs unlocked.

    Raises:
        AlreadyRunningError: another process holds the lock.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            msg = f"another infarctwatch daemon (pid {owner}) already uses {what} ({path})"
            raise AlreadyRunningError(msg) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)


NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "ceph", "glusterfs"}
)


def filesystem_type(path: Path, mounts: Path = Path("/proc/self/mounts")) -> str | None:
    """The type of the file system holding ``path`` (``ext4``, ``nfs4``, ``cifs``...), if known."""
    try:
        lines = mounts.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind
