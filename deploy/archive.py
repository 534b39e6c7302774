"""Pack a bundle folder into a ``.tar.gz`` and unpack one without trusting it.

Packing is reproducible: members sorted, owner 0/0, modes 0644/0755, every timestamp set to the
bundle's ``created_at``, gzip header without name or time. The same bundle always gives the same
bytes, so an archive's sha256 is a stable name for it.

Unpacking never hands the archive to ``tarfile``'s extraction code. Every member is inspected
first (all problems are collected and reported at once), then a second pass re-checks each member
while writing it with ``O_EXCL | O_NOFOLLOW``: only folders and regular files are ever created,
only below the destination, within a member-count and byte budget. Python's ``data`` filter is
consulted too, as a second opinion, not as the defence.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from daemon.shared.bundle import MANIFEST, SIGNATURE
from deploy.errors import UnsafeArchiveError

if TYPE_CHECKING:
    from collections.abc import Iterator

ARCHIVE_SUFFIX = ".tar.gz"
_TOP = "."
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What an archive may hold. A real bundle has about ten files and tens of megabytes."""

    max_members: int = 256
    max_bytes: int = 2 << 30


DEFAULT_LIMITS = Limits()


def is_archive(path: Path) -> bool:
    """True for an existing file (a bundle archive), False for a folder."""
    return Path(path).is_file()


def find_bundle_folder(path: Path) -> Path:
    """The bundle folder inside a training run (``RUN_DIR/bundle``), or ``path`` itself."""
    path = Path(path)
    if (path / "bundle" / MANIFEST).is_file():
        return path / "bundle"
    return path


# ------------------------------------------------------------------------------------------ pack


def pack(
    folder: Path, output: Path, *, top: str, mtime: int, signature: bytes | None = None
) -> Path:
    """Write ``folder`` as a reproducible ``output`` (.tar.gz) under the top-level folder ``top``.

    ``signature``, when given, is stored as ``top/manifest.sig`` (replacing one in the folder), so
    signing while packing never writes into a training run. The archive is written to a temporary
    file beside ``output`` and renamed into place: an interrupted pack leaves no half archive.
    """
    folder, output = Path(folder), Path(output)
    files = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink()
    )
    if signature is not None:
        files = [f for f in files if f != SIGNATURE]
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".pack-", suffix=ARCHIVE_SUFFIX, dir=output.parent)
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            dirs = sorted({str(PurePosixPath(f).parent) for f in files} - {"."})
            for name in ["", *dirs]:
                info = _info(f"{top}/{name}".rstrip("/"), mtime, tarfile.DIRTYPE, 0o755)
                tar.addfile(info)
            for name in files:
                info = _info(f"{top}/{name}", mtime, tarfile.REGTYPE, 0o644)
                with (folder / name).open("rb") as fh:
                    info.size = os.fstat(fh.fileno()).st_size
                    tar.addfile(info, fh)
            if signature is not None:
                info = _info(f"{top}/{SIGNATURE}", mtime, tarfile.REGTYPE, 0o644)
                info.size = len(signature)
                tar.addfile(info, io.BytesIO(signature))
        tmp.chmod(0o644)
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output


