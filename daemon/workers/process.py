"""The worker processes: each scans batches of claims from end to end, isolated from the daemon.

Why processes and not threads:

* **throughput**: decoding holds the GIL for most of its time (Pillow's ``tobytes``, numpy's
  small-array overhead, pydicom's parser), so decoding threads would queue for one lock with
  every other thread of the daemon; a worker process finishes its scans itself
  (`daemon.scan.worker`), so only claims and short answers cross between processes
  (docs/performance.md has the measurements).
* **isolation**: decoding is the one place hostile bytes meet native code (zlib, libjpeg, libtiff,
  pydicom's handlers). A worker that crashes (a segfault), hangs or is killed costs the file that
  caused it an error report (``DECODER_CRASHED``, ``DECODE_TIMEOUT``) and itself a restart; the
  service and every other scan go on. With a batch in flight nobody knows which claim caused it:
  the batch is scanned again one claim at a time, and only a claim that fails alone is blamed.

Each worker is a pair: a thread in the daemon (`daemon.service.dispatch`) and a child started with
the ``spawn`` method (the daemon runs OpenVINO's threads, so it never forks). They talk over a pipe,
one request at a time::

    daemon -> child   ScanRequest(claims, model or None, setup or None: when unchanged)
    child  -> daemon  [Finished, ...] one per claim, ModelFailed, or WorkerBug (a bug)

    daemon -> child   STOP: exit

Every message is defined in `daemon.scan.protocol`, the one module both sides share.

The child decodes with `daemon.scan.read.decode_claim`, the very code the trainer's readers
share, with the daemon's limits. It ignores SIGINT and SIGTERM: a Ctrl-C in a terminal or
systemd's stop signal reaches the whole process group, and a worker killed by it would turn every
scan in flight into a false ``DECODER_CRASHED``; the daemon stops its children itself once the
pipeline is drained. A child dies with its daemon, even after ``kill -9``
(``PR_SET_PDEATHSIG``): it writes reports and moves inputs, and must not go on doing so beside the
daemon that replaces its own and takes up the same claims. (Where that cannot be set, it reads
end-of-file and exits, and it checks before each group commit that its daemon is still there.)
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import time
import traceback
from typing import TYPE_CHECKING

import structlog

from daemon.errors import (
    DecoderCrashedError,
    DecodeTimeoutError,
    InternalError,
    ScanError,
    WorkerStartError,
)
from daemon.logs import configure_worker_logging, worker_settings
from daemon.memory import keep_freed_memory
from daemon.records import Failure, scan_id
from daemon.scan.protocol import (
    READY,
    STOP,
    Finished,
    ModelChoice,
    ModelFailed,
    ScanRequest,
    ScanSetup,
    WorkerBug,
)
from daemon.scan.read import (
    Rejected,
    configure_decoders,
    warm_up,
)
from daemon.scan.worker import ScanWorker, source_of

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from daemon.logs import LogSettings
    from daemon.records import Claim
    from daemon.shared.decode import DecodeLimits

log = structlog.get_logger("infarctwatch.worker")

START_TIMEOUT_S = 60.0
"""How long a new child may take to import its decoders and say it is ready."""
_STOP_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1
_CONTEXT = multiprocessing.get_context("spawn")


def serve(conn: Connection, limits: DecodeLimits, max_bytes: int) -> None:
    """The child's main loop until told to stop (`STOP`); the messages are `daemon.scan.protocol`'s.

    Each `ScanRequest` is answered with a list of `Finished`, a `ModelFailed`, or a `WorkerBug`
    for a bug outside any one claim.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    daemon_pid = _die_with_parent()
    keep_freed_memory()
    configure_decoders()
    warm_up()
    worker = ScanWorker(limits, max_bytes, alive=lambda: os.getppid() == daemon_pid)
    conn.send(READY)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the daemon has gone
        if not isinstance(request, ScanRequest):
            return  # STOP: told to stop (anything else is not from this daemon: stop too)
        if not _send(conn, _scan(worker, request)):
            return


def _scan(worker: ScanWorker, request: ScanRequest) -> object:
    """The answer to a scan request; an exception (OSError too) is a bug for the daemon to log."""
    try:
        return worker.handle(request)
    except Exception as exc:  # noqa: BLE001 - a bug outside one claim: the daemon retries
        return WorkerBug(type(exc).__name__, str(exc), traceback.format_exc())


def _send(conn: Connection, answer: object) -> bool:
    """Send ``answer`` to the daemon; False when the pipe is gone (so is the daemon)."""
    try:
        conn.send(answer)
    except OSError:  # BrokenPipeError included
        return False
    return True


