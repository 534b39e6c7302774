"""Install, activate, roll back and prune bundles in a deploy-managed models folder.

Layout (``model.path`` in the daemon's config points at ``DIR``)::

    DIR/versions/<version>/   one verified, unpacked bundle per version, never modified
    DIR/current               symlink -> versions/<version>: what the daemon loads
    DIR/history.jsonl         one JSON line per activation: what rollback follows

Guarantees:

* a refused bundle changes nothing: it is unpacked and verified in ``DIR/.staging-*``, which is
  removed whatever happens; only a verified bundle is renamed into ``versions/``;
* ``current`` is switched atomically (a new symlink under a temporary name, then ``rename(2)``):
  a reader sees the old version or the new one, never neither;
* one deploy at a time per folder (``flock`` on ``DIR`` itself, so no lock file appears);
* a version names one exact bundle: the same version with other content is refused, the same
  bundle twice changes nothing;
* pruning keeps the ``keep`` most recently activated versions, and never the current one nor the
  one ``rollback`` would go back to.

Library code for the CLI and for the daemon's model inbox: no TensorFlow, no OpenVINO.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from daemon.errors import BundleError
from daemon.shared.bundle import CURRENT, MANIFEST, load_bundle, sha256_file
from daemon.shared.signature import NO_POLICY, SignaturePolicy
from deploy.archive import DEFAULT_LIMITS, Limits, copy_folder, is_archive, read_manifest, unpack
from deploy.errors import ModelsDirError, RollbackError, VersionConflictError
from deploy.verify import Verified, verify_folder

if TYPE_CHECKING:
    from collections.abc import Iterator

log = structlog.get_logger(__name__)

VERSIONS = "versions"
HISTORY = "history.jsonl"
DEFAULT_KEEP = 3
_TEMP_PREFIXES = (".staging-", ".trash-", ".current-")
_LOCK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class InstallResult:
    """What `install_bundle` did."""

    action: str
    """``installed`` (new version), ``activated`` (already there, now current), ``unchanged``
    (already current) or ``repaired`` (an installed copy failed verification and was replaced)."""
    version: str
    name: str
    sha256: str
    path: Path
    previous: str | None
    """The version that was current before (None for a first install)."""
    signature: str
    pruned: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstalledVersion:
    """One entry of `list_versions`."""

    version: str
    name: str
    created_at: str
    sha256: str
    installed_at: str
    current: bool
    previous: bool
    """True for the version ``rollback`` would return to."""


@dataclass(frozen=True)
class ModelsState:
    """The models folder at a glance."""

    path: Path
    current: str | None
    previous: str | None
    versions: tuple[InstalledVersion, ...]


# ------------------------------------------------------------------------------------ helpers


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the models folder itself (no lock file to leave behind)."""
    fd = os.open(models_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + _LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ModelsDirError(
                        f"{models_dir} is locked by another deploy for {_LOCK_TIMEOUT_S:.0f} s"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _owner(models_dir: Path) -> tuple[int, int] | None:
    """The (uid, gid) new files must get: the models folder's, when running as root."""
    st = models_dir.stat()
    if os.geteuid() != 0 or (st.st_uid, st.st_gid) == (0, 0):
        return None
    return st.st_uid, st.st_gid


def _chown_tree(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    os.lchown(path, *owner)
    if path.is_dir() and not path.is_symlink():
        for child in path.rglob("*"):
            os.lchown(child, *owner)


def current_version(models_dir: Path) -> str | None:
    """The version ``DIR/current`` points at, or None.

    Raises:
        ModelsDirError: ``current`` exists but is not a symlink into ``versions/``.
    """
    link = Path(models_dir) / CURRENT
    if not link.is_symlink():
        if link.exists():
            raise ModelsDirError(f"{link} is not a symlink: deploy manages it, move it away")
        return None
    target = link.readlink()
    if target.parent != Path(VERSIONS) or not target.name:
        raise ModelsDirError(f"{link} points at {target}, not at {VERSIONS}/<version>")
    return target.name


def _read_history(models_dir: Path) -> list[dict[str, Any]]:
    """Every well-formed history record, oldest first (a torn last line is skipped)."""
    try:
        lines = (Path(models_dir) / HISTORY).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records: list[dict[str, Any]] = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("version"), str):
            records.append(record)
    return records


def _last_record(history: list[dict[str, Any]], version: str) -> dict[str, Any] | None:
    return next((r for r in reversed(history) if r["version"] == version), None)


def rollback_target(models_dir: Path) -> str | None:
    """The version ``rollback`` (without ``--to``) would make current, or None."""
    current = current_version(models_dir)
    if current is None:
        return None
    record = _last_record(_read_history(models_dir), current)
    previous = record.get("previous") if record else None
    return previous if isinstance(previous, str) and previous != current else None


def _append_history(
    models_dir: Path, record: dict[str, Any], owner: tuple[int, int] | None
) -> None:
    path = Path(models_dir) / HISTORY
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    if owner is not None:
        os.lchown(path, *owner)


def _point_current(models_dir: Path, version: str, owner: tuple[int, int] | None) -> None:
    """Atomically repoint ``current`` at ``versions/<version>``."""
    tmp = Path(tempfile.mktemp(prefix=".current-", dir=models_dir))  # noqa: S306 (symlink() fails on an existing name: no race)
    tmp.symlink_to(f"{VERSIONS}/{version}")
    if owner is not None:
        os.lchown(tmp, *owner)
    tmp.replace(Path(models_dir) / CURRENT)
    _fsync_dir(models_dir)


def _activate(
    models_dir: Path,
    version: str,
    *,
    action: str,
    sha256: str,
    previous: str | None,
    owner: tuple[int, int] | None,
) -> None:
    old = current_version(models_dir)
    _point_current(models_dir, version, owner)
    record = {
        "time": _now(),
        "action": action,
        "version": version,
        "sha256": sha256,
        "from": old,
        "previous": previous,
    }
    _append_history(models_dir, record, owner)
    log.info("model_activated", models_dir=str(models_dir), version=version, action=action, old=old)


def _remove_tree(path: Path) -> None:
    """Rename out of the way first, so a half-deleted folder never looks like a version."""
    trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=path.parent.parent))
    path.replace(trash / "x")
    shutil.rmtree(trash)


