"""The write side against faults, with real daemons: names as bytes, poison files, the repeat
guard, storage trouble (a real full tmpfs and a failing-file-system shim), folders waited for at
start, the umask, ``status`` on a closed pipe."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import storage_faults
from daemon_support import (
    REPO,
    VALIDATOR,
    brain_slice,
    claim_root,
    cli,
    files_under,
    log_events,
    reports,
    spawn,
    wait_for,
    write_config,
)
from PIL import Image

from daemon.config import load_config

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow  # real daemon processes, a few seconds each

LATIN1 = b"M\xfcller.png"


def _png(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(brain_slice(128, seed).astype(np.uint16)).save(buffer, "PNG")
    return buffer.getvalue()


def _put(folder: Path, name: bytes, data: bytes) -> None:
    """Write a file under a raw byte name (a careful sender: a dotfile, then a rename)."""
    base = os.fsencode(folder)
    tmp = base + b"/." + hashlib.sha256(name).hexdigest()[:12].encode() + b".part"
    with open(tmp, "wb") as fh:  # noqa: PTH123 - a bytes path
        fh.write(data)
    os.rename(tmp, base + b"/" + name)  # noqa: PTH104 - a bytes path


def _raw_names(folder: Path) -> list[bytes]:
    return sorted(os.listdir(os.fsencode(folder))) if folder.exists() else []  # noqa: PTH208 - bytes


def _name_tag(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:8]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemons started by a test; any still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _spawn_faulty(
    path: Path, log: Path, env: dict[str, str], *args: str
) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            storage_faults.command("run", "--config", str(path), *args),
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **env},
            cwd=REPO,
        )


def _status(path: Path) -> tuple[int, str, dict]:
    text = cli("status", "--config", str(path))
    document = json.loads(cli("status", "--config", str(path), "--json").stdout)
    return text.returncode, text.stdout, document


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text(encoding="ascii").split()]
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


class TestNamesAreBytes:
    def test_any_name_is_processed_and_reported_with_its_raw_bytes(self, tmp_path) -> None:
        """Latin-1, a newline, a 255-byte name and a name taken twice: every one reported.

        ``run --once`` exits 0; ``source.name`` is valid JSON with ``%XX`` for undecodable bytes,
        ``name_base64`` the exact bytes; the id's name part hashes the raw bytes; done/ holds the
        raw names (the second M\\xfcller.png as M\\xfcller~1.png); no name reaches the log.
        """
        path = write_config(tmp_path)
        config = load_config(path)
        config.incoming.mkdir(parents=True)
        long_name = b"x" * 251 + b".png"
        names = {
            LATIN1: _png(1),
            b"line\nbreak.png": _png(2),
            long_name: _png(3),
            "ok-\u00e9.png".encode(): _png(4),
            b"50%.png": _png(5),
        }
        for name, data in names.items():
            _put(config.incoming, name, data)
        result = cli("run", "--config", str(path), "--once")
        assert result.returncode == 0, result.stderr
        found = reports(config.reports)  # validated against the schema, one per input
        _put(config.incoming, LATIN1, _png(6))  # the same name again, other content
        again = cli("run", "--config", str(path), "--once")
        assert again.returncode == 0, again.stderr

        assert sorted(found) == sorted(
            ["M%FCller.png", *(n.decode() for n in names if n != LATIN1)]
        )
        latin = [r for r in config.reports.glob("*.json") if "M%FCller" in r.read_text("utf-8")]
        assert len(latin) == 2, "one report per content under the Latin-1 name"
        for report_path in latin:
            document = json.loads(report_path.read_text(encoding="utf-8"))
            VALIDATOR.validate(document)
            assert document["status"] == "ok"
            assert base64.b64decode(document["source"]["name_base64"]) == LATIN1
            assert document["id"].endswith("-" + _name_tag(LATIN1))
            assert document["schema_version"] == "1.3"
        for name in names:
            if name != LATIN1:
                document = found[name.decode()]
                assert document["status"] == "ok"
                assert document["source"]["name_base64"] is None
                assert document["id"].endswith("-" + _name_tag(name))
        assert _raw_names(config.work / "done") == sorted([*names, b"M\xfcller~1.png"])
        assert files_under(claim_root(config) / "processing") == []
        for log in (result.stderr, again.stderr):
            assert "ller" not in log and "break" not in log and "xxxx" not in log

    def test_a_poison_file_gets_its_error_report_and_the_service_stays_up(
        self, tmp_path, processes
    ) -> None:
        """A Latin-1 name and a bug injected into building one report, among good files.

        The poison gets an INTERNAL_ERROR report, the Latin-1 file and the good ones ok reports,
        the daemon stays up (status running, exit 0 of `status`) and stops cleanly; `run --once`
        on the same mix exits 0.
        """
        path = write_config(tmp_path, pipeline={"decode_workers": 1})
        config = load_config(path)
        config.incoming.mkdir(parents=True)
        env = {"IW_FAULTS": "report"}
        daemon = _spawn_faulty(path, tmp_path / "daemon.log", env)
        processes.append(daemon)
        wait_for(config.status_path.exists, 60, "the daemon to start")
        mix = [b"good-1.png", LATIN1, b"poison-report.png", b"good-2.png"]
        for index, name in enumerate(mix):
            _put(config.incoming, name, _png(10 + index))
        wait_for(lambda: len(list(config.reports.glob("*.json"))) == len(mix), 60, "4 reports")
        found = reports(config.reports)
        poison = found["poison-report.png"]
        assert poison["status"] == "error"
        assert poison["error"]["code"] == "INTERNAL_ERROR"
        assert "while building the report" in poison["error"]["message"]
        assert poison["source"]["sha256"] is not None  # same id as the real report would have
        assert all(found[n]["status"] == "ok" for n in ("good-1.png", "M%FCller.png", "good-2.png"))
        assert _raw_names(config.work / "failed") == [b"poison-report.png"]
        time.sleep(1.5)  # the status file is rewritten within a second of a scan
        code, text, document = _status(path)
        assert code == 0 and document["state"] == "running", text
        assert daemon.poll() is None
        _put(config.incoming, b"good-3.png", _png(20))
        wait_for(lambda: len(list(config.reports.glob("*.json"))) == len(mix) + 1, 30, "more")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0

        once = tmp_path / "once"
        once.mkdir()
        once_path = write_config(once)
        once_config = load_config(once_path)
        once_config.incoming.mkdir(parents=True)
        for index, name in enumerate(mix):
            _put(once_config.incoming, name, _png(30 + index))
        run = subprocess.run(
            storage_faults.command("run", "--config", str(once_path), "--once"),
            capture_output=True,
            check=False,
            env={**os.environ, **env},
            cwd=REPO,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr.decode(errors="replace")
        once_found = reports(once_config.reports)
        assert once_found["poison-report.png"]["error"]["code"] == "INTERNAL_ERROR"
        assert sum(r["status"] == "ok" for r in once_found.values()) == 3


class TestRepeatGuard:
    def test_a_file_that_kills_the_daemon_3_times_is_set_aside(self, tmp_path, processes) -> None:
        """kill -9 three times while a file hangs its worker: the 4th start sets it aside.

        The hanging file gets a REPEATED_CRASH report and goes to failed/; the files that shared
        its batch, and those dropped between the restarts, get ok reports; nothing stays in
        processing/; the counts are gone once the claims are reported.
        """
        path = write_config(
            tmp_path,
            pipeline={"decode_workers": 1},
            limits={"decode_timeout_s": 600, "max_attempts": 3},
            watch={"stable_s": 0},
        )
        config = load_config(path)
        config.incoming.mkdir(parents=True)
        env = {"IW_FAULTS": "hang"}
        _put(config.incoming, b"a-good.png", _png(1))
        _put(config.incoming, b"hang-me.png", _png(2))
        _put(config.incoming, b"z-good.png", _png(3))
        for attempt in range(3):
            daemon = _spawn_faulty(path, tmp_path / f"run-{attempt}.log", env)
            processes.append(daemon)

            def hanging() -> bool:
                inflight = config.work / "inflight"
                marked = "".join(
                    base64.b64decode(k).decode(errors="replace")
                    for f in (inflight.iterdir() if inflight.exists() else ())
                    for k in f.read_text(encoding="ascii").split()
                )
                return "hang-me.png" in marked

            log = tmp_path / f"run-{attempt}.log"
            started = lambda log=log: any(e["event"] == "started" for e in log_events(log))  # noqa: E731
            wait_for(started, 60, "the daemon to take up its leftovers and start")
            wait_for(hanging, 60, "the hanging file to be in flight")
            time.sleep(0.5)
            workers = _children(daemon.pid)
            daemon.kill()
            assert daemon.wait(10) == -signal.SIGKILL
            wait_for(lambda w=workers: all(_gone(pid) for pid in w), 10, "the workers to die")
            _put(config.incoming, f"between-{attempt}.png".encode(), _png(10 + attempt))
        counts = json.loads((config.work / "attempts.json").read_text(encoding="ascii"))
        by_name = {base64.b64decode(k).decode().split("~", 1)[1]: n for k, n in counts.items()}
        # The hanging file was in flight at both deaths counted so far (the third is counted at
        # the next start). A file that shared its batch at the first death (which ones did depends
        # on how the claims were batched) was then scanned apart from it and counted only once.
        assert by_name.pop("hang-me.png") == 2, by_name
        assert set(by_name) <= {"a-good.png", "z-good.png"}, by_name
        assert all(n == 1 for n in by_name.values()), by_name

        began = time.monotonic()
        final = cli("run", "--config", str(path), "--once", env=env)
        assert final.returncode == 0, final.stderr
        print(f"repeat guard: the 4th start (run --once) took {time.monotonic() - began:.1f} s")
        found = reports(config.reports)
        assert found["hang-me.png"]["error"]["code"] == "REPEATED_CRASH"
        assert "3 times in a row" in found["hang-me.png"]["error"]["message"]
        others = ["a-good.png", "z-good.png", "between-0.png", "between-1.png", "between-2.png"]
        assert all(found[n]["status"] == "ok" for n in others), found
        assert files_under(config.work / "failed") == ["hang-me.png"]
        assert files_under(config.work / "done") == sorted(others)
        assert files_under(claim_root(config) / "processing") == []
        assert json.loads((config.work / "attempts.json").read_text(encoding="ascii")) == {}
        events = [json.loads(x) for x in final.stderr.splitlines() if x.startswith("{")]
        suspects = [e for e in events if e["event"] == "crash_suspects"]
        assert suspects and suspects[0]["set_aside"] == 1


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not permitted'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    """Fill ``folder``'s file system to the last byte; return the filler file."""
    filler = folder / ".filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


