"""Put back everything `daemon.logs` changes in a process, after a test configured it."""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING

import structlog

from daemon import logs

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextmanager
def logging_restored() -> Iterator[None]:
    """structlog's configuration, the root logger, the warning display and the exception hooks."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    showwarning = warnings.showwarning
    excepthook, thread_hook = sys.excepthook, threading.excepthook
    settings = logs.worker_settings()
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        warnings.showwarning = showwarning
        sys.excepthook, threading.excepthook = excepthook, thread_hook
        logs._settings = settings
