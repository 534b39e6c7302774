"""The service shell's small parts: signals, logging, the status file, the report schema."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import jsonschema
import pytest
import structlog
from daemon_support import SCHEMA
from logging_state import logging_restored

from daemon import errors
from daemon.commands import status as status_command
from daemon.logs import configure_logging, use_json
from daemon.service.signals import Shutdown, capture_signals
from daemon.service.status import (
    EXIT_DEAD,
    EXIT_NOT_RUNNING,
    EXIT_RUNNING,
    EXIT_UNKNOWN,
    STATUS_VERSION,
    describe,
    read_status,
    write_status,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def _restore_structlog() -> Iterator[None]:
    with logging_restored():
        yield


class TestSignals:
    def test_first_signal_stops_second_sigint_forces_handlers_restored(self) -> None:
        """SIGTERM asks to stop; a second SIGINT forces; the old handlers come back after."""
        before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        with capture_signals(Shutdown()) as shutdown:
            os.kill(os.getpid(), signal.SIGTERM)
            assert shutdown.stop.wait(5)
            assert not shutdown.force.is_set()
            os.kill(os.getpid(), signal.SIGINT)
            assert shutdown.force.wait(5)
        assert shutdown.signals == ["SIGTERM", "SIGINT"]
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before

    def test_off_the_main_thread_nothing_is_installed(self) -> None:
        """Embedded in another program's thread: no ValueError, the handlers stay as they were."""
        before = signal.getsignal(signal.SIGTERM)
        outcome: list[object] = []

        def embedded() -> None:
            try:
                with capture_signals(Shutdown()) as shutdown:
                    outcome.append(signal.getsignal(signal.SIGTERM))
                    shutdown.stop.set()
            except ValueError as exc:  # what signal.signal raises off the main thread
                outcome.append(exc)

        thread = threading.Thread(target=embedded)
        thread.start()
        thread.join(5)
        assert outcome == [before]

    def test_a_second_sigterm_does_not_force(self) -> None:
        """systemd sends SIGTERM once; only Ctrl-C twice cuts the drain short."""
        with capture_signals(Shutdown()) as shutdown:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert shutdown.stop.wait(5)
        assert not shutdown.force.is_set()


@pytest.mark.usefixtures("_restore_structlog")
class TestLogging:
    def test_json_lines_when_not_a_terminal(self) -> None:
        """auto on a pipe/file: one JSON object per line, with level and UTC timestamp."""
        stream = io.StringIO()
        configure_logging("info", "auto", stream)
        structlog.get_logger("t").info("scan", scan="abc", probability=0.5)
        structlog.get_logger("t").debug("hidden")
        (line,) = stream.getvalue().splitlines()
        event = json.loads(line)
        assert event["event"] == "scan" and event["scan"] == "abc" and event["level"] == "info"
        assert event["timestamp"].endswith("Z")

    def test_console_when_a_terminal(self) -> None:
        """auto on a terminal renders readable console lines, not JSON."""

        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        assert use_json("auto", io.StringIO())
        assert not use_json("auto", Terminal())
        stream = Terminal()
        configure_logging("info", "console", stream)
        structlog.get_logger("t").warning("scan", code="EMPTY_FILE")
        text = stream.getvalue()
        assert "scan" in text and "code=EMPTY_FILE" in text and not text.startswith("{")

    def test_tracebacks_never_show_local_variables(self) -> None:
        """A logged exception carries the traceback, but no locals (they may hold file names)."""
        stream = io.StringIO()
        configure_logging("info", "json", stream)
        file_name = "Doe_Jane_1945.dcm"  # noqa: F841 - a local that must not be logged
        try:
            raise ValueError("boom")  # noqa: TRY301
        except ValueError:
            structlog.get_logger("t").exception("decode_crashed")
        text = stream.getvalue()
        assert "boom" in text and "Doe_Jane" not in text


class TestStatus:
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)

    def _doc(self, **fields) -> dict:
        return {
            "version": STATUS_VERSION,
            "state": "running",
            "pid": os.getpid(),
            "started_at": "2026-01-01T10:00:00Z",
            "updated_at": "2026-01-01T11:59:58Z",
            "interval_s": 5.0,
            "processed": 1234,
            "failed": 5,
            "pending": 2,
            "waiting": 7,
            "last_scan_at": "2026-01-01T11:59:57Z",
            "model": {"name": "m", "version": "1.0", "precision": "bf16", "device": "CPU"},
            **fields,
        }

    def test_running(self) -> None:
        """Fresh file, live pid: running, counters and uptime shown, exit 0."""
        text, code = describe(self._doc(), Path("s.json"), self.now)
        assert code == EXIT_RUNNING
        assert "running" in text and "up 2 h 00 min" in text
        assert "1,234" in text and "2 pending, 7 waiting" in text and "m 1.0" in text

    def test_gone_or_hung_or_stopped_or_missing(self) -> None:
        """Dead pid or stale file: exit 1 and said loudly; stopped or no file: exit 3."""
        _, dead = describe(self._doc(pid=2**22 + 12345), Path("s.json"), self.now)
        text, stale = describe(self._doc(updated_at="2026-01-01T11:00:00Z"), Path("s"), self.now)
        assert dead == stale == EXIT_DEAD and "STALE" in text
        _, stopped = describe(self._doc(state="stopped"), Path("s.json"), self.now)
        text, missing = describe(None, Path("s.json"), self.now)
        assert stopped == missing == EXIT_NOT_RUNNING and "no status file" in text

    def test_a_status_file_of_another_version_is_not_guessed_at(self, tmp_path) -> None:
        """The version written is STATUS_VERSION; a file of another version: exit 4, said so."""
        path = tmp_path / "status.json"
        write_status(path, self._doc(version=99))
        document = read_status(path)
        assert document is not None
        assert document["version"] == STATUS_VERSION
        assert describe(document, path, self.now)[1] == EXIT_RUNNING
        text, code = describe(self._doc(version=STATUS_VERSION + 1), path, self.now)
        assert code == EXIT_UNKNOWN and "status version 2" in text


class TestStatusCommand:
    def test_an_unreadable_status_file_is_said_not_taken_for_a_stopped_daemon(
        self, tmp_path, capsys
    ) -> None:
        """A status file that cannot be read: exit 4 (unknown) with the reason, not 'stopped'."""
        status_file = tmp_path / "status.json"
        status_file.mkdir()  # unreadable as a file, even for root (EISDIR)
        config = tmp_path / "daemon.yaml"
        config.write_text(f"service:\n  status_file: {status_file}\n", encoding="utf-8")
        assert status_command.main(["--config", str(config)]) == EXIT_UNKNOWN
        err = capsys.readouterr().err
        assert "cannot read the status file" in err and str(status_file) in err
        assert "not running" not in err


def test_published_schema_is_a_valid_2020_12_schema() -> None:
    """schemas/report.schema.json is itself valid JSON Schema draft 2020-12 and versioned."""
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["properties"]["schema_version"]["pattern"] == "^1\\.[0-9]+$"


def test_error_codes_in_the_schema_are_the_codes_the_daemon_raises() -> None:
    """Every ScanError code is listed in the schema's examples (the documented contract)."""
    codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.ScanError)
        and cls is not errors.ScanError
    }
    assert codes == set(SCHEMA["$defs"]["error"]["properties"]["code"]["examples"])
