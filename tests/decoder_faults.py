"""Fault injection for the scan worker processes (imported in the spawned child, so kept light).

`serve_with_faults` is the real child loop, with `decode_claim` wrapped (where the scan worker
calls it) so that a file whose name says so crashes the process (SIGSEGV, as a native decoder bug
would), hangs, or raises an unexpected exception; and with `ScanWorker.handle` wrapped so that a
batch holding a file named ``oserror`` raises an OSError outside any one claim. Everything else
is decoded for real.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from daemon.scan import worker as scan_worker
from daemon.workers import process as worker_process

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from daemon.shared.decode import DecodeLimits


def _faulty(real: Any) -> Any:
    def decode_claim(
        claim: Any, spec: Any, limits: Any, max_bytes: int, *more: Any, **options: Any
    ) -> Any:
        if "segfault" in claim.name:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the test folder
            os.kill(os.getpid(), signal.SIGSEGV)
        if "hang" in claim.name:
            time.sleep(3600)
        if "bug" in claim.name:
            raise ZeroDivisionError("injected bug")
        return real(claim, spec, limits, max_bytes, *more, **options)

    return decode_claim


def _faulty_handle(real: Any) -> Any:
    def handle(self: Any, request: Any) -> Any:
        if any("oserror" in claim.name for claim in request.claims):
            real(self, dataclasses.replace(request, claims=()))  # take the setup and the model
            raise OSError(5, "injected I/O error outside any one claim")
        return real(self, request)

    return handle


def serve_with_faults(conn: Connection, limits: DecodeLimits, max_bytes: int) -> None:
    """`daemon.workers.process.serve` with the faults above in every scan request."""
    scan_worker.ScanWorker.handle = _faulty_handle(scan_worker.ScanWorker.handle)  # type: ignore[method-assign]
    scan_worker.decode_claim = _faulty(scan_worker.decode_claim)  # type: ignore[assignment]
    worker_process.serve(conn, limits, max_bytes)


def serve_nothing(conn: Connection, limits: DecodeLimits, max_bytes: int) -> None:
    """A child that dies before saying it is ready (a broken installation)."""
    del conn, limits, max_bytes
    sys.exit(3)


def serve_noisily_then_fail(conn: Connection, limits: DecodeLimits, max_bytes: int) -> None:
    """A child that warns, logs through stdlib logging, then meets a bug outside any request.

    The warning quotes a value the way pydicom quotes element values; the bug escapes `serve`.
    """
    import logging  # noqa: PLC0415 - kept light at import, like the module
    import warnings  # noqa: PLC0415

    del conn, limits, max_bytes
    warnings.warn("Invalid value for VR PN: 'Doe^Jane'", UserWarning, stacklevel=1)
    logging.getLogger("somelib").error("cannot open 'Doe^Jane.dcm'")
    raise RuntimeError("injected bug outside any request")