class _Notify:
    """A real sd_notify socket, collecting what the daemon sends."""

    def __init__(self, address: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(address))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[tuple[float, str]]:
        with contextlib.suppress(TimeoutError):
            while True:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
        return self.messages

    def close(self) -> None:
        self.sock.close()


class TestStorageTrouble:
    def test_full_reports_disk_degrades_then_every_report_is_written(  # noqa: PLR0915 - one story
        self, tmp_path, processes
    ) -> None:
        """A real full tmpfs under reports/: degraded, nothing failed, then all reported once.

        No restart (same pid), no duplicate, nothing in failed/, one log line per state change,
        STATUS= says degraded and WATCHDOG=1 keeps coming while degraded.
        """
        reports_dir = tmp_path / "reports"
        # 4 MiB: room for the 15 reports and the lesion maps' masks and overlays once freed
        with _tmpfs(reports_dir, "4m"):
            path = write_config(tmp_path)
            config = load_config(path)
            config.incoming.mkdir(parents=True)
            notify = _Notify(tmp_path / "notify.sock")
            log = tmp_path / "daemon.log"
            daemon = spawn(
                "run",
                "--config",
                str(path),
                env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"},
                log=log,
            )
            processes.append(daemon)
            try:
                wait_for(config.status_path.exists, 60, "the daemon to start")
                for i in range(3):
                    _put(config.incoming, f"before-{i}.png".encode(), _png(i))
                wait_for(lambda: len(list(reports_dir.glob("*.json"))) == 3, 30, "3 reports")
                filler = _fill(reports_dir)
                notify.drain()
                for i in range(12):
                    _put(config.incoming, f"during-{i:02d}.png".encode(), _png(100 + i))
                wait_for(lambda: _state(config) == "degraded", 30, "the degraded state")
                code, text, document = _status(path)
                assert code == 0 and "DEGRADED" in text and "ENOSPC" in text, text
                assert document["storage"]["state"] == "degraded"
                assert "ENOSPC" in document["last_error"]["message"]
                time.sleep(3)  # degraded a while: the watchdog keeps being fed, nothing fails
                assert files_under(config.work / "failed") == []
                assert len(list(reports_dir.glob("*.json"))) == 3
                claimed = files_under(claim_root(config) / "processing")
                waiting = [p.name for p in config.incoming.glob("during-*")]
                assert len(claimed) + len(waiting) == 12
                pings = [t for t, m in notify.drain() if m == "WATCHDOG=1"]
                assert len(pings) >= 4, "WATCHDOG=1 every half second while degraded"
                assert any("STATUS=degraded: storage: ENOSPC" in m for _, m in notify.messages)

                freed = time.monotonic()
                filler.unlink()
                wait_for(lambda: len(list(reports_dir.glob("*.json"))) == 15, 60, "15 reports")
                recovery = time.monotonic() - freed
                print(f"full disk: 12 more reports {recovery:.1f} s after space returned")
                found = reports(reports_dir)  # one report per input
                assert len(found) == 15 and all(r["status"] == "ok" for r in found.values())
                assert len(files_under(config.work / "done")) == 15
                assert files_under(claim_root(config) / "processing") == []
                wait_for(lambda: _state(config) == "running", 10, "running again")
                assert daemon.poll() is None
                daemon.send_signal(signal.SIGTERM)
                assert daemon.wait(30) == 0
            finally:
                notify.close()
        events = [e["event"] for e in log_events(log)]
        assert events.count("storage_degraded") == 1
        assert events.count("storage_recovered") == 1
        assert "stage_died" not in events

    def test_reports_remounted_read_only_degrades_then_recovers(self, tmp_path, processes) -> None:
        """A real read-only reports file system (EROFS): at start (waited for) and while running
        (degraded), then read-write again: every report written, no restart."""
        reports_dir = tmp_path / "reports"
        with _tmpfs(reports_dir, "4m"):
            path = write_config(tmp_path)
            config = load_config(path)
            config.incoming.mkdir(parents=True)
            read_only = ["mount", "-o", "remount,ro", str(reports_dir)]
            read_write = ["mount", "-o", "remount,rw", str(reports_dir)]
            subprocess.run(read_only, check=True)
            log = tmp_path / "daemon.log"
            daemon = spawn("run", "--config", str(path), log=log)
            processes.append(daemon)
            wait_for(lambda: _state(config) == "waiting", 60, "the wait for reports/")
            code, text, _ = _status(path)
            assert code == 0 and "Read-only file system" in text, text
            subprocess.run(read_write, check=True)
            wait_for(lambda: _state(config) == "running", 60, "the daemon to start")
            subprocess.run(read_only, check=True)
            for i in range(5):
                _put(config.incoming, f"scan-{i}.png".encode(), _png(i))
            wait_for(lambda: _state(config) == "degraded", 30, "the degraded state")
            code, text, document = _status(path)
            assert code == 0 and "EROFS" in document["storage"]["reason"], text
            assert files_under(config.work / "failed") == []
            back = time.monotonic()
            subprocess.run(read_write, check=True)
            wait_for(lambda: len(list(reports_dir.glob("*.json"))) == 5, 60, "5 reports")
            print(f"EROFS: 5 reports {time.monotonic() - back:.1f} s after remounting read-write")
            assert all(r["status"] == "ok" for r in reports(reports_dir).values())
            assert daemon.poll() is None
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(30) == 0

    @pytest.mark.parametrize("error", ["EIO", "EACCES", "ENOSPC"])
    def test_failing_filesystem_shim_degrades_and_recovers(
        self, tmp_path, processes, error
    ) -> None:
        """os.write/os.replace into reports/ fail with ``error``: degraded, then all reported."""
        path = write_config(tmp_path)
        config = load_config(path)
        config.incoming.mkdir(parents=True)
        switch = tmp_path / "fault-switch"
        env = {
            "IW_FAULTS": "storage",
            "IW_FAULT_DIR": str(config.reports),
            "IW_FAULT_SWITCH": str(switch),
        }
        log = tmp_path / "daemon.log"
        daemon = _spawn_faulty(path, log, env)
        processes.append(daemon)
        wait_for(lambda: _state(config) == "running", 60, "the daemon to start")
        switch.write_text(error, encoding="ascii")
        for i in range(6):
            _put(config.incoming, f"scan-{i}.png".encode(), _png(i))
        wait_for(lambda: _state(config) == "degraded", 30, "the degraded state")
        code, text, document = _status(path)
        assert code == 0 and error in document["storage"]["reason"], text
        assert files_under(config.work / "failed") == []
        assert list(config.reports.glob("*.json")) == []
        freed = time.monotonic()
        switch.unlink()
        wait_for(lambda: len(list(config.reports.glob("*.json"))) == 6, 60, "6 reports")
        print(f"{error}: 6 reports {time.monotonic() - freed:.1f} s after the fault was cleared")
        assert all(r["status"] == "ok" for r in reports(config.reports).values())
        assert files_under(claim_root(config) / "processing") == []
        assert daemon.poll() is None
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        events = [e["event"] for e in log_events(log)]
        assert events.count("storage_degraded") == 1 and events.count("storage_recovered") == 1

    def test_reports_folder_deleted_while_running_comes_back(self, tmp_path, processes) -> None:
        """ENOENT of the reports folder itself: degraded, the folder recreated, all reported."""
        path = write_config(tmp_path)
        config = load_config(path)
        config.incoming.mkdir(parents=True)
        log = tmp_path / "daemon.log"
        daemon = spawn("run", "--config", str(path), log=log)
        processes.append(daemon)
        wait_for(lambda: _state(config) == "running", 60, "the daemon to start")
        shutil.rmtree(config.reports)
        gone = time.monotonic()
        for i in range(4):
            _put(config.incoming, f"scan-{i}.png".encode(), _png(i))
        wait_for(lambda: len(list(config.reports.glob("*.json"))) == 4, 60, "4 reports")
        print(f"reports folder deleted: 4 reports {time.monotonic() - gone:.1f} s after")
        assert all(r["status"] == "ok" for r in reports(config.reports).values())
        assert files_under(config.work / "failed") == []
        assert daemon.poll() is None
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        assert "stage_died" not in [e["event"] for e in log_events(log)]

    def test_unusable_folders_at_start_are_waited_for(self, tmp_path, processes) -> None:
        """reports and work cannot be created: one line each naming key and path, state waiting;
        the daemon starts by itself once they can, and processes what waited."""
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder", encoding="utf-8")
        path = write_config(
            tmp_path,
            reports=str(blocker / "reports"),
            work=str(blocker / "work"),
            service={"status_file": str(tmp_path / "status.json")},
        )
        config = load_config(path)
        config.incoming.mkdir(parents=True)
        _put(config.incoming, b"early.png", _png(1))
        log = tmp_path / "daemon.log"
        daemon = spawn("run", "--config", str(path), log=log)
        processes.append(daemon)
        wait_for(lambda: _state(config) == "waiting", 60, "the wait")
        lines = [e for e in log_events(log) if e["event"] == "folder_unavailable"]
        assert {e["key"] for e in lines} == {"reports", "work"}
        assert {e["path"] for e in lines} == {str(config.reports), str(config.work)}
        code, text, _ = _status(path)
        assert code == 0 and "WAITING" in text and "At 'reports'" in text, text
        freed = time.monotonic()
        blocker.unlink()
        wait_for(lambda: len(list(config.reports.glob("*.json"))) == 1, 90, "the first report")
        print(f"folders waited for: first report {time.monotonic() - freed:.1f} s after the fix")
        assert daemon.poll() is None
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        events = [e["event"] for e in log_events(log)]
        assert events.count("folder_unavailable") == 2 and "folders_available" in events