def _info(name: str, mtime: int, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def manifest_mtime(manifest: dict[str, object]) -> int:
    """The bundle's ``created_at`` as a Unix time (0 when it cannot be parsed)."""
    try:
        return int(dt.datetime.fromisoformat(str(manifest.get("created_at"))).timestamp())
    except ValueError:
        return 0


# ---------------------------------------------------------------------------------------- unpack


@dataclass
class _Budget:
    """Running totals of one pass over an archive."""

    limits: Limits
    members: int = 0
    bytes: int = 0
    seen: set[str] = field(default_factory=set)
    names: list[str] = field(default_factory=list)


def _clean_name(raw: str) -> str | None:
    """The member name as a safe relative POSIX path, or None when it is not one."""
    if not raw or "\x00" in raw or "\\" in raw or raw.startswith("/"):
        return None
    parts = [p for p in PurePosixPath(raw).parts if p != "."]
    if ".." in parts:
        return None
    return "/".join(parts) or _TOP


def _link_problem(member: tarfile.TarInfo, name: str) -> str:
    kind = "symlink" if member.issym() else "hardlink"
    target = member.linkname
    base = PurePosixPath(name).parent if member.issym() else PurePosixPath()
    resolved = os.path.normpath(str(base / target)) if not target.startswith("/") else target
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        return f"{name}: {kind} to {target!r} points outside the bundle"
    return f"{name}: {kind} to {target!r} (a bundle holds regular files only)"


def _type_problem(member: tarfile.TarInfo, name: str) -> str | None:
    if member.issym() or member.islnk():
        return _link_problem(member, name)
    if member.ischr() or member.isblk() or member.isfifo():
        return f"{name}: device or fifo entry"
    if member.issparse():
        return f"{name}: sparse file entry"
    if not (member.isreg() or member.isdir()):
        return f"{name}: unsupported entry type {member.type!r}"
    return None


def _check(member: tarfile.TarInfo, budget: _Budget, dest: str) -> list[str]:
    """Every reason not to unpack ``member``; updates the budget."""
    budget.members += 1
    if budget.members > budget.limits.max_members:
        return [f"more than {budget.limits.max_members} members"]
    name = _clean_name(member.name)
    if name is None:
        return [f"{member.name!r}: absolute path, '..' component or malformed name"]
    if name == _TOP:  # the archive's own root folder (``./``, as ``tar -C bundle .`` writes)
        return [] if member.isdir() else [f"{member.name!r}: malformed name"]
    kind = _type_problem(member, name)
    problems = [kind] if kind else []
    if name in budget.seen:
        problems.append(f"{name}: appears twice in the archive")
    budget.seen.add(name)
    budget.names.append(name)
    if member.isreg():
        budget.bytes += member.size
        if budget.bytes > budget.limits.max_bytes:
            problems.append(f"more than {budget.limits.max_bytes} bytes once unpacked")
    if not problems:
        try:  # second opinion only: everything it refuses is refused above already
            tarfile.data_filter(member, dest)
        except tarfile.FilterError as exc:
            problems.append(f"{name}: {exc}")
    return problems


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := tar.next()) is not None:
        yield member


def _open(archive: Path) -> tarfile.TarFile:
    return tarfile.open(archive, mode="r:gz")


_READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


def inspect(archive: Path, *, limits: Limits = DEFAULT_LIMITS) -> str:
    """Check every member of ``archive`` without writing anything; return the bundle's top folder.

    The bundle is either at the top of the archive or inside one top-level folder (what ``pack``
    writes). Returns that folder's name, or ``""`` for a flat archive.

    Raises:
        UnsafeArchiveError: listing every refused member, or saying why the archive is unreadable.
    """
    archive = Path(archive)
    budget = _Budget(limits)
    problems: list[str] = []
    try:
        with _open(archive) as tar:
            for member in _members(tar):
                problems.extend(_check(member, budget, "/nonexistent"))
                if budget.members > limits.max_members or budget.bytes > limits.max_bytes:
                    break
    except _READ_ERRORS as exc:
        raise UnsafeArchiveError(str(archive), [f"not a readable .tar.gz: {exc}"]) from exc
    if problems:
        raise UnsafeArchiveError(str(archive), problems)
    return _bundle_top(archive, budget.names)


def _bundle_top(archive: Path, names: list[str]) -> str:
    if MANIFEST in names:
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST}" in names:
        return next(iter(tops))
    raise UnsafeArchiveError(
        str(archive), [f"no {MANIFEST} at the top of the archive or of its one top-level folder"]
    )


