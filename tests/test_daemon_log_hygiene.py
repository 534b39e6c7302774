"""Every line the daemon and its worker processes write to stderr is one JSON object.

Third-party warnings (pydicom's ``warnings.warn``), third-party stdlib logging and uncaught
exceptions go through structlog, sanitised: a library's message loses its quoted literals, where
pydicom quotes element values such as a patient's name.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import warnings
from typing import TYPE_CHECKING, Any

import pydicom
import pydicom.config
import pytest
from daemon_support import (
    BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    PYDICOM_FILES,
    dicom_bytes,
    spawn,
    write_config,
)
from decoder_faults import serve_noisily_then_fail
from logging_state import logging_restored
from pydicom.filewriter import dcmwrite

from daemon.errors import WorkerStartError
from daemon.logs import LibraryLogHandler, configure_logging, sanitise
from daemon.shared.decode import DecodeLimits
from daemon.workers.process import WorkerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

IDENTIFIERS = (PATIENT_NAME, PATIENT_ID, BIRTH_DATE, "Doe^Jane", "Doe")


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line parsed as JSON; a line that is not fails the test, quoted in the message."""
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a stderr line is not JSON: {line!r}")
    return events


def _explicit_meta_implicit_body() -> bytes:
    """A DWI DICOM whose file meta says explicit VR but whose data set is implicit VR.

    pydicom reads it, warning "Expected explicit VR, but found implicit VR" (a real PACS fault).
    It carries the patient attributes of `daemon_support.dicom_bytes`.
    """
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=True, little_endian=True, force_encoding=True)
    return buffer.getvalue()


def _as_mr(path: Path) -> bytes:
    """The file with Modality MR, its pixel data untouched (so that the daemon decodes it)."""
    ds = pydicom.dcmread(path)
    ds.Modality = "MR"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """This process logging JSON lines into a buffer, put back as it was after the test."""
    stream = io.StringIO()
    with logging_restored():
        configure_logging("info", "json", stream)
        yield stream


class TestTheRealDaemon:
    def test_every_stderr_line_is_json_while_pydicom_warns(self, tmp_path) -> None:
        """A real run over files that make pydicom warn and fail: JSON only, no identifier."""
        config = write_config(tmp_path, watch={"stable_s": 0})
        incoming = tmp_path / "incoming"
        incoming.mkdir()
        (incoming / "mismatch.dcm").write_bytes(_explicit_meta_implicit_body())
        (incoming / "JPEG-lossy.dcm").write_bytes(_as_mr(PYDICOM_FILES / "JPEG-lossy.dcm"))
        (incoming / "MR_small.dcm").write_bytes((PYDICOM_FILES / "MR_small.dcm").read_bytes())
        log = tmp_path / "stderr.log"
        process = spawn("run", "--once", "--config", str(config), log=log)
        assert process.wait(timeout=120) == 0
        text = log.read_text(encoding="utf-8")
        events = _json_lines(text)
        warned = [e for e in events if e["event"] == "library_warning"]
        assert warned, "pydicom's warning did not reach the log"
        assert warned[0]["category"] == "UserWarning"
        assert warned[0]["module"].startswith("pydicom/filereader.py:")
        assert "Expected explicit VR, but found implicit VR" in warned[0]["message"]
        texts = [e["message"] for e in events if e["event"] == "library_warning"]
        assert len(texts) == len(set(texts)), "a warning was logged twice"
        scans = {e["code"] for e in events if e["event"] == "scan" and "code" in e}
        # JPEG-lossy.dcm (made MR: an NM file is refused from its header, never decoded); the two
        # others decoded, MR_small.dcm (a T2 spin echo) refused from its header (not_analysed,
        # tests/test_daemon_scope.py)
        assert scans == {"TRUNCATED_IMAGE", "NOT_DWI"}
        assert not any(e["event"] == "library_log" for e in events)  # restated in the report
        assert "Traceback" not in text
        for identifier in IDENTIFIERS:
            assert identifier not in text

    def test_a_worker_that_fails_says_so_in_json(self, capfd) -> None:
        """A spawned worker's warning, library log line and escaping bug: JSON on its stderr."""
        with logging_restored():
            configure_logging("info", "json", io.StringIO())  # the settings the child inherits
            worker = WorkerProcess(0, DecodeLimits(), 1 << 20, 5.0, target=serve_noisily_then_fail)
            worker.start()
            with pytest.raises(WorkerStartError, match="exit code 1"):
                worker.wait_ready()
        events = _json_lines(capfd.readouterr().err)
        by_event = {e["event"]: e for e in events}
        assert set(by_event) == {"library_warning", "library_log", "worker_failed"}
        assert by_event["library_warning"]["message"] == "Invalid value for VR PN: '…'"
        assert by_event["library_log"] == {
            **by_event["library_log"],
            "logger": "somelib",
            "message": "cannot open '…'",
            "level": "warning",
        }
        failed = by_event["worker_failed"]
        assert failed["level"] == "critical"
        assert failed["exception"][0]["exc_type"] == "RuntimeError"
        assert "Doe^Jane" not in json.dumps(events)


