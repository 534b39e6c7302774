"""structlog, configured once by ``infarctwatch run``.

JSON lines when the stream is not a terminal (journald, files, pipes), a readable console
rendering on a terminal; ``logging.format`` can force either. Tracebacks never include local
variables (they could hold file names, which may hold patient names). Python warnings raised by
libraries are routed into the log as one ``library_warning`` event each instead of stderr.
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

if TYPE_CHECKING:
    from structlog.typing import Processor

log = structlog.get_logger("infarctwatch")


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
        message=str(message)[:300],
        origin=f"{filename}:{lineno}",
    )


def use_json(fmt: str, stream: TextIO) -> bool:
    """Whether ``logging.format`` (auto, json, console) means JSON lines on ``stream``."""
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (callable(isatty) and isatty())
    return fmt == "json"


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Configure structlog for the whole process (call once, from the entry point)."""
    out = stream if stream is not None else sys.stderr
    renderer: Any
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json(fmt, out):
        transformer = ExceptionDictTransformer(show_locals=False)
        processors.append(structlog.processors.ExceptionRenderer(transformer))
        renderer = structlog.processors.JSONRenderer()
    else:
        colors = fmt == "auto"
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    warnings.showwarning = _log_warning
