"""The model inbox: copy a bundle archive into a folder, and the daemon installs and serves it.

``model.inbox`` names a folder (``/var/lib/infarctwatch/inbox`` on a device) where a bundle
``.tar.gz`` made by ``infarctwatch deploy pack`` can be copied by any means: a USB stick, rsync,
scp, config management. An archive is taken once it is complete, by the incoming folder's rules
(`daemon.intake.watcher`): closed by its writer or renamed into the folder, or found by a scan and
unchanged for ``watch.stable_s``; dotfiles (rsync's temporary names) and names ending in one of
``watch.ignore_suffixes`` (``x.tar.gz.part``) wait. It is then installed exactly as
``infarctwatch deploy install`` would (`deploy.install.install_bundle`: safe unpacking, sha256 of
every file, the device's signature policy, ``versions/<v>``, an atomic switch of ``current``), and
the hot reload (`daemon.model.reload`) puts it in service::

    <inbox>/x.tar.gz                       dropped here
    <inbox>/.processing/<id>/x.tar.gz      being installed (taken up again after a crash)
    <inbox>/installed/x.tar.gz + .json     installed, or already installed; the note says what
    <inbox>/rejected/x.tar.gz + .json      refused; the note says why

Nothing is deleted: every archive ends in ``installed/`` or ``rejected/`` beside a JSON note, and
a name already used there is never replaced (the newcomer becomes ``x.tar~1.gz``).

The inbox needs ``model.path`` to be a models folder (``current`` -> ``versions/<v>``). Otherwise
it is disabled: the log and the status file say why, and archives stay where they are.

Why the install code stays in ``deploy`` and is imported here, lazily: installing is unpacking an
untrusted archive, versioning, switching ``current``, recording history and pruning, under one
``flock`` shared with the CLI. One implementation keeps a version installed from the inbox and one
installed by ``deploy install`` (even at the same moment) exactly alike; ``deploy`` ships in the
same package and imports neither OpenVINO nor TensorFlow. Only a daemon with an inbox imports it.
"""

from __future__ import annotations

import json
import secrets
import stat
import threading
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Self

import structlog

from daemon.clock import iso, utc_now
from daemon.fs import (
    fsync_dir,
    move_into,
    remove_empty_parents,
    remove_stale_temporaries,
    write_new,
)
from daemon.intake.rules import IntakeRules, Offer
from daemon.intake.watcher import Watcher
from daemon.shared.bundle import is_models_folder
from daemon.shared.signature import SignaturePolicy

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from daemon.config import DaemonConfig

log = structlog.get_logger("infarctwatch.inbox")

PROCESSING = ".processing"
INSTALLED = "installed"
REJECTED = "rejected"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
_ACTIONS = {
    "installed": "installed and activated",
    "activated": "already installed; activated",
    "unchanged": "already installed and current; nothing changed",
    "repaired": "the installed copy was damaged; replaced and activated",
}


