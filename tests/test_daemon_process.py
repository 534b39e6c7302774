"""``infarctwatch run`` as a real process: kill -9 and restart, SIGTERM drain, sd_notify, exits."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from daemon_support import (
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
from daemon.service.sdnotify import Notifier
from daemon.shared.bundle import DEFAULT_BUNDLE

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

pytestmark = pytest.mark.slow  # each test starts real daemon processes (a few seconds each)

N_FILES = 16


@pytest.fixture(scope="module")
def heavy_png() -> bytes:
    """A 2048x2048 16-bit slice: ~0.1 s to decode, so a burst keeps the daemon busy a while."""
    buffer = io.BytesIO()
    Image.fromarray(brain_slice(2048).astype(np.uint16)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _drop_burst(incoming: Path, data: bytes, count: int = N_FILES) -> list[str]:
    incoming.mkdir(parents=True, exist_ok=True)
    names = [f"burst-{i:02d}.png" for i in range(count)]
    for name in names:
        tmp = incoming / f".{name}.writing"
        tmp.write_bytes(data)
        tmp.rename(incoming / name)
    return names


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(timeout)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemons started by a test; any still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (its worker processes, multiprocessing's resource tracker)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text(encoding="ascii").split()]
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _config(tmp_path: Path, **sections) -> tuple[Path, object]:
    path = write_config(tmp_path, **sections)
    return path, load_config(path)


class TestCrashAndRestart:
    def test_kill_9_with_files_in_processing_then_restart_reports_each_exactly_once(
        self, tmp_path, heavy_png, processes
    ) -> None:
        """A daemon killed mid-burst loses nothing: the restart reports every file once."""
        path, config = _config(tmp_path, pipeline={"decode_workers": 1}, watch={"stable_s": 0})
        # Three batches' worth (16 claims at most each): the kill lands while one is in flight.
        names = _drop_burst(config.incoming, heavy_png, 3 * N_FILES)
        daemon = spawn("run", "--config", str(path), log=tmp_path / "first.log")
        processes.append(daemon)
        wait_for(lambda: len(list(config.reports.glob("*.json"))) >= 2, 60, "the first reports")
        workers = _children(daemon.pid)
        assert workers, "the daemon should have its worker processes"
        daemon.kill()
        assert daemon.wait(10) == -signal.SIGKILL
        in_flight = files_under(claim_root(config) / "processing")
        reported = sorted(p.name for p in config.reports.iterdir())
        # The workers die with it: none may go on reporting beside the daemon that restarts (a
        # batch of these files takes a worker under two seconds).
        wait_for(lambda: not any(_alive(pid) for pid in workers), 10, "the workers to die")
        time.sleep(2.5)
        assert files_under(claim_root(config) / "processing") == in_flight
        assert sorted(p.name for p in config.reports.iterdir()) == reported
        assert in_flight, "the kill should have caught files in processing/"
        done_before = len(reports(config.reports))
        assert done_before < len(names)

        again = cli("run", "--config", str(path), "--once")
        assert again.returncode == 0, again.stderr
        found = reports(config.reports)  # also asserts one report per input
        assert sorted(found) == names
        assert all(r["status"] == "ok" for r in found.values())
        assert files_under(config.work / "done") == names
        assert files_under(claim_root(config) / "processing") == []
        assert [p.name for p in config.reports.iterdir() if p.name.startswith(".")] == []
        resumed = [e for e in log_events_from(again.stderr) if e["event"] == "resuming"]
        assert resumed and resumed[0]["claims"] == len(in_flight)


class TestStop:
    def test_sigterm_drains_in_flight_scans_and_exits_0(
        self, tmp_path, heavy_png, processes
    ) -> None:
        """SIGTERM mid-burst: watching stops, every claimed scan is finished, exit code 0."""
        path, config = _config(tmp_path, pipeline={"decode_workers": 1}, watch={"stable_s": 0})
        names = _drop_burst(config.incoming, heavy_png, 3 * N_FILES)  # more than one batch
        log = tmp_path / "daemon.log"
        daemon = spawn("run", "--config", str(path), log=log)
        processes.append(daemon)
        wait_for(lambda: len(list(config.reports.glob("*.json"))) >= 1, 60, "a first report")
        assert _stop(daemon) == 0
        events = [e["event"] for e in log_events(log)]
        assert "stopping" in events and events[-1] == "stopped"
        assert "abandoned" not in events
        assert files_under(claim_root(config) / "processing") == []
        left = files_under(config.incoming)
        assert sorted([*reports(config.reports), *left]) == sorted([*names, ".infarctwatch/lock"])

    def test_drain_timeout_abandons_to_processing_and_logs_it(
        self, tmp_path, heavy_png, processes
    ) -> None:
        """With no time to drain, what is pending stays in processing/ (logged), exit code 0."""
        path, config = _config(
            tmp_path,
            pipeline={"decode_workers": 1},
            watch={"stable_s": 0},
            service={"drain_timeout_s": 0},
        )
        # More than one batch (16 claims at most): the batch in flight at SIGTERM is finished, the
        # claims still queued behind it are abandoned.
        names = _drop_burst(config.incoming, heavy_png, 4 * N_FILES)
        log = tmp_path / "daemon.log"
        daemon = spawn("run", "--config", str(path), log=log)
        processes.append(daemon)
        wait_for(lambda: len(list(config.reports.glob("*.json"))) >= 1, 60, "a first report")
        assert _stop(daemon) == 0
        (abandoned,) = [e for e in log_events(log) if e["event"] == "abandoned"]
        left = files_under(claim_root(config) / "processing")
        # Never handed to a worker: left; in the batch a worker was still scanning when the drain
        # gave up on it (a slow machine): reported by that worker or left.
        assert 0 < abandoned["count"] <= len(left) <= abandoned["count"] + abandoned["in_flight"]
        assert len(reports(config.reports)) + len(left) == len(names)
        assert cli("run", "--config", str(path), "--once").returncode == 0
        assert sorted(reports(config.reports)) == names

    def test_second_sigint_forces_exit(self, tmp_path, heavy_png, processes) -> None:
        """Ctrl-C starts the drain; a second Ctrl-C stops at once (exit 130), nothing is lost."""
        path, config = _config(tmp_path, pipeline={"decode_workers": 1}, watch={"stable_s": 0})
        names = _drop_burst(config.incoming, heavy_png, 3 * N_FILES)  # more than one batch
        daemon = spawn("run", "--config", str(path), log=tmp_path / "daemon.log")
        processes.append(daemon)
        wait_for(lambda: len(list(config.reports.glob("*.json"))) >= 1, 60, "a first report")
        daemon.send_signal(signal.SIGINT)
        time.sleep(0.05)
        assert _stop(daemon, signal.SIGINT) == 130
        assert cli("run", "--config", str(path), "--once").returncode == 0
        assert sorted(reports(config.reports)) == names


class TestNotify:
    def _listen(self, address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        sock.settimeout(0.2)
        return sock

    def _read(self, sock: socket.socket, until: str, timeout: float = 60) -> list[str]:
        messages: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue
            if until in messages[-1]:
                return messages
        msg = f"no {until!r} in {messages!r}"
        raise AssertionError(msg)

    def test_ready_status_watchdog_and_stopping_on_a_real_socket(self, tmp_path, processes) -> None:
        """READY=1 once the model is compiled, STATUS with counters, WATCHDOG=1, STOPPING=1."""
        path, config = _config(tmp_path)
        address = str(tmp_path / "notify.sock")
        with self._listen(address) as sock:
            daemon = spawn(
                "run",
                "--config",
                str(path),
                env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"},
                log=tmp_path / "daemon.log",
            )
            processes.append(daemon)
            before = self._read(sock, "READY=1")
            ready = before[-1].split("\n")
            assert f"MAINPID={daemon.pid}" in ready
            assert any(line.startswith("STATUS=running") for line in ready)
            (config.incoming / "scan.png").write_bytes(b"not an image")
            (config.incoming / "real.png").write_bytes(_small_png())
            after = self._read(sock, "processed 1, failed 1")
            assert any(m == "WATCHDOG=1" for m in after + self._read(sock, "WATCHDOG=1"))
            daemon.send_signal(signal.SIGTERM)
            stopping = self._read(sock, "STOPPING=1")
            assert stopping[-1].startswith("STOPPING=1\nSTATUS=stopping")
            assert daemon.wait(30) == 0

    def test_abstract_socket_address(self, processes, tmp_path) -> None:
        """NOTIFY_SOCKET=@name is the abstract socket 'name' (no file on disk)."""
        name = f"infarctwatch-test-{os.getpid()}-{time.monotonic_ns()}"
        with self._listen("\0" + name) as sock:
            notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
            assert notifier.ready("hello")
            assert sock.recv(4096).decode().startswith("READY=1\nSTATUS=hello")
            notifier.close()

    def test_watchdog_only_for_our_pid(self) -> None:
        """WATCHDOG_PID naming another process disables pings; our pid or none enables them."""
        env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "10000000"}
        assert Notifier.from_environ(env).watchdog_interval_s == 5.0
        assert Notifier.from_environ({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s
        assert Notifier.from_environ({**env, "WATCHDOG_PID": "1"}).watchdog_interval_s is None

    def test_no_socket_means_no_op_and_a_dead_socket_never_raises(self, tmp_path) -> None:
        """Without NOTIFY_SOCKET nothing is sent; a socket that vanished is tolerated."""
        assert not Notifier.from_environ({}).ready("x")
        notifier = Notifier(str(tmp_path / "gone.sock"))
        assert not notifier.watchdog()
        notifier.close()


class TestStartupRefusals:
    def test_invalid_config_exits_2_with_every_problem(self, tmp_path) -> None:
        """The real command prints every problem with its key path and exits 2."""
        path = tmp_path / "bad.yaml"
        path.write_text(
            "inference: {device: CPU, top_k: 0}\nwatch: {mode: magic}\nextra: 1\n", encoding="utf-8"
        )
        result = cli("run", "--config", str(path))
        assert result.returncode == 2
        for key in ("inference.top_k", "watch.mode", "extra"):
            assert f"At '{key}'" in result.stderr

    def test_tampered_bundle_is_refused_with_exit_2(self, tmp_path) -> None:
        """A bundle whose files do not match its manifest never serves a scan."""
        bundle = tmp_path / "bundle"
        shutil.copytree(DEFAULT_BUNDLE, bundle)
        labels = json.loads((bundle / "labels.json").read_text(encoding="utf-8"))
        labels[0], labels[1] = labels[1], labels[0]
        (bundle / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
        path, config = _config(tmp_path)
        _drop_burst(config.incoming, _small_png(), count=1)
        result = cli("run", "--config", str(path), "--model", str(bundle), "--once")
        assert result.returncode == 2
        assert "labels.json: sha256" in result.stderr
        assert not list(config.reports.glob("*.json"))
        assert files_under(config.incoming) == [".infarctwatch/lock", "burst-00.png"]

    def test_a_second_daemon_on_the_same_folders_is_refused(self, tmp_path, processes) -> None:
        """Two daemons never share an incoming folder: the second exits 2 naming the first."""
        path, config = _config(tmp_path)
        first = spawn("run", "--config", str(path), log=tmp_path / "first.log")
        processes.append(first)
        wait_for(config.status_path.exists, 60, "the first daemon to start")
        second = cli("run", "--config", str(path))
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr
        assert _stop(first) == 0

    def test_status_without_a_daemon_says_not_running(self, tmp_path) -> None:
        """`infarctwatch status` with no status file: 'not running', exit code 3."""
        path, _ = _config(tmp_path)
        result = cli("status", "--config", str(path))
        assert result.returncode == 3
        assert "not running" in result.stdout


def _small_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(brain_slice(128).astype(np.uint16)).save(buffer, "PNG")
    return buffer.getvalue()


def log_events_from(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
