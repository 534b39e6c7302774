"""Hot reload: put a new model in service without a restart, never losing or failing a scan.

When ``model.path`` is a models folder managed by ``infarctwatch deploy`` (``current`` ->
``versions/<v>``), `ModelReloader` watches it: inotify on the folder (deploy replaces ``current``
with an atomic rename of a new symlink, an event in that folder) and, as the safety net, a look
every `CHECK_INTERVAL_S` at where ``current`` resolves. SIGHUP (``systemctl reload``) asks for a
check too, whatever ``model.path`` is: a bundle folder rewritten in place is reloaded when its
manifest changed, and a version that failed is tried again.

A new bundle is loaded *beside* the one in service: verified (sha256 of every file, then the
signature policy), read, checked against its labels and preprocessing, and compiled once as the
workers will compile it (`daemon.model.holder.load_model`). Only then does
`daemon.model.holder.ModelHolder.swap` put it in service: batches already sent finish on the old
model (their reports name the old version), every later batch names the new one and each worker
compiles it before scanning. Nothing waits meanwhile.

A bundle that fails any step is logged (``model_reload_failed``), recorded for the status file
(``model.reload_error``: version, path, message, time) and not tried again until ``current``
changes or SIGHUP asks; the model in service keeps serving. Pointing ``current`` back at the model
in service (``infarctwatch deploy rollback``) clears the error.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    EventsLostEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from daemon.clock import iso, utc_now
from daemon.errors import BundleError, EngineError, KeyFileError, SignatureError
from daemon.intake.watcher import WatchdogLogBridge, stop_observer
from daemon.model.holder import load_model
from daemon.shared.bundle import (
    MANIFEST,
    designated_bundle,
    is_models_folder,
    load_bundle,
    sha256_file,
)
from daemon.shared.signature import SignaturePolicy, check_signature
from daemon.threads import StageThread

if TYPE_CHECKING:
    import datetime as dt
    from pathlib import Path

    from watchdog.observers.api import BaseObserver

    from daemon.config import DaemonConfig
    from daemon.model.holder import ModelHolder
    from daemon.records import ModelInfo

log = structlog.get_logger("infarctwatch.reload")

CHECK_INTERVAL_S = 2.0
"""How often ``current`` is resolved even without an inotify event (the safety net)."""


def _version_of(folder: Path) -> str:
    """The version a bundle folder claims (its manifest), else the folder's name."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return folder.name
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return version if isinstance(version, str) and version else folder.name


@dataclass(frozen=True)
class ReloadFailure:
    """A bundle that could not be put in service."""

    version: str
    path: Path
    message: str
    at: dt.datetime


@dataclass(frozen=True)
class ReloadState:
    """What the status file says about the model in service and its reloads."""

    model: ModelInfo
    """The model in service, changed together with the counters below (a consistent snapshot)."""
    watching: Path | None
    """The models folder watched for a new ``current``; None when ``model.path`` is not one."""
    loaded_at: dt.datetime
    """When the model in service was put in service (start-up or the last reload)."""
    signature: str
    reloads: int
    """Successful reloads since start-up."""
    last_reload_at: dt.datetime | None
    error: ReloadFailure | None
    """The last failed reload, until a later one succeeds or ``current`` points back at the model
    in service."""

    def to_status(self) -> dict[str, Any]:
        """The ``model`` fields this adds to the status file."""
        error = self.error
        return {
            "loaded_at": iso(self.loaded_at),
            "signature": self.signature,
            "watching": None if self.watching is None else str(self.watching),
            "reloads": self.reloads,
            "last_reload_at": iso(self.last_reload_at),
            "reload_error": None
            if error is None
            else {
                "version": error.version,
                "path": str(error.path),
                "message": error.message,
                "at": iso(error.at),
            },
        }


class _Handler(FileSystemEventHandler):
    def __init__(self, reloader: ModelReloader) -> None:
        self._reloader = reloader

    def on_any_event(self, _event: FileSystemEvent) -> None:
        self._reloader.request()


