"""The service shell around the pipeline: start-up checks, the main loop, a bounded drain.

Start-up, in order, each failure stopping the service before it touches a scan:

1. preflight: the public key (if any) is readable, inotify is available; all problems are
   reported together (`ConfigError`). Then every folder exists (created if missing) and is
   writable: a folder that is not (a share not mounted yet, a full or read-only disk) is **waited
   for**, with one ``folder_unavailable`` line naming its key and path, a retry after 1 s, 2, 4...
   at most 30 s apart, the ``waiting`` state in the status file and ``STATUS=`` (and ``READY=1``
   so systemd's start timeout does not kill a daemon that waits), until it works or a stop is
   asked for;
2. the daemon's umask (``service.umask``), then locks on the claim area and the work folder
   (`AlreadyRunningError`);
3. the bundle is verified (sha256 of every file; signature policy) and compiled once as the
   workers will compile it, then dropped (`daemon.model.holder.load_model`: `BundleError`,
   `EngineError`), while the scan worker processes start (`WorkerStartError`);
4. the pipeline and the watcher start; leftovers in processing/ are taken up first, after the
   repeat guard (`daemon.service.attempts`) has counted the deaths of the previous run (a claim that
   reached ``limits.max_attempts`` is reported ``REPEATED_CRASH`` instead); the model
   reloader (`daemon.model.reload`) and, when configured, the model inbox (`daemon.model.inbox`)
   start; then ``READY=1``.

With ``dicom.listen`` set, the DICOM Storage SCP (`daemon.receive.scp`) binds its port right after
the locks are taken (a port in use is a `ConfigError`: exit 2) and writes what it receives into
incoming; it is the first thing stopped, finishing the stores in flight.

The main loop writes the status file, sends ``STATUS=`` and ``WATCHDOG=1`` (only while every stage
thread is alive; storage trouble is a state, ``degraded``, during which the watchdog is still
fed), passes SIGHUP on to the reloader, checks once a second that the folders it owns are still
the ones it started with (`daemon.intake.folders`: recreated and watched again if not; exit 1 if
that is impossible), and waits for `Shutdown.stop`. A stage thread that ends stops the service with
exit code 1 and the final status ``failed`` naming it. Stopping:
``STOPPING=1``, stop watching (incoming, inbox, models folder), let pending scans finish for up to
``service.drain_timeout_s`` (`Shutdown.force` cuts it short), log what was abandoned (it stays in
processing/ for the next start), write the final status.

With ``--once`` (a backfill) neither the reloader, the inbox nor the DICOM receiver runs.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

import structlog

from daemon.clock import iso, utc_now
from daemon.errors import (
    AlreadyRunningError,
    BundleError,
    ConfigError,
    KeyFileError,
    RepeatedCrashError,
    SignatureError,
)
from daemon.fs import (
    NETWORK_FILESYSTEMS,
    filesystem_type,
    folder_problem,
    remove_stale_temporaries,
)
from daemon.intake.claims import ClaimArea
from daemon.intake.folders import FolderGuard, FolderLostError
from daemon.intake.rules import IntakeRules
from daemon.intake.watcher import Watcher
from daemon.model.holder import ModelHolder, ServedModel, load_model
from daemon.model.inbox import ModelInbox
from daemon.model.reload import ModelReloader
from daemon.outbox.sender import OutboxSender
from daemon.outbox.writer import OutboxWriter, staging_folder
from daemon.records import Failure
from daemon.scan.report import VERSION
from daemon.series.tracker import SeriesTracker
from daemon.service.attempts import AttemptLog, TakeUp
from daemon.service.dispatch import Pipeline
from daemon.service.sdnotify import Notifier
from daemon.service.status import (
    STATUS_INTERVAL_S,
    STATUS_MIN_GAP_S,
    STATUS_VERSION,
    Counters,
    write_status,
)
from daemon.service.storage import FIRST_RETRY_S, MAX_RETRY_S
from daemon.shared.bundle import designated_bundle, load_bundle
from daemon.shared.decode import DecodeLimits
from daemon.shared.signature import SignaturePolicy, check_signature, load_public_key
from daemon.workers.process import WorkerProcess, close_workers, start_workers

if TYPE_CHECKING:
    import threading
    from pathlib import Path

    from daemon.config import DaemonConfig, ListenConfig
    from daemon.receive.scp import DicomReceiver
    from daemon.records import Claim, ModelInfo
    from daemon.service.signals import Shutdown
    from daemon.shared.bundle import Bundle

log = structlog.get_logger("infarctwatch.service")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_FORCED = 130


def preflight(config: DaemonConfig) -> None:
    """Check the public key and the watch mode; all problems at once (folders: `folder_problems`).

    Raises:
        ConfigError: listing every problem with the key it comes from.
    """
    problems: list[str] = []
    if config.model.public_key is not None:
        try:
            load_public_key(config.model.public_key)
        except KeyFileError as exc:
            problems.append(f"At 'model.public_key': {exc}")
    if config.watch.mode == "inotify":
        try:
            from watchdog.observers.inotify import InotifyObserver  # noqa: F401, PLC0415
        except ImportError:
            problems.append("At 'watch.mode': inotify is not available here; use polling")
    if problems:
        raise ConfigError(problems)


def folder_problems(config: DaemonConfig, area: ClaimArea) -> list[tuple[str, Path, str]]:
    """Create every folder the daemon writes into and prove it writable.

    Returns ``(config key, folder, problem)`` for each one that is not (one entry per problem).
    """
    folders: list[tuple[str, Path]] = [
        ("incoming", config.incoming),
        ("reports", config.reports),
        ("work", config.work),
    ]
    folders += [("incoming" if config.incoming in f.parents else "work", f) for f in area.folders()]
    status_key = "service.status_file" if config.service.status_file else "work"
    folders.append((status_key, config.status_path.parent))
    if config.inference.cache_dir is not None:
        folders.append(("inference.cache_dir", config.inference.cache_dir))
    if config.model.inbox is not None:
        folders.append(("model.inbox", config.model.inbox))
    if config.outputs.dicom.outbox is not None:
        outbox = config.outputs.dicom.outbox
        folders += [
            ("outputs.dicom.outbox", outbox),
            ("outputs.dicom.outbox", staging_folder(outbox)),
        ]
    problems: list[tuple[str, Path, str]] = []
    for key, folder in folders:
        if any(bad == folder or bad in folder.parents for _, bad, _ in problems):
            continue  # inside a folder already named: one line for both
        problem = folder_problem(folder)
        if problem:
            problems.append((key, folder, problem))
    return problems


def owned_folders(config: DaemonConfig, area: ClaimArea) -> list[tuple[str, Path]]:
    """The folders the daemon creates and keeps, parents first, each with its config key."""
    folders: list[tuple[str, Path]] = [
        ("incoming", config.incoming),
        ("incoming/.infarctwatch", area.root),
    ]
    for folder in area.folders():
        key = "incoming" if config.incoming in folder.parents else "work"
        base = config.incoming if key == "incoming" else config.work
        folders.append((f"{key}/{folder.relative_to(base).as_posix()}", folder))
    folders += [("reports", config.reports), ("work", config.work)]
    if config.status_path.parent != config.work:
        folders.append(("service.status_file", config.status_path.parent))
    return folders


def load_verified_bundle(config: DaemonConfig) -> tuple[Bundle, str]:
    """The bundle ``model.path`` designates, verified, and what its signature check said.

    Raises:
        BundleError: missing, tampered with, malformed, or refused by the signature policy.
    """
    bundle = load_bundle(designated_bundle(config.model.path))
    policy = SignaturePolicy(config.model.public_key, config.model.require_signature)
    try:
        signature = check_signature(bundle.path, policy)
    except (SignatureError, KeyFileError) as exc:
        raise BundleError(str(bundle.path), [str(exc)]) from exc
    return bundle, signature


def _model_status(info: ModelInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "bundle_sha256": info.bundle_sha256,
        "variant": info.variant,
        "precision": info.precision,
        "device": info.device_used,
    }


class Service:
    """``infarctwatch run``: everything between the configuration and the exit code."""

    def __init__(
        self, config: DaemonConfig, *, once: bool = False, notifier: Notifier | None = None
    ) -> None:
        self.config = config
        self.once = once
        self.notifier = notifier or Notifier(None)
        self.counters = Counters()
        self.area = ClaimArea(config.incoming, config.work, config.outcome)
        self.started_at = utc_now()
        self.reloader: ModelReloader | None = None
        """Swaps in a new model when ``model.path`` changes (not with ``once``)."""
        self.inbox: ModelInbox | None = None
        """Installs archives dropped into ``model.inbox`` (when configured, not with ``once``)."""
        self.outbox: OutboxWriter | None = None
        """Writes DICOM results into ``outputs.dicom.outbox`` (when configured)."""
        self.sender: OutboxSender | None = None
        """Sends the outbox to ``outputs.dicom.send.host`` (when configured)."""
        self.series: SeriesTracker | None = None
        """Groups reported images into series and writes the series reports (`daemon.series`)."""
        self.receiver: DicomReceiver | None = None
        """The DICOM Storage SCP of ``dicom.listen`` (when configured, not with ``once``)."""
        self._started = time.monotonic()
        self._state = "starting"
        self._exit_code: int | None = None
        self._last_error: dict[str, str | None] | None = None
        self._waiting_for: list[str] = []
        self._storage_reason: str | None = None
        self._status_error: str | None = None
        self.guard = FolderGuard(
            owned_folders(config, self.area),
            [
                (self.area.root / "lock", "this incoming folder"),
                (config.work / "lock", "this work folder"),
            ],
        )
        """The folders the daemon owns and their locks; recreated when they vanish."""
        self._folders_checked = 0.0

    @property
    def state(self) -> str:
        """The status file's ``state`` now: starting, waiting, running, degraded, stopping..."""
        return self._state

    def note_error(self, message: str) -> None:
        """Remember ``message`` as the last error (the status file's ``last_error``)."""
        self._last_error = {"at": iso(utc_now()), "message": message}

    def record_failure(self, code: int, message: str) -> None:
        """A start-up failure: a final ``failed`` status with the exit code.

        Best effort: the status folder may be the problem.
        """
        self._state, self._exit_code = "failed", code
        self.note_error(message)
        document = self._status_document({}, None, None, 0)
        if self.config.status_path.parent.is_dir():
            with contextlib.suppress(OSError):
                write_status(self.config.status_path, document)

    def run(self, shutdown: Shutdown) -> int:
        """Start, serve until ``shutdown.stop`` (or, with ``once``, until the folder is done).

        Returns the exit code: 0 after a clean stop, 130 when forced, 1 when a stage died.

        Raises:
            ConfigError, AlreadyRunningError, BundleError, EngineError: start-up failed.
        """
        config = self.config
        preflight(config)
        previous_umask = os.umask(config.service.umask_bits)  # inherited by the workers
        try:
            if not self._wait_for_folders(shutdown):
                self._state = "stopped"
                return EXIT_OK
            return self._start(shutdown)
        except AlreadyRunningError:
            raise
        except BaseException as exc:
            if self._state not in ("stopped", "failed"):
                self.record_failure(EXIT_FAILED, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            os.umask(previous_umask)

    def _wait_for_folders(self, shutdown: Shutdown) -> bool:
        """Wait until every folder is usable (`folder_problems`); False when asked to stop."""
        delay, next_check = FIRST_RETRY_S, 0.0
        watchdog = self.notifier.watchdog_interval_s
        next_watchdog, waited_since = 0.0, time.monotonic()
        reported: list[tuple[str, Path, str]] | None = None
        while True:
            now = time.monotonic()
            if now >= next_check:
                problems = folder_problems(self.config, self.area)
                if not problems:
                    break
                if problems != reported:
                    self._report_waiting(problems)
                    reported = problems
                next_check, delay = now + delay, min(delay * 2, MAX_RETRY_S)
            if watchdog is not None and now >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = now + watchdog
            if shutdown.stop.wait(min(1.0, watchdog or 1.0)):
                log.info("stopped_while_waiting", waiting_for=self._waiting_for)
                return False
        if reported is not None:
            log.info("folders_available", waited_s=round(time.monotonic() - waited_since, 1))
            self._waiting_for = []
            self._state = "starting"
        return True

    def _report_waiting(self, problems: list[tuple[str, Path, str]]) -> None:
        """Log, notify and (where it can) write the status of a wait for folders."""
        for key, folder, problem in problems:
            log.error(
                "folder_unavailable",
                key=key,
                path=str(folder),
                problem=problem,
                note="waiting for it: retried after 1 s, 2 s, 4 s... at most 30 s apart",
            )
        self._state = "waiting"
        self._waiting_for = [f"At '{key}': {problem}" for key, _, problem in problems]
        self.note_error("; ".join(self._waiting_for))
        line = "waiting for folders: " + "; ".join(self._waiting_for)
        self.notifier.ready(line)  # started: the wait is the service's to do, not systemd's
        self.notifier.status(line)
        with contextlib.suppress(OSError):
            if self.config.status_path.parent.is_dir():
                write_status(self.config.status_path, self._status_document({}, None, None, 0))

    def _start(self, shutdown: Shutdown) -> int:
        config = self.config
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.guard)  # the locks, and each folder's identity
            for folder in (config.reports, config.work, self.area.root):
                remove_stale_temporaries(folder)
            if config.outputs.dicom.outbox is not None:
                remove_stale_temporaries(config.outputs.dicom.outbox)
            if config.dicom.listen is not None and not self.once:
                listen = config.dicom.listen  # a port in use: ConfigError, exit 2
                self.receiver = stack.enter_context(_receiver(listen, config))
            bundle, signature = load_verified_bundle(config)
            limits = DecodeLimits(max_pixels=config.limits.max_pixels)
            workers = start_workers(  # they start while the model compiles
                config.pipeline.decode_workers,
                limits,
                config.limits.max_file_bytes,
                config.limits.decode_timeout_s,
            )
            stack.callback(close_workers, workers)
            model = load_model(bundle, config.inference, config.model.variant, config.thresholds)
            for worker in workers:
                worker.wait_ready()
            return self._serve(ModelHolder(model), signature, shutdown, workers)
        return EXIT_FAILED  # pragma: no cover - ExitStack does not swallow exceptions

    def _serve(
        self,
        holder: ModelHolder,
        signature: str,
        shutdown: Shutdown,
        workers: list[WorkerProcess],
    ) -> int:
        config = self.config
        attempts = AttemptLog(config.work, self.area.processing, config.limits.max_attempts)
        pipeline = Pipeline(config, holder, self.area, self.counters, workers, attempts=attempts)
        rules = IntakeRules(config.incoming, config.watch.recursive, config.watch.ignore_suffixes)

        # Listed now, before the watcher can claim anything: a file claimed by its first event
        # must not be taken for a leftover of the previous run as well. The deaths of the previous
        # run are counted durably before any leftover is taken up again.
        taken_up = _take_up(attempts, self.area.recover())

        def recover(stop: threading.Event) -> None:
            if taken_up.set_aside:
                limit = config.limits.max_attempts
                aside = [(claim, _repeated_crash(n, limit)) for claim, n in taken_up.set_aside]
                pipeline.set_aside(aside, stop)
            if taken_up.resume:
                log.info("resuming", claims=len(taken_up.resume), suspects=len(taken_up.suspects))
            pipeline.resume(taken_up.resume, stop)

        watcher = Watcher(
            config.watch, rules, pipeline.offer, once=self.once, before_first_scan=recover
        )
        pipeline.on_room = watcher.room
        pipeline.on_return = watcher.returned
        self.series = SeriesTracker(config.reports, config.series.stable_s)
        pipeline.on_series = self.series.add
        if not self.once:
            self.reloader = ModelReloader(config, holder, signature)
            if config.model.inbox is not None:
                self.inbox = ModelInbox(config, on_installed=self.reloader.request)
        self._start_outbox(pipeline)
        pipeline.start()
        code = EXIT_OK
        try:
            self.series.__enter__()
            self._announce(holder.current, signature)
            watcher.__enter__()
            if self.reloader is not None:
                self.reloader.__enter__()
            if self.inbox is not None:
                self.inbox.__enter__()
            code = self._loop(shutdown, pipeline, watcher, holder)
        except BaseException as exc:
            code = EXIT_FAILED
            self.note_error(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._exit_code = code
            self._shut_down(shutdown, pipeline, watcher, holder)
        if shutdown.force.is_set():
            return EXIT_FORCED
        return code

    def _start_outbox(self, pipeline: Pipeline) -> None:
        """Start the outbox writer and the sender when ``outputs.dicom`` configures them."""
        dicom = self.config.outputs.dicom
        if dicom.outbox is None:
            return
        if dicom.send.host is not None:
            self.sender = OutboxSender(dicom.outbox, dicom.send)
            self.sender.__enter__()
        on_written = self.sender.wake if self.sender is not None else lambda: None
        self.outbox = OutboxWriter(
            dicom.outbox,
            self.config.reports,
            on_written=on_written,
            busy=lambda: pipeline.pending > 0,
        )
        pipeline.on_reported = self.outbox.notify
        if self.series is not None:
            self.series.on_reported = self.outbox.notify_series
        self.outbox.__enter__()

    def _shut_down(
        self, shutdown: Shutdown, pipeline: Pipeline, watcher: Watcher, holder: ModelHolder
    ) -> None:
        """Stop watching everything, drain the pipeline, write the final status."""
        self._state = "stopping"
        self.notifier.stopping(self._status_line(pipeline, holder.current.info))
        log.info("stopping", pending=pipeline.pending, signals=shutdown.signals)
        if self.receiver is not None:  # first: what it finishes storing is still watched
            self.receiver.close()
        watcher.close()
        if self.inbox is not None:
            self.inbox.close()
        if self.reloader is not None:
            self.reloader.close()
        abandoned, in_flight = pipeline.drain(self.config.service.drain_timeout_s, shutdown.force)
        if self.outbox is not None:
            self.outbox.close()  # after the drain: the last scans' captures are written
        if self.sender is not None:
            self.sender.close()  # what is left in the outbox is sent at the next start
        if self.series is not None:  # open series stay open: the next start rebuilds them
            self.series.close()
        if abandoned or in_flight:
            log.warning(
                "abandoned",
                count=len(abandoned),
                claims=[c.claim_id for c in abandoned],
                in_flight=len(in_flight),
                in_flight_claims=[c.claim_id for c in in_flight],
                note="left in processing/, taken up again at the next start; those in flight "
                "may still be reported by their worker before it stops",
            )
        failed = self._exit_code not in (None, EXIT_OK)
        self._state = "failed" if failed else "stopped"
        self._write_status(pipeline, watcher, holder.current.info)
        snapshot = self.counters.snapshot()
        log.info(
            "stopped",
            processed=snapshot.processed,
            not_analysed=snapshot.not_analysed,
            failed=snapshot.failed,
            exit_code=self._exit_code,
        )

    def _announce(self, model: ServedModel, signature: str) -> None:
        config = self.config
        info = model.info
        fs_type = filesystem_type(config.incoming)
        if config.watch.mode == "inotify" and fs_type in NETWORK_FILESYSTEMS:
            log.warning(
                "inotify_on_network_share",
                filesystem=fs_type,
                note="inotify sees nothing written by other machines: set watch.mode: polling",
            )
        watching = self.reloader.snapshot().watching if self.reloader is not None else None
        log.info(
            "started",
            version=VERSION,
            pid=os.getpid(),
            model=info.name,
            model_version=info.version,
            bundle_sha256=info.bundle_sha256,
            variant=info.variant,
            variant_setting=config.model.variant,
            **model.rule.log_fields(),
            signature=signature,
            precision=info.precision,
            device=info.device_used,
            segmenter=None if info.segmenter is None else info.segmenter.variant,
            infer_requests=model.requests,
            decode_workers=config.pipeline.decode_workers,
            incoming=str(config.incoming),
            reports=str(config.reports),
            watch=config.watch.mode,
            hot_reload=None if watching is None else str(watching),
            inbox=None if config.model.inbox is None or self.once else str(config.model.inbox),
            dicom_listen=self.receiver.address if self.receiver is not None else None,
            once=self.once,
        )

    def _dead_stages(self, pipeline: Pipeline, watcher: Watcher) -> list[str]:
        """The stage threads that have ended (each stage's own thread names)."""
        dead = pipeline.dead_stages()
        if not watcher.alive:
            dead.append("watcher")
        if self.reloader is not None and not self.reloader.alive:
            dead.append("model reloader")
        if self.inbox is not None and not self.inbox.alive:
            dead.append("model inbox")
        if self.outbox is not None and not self.outbox.alive:
            dead.append("outbox writer")
        if self.sender is not None and not self.sender.alive:
            dead.append("outbox sender")
        if self.series is not None and not self.series.alive:
            dead.append("series tracker")
        if self.receiver is not None and not self.receiver.alive:
            dead.append("dicom receiver")
        return dead

    def _track_storage(self, pipeline: Pipeline) -> None:
        """Follow the storage guard: the state, and the reason as the last error."""
        storage = pipeline.storage.snapshot()
        if storage.degraded:
            self._state = "degraded"
            if storage.reason != self._storage_reason:
                self._storage_reason = storage.reason
                self.note_error(f"storage: {storage.reason}")
        elif self._state == "degraded":
            self._state, self._storage_reason = "running", None

    def _loop(
        self, shutdown: Shutdown, pipeline: Pipeline, watcher: Watcher, holder: ModelHolder
    ) -> int:
        self._state = "running"
        info = holder.current.info
        self.notifier.ready(self._status_line(pipeline, info))
        watchdog = self.notifier.watchdog_interval_s
        tick = min(0.1 if self.once else 1.0, watchdog or 1.0)
        written_at, next_watchdog = -STATUS_INTERVAL_S, 0.0
        last_line = ""
        last_marker = self._change_marker()
        while not shutdown.stop.is_set():
            if self.once and watcher.finished.is_set() and pipeline.pending == 0:
                self._once_done()
                return EXIT_OK
            dead = self._dead_stages(pipeline, watcher)
            if dead:
                log.error("stage_died", stages=dead, note="a stage thread has ended; stopping")
                self.note_error(f"stage thread(s) ended: {', '.join(dead)}")
                return EXIT_FAILED
            self._track_storage(pipeline)
            if not self._folders_kept(pipeline, watcher):
                return EXIT_FAILED
            if shutdown.reload.is_set():
                shutdown.reload.clear()
                log.info("reload_requested", signal="SIGHUP", once=self.once)
                if self.reloader is not None:
                    self.reloader.request(force=True)
            now = time.monotonic()
            info = holder.current.info
            marker, age = self._change_marker(), now - written_at
            if age >= STATUS_INTERVAL_S or (marker != last_marker and age >= STATUS_MIN_GAP_S):
                self._write_status(pipeline, watcher, info)
                written_at, last_marker = now, marker
            line = self._status_line(pipeline, info)
            if line != last_line:
                self.notifier.status(line)
                last_line = line
            if watchdog is not None and now >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = now + watchdog
            shutdown.stop.wait(tick)
        return EXIT_OK

    def _once_done(self) -> None:
        """``--once``: every file is reported; complete every series, then say so."""
        if self.series is not None and not self.series.complete_all():
            log.warning("series_not_completed", note="the series tracker did not answer")
        log.info("once_done")

    def _folders_kept(self, pipeline: Pipeline, watcher: Watcher) -> bool:
        """Once a second: recover the owned folders that vanished; False when impossible."""
        now = time.monotonic()
        if now - self._folders_checked < 1.0:
            return True
        self._folders_checked = now
        try:
            keys = self.guard.check(pipeline.pending)
        except FolderLostError as exc:
            log.error("folder_lost", error=str(exc), note="stopping; systemd restarts the service")  # noqa: TRY400 - the message says it all
            return False
        if any(key.startswith("incoming") for key in keys):
            watcher.rewatch()
        return True

    def _change_marker(self) -> tuple[object, ...]:
        """What, when it changes, makes the status file worth rewriting at once."""
        return (
            self.counters.snapshot(),
            self.guard.to_status()["recoveries"],
            self.reloader.snapshot() if self.reloader is not None else None,
            self.inbox.snapshot() if self.inbox is not None else None,
            self._outbox_status(),
            self.series.snapshot() if self.series is not None else None,
            self.receiver.to_status() if self.receiver is not None else None,
            self._state,
        )

    def _outbox_status(self) -> dict[str, Any] | None:
        """The status file's ``outbox``: the writer's counters, and the sender's under ``send``."""
        if self.outbox is None:
            return None
        return {
            **self.outbox.snapshot(),
            "send": self.sender.snapshot() if self.sender is not None else None,
        }

    def _status_line(self, pipeline: Pipeline, info: ModelInfo) -> str:
        snap = self.counters.snapshot()
        line = (
            f"{self._state}: processed {snap.processed}, failed {snap.failed}, "
            f"not analysed {snap.not_analysed}, "
            f"pending {pipeline.pending}; model {info.name} {info.version} "
            f"({info.precision} on {info.device_used})"
        )
        error = self.reloader.snapshot().error if self.reloader is not None else None
        if error is not None:
            line += f"; reload of {error.version} FAILED"
        if self._state == "degraded" and self._storage_reason:
            held = pipeline.storage.held
            line = f"degraded: storage: {self._storage_reason}; {held} claim(s) held; " + line
        return line

    def _write_status(self, pipeline: Pipeline, watcher: Watcher, info: ModelInfo) -> None:
        model = _model_status(info)
        if self.reloader is not None:  # the model and its reload state from one snapshot
            reload = self.reloader.snapshot()
            model = {**_model_status(reload.model), **reload.to_status()}
        document = self._status_document(model, pipeline, watcher, pipeline.decoder_restarts)
        try:
            write_status(self.config.status_path, document)
        except OSError as exc:
            if self._status_error is None:  # once per failure, not every 5 s
                log.warning("status_write_failed", error=exc.strerror or str(exc))
            self._status_error = exc.strerror or str(exc)
        else:
            if self._status_error is not None:
                log.info("status_written_again", was=self._status_error)
            self._status_error = None

    def _status_document(
        self,
        model: dict[str, Any],
        pipeline: Pipeline | None,
        watcher: Watcher | None,
        restarts: int,
    ) -> dict[str, Any]:
        snap = self.counters.snapshot()
        return {
            "version": STATUS_VERSION,
            "state": self._state,
            "pid": os.getpid(),
            "started_at": iso(self.started_at),
            "updated_at": iso(utc_now()),
            "interval_s": STATUS_INTERVAL_S,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "processed": snap.processed,
            "not_analysed": snap.not_analysed,
            "failed": snap.failed,
            "pending": pipeline.pending if pipeline is not None else 0,
            "waiting": watcher.waiting if watcher is not None else 0,
            "ignored": watcher.ignored.count if watcher is not None else 0,
            "folders": self.guard.to_status(),
            "decoders": {"workers": self.config.pipeline.decode_workers, "restarts": restarts},
            "last_scan_at": iso(snap.last_scan_at),
            "model": model,
            "inbox": self.inbox.snapshot() if self.inbox is not None else None,
            "outbox": self._outbox_status(),
            "receiver": self.receiver.to_status() if self.receiver is not None else None,
            "storage": pipeline.storage.snapshot().to_status() if pipeline is not None else None,
            "series": self.series.snapshot().to_status() if self.series is not None else None,
            "waiting_for": self._waiting_for,
            "exit_code": self._exit_code,
            "last_error": self._last_error,
            "incoming": str(self.config.incoming),
            "reports": str(self.config.reports),
            "watch": self.config.watch.mode,
            "infarctwatch_version": VERSION,
        }


def _receiver(listen: ListenConfig, config: DaemonConfig) -> DicomReceiver:
    """The Storage SCP of ``dicom.listen``, not started (pynetdicom is imported only then)."""
    from daemon.receive.scp import DicomReceiver  # noqa: PLC0415 - only when dicom.listen is set

    return DicomReceiver(listen, config.incoming, timeout_s=config.service.drain_timeout_s)


def _take_up(attempts: AttemptLog, leftovers: list[Claim]) -> TakeUp:
    """`AttemptLog.take_up`; when the work folder fails since the start-up probe, unguarded."""
    try:
        return attempts.take_up(leftovers)
    except OSError as exc:
        log.error("attempts_not_recorded", error=exc.strerror or str(exc))  # noqa: TRY400 - said
        return TakeUp(leftovers, [])


def _repeated_crash(count: int, limit: int) -> Failure:
    """The failure of a claim the repeat guard sets aside."""
    return Failure(
        RepeatedCrashError.code,
        f"the daemon or its worker process died {count} times in a row while this file was being "
        f"scanned (limits.max_attempts {limit}); set aside without scanning it again",
    )
