"""structlog, configured once per process: by ``infarctwatch run`` and by each worker process.

JSON lines when the stream is not a terminal (journald, files, pipes), a readable console
rendering on a terminal; ``logging.format`` can force either. The worker processes (spawned, their
stderr is the daemon's) are configured with the daemon's settings (`worker_settings`), so every
line on stderr is one JSON object, whichever process wrote it.

What third parties say goes through structlog too, never straight to stderr:

* **Python warnings** (pydicom's ``warnings.warn``, Pillow's...) become one ``library_warning``
  event each: ``category``, ``module`` (where it was raised, ``pydicom/filereader.py:402``) and a
  sanitised ``message``.
* **stdlib logging** of libraries (pydicom, pylibjpeg, openvino...) reaches a handler on the root
  logger: one ``library_log`` event per record at WARNING and above with ``logger`` and a
  sanitised ``message`` (and ``exception``: its type and sanitised text, never a traceback).
  Its level is capped at warning: whether a file is an error for the service is said by the
  daemon's own events and the file's report, not by the library that failed to read it.
  What another channel already carries is not repeated: pydicom's warning-level records on its
  ``pydicom`` logger (each comes with a Python warning of the same text, logged as
  ``library_warning``) and a failing decoder plugin's traceback (its reason is in the file's
  report). The ``watchdog`` logger is left to the watcher's own bridge
  (`daemon.intake.watcher.WatchdogLogBridge`).
* **uncaught exceptions** (the main thread, other threads) become one ``uncaught_exception``
  event with the traceback rendered as JSON, without local variables.

Sanitising: library texts can quote element values (pydicom: ``Invalid value for VR PN:
'Doe^Jane'``), and a value can be a patient's name, ID or birth date. So a library's message keeps
its first line only, every quoted literal (``'...'``, ``"..."``, ``b'...'``) is replaced by
``'…'``, and it is cut at 200 characters. Tracebacks of the daemon's own code never include local
variables (they could hold file names, which may hold patient names).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

if TYPE_CHECKING:
    from types import TracebackType

    from structlog.typing import Processor

log = structlog.get_logger("infarctwatch")

MESSAGE_LIMIT = 200
"""Characters kept of a third-party message (after sanitising)."""
_QUOTED = re.compile(r"""[bB]?'[^'\n]*'|[bB]?"[^"\n]*\"""")
_OWN_BRIDGE = ("watchdog",)
"""Loggers whose records another handler forwards (`daemon.intake.watcher.WatchdogLogBridge`)."""
_LEVELS = {logging.WARNING: "warning", logging.INFO: "info", logging.DEBUG: "debug"}


@dataclass(frozen=True)
class LogSettings:
    """What a process needs to log like the daemon: the level and JSON or console lines."""

    level: str = "info"
    json: bool = True
    colors: bool = False
    """Console lines only: coloured when the format was chosen from the terminal (``auto``)."""


_settings: LogSettings | None = None


def sanitise(text: object) -> str:
    """A third party's message without quoted literals, on one line, at most 200 characters."""
    lines = str(text).strip().splitlines()
    first = lines[0] if lines else ""
    return _QUOTED.sub("'…'", first)[:MESSAGE_LIMIT]


def _module_of(filename: str) -> str:
    """``pydicom/filereader.py`` from a full path: where, without the install location."""
    parts = PurePath(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(marker) :])
    return "/".join(parts[-2:])


def _log_warning(  # noqa: PLR0917 - the signature of warnings.showwarning
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,  # noqa: ARG001 - the signature of warnings.showwarning
    line: str | None = None,  # noqa: ARG001
) -> None:
    log.warning(
        "library_warning",
        category=category.__name__,
        module=f"{_module_of(filename)}:{lineno}",
        message=sanitise(message),
    )


def _restated(record: logging.LogRecord) -> bool:
    """Whether another channel already carries what ``record`` says (so it is not logged twice).

    pydicom's warning-level records on its ``pydicom`` logger come with a Python warning of the
    same text (``warn_and_log``); a decoding plugin that fails is logged by pydicom with its
    traceback, and its reason is in the error pydicom then raises, which the file's report and
    ``scan`` event carry.
    """
    if record.name == "pydicom":
        return record.levelno < logging.ERROR
    return record.name.startswith("pydicom.pixels.decoders") and record.exc_info is not None


class LibraryLogHandler(logging.Handler):
    """Forwards stdlib logging records of third-party libraries to structlog, sanitised."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        """One ``library_log`` event (nothing for loggers another handler forwards)."""
        if record.name.split(".", 1)[0] in _OWN_BRIDGE or _restated(record):
            return
        try:
            message = sanitise(record.getMessage())
        except (TypeError, ValueError):  # a record whose arguments do not fit its format
            message = sanitise(record.msg)
        fields: dict[str, Any] = {"logger": record.name, "message": message}
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            fields["exception"] = f"{type(error).__name__}: {sanitise(error)}"
        level = _LEVELS.get(min(record.levelno, logging.WARNING), "warning")
        getattr(log, level)("library_log", **fields)


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    log.critical("uncaught_exception", thread="main", exc_info=(kind, error, trace))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or isinstance(args.exc_value, SystemExit):
        return
    thread = args.thread.name if args.thread is not None else "?"
    info = (args.exc_type, args.exc_value, args.exc_traceback)
    log.critical("uncaught_exception", thread=thread, exc_info=info)


def route_library_output() -> None:
    """Send warnings, library logging and uncaught exceptions of this process through structlog.

    Idempotent: a second call replaces the handler instead of adding another one.
    """
    warnings.showwarning = _log_warning
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, LibraryLogHandler):
            root.removeHandler(handler)
    root.addHandler(LibraryLogHandler())
    root.setLevel(logging.WARNING)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def use_json(fmt: str, stream: TextIO) -> bool:
    """Whether ``logging.format`` (auto, json, console) means JSON lines on ``stream``."""
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (callable(isatty) and isatty())
    return fmt == "json"


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> LogSettings:
    """Configure structlog for the whole process (call once, from the entry point)."""
    global _settings  # noqa: PLW0603 - one configuration per process, read by `worker_settings`
    out = stream if stream is not None else sys.stderr
    _settings = LogSettings(level, json=use_json(fmt, out), colors=fmt == "auto")
    _configure(_settings, out)
    return _settings


def worker_settings() -> LogSettings | None:
    """The settings this process was configured with, for the worker processes it starts."""
    return _settings


def configure_worker_logging(settings: LogSettings | None) -> None:
    """Configure a worker process like its daemon (JSON at warning level when it was not)."""
    global _settings  # noqa: PLW0603 - one configuration per process
    _settings = settings or LogSettings("warning", json=use_json("auto", sys.stderr))
    _configure(_settings, sys.stderr)


def _configure(settings: LogSettings, out: TextIO) -> None:
    renderer: Any
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if settings.json:
        transformer = ExceptionDictTransformer(show_locals=False)
        processors.append(structlog.processors.ExceptionRenderer(transformer))
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=settings.colors, exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(settings.level),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    route_library_output()