def unpack(archive: Path, dest: Path, *, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Unpack ``archive`` into the existing empty folder ``dest``; return the bundle folder in it.

    Members are inspected first (nothing is written if any is refused), then written one by one,
    each re-checked, so what lands on disk is exactly what was checked even if the archive changed
    in between. On any error ``dest`` may hold a partial tree: the caller owns ``dest`` and
    removes it.

    Raises:
        UnsafeArchiveError: a refused member, or an unreadable archive.
    """
    archive, dest = Path(archive), Path(dest)
    top = inspect(archive, limits=limits)
    budget = _Budget(limits)
    try:
        with _open(archive) as tar:
            for member in _members(tar):
                problems = _check(member, budget, str(dest))
                if problems:
                    raise UnsafeArchiveError(str(archive), problems)
                name = _clean_name(member.name)
                assert name is not None  # noqa: S101 (checked by _check)
                if name == _TOP:
                    continue
                if member.isdir():
                    _mkdirs(dest, name)
                else:
                    _write_member(tar, member, dest, name)
    except _READ_ERRORS as exc:
        raise UnsafeArchiveError(str(archive), [f"not a readable .tar.gz: {exc}"]) from exc
    return dest / top if top else dest


def _mkdirs(dest: Path, name: str) -> Path:
    """Create ``dest/name`` and its parents, refusing to walk through anything but real folders."""
    path = dest
    for part in PurePosixPath(name).parts:
        path /= part
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            if not stat.S_ISDIR(path.lstat().st_mode):
                raise UnsafeArchiveError(str(dest), [f"{name}: crosses a non-folder"]) from None
    return path


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, name: str) -> None:
    parent = PurePosixPath(name).parent
    folder = _mkdirs(dest, str(parent)) if str(parent) != "." else dest
    source = tar.extractfile(member)
    if source is None:  # pragma: no cover (regular members always have data)
        raise UnsafeArchiveError(str(dest), [f"{name}: no data"])
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(folder / PurePosixPath(name).name, flags, 0o644)
    except FileExistsError:
        raise UnsafeArchiveError(str(dest), [f"{name}: already exists"]) from None
    with source, os.fdopen(fd, "wb") as out:
        _copy_exact(source, out, member.size, name)
        out.flush()
        os.fsync(out.fileno())


def _copy_exact(source: IO[bytes], out: IO[bytes], size: int, name: str) -> None:
    remaining = size
    while remaining > 0:
        chunk = source.read(min(_CHUNK, remaining))
        if not chunk:
            raise UnsafeArchiveError(name, [f"{name}: archive ends inside this member"])
        out.write(chunk)
        remaining -= len(chunk)


def copy_folder(source: Path, dest: Path, *, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Copy a bundle folder into the existing empty ``dest``, regular files and folders only.

    Raises:
        UnsafeArchiveError: the folder holds a symlink, device, fifo or socket, or exceeds limits.
    """
    source, dest = Path(source), Path(dest)
    problems: list[str] = []
    entries: list[tuple[str, os.stat_result]] = []
    total = 0
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source).as_posix()
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            entries.append((rel, st))
        elif stat.S_ISREG(st.st_mode):
            entries.append((rel, st))
            total += st.st_size
        else:
            problems.append(f"{rel}: not a regular file (a bundle holds regular files only)")
    if len(entries) > limits.max_members:
        problems.append(f"more than {limits.max_members} entries")
    if total > limits.max_bytes:
        problems.append(f"more than {limits.max_bytes} bytes")
    if problems:
        raise UnsafeArchiveError(str(source), problems)
    for rel, st in entries:
        if stat.S_ISDIR(st.st_mode):
            _mkdirs(dest, rel)
            continue
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with (
            (source / rel).open("rb") as src,
            os.fdopen(os.open(dest / rel, flags, 0o644), "wb") as out,
        ):
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
    return dest


def read_manifest(folder: Path) -> dict[str, object]:
    """The parsed ``manifest.json`` of a folder (not verified), or an empty dict."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
