"""The claim area: a file is taken by one atomic rename and put away once its report is written.

The daemon claims (`ClaimArea.claim`, called by the watcher through `daemon.service.dispatch`);
the scan worker that wrote the report puts the file away (`ClaimArea.finish`).

The claim area lives inside the incoming folder, so a claim is a same-file-system ``rename`` even
on a network share, and it is hidden (a dot folder), so intake never sees it::

    <incoming>/.infarctwatch/
        lock                                 held by the running daemon (`daemon.fs.hold_lock`)
        processing/<claim-id>~<name>         claimed, report not yet written
        done/<name>, failed/<name>           outcome "keep": the file stays on this file system

``<claim-id>`` is time-ordered with a random suffix, so two files of the same name never collide
in processing/, and ``<name>`` is the file's path relative to the incoming folder with ``%`` and
``/`` escaped (``%25``, ``%2F``), so the original name, sub-folders included, comes back exactly.
A claim is one ``rename`` and putting it away one more: no folder per claim (a ``mkdir`` and an
``rmdir`` each cost more than the rename on ext4). A name too long for one directory entry gets
a claim folder instead: ``processing/<claim-id>/<name>``.

Whatever a crash leaves in processing/ is taken up again at the next start (`ClaimArea.recover`);
the report's name depends only on content and name, so redoing a scan replaces its report instead
of adding a second one.

Outcomes (``outcome.success`` / ``outcome.failure``):

* ``move``: to ``<work>/done/<name>`` or ``<work>/failed/<name>`` (copied safely across devices);
* ``keep``: to ``<incoming>/.infarctwatch/done/`` or ``failed/``: the file stays on the incoming
  file system under its name, out of intake's way, with no copy (cheap on a network share);
* ``delete``: removed once the report is durable.

A name already used in a destination by a *different* file gets a ``~N`` suffix; never replaced.

`ClaimArea.unclaim` undoes a claim: the file goes back into incoming under its name (``~N`` when a
new file took that name meanwhile), for a file found truncated or empty that was still being
written (`daemon.intake.recheck`).
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
import secrets
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from daemon.fs import move_into, remove_empty_parents
from daemon.records import Claim

if TYPE_CHECKING:
    from daemon.config import OutcomeConfig

PROCESSING = "processing"
_SEPARATOR = "~"
_FLAT = re.compile(r"(?P<id>[0-9a-f]{16}-[0-9a-f]{6})~(?P<name>.+)", re.DOTALL)
_NAME_MAX = 255


def _claim_id() -> str:
    return f"{time.time_ns():016x}-{secrets.token_hex(3)}"


def flat_name(claim_id: str, name: str) -> str | None:
    """The entry ``<claim-id>~<escaped name>`` of a claim; ``None`` when it would be too long."""
    entry = claim_id + _SEPARATOR + name.replace("%", "%25").replace("/", "%2F")
    return entry if len(os.fsencode(entry)) <= _NAME_MAX else None


def _unflatten(entry: str) -> tuple[str, str] | None:
    match = _FLAT.fullmatch(entry)
    if match is None:
        return None
    return match["id"], match["name"].replace("%2F", "/").replace("%25", "%")


class ClaimArea:
    """``<incoming>/.infarctwatch``: claims files and puts them away."""

    def __init__(self, incoming: Path, work: Path, outcome: OutcomeConfig) -> None:
        self.incoming = incoming
        self.root = incoming / ".infarctwatch"
        self.processing = self.root / PROCESSING
        self._outcome = outcome
        self._destinations = {
            ("move", True): work / "done",
            ("move", False): work / "failed",
            ("keep", True): self.root / "done",
            ("keep", False): self.root / "failed",
        }

    def folders(self) -> list[Path]:
        """Every folder this area writes into (checked and created at start-up)."""
        used = {(self._outcome.success, True), (self._outcome.failure, False)}
        return [self.processing, *(self._destinations[k] for k in sorted(used) if k[0] != "delete")]

    def claim(self, path: Path) -> Claim | None:
        """Take ``path`` (inside incoming) by renaming it into processing/.

        Returns ``None`` when the file is gone (taken by an earlier event, or removed).

        Raises:
            OSError: the rename failed for another reason (permissions); the file stays put.
        """
        name = path.relative_to(self.incoming).as_posix()
        claim_id = _claim_id()
        target = self._place(claim_id, name)
        try:
            path.rename(target)
        except OSError as exc:
            self._unplace(target)
            if isinstance(exc, FileNotFoundError):
                return None
            raise
        return Claim(claim_id, target, name, dt.datetime.now(dt.UTC), time.monotonic())

    def unclaim(self, claim: Claim) -> Path:
        """Put a claimed file back into incoming; return where it went.

        Never replaces a file: a name taken meanwhile gives ``stem~N.ext``. The move is a hard
        link then an unlink (atomic, refused when the name exists); where links are not
        supported, a rename after checking that the name is free.

        Raises:
            OSError: the file cannot be put back (it stays claimed).
        """
        target = self.incoming / claim.name
        target.parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 100_000):
            try:
                os.link(claim.path, target, follow_symlinks=False)
            except FileExistsError:
                target = target.with_name(f"{Path(claim.name).stem}~{n}{target.suffix}")
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                if os.path.lexists(target):
                    target = target.with_name(f"{Path(claim.name).stem}~{n}{target.suffix}")
                    continue
                claim.path.rename(target)
            else:
                claim.path.unlink()
            self.tidy(claim)
            return target
        raise FileExistsError(errno.EEXIST, "no free name left", str(target))

    def _place(self, claim_id: str, name: str) -> Path:
        """Where a claim goes: its flat entry, or a new claim folder for a long name."""
        entry = flat_name(claim_id, name)
        if entry is not None:
            return self.processing / entry
        target = self.processing / claim_id / name
        target.parent.mkdir(parents=True)
        return target

    def _unplace(self, target: Path) -> None:
        """Remove the emptied claim folder of ``target``, if it had one (see `_place`)."""
        if target.parent != self.processing:
            remove_empty_parents(target.parent, self.processing)

    def recover(self) -> list[Claim]:
        """The claims a previous run left unfinished, oldest first; clears empty claim folders.

        A stray entry directly in processing/ (not named like a claim) is claimed anew.
        """
        claims: list[Claim] = []
        if not self.processing.is_dir():
            return claims
        now, mono = dt.datetime.now(dt.UTC), time.monotonic()
        for entry in sorted(self.processing.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                claims.extend(self._recover_folder(entry, now, mono))
                continue
            parsed = _unflatten(entry.name)
            if parsed is not None:
                claims.append(Claim(parsed[0], entry, parsed[1], now, mono))
                continue
            claim_id = _claim_id()
            adopted = self._place(claim_id, entry.name)
            entry.rename(adopted)
            claims.append(Claim(claim_id, adopted, entry.name, now, mono))
        return claims

    def _recover_folder(self, folder: Path, now: dt.datetime, mono: float) -> list[Claim]:
        """The files of one claim folder (the layout for long names, and older versions')."""
        claims = []
        for parent, folders, files in os.walk(folder):
            for name in sorted(files + [f for f in folders if Path(parent, f).is_symlink()]):
                path = Path(parent, name)
                claims.append(
                    Claim(folder.name, path, path.relative_to(folder).as_posix(), now, mono)
                )
        if not claims:
            _remove_empty_tree(folder)
        return claims

    def finish(self, claim: Claim, *, ok: bool, sha256: str | None) -> str:
        """Apply the configured outcome to a reported claim; return what was done.

        Returns ``"moved"``, ``"kept"``, ``"deleted"`` or ``"duplicate"`` (an identical file was
        already at the destination, so this copy was dropped). A non-regular file that cannot be
        renamed across devices is deleted. The claim's emptied folder is removed.
        """
        action = self._outcome.success if ok else self._outcome.failure
        if action == "delete":
            claim.path.unlink(missing_ok=True)
            done = "deleted"
        else:
            folder = self._destinations[(action, ok)]
            landed, duplicate = move_into(
                claim.path, folder, PurePosixPath(claim.name), sha256=sha256
            )
            if duplicate:
                done = "duplicate"
            elif landed is None:
                done = "deleted"
            else:
                done = "moved" if action == "move" else "kept"
        self.tidy(claim)
        return done

    def tidy(self, claim: Claim) -> None:
        """Remove a finished claim's emptied folders, when it has any (a long name's claim)."""
        self._unplace(claim.path)


def _remove_empty_tree(folder: Path) -> None:
    for parent, _folders, _files in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        try:
            Path(parent).rmdir()
        except OSError:
            return