class ModelInbox:
    """Installs the bundle archives dropped into ``model.inbox``. A context manager."""

    def __init__(self, config: DaemonConfig, *, on_installed: Callable[[], None]) -> None:
        if config.model.inbox is None:
            msg = "ModelInbox needs model.inbox"
            raise ValueError(msg)
        self._config = config
        self._root = config.model.inbox
        self._on_installed = on_installed
        self._policy = SignaturePolicy(config.model.public_key, config.model.require_signature)
        self._taking = threading.Lock()
        """One archive at a time (the observer and the scanner both offer)."""
        self._lock = threading.Lock()
        """Guards the counters: never held during an install, so status reads never wait."""
        self._counts = {INSTALLED: 0, REJECTED: 0}
        self._last: dict[str, Any] | None = None
        self._watcher: Watcher | None = None
        self.disabled: str | None = None
        """Why the inbox does not install anything (None when it is enabled)."""
        if not is_models_folder(config.model.path):
            self.disabled = (
                "model.path is not a models folder managed by 'infarctwatch deploy' (current -> "
                "versions/<v>): the inbox installs into one"
            )

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self.disabled is not None:
            log.error(
                "model_inbox_disabled",
                inbox=str(self._root),
                reason=self.disabled,
                note="archives dropped there stay untouched",
            )
            return self
        for folder in (PROCESSING, INSTALLED, REJECTED):
            (self._root / folder).mkdir(exist_ok=True)
            remove_stale_temporaries(self._root / folder)  # a note a crash left half-written
        rules = IntakeRules(
            self._root, recursive=False, ignore_suffixes=self._config.watch.ignore_suffixes
        )
        self._watcher = Watcher(
            self._config.watch, rules, self.offer, before_first_scan=self._resume, name="inbox"
        )
        self._watcher.__enter__()
        log.info("model_inbox_watched", inbox=str(self._root), models=str(self._config.model.path))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching; an install under way finishes first."""
        if self._watcher is not None:
            self._watcher.close()

    @property
    def alive(self) -> bool:
        """False when the inbox's scanner thread died."""
        return self._watcher is None or self._watcher.alive

    def snapshot(self) -> dict[str, Any]:
        """The ``inbox`` section of the status file."""
        with self._lock:
            return {
                "path": str(self._root),
                "enabled": self.disabled is None,
                "disabled_reason": self.disabled,
                "installed": self._counts[INSTALLED],
                "rejected": self._counts[REJECTED],
                "last": self._last,
            }

    # -- taking archives ---------------------------------------------------------------------------

    def _resume(self, _stop: threading.Event) -> None:
        """Install again what a crash left in .processing/ (installing is idempotent)."""
        processing = self._root / PROCESSING
        with self._taking:  # the observer may already be offering new archives
            for path in sorted(processing.rglob("*")):
                if path.is_symlink() or not path.is_dir():
                    self._process(path)
            for folder in sorted(processing.iterdir()):
                remove_empty_parents(folder, processing)

    def offer(self, path: Path) -> Offer:
        """Take a complete file from the inbox and install it (watcher threads)."""
        with self._taking:
            if self._watcher is not None and self._watcher.stopping:
                return Offer.BUSY
            # A folder per claim: a second archive of the same name never lands on a leftover.
            folder = self._root / PROCESSING / secrets.token_hex(6)
            claimed = folder / path.name
            try:
                folder.mkdir()
                path.rename(claimed)  # one taker per archive, even with two watcher threads
            except FileNotFoundError:
                remove_empty_parents(folder, folder.parent)
                return Offer.GONE
            except OSError as exc:
                remove_empty_parents(folder, folder.parent)
                log.warning("inbox_claim_failed", error=exc.strerror or str(exc), errno=exc.errno)
                return Offer.FAILED
            self._process(claimed)
            return Offer.CLAIMED

    def _process(self, archive: Path) -> None:
        """Install ``archive`` (``_taking`` held), then file it with its note."""
        info = archive.lstat()
        if not stat.S_ISREG(info.st_mode):
            self._reject(archive, "NotARegularFile", "not a regular file (a link, fifo...)")
            return
        if not archive.name.lower().endswith(ARCHIVE_SUFFIXES):
            self._reject(
                archive,
                "NotABundleArchive",
                "not a bundle archive: the inbox takes NAME.tar.gz files made by "
                "'infarctwatch deploy pack'",
            )
            return
        log.info("model_inbox_installing", archive=archive.name, bytes=info.st_size)
        from deploy.errors import DeployError  # noqa: PLC0415 - only a daemon with an inbox
        from deploy.install import install_bundle  # noqa: PLC0415

        models = self._config.model.path
        if models is None:  # pragma: no cover - the inbox is disabled without a models folder
            return
        try:
            result = install_bundle(archive, models, policy=self._policy)
        except DeployError as exc:
            self._reject(archive, type(exc).__name__, str(exc))
            return
        except OSError as exc:
            self._reject(archive, type(exc).__name__, exc.strerror or str(exc))
            return
        except Exception as exc:  # filed as rejected, never left half-done
            log.exception("model_inbox_crashed", archive=archive.name)
            self._reject(archive, type(exc).__name__, f"unexpected error: {exc}")
            return
        reason = _ACTIONS.get(result.action, result.action)
        if result.action != "unchanged":
            reason += f"; current -> versions/{result.version} (was {result.previous or 'none'})"
        note = {
            "bundle": {"name": result.name, "version": result.version, "sha256": result.sha256},
            "install": {
                "action": result.action,
                "previous": result.previous,
                "signature": result.signature,
                "pruned": list(result.pruned),
                "models": str(models),
            },
        }
        self._file(archive, INSTALLED, reason, note, version=result.version)
        log.info(
            "model_inbox_installed",
            archive=archive.name,
            version=result.version,
            action=result.action,
            previous=result.previous,
            signature=result.signature,
        )
        self._on_installed()

    def _reject(self, archive: Path, error: str, message: str) -> None:
        log.error("model_inbox_rejected", archive=archive.name, error=error, reason=message)
        self._file(archive, REJECTED, message, {"error": error}, version=None)

    def _file(
        self,
        archive: Path,
        outcome: str,
        reason: str,
        details: dict[str, Any],
        *,
        version: str | None,
    ) -> None:
        """Move ``archive`` into installed/ or rejected/ and write its note beside it."""
        now = utc_now()
        folder = self._root / outcome
        try:
            landed, _ = move_into(archive, folder, PurePosixPath(archive.name))
            document = {
                "archive": archive.name,
                "outcome": outcome,
                "reason": reason,
                "at": iso(now),
                **details,
            }
            if landed is not None:
                data = json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"
                write_new(landed.with_name(landed.name + ".json"), data)
            fsync_dir(folder)
            remove_empty_parents(archive.parent, self._root / PROCESSING)
        except OSError as exc:  # the archive stays in .processing/: filed at the next start
            log.exception("model_inbox_file_failed", archive=archive.name, error=str(exc))
        last = {
            "archive": archive.name,
            "outcome": outcome,
            "version": version,
            "reason": reason,
            "at": iso(now),
        }
        with self._lock:
            self._counts[outcome] += 1
            self._last = last
