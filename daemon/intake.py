"""Which paths in the incoming folder are scans, and how to list them.

A path is a candidate when, relative to the incoming folder, no part of it starts with a dot
(dotfiles, and the claim area ``.infarctwatch``), its name does not end with one of
``watch.ignore_suffixes`` (compared case-insensitively: ``.part``, ``.tmp``... files still being
written), and it is directly in the folder unless ``watch.recursive``. Anything that is not a
folder qualifies: symlinks, fifos and sockets are claimed too, so that they get an error report
and leave the folder, but they are never followed or opened.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


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

    def scan(self) -> Iterator[tuple[Path, os.stat_result]]:
        """Every candidate now in the folder (never following links), with its ``lstat``."""
        pending = [self.root]
        while pending:
            folder = pending.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if self.recursive:
                            pending.append(path)
                        continue
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if self.admits(path):
                    yield path, info