def child_main(
    target: Callable[[Connection, DecodeLimits, int], None],
    settings: LogSettings | None,
    conn: Connection,
    limits: DecodeLimits,
    max_bytes: int,
) -> None:
    """A worker process's entry point: log like the daemon, then run ``target`` (`serve`).

    Logging comes first, so that what the decoders and OpenVINO warn while importing is JSON
    too. A bug that escapes ``target`` is one ``worker_failed`` event and exit code 1, instead of
    multiprocessing's raw traceback on stderr.
    """
    configure_worker_logging(settings)
    try:
        target(conn, limits, max_bytes)
    except Exception:  # the process ends here either way: say why, as JSON
        log.critical("worker_failed", exc_info=True)
        raise SystemExit(1) from None


def _die_with_parent() -> int:
    """Ask the kernel to SIGKILL this process when the thread that started it ends (Linux).

    Returns the daemon's pid; exits at once if the daemon is already gone.
    """
    parent = multiprocessing.parent_process()
    daemon_pid = parent.pid if parent is not None and parent.pid is not None else os.getppid()
    if not _set_parent_death_signal():  # EOF on the pipe and the `alive` check still apply
        log.warning("worker_parent_death_signal_unavailable", pid=os.getpid())
    if os.getppid() != daemon_pid:
        os._exit(0)
    return daemon_pid


def _set_parent_death_signal() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)``; False when the call is missing or refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (AttributeError, OSError):
        return False
    return bool(result == 0)


