"""SIGTERM / SIGINT / SIGHUP handling for ``infarctwatch run``, installed in a context manager.

The first SIGTERM or SIGINT asks for a graceful stop (`Shutdown.stop`): stop watching, finish
in-flight work within ``service.drain_timeout_s``. A second SIGINT (Ctrl-C again) asks to stop
*now* (`Shutdown.force`). SIGHUP (``systemctl reload``) asks for a model reload
(`Shutdown.reload`): the service checks what ``model.path`` designates and hot-swaps it if it
changed (`daemon.model.reload`); the configuration file is not re-read. The handlers only set events
(no logging, no locks: a handler runs in the middle of whatever the main thread was doing); the
service loop acts and reports. The previous handlers are restored when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class Shutdown:
    """Shutdown (and reload) requests, set by signal handlers (or by tests and embedding code)."""

    stop: threading.Event = field(default_factory=threading.Event)
    force: threading.Event = field(default_factory=threading.Event)
    reload: threading.Event = field(default_factory=threading.Event)
    """SIGHUP: check ``model.path`` and reload the model if it changed (the service clears it)."""
    signals: list[str] = field(default_factory=list)
    """Names of the signals received, in order."""


@contextlib.contextmanager
def capture_signals(shutdown: Shutdown) -> Iterator[Shutdown]:
    """Route SIGTERM, SIGINT and SIGHUP to ``shutdown`` for the ``with`` block.

    Signal handlers can only be installed from the main thread: elsewhere (a service embedded in
    another program's thread, as uvicorn allows) nothing is installed and ``shutdown`` is driven by
    its owner.
    """
    if threading.current_thread() is not threading.main_thread():
        yield shutdown
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        shutdown.signals.append(signal.Signals(signum).name)
        if signum == signal.SIGHUP:
            shutdown.reload.set()
            return
        if shutdown.stop.is_set() and signum == signal.SIGINT:
            shutdown.force.set()
        shutdown.stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in HANDLED}
    try:
        yield shutdown
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
