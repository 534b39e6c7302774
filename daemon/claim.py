"""Stage 1: claim a file by one atomic rename, and put it away once its report is written.

The claim area lives inside the incoming folder, so a claim is a same-file-system ``rename`` even
on a network share, and it is hidden (a dot folder), so intake never sees it::

    <incoming>/.infarctwatch/
        lock                                 held by the running daemon (`daemon.files.hold_lock`)
        processing/<claim-id>/<name>         claimed, report not yet written
        done/<name>, failed/<name>           outcome "keep": the file stays on this file system

Each claim gets its own ``<claim-id>`` folder (time-ordered, random suffix), so two files of the
same name can never collide in processing/ and the original name, sub-folders included, is kept
exactly. Whatever a crash leaves in processing/ is taken up again at the next start
(`ClaimArea.recover`); the report's name depends only on content and name, so redoing a scan
replaces its report instead of adding a second one.

Outcomes (``outcome.success`` / ``outcome.failure``):

* ``move``: to ``<work>/done/<name>`` or ``<work>/failed/<name>`` (copied safely across devices);
* ``keep``: to ``<incoming>/.infarctwatch/done/`` or ``failed/``: the file stays on the incoming
  file system under its name, out of intake's way, with no copy (cheap on a network share);
* ``delete``: removed once the report is durable.

A name already used in a destination by a *different* file gets a ``~N`` suffix; never replaced.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from daemon.files import move_into, remove_empty_parents
from daemon.jobs import Claim

if TYPE_CHECKING:
    from daemon.config import OutcomeConfig

PROCESSING = "processing"


def _claim_id() -> str:
    return f"{time.time_ns():016x}-{secrets.token_hex(3)}"


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
        """Take ``path`` (inside incoming) by renaming it into a fresh claim folder.

        Returns ``None`` when the file is gone (taken by an earlier event, or removed).

        Raises:
            OSError: the rename failed for another reason (permissions); the file stays put.
        """
        name = path.relative_to(self.incoming).as_posix()
        claim_id = _claim_id()
        folder = self.processing / claim_id
        target = folder / name
        target.parent.mkdir(parents=True)
        try:
            path.rename(target)
        except OSError as exc:
            remove_empty_parents(target.parent, self.processing)
            if isinstance(exc, FileNotFoundError):
                return None
            raise
        return Claim(claim_id, target, name, dt.datetime.now(dt.UTC), time.monotonic())

    def recover(self) -> list[Claim]:
        """The claims a previous run left unfinished, oldest first; clears empty claim folders.

        A stray file directly in processing/ (not in a claim folder) is given a claim folder.
        """
        claims: list[Claim] = []
        if not self.processing.is_dir():
            return claims
        now, mono = dt.datetime.now(dt.UTC), time.monotonic()
        for entry in sorted(self.processing.iterdir()):
            if not entry.is_dir() or entry.is_symlink():
                adopted = self.processing / _claim_id() / entry.name
                adopted.parent.mkdir()
                entry.rename(adopted)
                claims.append(Claim(adopted.parent.name, adopted, entry.name, now, mono))
                continue
            found = False
            for parent, folders, files in os.walk(entry):
                for name in sorted(files + [f for f in folders if Path(parent, f).is_symlink()]):
                    path = Path(parent, name)
                    rel = path.relative_to(entry).as_posix()
                    claims.append(Claim(entry.name, path, rel, now, mono))
                    found = True
            if not found:
                _remove_empty_tree(entry)
        return claims

    def finish(self, claim: Claim, *, ok: bool, sha256: str | None, tidy: bool = True) -> str:
        """Apply the configured outcome to a reported claim; return what was done.

        Returns ``"moved"``, ``"kept"``, ``"deleted"`` or ``"duplicate"`` (an identical file was
        already at the destination, so this copy was dropped). A non-regular file that cannot be
        renamed across devices is deleted. With ``tidy=False`` the claim's emptied folder is left
        for the caller to remove with `tidy` (the pipeline does it off its writer thread: an
        ``rmdir`` costs milliseconds on some file systems).
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
        if tidy:
            self.tidy(claim)
        return done

    def tidy(self, claim: Claim) -> None:
        """Remove a finished claim's empty folder (and empty parents up to processing/)."""
        remove_empty_parents(claim.path.parent, self.processing)


def _remove_empty_tree(folder: Path) -> None:
    for parent, _folders, _files in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        try:
            Path(parent).rmdir()
        except OSError:
            return
