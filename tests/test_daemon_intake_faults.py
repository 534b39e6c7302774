"""Fault injection against the real daemon's intake: files still being written, placeholders,
folders that vanish, ignored names, inotify overflow.

Real daemon processes (or a real `Service` in this process where a fault must be injected into
it), real folders, the real watchdog observer and real scan-worker processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest
from daemon_support import (
    ServiceThread,
    cli,
    drop,
    files_under,
    log_events,
    make_config,
    reports,
    small_png,
    spawn,
    wait_for,
    write_config,
)
from structlog.testing import capture_logs
from watchdog.events import EventsLostEvent

from daemon.config import OutcomeConfig, load_config
from daemon.intake import writers
from daemon.intake.claims import ClaimArea
from daemon.intake.ignored import IgnoredNames
from daemon.intake.rules import IntakeRules, Offer
from daemon.intake.watcher import WatchdogLogBridge, Watcher
from daemon.intake.writers import held_for_writing

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.slow  # real daemons, real waits

STABLE_S = 0.5


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Any]:
    """Start a real daemon process with a config; it is stopped (SIGTERM, exit 0) afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**sections: Any) -> tuple[Path, Path]:
        config = write_config(tmp_path, **sections)
        log = tmp_path / "daemon.log"
        started.append(spawn("run", "--config", str(config), log=log))
        wait_for(lambda: _events(log, "started"), 60, "the daemon to start")
        return config, log

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        errors = [e for e in log_events(tmp_path / "daemon.log") if e.get("level") == "error"]
        assert code == 0, (errors, (tmp_path / "daemon.log").read_text(encoding="utf-8")[-3000:])


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [e for e in log_events(log) if e.get("event") == name]


def _watch(**extra: Any) -> dict[str, Any]:
    return {"stable_s": STABLE_S, "poll_interval_s": 0.1, "reconcile_interval_s": 30, **extra}


def _one_report(folder: Path, name: str) -> dict[str, Any]:
    found = reports(folder)  # also fails on two reports for one input
    assert list(found) == [name], found.keys()
    return found[name]