def _state(config) -> str | None:
    try:
        return json.loads(config.status_path.read_text(encoding="utf-8")).get("state")
    except (OSError, ValueError):
        return None


class TestStatus:
    def test_failed_run_is_shown_as_failed_with_its_exit_code(self, tmp_path) -> None:
        """A bundle refused at start: status says FAILED (exit code 2) with the error, exit 1."""
        path = write_config(tmp_path, model={"path": str(tmp_path / "no-bundle")})
        result = cli("run", "--config", str(path), "--once")
        assert result.returncode == 2
        code, text, document = _status(path)
        assert code == 1, text
        assert "FAILED: exited with code 2" in text and "last error" in text
        assert document["state"] == "failed" and document["exit_code"] == 2

    def test_clean_stop_is_not_a_failure(self, tmp_path) -> None:
        """`run --once`: stopped cleanly, exit code 3 of status, no last error."""
        path = write_config(tmp_path)
        assert cli("run", "--config", str(path), "--once").returncode == 0
        code, text, document = _status(path)
        assert code == 3 and "stopped cleanly" in text, text
        assert document["state"] == "stopped" and document["last_error"] is None

    def test_status_into_a_closed_pipe_exits_quietly(self, tmp_path) -> None:
        """`infarctwatch status | head -1` with the reader gone: no BrokenPipe traceback."""
        path = write_config(tmp_path)
        assert cli("run", "--config", str(path), "--once").returncode == 0
        for flags in ((), ("--json",)):
            read, write = os.pipe()
            os.close(read)  # the reader is gone before anything is written
            process = subprocess.run(
                [*cli_command(), "status", "--config", str(path), *flags],
                stdout=write,
                stderr=subprocess.PIPE,
                check=False,
                cwd=REPO,
                timeout=60,
            )
            os.close(write)
            assert process.returncode == 3
            assert process.stderr == b"", process.stderr.decode()
        shell = subprocess.run(
            ["bash", "-c", f"{' '.join(cli_command())} status --config {path} | head -1"],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
            timeout=60,
        )
        assert shell.stdout.startswith("infarctwatch: not running") and shell.stderr == ""