class TestSanitise:
    def test_quoted_literals_go_first_line_stays(self) -> None:
        """'...', "..." and b'...' become '…'; only the first line, at most 200 characters."""
        text = "Invalid value for VR PN: 'Doe^Jane' and \"x\" and b'\\x00'\n  source line"
        assert sanitise(text) == "Invalid value for VR PN: '…' and '…' and '…'"
        assert len(sanitise("x" * 1000)) == 200
        assert sanitise("") == ""


@pytest.mark.usefixtures("json_log")
class TestRouting:
    def test_a_real_pydicom_warning_is_one_line_without_the_value(self, json_log) -> None:
        """pydicom validating a birth date quotes it; one library_warning, the date gone."""
        birth_date = "1945-03-17"  # not a DA value (YYYYMMDD): pydicom quotes it in its warning
        ds = pydicom.Dataset()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            configure_logging("info", "json", json_log)  # inside: catch_warnings restores it
            settings = pydicom.config.settings  # a new element is checked in the reading mode
            previous = settings.reading_validation_mode
            settings.reading_validation_mode = pydicom.config.WARN
            try:
                ds.PatientBirthDate = birth_date
            finally:
                settings.reading_validation_mode = previous
        events = _json_lines(json_log.getvalue())
        assert [e["event"] for e in events] == ["library_warning"]  # not twice (warn_and_log)
        assert events[0]["module"].startswith("pydicom/")
        assert events[0]["category"] == "UserWarning"
        assert events[0]["message"] == "Invalid value for VR DA: '…'."
        assert birth_date not in json_log.getvalue()

    def test_library_errors_are_warnings_with_the_exception_type(self, json_log) -> None:
        """A library's logger.exception: one library_log at warning, exception type and text."""
        try:
            raise OSError("cannot read 'Doe^Jane.dcm'")  # noqa: TRY301
        except OSError:
            logging.getLogger("somelib.io").exception("reading failed")
        (event,) = _json_lines(json_log.getvalue())
        assert event["event"] == "library_log" and event["level"] == "warning"
        assert event["logger"] == "somelib.io" and event["message"] == "reading failed"
        assert event["exception"] == "OSError: cannot read '…'"

    def test_watchdog_records_are_left_to_the_watchers_bridge(self, json_log) -> None:
        """The root handler does not repeat what `WatchdogLogBridge` forwards."""
        logging.getLogger("watchdog.observers.inotify_buffer").warning("queue overflow")
        assert json_log.getvalue() == ""

    def test_an_uncaught_exception_in_a_thread_is_json(self, json_log) -> None:
        """threading.excepthook: one uncaught_exception event with the thread and traceback."""

        def fail() -> None:
            raise ValueError("thread bug")

        thread = threading.Thread(target=fail, name="doomed")
        thread.start()
        thread.join()
        (event,) = _json_lines(json_log.getvalue())
        assert event["event"] == "uncaught_exception" and event["thread"] == "doomed"
        assert event["exception"][0]["exc_type"] == "ValueError"

    def test_configuring_twice_keeps_one_handler(self, json_log) -> None:
        """Idempotent: a second configuration replaces the root handler instead of adding one."""
        configure_logging("info", "json", json_log)
        handlers = [h for h in logging.getLogger().handlers if isinstance(h, LibraryLogHandler)]
        assert len(handlers) == 1