def _clean_temporaries(models_dir: Path) -> None:
    """Remove what an interrupted deploy left (called with the lock held)."""
    for child in models_dir.iterdir():
        if child.name.startswith(_TEMP_PREFIXES):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _ensure_dir(path: Path) -> list[Path]:
    """Create ``path`` and missing parents; return what was created, deepest last."""
    created: list[Path] = []
    for parent in [*reversed(path.parents), path]:
        if not parent.exists():
            parent.mkdir(mode=0o755)
            created.append(parent)
    return created


def _installed_ok(path: Path, sha256: str) -> bool:
    """True when ``path`` holds exactly the bundle with this manifest sha256, intact."""
    try:
        return sha256_file(path / MANIFEST) == sha256 and load_bundle(path).sha256 == sha256
    except (OSError, BundleError):
        return False


# -------------------------------------------------------------------------------------- install


def install_bundle(
    source: Path,
    models_dir: Path,
    *,
    policy: SignaturePolicy = NO_POLICY,
    keep: int = DEFAULT_KEEP,
    limits: Limits = DEFAULT_LIMITS,
) -> InstallResult:
    """Verify a bundle (``.tar.gz`` or folder), install it as ``versions/<version>``, activate it.

    Raises:
        UnsafeArchiveError: the archive holds an entry that must not be unpacked.
        VerificationError: checksum, unlisted file, format version, contents.
        SignatureError, KeyFileError: the signature policy refuses the bundle.
        VersionConflictError: this version is installed with different content.
        ModelsDirError: the models folder is not one deploy manages.

        On every error the models folder is exactly as it was.
    """
    source, models_dir = Path(source), Path(models_dir).absolute()
    if keep < 1:
        raise ValueError("keep must be at least 1")
    created = _ensure_dir(models_dir)
    try:
        with _locked(models_dir):
            return _install_locked(source, models_dir, policy, keep, limits)
    except BaseException:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


def _install_locked(
    source: Path, models_dir: Path, policy: SignaturePolicy, keep: int, limits: Limits
) -> InstallResult:
    current = current_version(models_dir)  # refuses a models folder deploy does not manage
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=models_dir))
    try:
        if is_archive(source):
            root = unpack(source, staging, limits=limits)
        else:
            root = copy_folder(source, staging, limits=limits)
        verified = verify_folder(root, policy, source=source)
        return _commit(models_dir, root, verified, current, keep)
    except BaseException as exc:
        log.warning("bundle_refused", source=str(source), error=type(exc).__name__)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _commit(
    models_dir: Path, root: Path, verified: Verified, current: str | None, keep: int
) -> InstallResult:
    version = verified.version
    target = models_dir / VERSIONS / version
    owner = _owner(models_dir)
    action = "installed"
    if target.exists() or target.is_symlink():
        if _installed_ok(target, verified.sha256):
            action = "unchanged" if current == version else "activated"
        elif sha256_file_or_none(target / MANIFEST) == verified.sha256:
            action = "repaired"
        else:
            raise VersionConflictError(
                f"version {version} is already installed in {models_dir} with different content "
                f"(manifest sha256 {sha256_file_or_none(target / MANIFEST)}, this bundle "
                f"{verified.sha256}): give the new bundle a new version"
            )
    result = InstallResult(
        action=action,
        version=version,
        name=verified.name,
        sha256=verified.sha256,
        path=target,
        previous=current,
        signature=verified.signature,
    )
    if action == "unchanged":
        log.info("bundle_unchanged", models_dir=str(models_dir), version=version)
        return result
    if action in ("installed", "repaired"):
        _chown_tree(root, owner)
        root.chmod(0o755)
        versions = models_dir / VERSIONS
        if not versions.exists():
            versions.mkdir(mode=0o755)
            _chown_tree(versions, owner)
        if action == "repaired":
            _remove_tree(target)
        root.replace(target)
        _fsync_dir(versions)
        log.info(
            "bundle_installed",
            models_dir=str(models_dir),
            version=version,
            sha256=verified.sha256,
            signature=verified.signature,
        )
    previous = current if current != version else rollback_target(models_dir)
    _activate(
        models_dir,
        version,
        action="install",
        sha256=verified.sha256,
        previous=previous,
        owner=owner,
    )
    pruned = _prune_locked(models_dir, keep)
    _clean_temporaries(models_dir)
    return dataclasses.replace(result, pruned=pruned)


