"""Which paths in the incoming folder are scans, and how to list them.

A path is a candidate when, relative to the incoming folder, no part of it starts with a dot
(dotfiles, and the claim area ``.infarctwatch``), its name does not end with one of
``watch.ignore_suffixes`` (compared case-insensitively: ``.part``, ``.tmp``... files still being
written), and it is directly in the folder unless ``watch.recursive``. Anything that is not a
folder qualifies: symlinks, fifos and sockets are claimed too, so that they get an error report
and leave the folder, but they are never followed or opened.

What is not a candidate is *ignored*; `IntakeRules.ignored_reason` says why (``dotfile``,
``ignored_suffix``, ``folder`` when not recursive), so that the watcher can say so once per name.
The claim area ``.infarctwatch`` is never counted as ignored.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CLAIM_AREA = ".infarctwatch"
"""The daemon's own folder inside incoming (`intake.claims`): never a candidate, never ignored."""


class Offer(enum.Enum):
    """What the pipeline did with a path offered to it."""

    CLAIMED = "claimed"
    BUSY = "busy"
    """No free slot (``pipeline.max_pending``) or shutting down: the file stays where it is."""
    GONE = "gone"
    """The path no longer exists (claimed through another event, or removed)."""
    FAILED = "failed"
    """The claim rename failed (permissions): the file stays, a later scan retries."""


@dataclass(frozen=True)
class IntakeRules:
    """The candidate rules for one incoming folder."""

    root: Path
    recursive: bool
    ignore_suffixes: tuple[str, ...]
    _prefix: str = field(init=False, repr=False, compare=False)
    _suffixes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Precomputed once: `admits` runs for every inotify event.
        object.__setattr__(self, "_prefix", str(self.root).rstrip("/") + "/")
        object.__setattr__(self, "_suffixes", tuple(s.lower() for s in self.ignore_suffixes))

    def admits(self, path: Path) -> bool:
        """True when ``path`` (absolute, inside ``root``) is a candidate by name."""
        text = str(path)
        if not text.startswith(self._prefix):
            return False
        parts = text[len(self._prefix) :].split("/")
        if not parts[-1] or any(part.startswith(".") or not part for part in parts):
            return False
        if len(parts) > 1 and not self.recursive:
            return False
        return not parts[-1].lower().endswith(self._suffixes)

    def ignored_reason(self, path: Path, *, is_dir: bool) -> str | None:
        """Why ``path`` (inside ``root``) is not taken, or None when it is or is ours.

        ``None`` also for the claim area and what is inside it, and for sub-folders when
        recursive (their content is looked at instead).
        """
        text = str(path)
        if not text.startswith(self._prefix):
            return None
        parts = text[len(self._prefix) :].split("/")
        if parts[0] == CLAIM_AREA or not parts[-1]:
            return None
        if any(part.startswith(".") for part in parts):
            return "dotfile"
        if is_dir:
            return None if self.recursive else "folder"
        if len(parts) > 1 and not self.recursive:
            return "in_sub_folder"
        return "ignored_suffix" if parts[-1].lower().endswith(self._suffixes) else None

    def scan(
        self, on_ignored: Callable[[Path, str], None] | None = None
    ) -> Iterator[tuple[Path, os.stat_result]]:
        """Every candidate now in the folder (never following links), with its ``lstat``.

        ``on_ignored`` is told of every name that is not a candidate, with its reason.
        """
        pending = [self.root]
        while pending:
            folder = pending.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            for entry in entries:
                path = Path(entry.path)
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    if is_dir and self.recursive and not entry.name.startswith("."):
                        pending.append(path)
                        continue
                    if entry.name.startswith(".") or is_dir:
                        self._tell(on_ignored, path, is_dir=is_dir)
                        continue
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if self.admits(path):
                    yield path, info
                else:
                    self._tell(on_ignored, path, is_dir=False)

    def _tell(
        self, on_ignored: Callable[[Path, str], None] | None, path: Path, *, is_dir: bool
    ) -> None:
        if on_ignored is not None:
            reason = self.ignored_reason(path, is_dir=is_dir)
            if reason is not None:
                on_ignored(path, reason)
