"""The lifecycle the daemon's own stage threads share: started on enter, stopped and joined on exit.

`daemon.intake.watcher.Watcher` (the scanner of incoming/ and of the model inbox) and
`daemon.model.reload.ModelReloader` are `StageThread` s: each runs `_run` on one named daemon
thread until `close`, which sets ``_stop``, wakes the thread (``_wakeup``), lets the subclass stop
what feeds it (`_stopping`: an inotify observer) and joins the thread.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType


class StageThread:
    """One named daemon thread running `_run` until `close`; a context manager."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._wakeup = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._starting()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Ask the thread to stop, stop what feeds it (`_stopping`), and join it."""
        self._stop.set()
        self._wakeup.set()
        self._stopping()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def stopping(self) -> bool:
        """True once `close` has begun."""
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        """False when the thread ended by itself, not by a normal end (`_ended_normally`)."""
        return self._thread.is_alive() or not self._thread.ident or self._ended_normally()

    def _starting(self) -> None:
        """Before the thread starts (e.g. start watching a folder)."""

    def _stopping(self) -> None:
        """After the stop is set, before the join (e.g. stop an observer)."""

    def _ended_normally(self) -> bool:
        """Whether a thread that is no longer running ended as it should."""
        return False

    def _run(self) -> None:
        raise NotImplementedError