class ModelReloader(StageThread):
    """Watches ``model.path`` and puts a new model in service when it designates a new bundle.

    A context manager: entering starts the watch and the reload thread, leaving stops and joins
    both. `request` (any thread, e.g. on SIGHUP) asks for a check now.
    """

    def __init__(
        self,
        config: DaemonConfig,
        holder: ModelHolder,
        signature: str,
        *,
        check_interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        super().__init__("infarctwatch-reload")
        self._config = config
        self._holder = holder
        self._policy = SignaturePolicy(config.model.public_key, config.model.require_signature)
        self._interval = check_interval_s
        path = config.model.path
        self._models = path if is_models_folder(path) else None
        self._state = ReloadState(
            holder.current.info, self._models, utc_now(), signature, 0, None, None
        )
        self._lock = threading.Lock()
        self._forced = False
        self._observer: BaseObserver | None = None
        self._log_bridge = WatchdogLogBridge("models", self._stop.is_set)

    # -- lifecycle ---------------------------------------------------------------------------------

    def _starting(self) -> None:
        if self._models is not None:
            self._observer = self._watch(self._models)

    def _stopping(self) -> None:
        """Stop watching; a reload under way finishes (or is dropped before its swap)."""
        if self._observer is not None:
            stop_observer(self._observer, self._log_bridge)
            self._observer = None

    def _watch(self, folder: Path) -> BaseObserver | None:
        bridge = logging.getLogger("watchdog")
        try:
            from watchdog.observers.inotify import InotifyObserver  # noqa: PLC0415 - Linux only

            observer = InotifyObserver()
        except (ImportError, OSError) as exc:
            self._unwatched(folder, exc)
            return None
        try:
            observer.schedule(
                _Handler(self),
                str(folder),
                recursive=False,
                event_filter=[
                    FileCreatedEvent,
                    FileMovedEvent,
                    FileDeletedEvent,
                    DirCreatedEvent,
                    DirMovedEvent,
                    DirDeletedEvent,
                    EventsLostEvent,  # an inotify overflow: look again (on_any_event)
                ],
            )
            bridge.addHandler(self._log_bridge)
            observer.start()
        except OSError as exc:  # e.g. the inotify instance or watch limit is reached
            observer.stop()  # also ends the inotify reader thread schedule() started
            bridge.removeHandler(self._log_bridge)
            self._unwatched(folder, exc)
            return None
        return observer

    def _unwatched(self, folder: Path, exc: BaseException) -> None:
        log.warning(
            "models_folder_not_watched",
            folder=str(folder),
            error=str(exc),
            check_interval_s=self._interval,
            note="a new current is still noticed by the periodic check",
        )

    # -- inputs ------------------------------------------------------------------------------------

    def _ended_normally(self) -> bool:
        return self._stop.is_set()  # the reload thread ends only when asked to

    def request(self, *, force: bool = False) -> None:
        """Check ``model.path`` now; ``force`` (SIGHUP) also retries a version that failed."""
        if force:
            with self._lock:
                self._forced = True
        self._wakeup.set()

    def snapshot(self) -> ReloadState:
        """The reload state now."""
        with self._lock:
            return self._state

    # -- the reload thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wakeup.wait(self._interval)
            self._wakeup.clear()
            if self._stop.is_set():
                return
            with self._lock:
                forced, self._forced = self._forced, False
            try:
                self._check(forced=forced)
            except Exception:  # e.g. the models folder vanished: look again later
                log.exception("model_check_failed")

    def _check(self, *, forced: bool) -> None:
        target = designated_bundle(self._config.model.path)
        serving = self._holder.current.bundle
        if target == serving.path and not (forced and self._changed_in_place(serving.path)):
            self._back_to_serving()
            if forced:
                log.info("model_unchanged", version=serving.version, path=str(target))
            return
        failed = self.snapshot().error
        if not forced and failed is not None and failed.path == target:
            return  # tried already: wait for another version or a SIGHUP
        self._load(target)

    def _changed_in_place(self, folder: Path) -> bool:
        try:
            return sha256_file(folder / MANIFEST) != self._holder.current.bundle.sha256
        except OSError:
            return True  # let the load attempt say what is wrong

    def _back_to_serving(self) -> None:
        with self._lock:
            error = self._state.error
            if error is None:
                return
            self._state = replace(self._state, error=None)
        log.info(
            "model_reload_error_cleared",
            failed_version=error.version,
            serving=self._holder.current.info.version,
            note="model.path designates the model in service again",
        )

    def _load(self, target: Path) -> None:
        started = time.monotonic()
        version = _version_of(target)
        serving = self._holder.current.info
        log.info("model_reload_started", version=version, serving=serving.version)
        try:
            bundle = load_bundle(target)
            signature = check_signature(bundle.path, self._policy)
            model = load_model(
                bundle,
                self._config.inference,
                self._config.model.variant,
                self._config.thresholds,
            )
        except (BundleError, EngineError) as exc:
            self._failed(target, version, str(exc))
            return
        except (SignatureError, KeyFileError) as exc:
            self._failed(target, version, f"model bundle {target} is refused: {exc}")
            return
        except Exception as exc:  # a bad model must never take the service down
            log.exception("model_reload_crashed", version=version)
            self._failed(target, version, f"unexpected {type(exc).__name__}: {exc}")
            return
        if self._stop.is_set():
            log.info("model_reload_dropped", version=version, note="the service is stopping")
            return
        now = utc_now()
        with self._lock:  # the swap and the state change are seen together
            old = self._holder.swap(model)
            self._state = ReloadState(
                model.info, self._models, now, signature, self._state.reloads + 1, now, None
            )
        info = model.info
        log.info(
            "model_reloaded",
            model=info.name,
            model_version=info.version,
            previous=old.info.version,
            bundle_sha256=info.bundle_sha256,
            variant=info.variant,
            variant_setting=self._config.model.variant,
            signature=signature,
            precision=info.precision,
            device=info.device_used,
            load_ms=round((time.monotonic() - started) * 1000.0, 1),
            segmenter=None if info.segmenter is None else info.segmenter.variant,
            **model.rule.log_fields(),
        )

    def _failed(self, target: Path, version: str, message: str) -> None:
        failure = ReloadFailure(version, target, message, utc_now())
        with self._lock:
            self._state = replace(self._state, error=failure)
        log.error(
            "model_reload_failed",
            version=version,
            path=str(target),
            error=message,
            serving=self._holder.current.info.version,
            note="the model in service keeps serving; fix or roll back, or SIGHUP to retry",
        )
