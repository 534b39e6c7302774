"""How far an evaluation is: a bar on a terminal, a log line every tenth otherwise."""

from __future__ import annotations

import time
from typing import TextIO

import structlog

log = structlog.get_logger("infarctwatch.evaluate")
_BAR = 30
_REDRAW_S = 0.2


class Progress:
    """Counts scored files; draws a bar on ``stream`` when it is a terminal, else logs."""

    def __init__(self, total: int, stream: TextIO, *, bar: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self._stream = stream
        self._bar = stream.isatty() if bar is None else bar
        self._started = time.monotonic()
        self._drawn = 0.0
        self._logged_tenths = 0

    def __call__(self, count: int) -> None:
        """``count`` more files scored."""
        self.done += count
        if self._bar:
            now = time.monotonic()
            if now - self._drawn >= _REDRAW_S or self.done >= self.total:
                self._drawn = now
                self._draw(now)
            return
        tenths = self.done * 10 // max(self.total, 1)
        if tenths > self._logged_tenths:
            self._logged_tenths = tenths
            log.info("evaluate_progress", done=self.done, total=self.total)

    def _draw(self, now: float) -> None:
        filled = self.done * _BAR // max(self.total, 1)
        rate = self.done / max(now - self._started, 1e-6)
        line = f"\revaluate [{'#' * filled}{'.' * (_BAR - filled)}] {self.done}/{self.total}"
        self._stream.write(f"{line} files, {rate:.1f}/s ")
        self._stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self._bar and self.done:
            self._stream.write("\n")
            self._stream.flush()