class TestCompleteBeforeClaimed:
    def test_writer_pausing_during_the_startup_scan_gets_one_ok_report(
        self, tmp_path, daemon
    ) -> None:
        incoming = tmp_path / "incoming"
        incoming.mkdir()
        data = small_png(1)
        with (incoming / "slow.png").open("wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            _, log = daemon(watch=_watch(grace_s=0.3))
            wait_for(lambda: _events(log, "startup_scan"), 30, "the start-up scan")
            time.sleep(2 * STABLE_S)  # size and mtime hold still: only our open fd says "writing"
            assert (incoming / "slow.png").exists(), "claimed while still open for writing"
            fh.write(data[len(data) // 2 :])
        finished = time.monotonic()
        wait_for(lambda: (tmp_path / "reports").exists() and reports(tmp_path / "reports"), 30)
        print(f"paused writer: reported {time.monotonic() - finished:.2f} s after its close")
        report = _one_report(tmp_path / "reports", "slow.png")
        assert report["status"] == "ok", report["error"]
        assert files_under(tmp_path / "work" / "failed") == []
        assert not _events(log, "put_back")

    def test_without_proc_a_claimed_file_still_being_written_is_put_back_then_reported_once(
        self, tmp_path, monkeypatch
    ) -> None:
        # The fault: /proc cannot be read (as for another user's writer), so the size and mtime
        # rule alone decides, the file is claimed mid-write, and found truncated.
        monkeypatch.setattr(writers, "_PROC", tmp_path / "no-proc")
        incoming = tmp_path / "incoming"
        incoming.mkdir()
        config = make_config(tmp_path, watch=_watch(grace_s=2.0))
        data = small_png(2)
        with capture_logs() as logged, (incoming / "slow.png").open("wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            service = ServiceThread(config).start()
            try:
                wait_for(lambda: not (incoming / "slow.png").exists(), 30, "the claim")
                time.sleep(1.0)  # decoded meanwhile (truncated), well before the second look
                fh.write(data[len(data) // 2 :])  # the writer goes on, into processing/
                fh.close()
                finished = time.monotonic()
                wait_for(lambda: reports(tmp_path / "reports"), 30, "a report")
                took = time.monotonic() - finished
                print(f"claimed mid-write: reported {took:.2f} s after the writer closed it")
                time.sleep(1.0)  # a second (wrong) report would have come by now
            finally:
                assert service.stop() == 0
        report = _one_report(tmp_path / "reports", "slow.png")
        assert report["status"] == "ok", report["error"]
        assert files_under(tmp_path / "work" / "failed") == []
        assert files_under(tmp_path / "work" / "done") == ["slow.png"]
        events = [e["event"] for e in logged]
        assert "writer_check_partial" in events
        assert events.count("put_back") == 1, events

    def test_zero_byte_placeholder_filled_later_gets_one_ok_report(self, tmp_path, daemon) -> None:
        _, log = daemon(watch=_watch(grace_s=3.0))
        placeholder = tmp_path / "incoming" / "slice.png"
        placeholder.touch()  # created and closed: a close event for a 0-byte file
        time.sleep(1.0)  # longer than stable_s, shorter than grace_s
        with placeholder.open("r+b") as fh:  # the writer opens the same path: still there
            fh.write(small_png(3))
        filled = time.monotonic()
        wait_for(lambda: reports(tmp_path / "reports"), 30, "a report")
        print(f"placeholder: reported {time.monotonic() - filled:.2f} s after it was filled")
        time.sleep(3.5)  # past the grace period: an EMPTY_FILE report would have come
        report = _one_report(tmp_path / "reports", "slice.png")
        assert report["status"] == "ok", report["error"]
        assert not [e for e in _events(log, "scan") if e.get("code") == "EMPTY_FILE"]

    def test_a_zero_byte_file_that_stays_empty_gets_empty_file_after_the_grace_period(
        self, tmp_path, daemon
    ) -> None:
        daemon(watch=_watch(grace_s=1.0))
        started = time.monotonic()
        (tmp_path / "incoming" / "empty.png").touch()
        wait_for(lambda: reports(tmp_path / "reports"), 30, "a report")
        assert time.monotonic() - started >= 1.0
        report = _one_report(tmp_path / "reports", "empty.png")
        assert report["error"]["code"] == "EMPTY_FILE"

    def test_a_truly_truncated_file_still_gets_truncated_image(self, tmp_path, daemon) -> None:
        _, log = daemon(watch=_watch(grace_s=0.5))
        data = small_png(4)
        drop(tmp_path / "incoming", "cut.png", data[: len(data) // 2])
        wait_for(lambda: reports(tmp_path / "reports"), 30, "a report")
        report = _one_report(tmp_path / "reports", "cut.png")
        assert report["error"]["code"] == "TRUNCATED_IMAGE"
        assert files_under(tmp_path / "work" / "failed") == ["cut.png"]
        assert not _events(log, "put_back")


class TestFoldersComeBack:
    def test_incoming_deleted_and_recreated_files_dropped_afterwards_are_processed(
        self, tmp_path, daemon
    ) -> None:
        reconcile_s = 3.0
        config, log = daemon(watch=_watch(reconcile_interval_s=reconcile_s))
        incoming, out = tmp_path / "incoming", tmp_path / "reports"
        drop(incoming, "before.png", small_png(5))
        wait_for(lambda: "before.png" in reports(out), 30, "the first report")
        shutil.rmtree(incoming, ignore_errors=True)  # the daemon may recreate parts meanwhile
        incoming.mkdir(exist_ok=True)  # the daemon may have made it again already
        dropped = time.monotonic()
        drop(incoming, "after.png", small_png(6))
        wait_for(lambda: "after.png" in reports(out), reconcile_s + 5, "the report after")
        recovery_s = time.monotonic() - dropped
        assert recovery_s <= reconcile_s, recovery_s
        replaced = _events(log, "folder_replaced")
        assert replaced
        assert replaced[0]["level"] == "error"
        assert "incoming" in replaced[0]["folders"]
        assert (incoming / ".infarctwatch" / "lock").exists()
        status = json.loads((tmp_path / "work" / "status.json").read_text(encoding="utf-8"))
        assert status["folders"]["recoveries"] >= 1
        shown = cli("status", "--config", str(config))
        assert "RECREATED" in shown.stdout, shown.stdout
        print(f"recovery after incoming was replaced: {recovery_s:.2f} s")

    def test_incoming_removed_and_not_recreated_is_recreated_by_the_daemon(
        self, tmp_path, daemon
    ) -> None:
        _, log = daemon(watch=_watch())
        incoming = tmp_path / "incoming"
        removed = time.monotonic()
        shutil.rmtree(incoming, ignore_errors=True)  # the daemon may recreate parts meanwhile
        wait_for((incoming / ".infarctwatch" / "lock").exists, 10, "incoming again")
        recreated_s = time.monotonic() - removed
        drop(incoming, "again.png", small_png(7))
        wait_for(lambda: "again.png" in reports(tmp_path / "reports"), 10, "the report")
        assert _events(log, "folder_replaced")
        print(f"incoming recreated {recreated_s:.2f} s after it was removed")

    def test_a_folder_that_cannot_be_made_again_exits_1_naming_it(self, tmp_path) -> None:
        config = write_config(tmp_path, watch=_watch())
        log = tmp_path / "daemon.log"
        process = spawn("run", "--config", str(config), log=log)
        try:
            wait_for(lambda: _events(log, "started"), 60, "the daemon to start")
            incoming = tmp_path / "incoming"
            shutil.rmtree(incoming, ignore_errors=True)
            incoming.write_bytes(b"a file where the folder was")  # no folder can be made there
            blocked = time.monotonic()
            assert process.wait(30) == 1  # systemd restarts on 1 (never on 2)
            print(
                f"folder that cannot be made again: exit 1 after {time.monotonic() - blocked:.2f} s"
            )
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        lost = _events(log, "folder_lost")
        assert lost
        assert lost[0]["level"] == "error"
        assert "'incoming'" in lost[-1]["error"]

    def test_reports_folder_deleted_reports_still_written(self, tmp_path, daemon) -> None:
        _, log = daemon(watch=_watch())
        out = tmp_path / "reports"
        shutil.rmtree(out)
        dropped = time.monotonic()
        drop(tmp_path / "incoming", "x.png", small_png(8))
        wait_for(lambda: out.exists() and "x.png" in reports(out), 15, "the report")
        print(f"reports folder deleted: report written {time.monotonic() - dropped:.2f} s after")
        wait_for(lambda: _events(log, "folder_replaced"), 5, "the error line")
        assert not _events(log, "report_write_failed")


class TestIgnoredNames:
    def test_each_ignored_name_is_logged_once_without_its_name_and_counted(
        self, tmp_path, daemon
    ) -> None:
        config, log = daemon(watch=_watch(reconcile_interval_s=1.0, recursive=False))
        incoming = tmp_path / "incoming"
        (incoming / "..png").write_bytes(small_png(9))
        (incoming / "Mueller.png.part").write_bytes(small_png(10))
        (incoming / "study-Mueller").mkdir()
        (incoming / "study-Mueller" / "a.png").write_bytes(small_png(11))
        (incoming / "real.png").write_bytes(small_png(12))
        wait_for(lambda: "real.png" in reports(tmp_path / "reports"), 30, "the real report")
        wait_for(lambda: len(_events(log, "ignored_in_incoming")) >= 3, 10, "3 ignored lines")
        time.sleep(6.0)  # more reconciliation scans, a status write
        lines = _events(log, "ignored_in_incoming")
        assert sorted(e["reason"] for e in lines) == ["dotfile", "folder", "ignored_suffix"]
        text = log.read_text(encoding="utf-8")
        assert "Mueller" not in text
        assert "..png" not in text
        status = json.loads((tmp_path / "work" / "status.json").read_text(encoding="utf-8"))
        assert status["ignored"] == 3
        shown = cli("status", "--config", str(config))
        assert "ignored      3 names" in shown.stdout, shown.stdout


class TestOverflow:
    def test_events_lost_logs_once_and_scans(self, tmp_path) -> None:
        """An overflow (injected: the observer's EventsLostEvent) is logged once and scanned."""
        folder = tmp_path / "incoming"
        folder.mkdir()
        config = make_config(tmp_path, watch=_watch(reconcile_interval_s=3600)).watch
        taken: list[Path] = []

        def offer(path: Path) -> Offer:
            taken.append(path)
            path.unlink()
            return Offer.CLAIMED

        other = WatchdogLogBridge("models", lambda: False)  # a second observer's bridge
        logging.getLogger("watchdog").addHandler(other)
        rules = IntakeRules(folder, recursive=False, ignore_suffixes=())
        try:
            with capture_logs() as logged, Watcher(config, rules, offer) as w:
                wait_for(lambda: w.waiting == 0, 10)
                time.sleep(0.3)  # the start-up scan is done
                outside = tmp_path / "outside.png"
                outside.write_bytes(b"x")
                os.utime(outside, ns=(0, 0))
                os.link(outside, folder / "missed.png")  # a hard link: no close or move event
                time.sleep(2 * STABLE_S)
                assert taken == []  # no event took it: only a scan can
                # as if its events had been lost in an overflow: the loss is reported
                lost = time.monotonic()
                w._handler.dispatch(EventsLostEvent(str(folder), is_directory=True))
                logging.getLogger("watchdog.observers.inotify_c").warning(
                    "Inotify queue overflowed; filesystem events were lost"
                )
                wait_for(lambda: taken, 10, "the file found by the scan")
                print(f"overflow: the missed file taken {time.monotonic() - lost:.2f} s after it")
        finally:
            logging.getLogger("watchdog").removeHandler(other)
        events = [e["event"] for e in logged]
        assert events.count("inotify_overflow") == 1, events
        assert "watchdog_warning" not in events
        assert taken == [folder / "missed.png"]


class TestOpenWriters:
    def test_a_file_open_for_writing_is_held_and_one_open_for_reading_is_not(
        self, tmp_path
    ) -> None:
        written, read, closed = tmp_path / "w", tmp_path / "r", tmp_path / "c"
        for path in (written, read, closed):
            path.write_bytes(b"data")
        with written.open("ab"), read.open("rb"):
            check = held_for_writing([written, read, closed])
        assert check.held == {written}
        assert held_for_writing([written]).held == frozenset()

    def test_no_proc_means_not_complete(self, tmp_path) -> None:
        check = held_for_writing([tmp_path / "x"], proc=tmp_path / "missing")
        assert not check.complete
        assert check.held == frozenset()


def test_config_default_grace_is_documented(tmp_path) -> None:
    config = load_config(write_config(tmp_path))
    assert config.watch.grace_s == 5.0


class TestIgnoredNamesRateLimit:
    def test_one_line_per_name_at_most_ten_a_minute_all_counted(self, tmp_path) -> None:
        names = IgnoredNames("incoming")
        with capture_logs() as logged:
            for i in range(15):
                names.tell(tmp_path / f".secret-{i}.png", "dotfile")
            names.tell(tmp_path / ".secret-0.png", "dotfile")  # the same name again
        assert names.count == 15
        assert len(logged) == 10
        assert all("secret" not in str(entry) for entry in logged)


class TestPutBack:
    def test_a_claim_put_back_never_replaces_a_file_that_took_its_name(self, tmp_path) -> None:
        incoming, work = tmp_path / "incoming", tmp_path / "work"
        incoming.mkdir()
        area = ClaimArea(incoming, work, OutcomeConfig())
        area.processing.mkdir(parents=True)
        (incoming / "scan.png").write_bytes(b"first")
        claim = area.claim(incoming / "scan.png")
        assert claim is not None
        (incoming / "scan.png").write_bytes(b"newcomer")
        back = area.unclaim(claim)
        assert back == incoming / "scan~1.png"
        assert back.read_bytes() == b"first"
        assert (incoming / "scan.png").read_bytes() == b"newcomer"
        assert files_under(area.processing) == []