def sha256_file_or_none(path: Path) -> str | None:
    """sha256 of a file, or None when it cannot be read."""
    try:
        return sha256_file(path)
    except OSError:
        return None


# ------------------------------------------------------------------------------------- rollback


def rollback(models_dir: Path, *, to: str | None = None) -> tuple[str, str]:
    """Make the previous version current again (or ``to``); return ``(old, new)``.

    Without ``to``, rollback walks back the chain of activations: v1, v2, v3 installed, then
    rollback gives v2, rollback again gives v1.

    Raises:
        RollbackError: nothing to roll back to, or ``to`` is not installed.
        ModelsDirError: the models folder is not one deploy manages.
    """
    models_dir = Path(models_dir).absolute()
    if not models_dir.is_dir():
        raise RollbackError(f"{models_dir} does not exist")
    with _locked(models_dir):
        current = current_version(models_dir)
        history = _read_history(models_dir)
        if to is None:
            target = rollback_target(models_dir)
            if target is None:
                raise RollbackError(
                    f"no previous version recorded in {models_dir / HISTORY}; installed: "
                    f"{', '.join(_version_names(models_dir)) or 'none'} (use --to VERSION)"
                )
            record = _last_record(history, target)
            previous = record.get("previous") if record else None
            if previous == target:
                previous = None
        else:
            target, previous = to, current
        if target == current:
            raise RollbackError(f"{target} is already the current version")
        path = models_dir / VERSIONS / target
        if not path.is_dir():
            raise RollbackError(
                f"version {target} is not installed in {models_dir}; installed: "
                f"{', '.join(_version_names(models_dir)) or 'none'}"
            )
        sha = sha256_file_or_none(path / MANIFEST) or ""
        _activate(
            models_dir,
            target,
            action="rollback",
            sha256=sha,
            previous=previous,
            owner=_owner(models_dir),
        )
    return current or "", target


# ------------------------------------------------------------------------------- list and prune


def _version_names(models_dir: Path) -> list[str]:
    versions = Path(models_dir) / VERSIONS
    if not versions.is_dir():
        return []
    return sorted(
        p.name
        for p in versions.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    )


def _recency(models_dir: Path) -> list[str]:
    """Installed versions, most recently activated first (unknown to the history: by mtime)."""
    history = _read_history(models_dir)
    order = {record["version"]: i for i, record in enumerate(history)}
    names = _version_names(models_dir)

    def key(name: str) -> tuple[int, float]:
        mtime = (Path(models_dir) / VERSIONS / name).stat().st_mtime
        return order.get(name, -1), mtime

    return sorted(names, key=key, reverse=True)


def _prune_locked(models_dir: Path, keep: int) -> tuple[str, ...]:
    protected = {current_version(models_dir), rollback_target(models_dir)}
    ordered = _recency(models_dir)
    keep_set = set(ordered[:keep]) | protected
    removed = []
    for name in ordered:
        if name not in keep_set:
            _remove_tree(models_dir / VERSIONS / name)
            removed.append(name)
    if removed:
        log.info("versions_pruned", models_dir=str(models_dir), removed=removed)
    return tuple(removed)


def prune(models_dir: Path, *, keep: int = DEFAULT_KEEP) -> tuple[str, ...]:
    """Remove all but the ``keep`` most recent versions (never current or the rollback target)."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    models_dir = Path(models_dir).absolute()
    with _locked(models_dir):
        removed = _prune_locked(models_dir, keep)
        _clean_temporaries(models_dir)
    return removed


def list_versions(models_dir: Path) -> ModelsState:
    """Every installed version with its manifest facts, newest activation first.

    Raises:
        ModelsDirError: the models folder does not exist or ``current`` is not deploy's.
    """
    models_dir = Path(models_dir).absolute()
    if not models_dir.is_dir():
        raise ModelsDirError(f"{models_dir} does not exist")
    current = current_version(models_dir)
    previous = rollback_target(models_dir)
    history = _read_history(models_dir)
    entries = []
    for name in _recency(models_dir):
        folder = models_dir / VERSIONS / name
        manifest = read_manifest(folder)
        first = next((r for r in history if r["version"] == name), None)
        installed = (
            str(first.get("time"))
            if first
            else dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.UTC).isoformat(
                timespec="seconds"
            )
        )
        entries.append(
            InstalledVersion(
                version=name,
                name=str(manifest.get("name", "?")),
                created_at=str(manifest.get("created_at", "?")),
                sha256=sha256_file_or_none(folder / MANIFEST) or "?",
                installed_at=installed,
                current=name == current,
                previous=name == previous,
            )
        )
    return ModelsState(models_dir, current, previous, tuple(entries))