class WorkerProcess:
    """One decoder child process, restarted when it dies. Used by one pipeline thread at a time."""

    def __init__(
        self,
        index: int,
        limits: DecodeLimits,
        max_bytes: int,
        timeout_s: float,
        *,
        target: Callable[[Connection, DecodeLimits, int], None] | None = None,
    ) -> None:
        self.index = index
        self._limits = limits
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._target = target
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._ready = False
        self._setup_sent: ScanSetup | None = None
        self._model_sent: ModelChoice | None = None
        self.restarts = 0
        """How many times the child was replaced after a crash or a timeout."""

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before `start`)."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Spawn the child; it becomes ready in the background (see `wait_ready`).

        Raises:
            WorkerStartError: the process could not be created.
        """
        parent, child = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=child_main,
            args=(self._target or serve, worker_settings(), child, self._limits, self._max_bytes),
            name=f"infarctwatch-worker-{self.index}",
            daemon=True,
        )
        try:
            process.start()
        except OSError as exc:
            parent.close()
            msg = f"scan worker {self.index} could not be started: {exc.strerror or exc}"
            raise WorkerStartError(msg) from exc
        finally:
            child.close()
        self._process, self._conn, self._ready = process, parent, False
        self._setup_sent, self._model_sent = None, None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait for the child's ready message.

        Raises:
            WorkerStartError: the child exited or stayed silent for ``timeout`` seconds.
        """
        if self._ready:
            return
        conn, process = self._conn, self._process
        if conn is None or process is None:
            self.start()
            conn, process = self._conn, self._process
            assert conn is not None  # noqa: S101 - start() set it
            assert process is not None  # noqa: S101 - start() set it
        try:
            answer = conn.recv() if conn.poll(timeout) else None
        except (EOFError, OSError):  # the child is gone: collect its exit code
            answer = None
            process.join(_STOP_TIMEOUT_S)
        if answer != READY:
            exited = process.exitcode is not None
            ended = self._stop_child(kill=True)
            detail = ended if exited else f"no answer within {timeout:g} s"
            msg = f"scan worker {self.index} could not start ({detail})"
            raise WorkerStartError(msg)
        self._ready = True

    def scan(
        self, claims: tuple[Claim, ...], model: ModelChoice, setup: ScanSetup
    ) -> list[Finished | Rejected]:
        """Scan ``claims`` from end to end in the child (`daemon.scan.worker`): one `Finished` each.

        When the child crashes, hangs past ``limits.decode_timeout_s`` or meets a bug outside any
        one claim while a batch is in flight, it is replaced and each claim is scanned again on its
        own; a claim that fails alone comes back as a `Rejected` (``DECODER_CRASHED``,
        ``DECODE_TIMEOUT``, ``INTERNAL_ERROR``) for the daemon to report. A claim whose file has
        left processing/ meanwhile was reported by the child before it died: ``action`` unknown.
        An empty batch only makes the child load ``model``.

        Raises:
            WorkerStartError: the child could not be (re)started, or cannot load ``model``.
        """
        started = time.perf_counter()
        outcome = self._scan_once(claims, model, setup)
        if isinstance(outcome, list):
            return list(outcome)
        error = self._failed(claims[0] if len(claims) == 1 else None, outcome, answered=True)
        if len(claims) == 1:
            return [self._rejected(claims[0], error, started)]
        log.warning("scan_batch_retried", worker=self.index, claims=len(claims), code=error.code)
        answers: list[Finished | Rejected] = []
        for claim in claims:
            if not claim.path.is_symlink() and not claim.path.exists():
                answers.append(Finished(claim, scan_id(claim, None), action="unknown"))
                continue
            answers.extend(self.scan((claim,), model, setup))
        return answers

    def _scan_once(
        self, claims: tuple[Claim, ...], model: ModelChoice, setup: ScanSetup
    ) -> list[Finished | Rejected] | WorkerBug | bool:
        """One request: the answer, an `WorkerBug`, False (none in time) or True (died)."""
        conn = self._send(
            lambda: ScanRequest(
                claims,
                None if model == self._model_sent else model,
                None if setup == self._setup_sent else setup,
            )
        )
        self._setup_sent, self._model_sent = setup, model
        try:
            if not conn.poll(self._timeout_s):
                return False
            answer = conn.recv()
        except (EOFError, OSError):
            return True
        if isinstance(answer, ModelFailed):
            self._stop_child(kill=True)
            msg = f"scan worker {self.index} cannot serve the model: {answer.message}"
            raise WorkerStartError(msg)
        return answer  # type: ignore[no-any-return]

    def _failed(self, claim: Claim | None, outcome: object, *, answered: bool) -> ScanError:
        """The error for a request the child did not answer properly; replaces a dead child."""
        if isinstance(outcome, WorkerBug):
            log.error(
                "decode_crashed",
                claim=None if claim is None else claim.claim_id,
                error=outcome.kind,
                trace=outcome.trace,
            )
            return InternalError(f"unexpected {outcome.kind} while decoding: {outcome.message}")
        timed_out = outcome is False or not answered
        ended = self._stop_child(kill=True)
        error: ScanError
        if timed_out:
            error = DecodeTimeoutError(
                f"decoding took longer than {self._timeout_s:g} s (limits.decode_timeout_s); "
                "the decode worker was stopped"
            )
        else:
            error = DecoderCrashedError(f"the decode worker process died ({ended})")
        self.restarts += 1
        log.warning("decoder_restarting", worker=self.index, code=error.code)
        return error

    def _rejected(self, claim: Claim, error: ScanError, started: float) -> Rejected:
        failure = Failure(error.code, error.message)
        elapsed = (time.perf_counter() - started) * 1000.0
        return Rejected(claim, source_of(claim, self._max_bytes), failure, elapsed)

    def _send(self, build: Callable[[], object]) -> Connection:
        """Send ``build()`` to a ready child; one that died while idle is replaced first.

        The request is built once the child is ready: a new child has been sent nothing, so the
        setup and model travel again (``build`` compares with what this child was sent).
        """
        for attempt in (1, 2):
            self.wait_ready()
            conn = self._conn
            assert conn is not None  # noqa: S101 - wait_ready() guarantees a child
            try:
                conn.send(build())
            except OSError as exc:
                if attempt == 2:
                    msg = f"scan worker {self.index} does not take requests: {exc}"
                    raise WorkerStartError(msg) from exc
                ended = self._stop_child(kill=True)  # not this file's fault: it was never sent
                self.restarts += 1
                log.warning("decoder_restarting", worker=self.index, reason=ended)
            else:
                return conn
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def _stop_child(self, *, kill: bool) -> str:
        """End the child (kill, or ask and wait); forget it. Returns how it ended, in words."""
        process, conn = self._process, self._conn
        self._process, self._conn, self._ready = None, None, False
        if process is None:
            return "not running"
        if kill:
            process.kill()
        elif conn is not None:
            try:
                conn.send(STOP)
            except OSError:
                process.kill()
        process.join(_STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()
        if conn is not None:
            conn.close()
        text = _exit_text(process.exitcode)
        process.close()
        return text

    def close(self) -> None:
        """Ask the child to exit and wait for it (killed after a few seconds)."""
        self._stop_child(kill=False)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def start_workers(
    count: int, limits: DecodeLimits, max_bytes: int, timeout_s: float
) -> list[WorkerProcess]:
    """Spawn ``count`` workers without waiting for them (they import while the model compiles)."""
    workers = [WorkerProcess(i, limits, max_bytes, timeout_s) for i in range(count)]
    try:
        for worker in workers:
            worker.start()
    except WorkerStartError:
        close_workers(workers)
        raise
    return workers


def close_workers(workers: list[WorkerProcess]) -> None:
    """Stop every worker's child."""
    for worker in workers:
        worker.close()
