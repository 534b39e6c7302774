"""Fault injection for whole daemons: the real ``infarctwatch run`` with one fault switched on.

Started as a real process (`spawn_faulty`)::

    python -c "...; storage_faults.main(argv)" run --config daemon.yaml

``$IW_FAULTS`` (comma-separated) says which faults, in the daemon and in its worker processes
(whose target, `serve_with_faults`, applies the same ones; the children import this module again):

* ``report``: `daemon.scan.report.build_report` raises for a file whose name contains
  ``poison-report`` (a bug while building one report). Nothing else changes.
* ``hang``, ``segfault``, ``bug``: `tests.decoder_faults` in the workers (by file name).
* ``storage``: ``os.write`` on a file and ``os.replace`` of a file inside ``$IW_FAULT_DIR`` fail
  with the errno named in the file ``$IW_FAULT_SWITCH`` while that file exists (``ENOSPC``,
  ``EIO``, ``EACCES``...): a failing file system for the reports folder, switched on and off by
  the test. Everything else (pipes, other folders) is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import decoder_faults

from daemon.commands import run as run_command
from daemon.scan import report
from daemon.scan import worker as scan_worker
from daemon.workers import process as worker_process

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from daemon.shared.decode import DecodeLimits

POISON = "poison-report"


def _faults() -> set[str]:
    return set(filter(None, os.environ.get("IW_FAULTS", "").split(",")))


def _faulty_report(real: Any) -> Any:
    def build_report(result: Any, top_k: int, now: float | None = None) -> Any:
        if POISON in result.claim.name:
            message = "injected bug while building a report"
            raise KeyError(message)
        return real(result, top_k, now)

    return build_report


def _storage_error(path: str) -> OSError | None:
    """The injected error for ``path``, or None (outside the folder, or switched off)."""
    folder, switch = os.environ.get("IW_FAULT_DIR"), os.environ.get("IW_FAULT_SWITCH")
    if not folder or not switch or not path.startswith(folder.rstrip("/") + "/"):
        return None
    try:
        name = Path(switch).read_text(encoding="ascii").strip()
    except OSError:
        return None
    code = getattr(errno, name, errno.EIO)
    return OSError(code, os.strerror(code), path)


def _install_storage_faults() -> None:
    real_write, real_replace = os.write, os.replace

    def write(fd: int, data: Any) -> int:
        try:
            where = str(Path(f"/proc/self/fd/{fd}").readlink())
        except OSError:
            where = ""
        error = _storage_error(where)
        if error is not None:
            raise error
        return real_write(fd, data)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        where = os.fsdecode(os.fspath(dst))
        folder_fd = kwargs.get("dst_dir_fd")
        if folder_fd is not None and not where.startswith("/"):
            with contextlib.suppress(OSError):  # a name relative to a folder's descriptor
                where = f"{Path(f'/proc/self/fd/{folder_fd}').readlink()}/{where}"
        error = _storage_error(where)
        if error is not None:
            raise error
        real_replace(src, dst, **kwargs)

    os.write = write
    os.replace = replace


def install() -> None:
    """Switch on the faults ``$IW_FAULTS`` names, in this process."""
    faults = _faults()
    if "report" in faults:
        report.build_report = _faulty_report(report.build_report)  # type: ignore[assignment]
    if "storage" in faults:
        _install_storage_faults()
    if faults & {"hang", "segfault", "bug"}:
        fake = decoder_faults._faulty  # the same injector the decoder tests use
        scan_worker.decode_claim = fake(scan_worker.decode_claim)  # type: ignore[assignment]


def serve_with_faults(conn: Connection, limits: DecodeLimits, max_bytes: int) -> None:
    """The real worker loop with the faults installed in the worker process."""
    install()
    worker_process.serve(conn, limits, max_bytes)


def main(argv: list[str]) -> int:
    """``infarctwatch ARGV`` (``run ...``) with the faults installed in the daemon and workers."""
    install()
    worker_process.serve = serve_with_faults  # type: ignore[assignment]
    assert argv[0] == "run"
    return run_command.main(argv[1:])


LAUNCH = (
    "import sys; sys.path.insert(0, {tests!r}); import storage_faults; "
    "sys.exit(storage_faults.main(sys.argv[1:]))"
)


def command(*args: str) -> list[str]:
    """The command line of a faulty daemon: ``python -c LAUNCH run ...``."""
    tests = str(Path(__file__).resolve().parent)
    return [sys.executable, "-c", LAUNCH.format(tests=tests), *args]
