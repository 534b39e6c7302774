"""systemd's notify protocol, spoken directly over a Unix datagram socket (no libsystemd).

``$NOTIFY_SOCKET`` names the socket: a path, or an abstract socket written with a leading ``@``.
Each message is newline-separated ``KEY=VALUE`` lines in one datagram: ``READY=1`` once the model
is compiled, ``STATUS=...`` with the counters, ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC``
(only when ``$WATCHDOG_PID`` is unset or names this process), ``STOPPING=1`` at shutdown.

Without ``$NOTIFY_SOCKET`` every call is a no-op; a failing send is logged once and never raised:
notification must not be able to stop the service.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import Mapping

log = structlog.get_logger("infarctwatch.sdnotify")


def _address(name: str) -> str:
    return "\0" + name[1:] if name.startswith("@") else name


class Notifier:
    """Sends sd_notify messages to one socket."""

    def __init__(self, socket_name: str | None, watchdog_usec: int | None = None) -> None:
        self._address = _address(socket_name) if socket_name else None
        self._socket: socket.socket | None = None
        self._warned = False
        self.watchdog_interval_s = watchdog_usec / 2e6 if watchdog_usec else None
        """Half the watchdog timeout: how often to send ``WATCHDOG=1``; None when not asked."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier configured by ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        usec: int | None = None
        watchdog_pid = env.get("WATCHDOG_PID", "")
        if not watchdog_pid or watchdog_pid == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "")) or None
            except ValueError:
                usec = None
        return cls(env.get("NOTIFY_SOCKET") or None, usec)

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; True when it was sent."""
        if self._address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(message.encode("utf-8"), self._address)
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify_failed", error=exc.strerror or str(exc))
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """``READY=1`` with a status line."""
        return self.send(READY=1, STATUS=status, MAINPID=os.getpid())

    def status(self, status: str) -> bool:
        """``STATUS=...``."""
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: still alive and making progress."""
        return self.send(WATCHDOG=1)

    def stopping(self, status: str) -> bool:
        """``STOPPING=1`` with a status line."""
        return self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        """Close the socket (a later send reopens it)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