def cli_command() -> list[str]:
    import sys  # noqa: PLC0415

    return [sys.executable, "-m", "daemon"]


class TestUmask:
    def test_reports_status_and_folders_are_not_world_readable(self, tmp_path) -> None:
        """The default umask 0027, set by the daemon whatever it inherits (here 0022)."""
        path = write_config(tmp_path)
        config = load_config(path)
        config.incoming.mkdir(parents=True)
        _put(config.incoming, b"one.png", _png(1))
        old = os.umask(0o022)
        try:
            assert cli("run", "--config", str(path), "--once").returncode == 0
        finally:
            os.umask(old)
        (report,) = config.reports.glob("*.json")  # written by a worker process
        assert stat.S_IMODE(report.stat().st_mode) == 0o640
        assert stat.S_IMODE(config.status_path.stat().st_mode) == 0o640
        for folder in (config.reports, config.work / "done", claim_root(config) / "processing"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder

    def test_umask_is_configurable(self, tmp_path) -> None:
        """service.umask "0022" gives world-readable reports again."""
        path = write_config(tmp_path, service={"umask": "0022"})
        config = load_config(path)
        config.incoming.mkdir(parents=True)
        _put(config.incoming, b"one.png", _png(1))
        assert cli("run", "--config", str(path), "--once").returncode == 0
        (report,) = config.reports.glob("*.json")
        assert stat.S_IMODE(report.stat().st_mode) == 0o644
