"""C-STORE ingest rate of infarctwatch's DICOM receiver against pynetdicom's own storescp.

``.venv/bin/python bench/cstore.py [--instances 60] [--rounds 3] [--folder DIR]``

A DWI series of ``--instances`` instances (the DICOM samples with new UIDs, 132 kB each, Explicit VR
Little Endian) is written to files once; a pynetdicom SCU then sends the whole series, file by
file (no decoding on the sender's side), in one association to each receiver in turn:

* **storescp**: ``python -m pynetdicom storescp PORT -od DIR`` (pynetdicom's own app: decodes
  each dataset and writes it with pydicom, without fsync);
* **daemon**: the real ``infarctwatch run`` with ``dicom.listen`` (the file fsynced, renamed into
  incoming, the folder fsynced, before the answer), which also claims, scans and reports what
  arrives while the series streams in, on the same cores;
* **receiver**: `daemon.receive.scp.DicomReceiver` alone in a process (the same writes, no
  scanning).

Each writes into a folder under ``--folder`` (the same disk for all three; default: a temporary
folder beside the repository, not /tmp, which may be a tmpfs). The rate is instances per second
from the first C-STORE request to the last answer, as the SCU sees it; ``--rounds`` interleaved
rounds, the median kept. The ratio daemon / storescp is the issue's target (>= 0.8). Beside the
rate, the CPU time each receiving process spent per instance (``/proc/PID/stat``, user + system;
for the daemon its main process, which holds the receiver and the intake, and apart from it its
scan workers, read 2 s after the last answer): on a machine shared with other work the CPU time
is the steadier figure. pynetdicom's warnings on either side are printed (``SCU ...`` for the
sender), and a receiver's own log when a round fails.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import yaml
from machine import cpu_lines
from pydicom.uid import MRImageStorage, generate_uid
from pynetdicom import AE

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent
AE_TITLE = "IW_BENCH"
RECEIVER = """\
import logging, signal, sys, threading
logging.basicConfig(level=logging.WARNING)
from pathlib import Path
from daemon.config import ListenConfig
from daemon.receive.scp import DicomReceiver
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
listen = ListenConfig(
    port=int(sys.argv[1]), address="127.0.0.1", ae_title=sys.argv[3], min_free_mb=0
)
with DicomReceiver(listen, Path(sys.argv[2])):
    print("ready", flush=True)
    stop.wait()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_series(folder: Path, count: int) -> list[Path]:
    """``count`` instance files of one new series, from the DICOM samples."""
    sources = [pydicom.dcmread(p) for p in sorted((REPO / "samples").glob("*.dcm"))]
    study, series = generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        ds = copy.deepcopy(sources[i % len(sources)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, i + 1
        path = folder / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the receiver exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise SystemExit("the receiver never listened")


@contextlib.contextmanager
def started(command: list[str], port: int, log: Path) -> Iterator[int]:
    """The receiver running and listening (a daemon: its start-up finished); SIGTERM after."""
    with log.open("wb") as err:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_listening(port, process)
        status = log.parent / "work" / "status.json"
        deadline = time.monotonic() + 180
        while status.parent.exists() and time.monotonic() < deadline:  # a daemon: until running
            with contextlib.suppress(OSError, ValueError):
                if json.loads(status.read_text(encoding="utf-8"))["state"] == "running":
                    break
            time.sleep(0.1)
        yield process.pid
    except BaseException:
        print(log.read_text(encoding="utf-8", errors="replace")[-4000:], file=sys.stderr)
        raise
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) of process ``pid`` and of its children now alive."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(stat: str) -> float:
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / tick

    main, children = 0.0, 0.0
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = entry.read_text()
            ppid = int(stat.rpartition(")")[2].split()[1])
            if int(entry.parent.name) == pid:
                main = own(stat)
            elif ppid == pid:
                children += own(stat)
    return main, children


class NoAnswer(Exception):  # noqa: N818 - what happened, not an error class of the project
    """A C-STORE got no answer (see `send`)."""


def send(port: int, paths: list[Path]) -> float:
    """Send every file in one association; seconds from the first request to the last answer.

    Raises:
        NoAnswer: a store got no answer. pynetdicom's SCU has a race on a loaded machine: its
            association thread can take the C-STORE response off the queue before
            ``send_c_store`` waits for it (it then logs "Received unexpected C-STORE service
            message"), and the SCP aborts the idle association after its network timeout. It
            happened with storescp as with ours; the round is run again.
    """
    ae = AE(ae_title="BENCH_SCU")
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = 300  # a loaded machine stalls
    ae.add_requested_context(MRImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    if not assoc.is_established:
        raise SystemExit("association refused")
    try:
        start = time.perf_counter()
        for path in paths:
            status = assoc.send_c_store(path).get("Status")
            if status != 0:
                raise NoAnswer(f"C-STORE of {path.name} answered {status!r} (port {port})")
        return time.perf_counter() - start
    finally:
        assoc.release()


def storescp(port: int, out: Path) -> list[str]:
    out.mkdir(parents=True)
    app = [sys.executable, "-m", "pynetdicom", "storescp"]
    return [*app, str(port), "-aet", AE_TITLE, "-od", str(out), "-q"]


REPORTS_ELSEWHERE: list[Path] = []
"""``--daemon-reports DIR``: the daemon's reports and work folders there, not beside incoming."""


def daemon(port: int, out: Path) -> list[str]:
    elsewhere = REPORTS_ELSEWHERE[0] / out.name if REPORTS_ELSEWHERE else out
    config = {
        "incoming": str(out / "incoming"),
        "reports": str(elsewhere / "reports"),
        "work": str(elsewhere / "work"),
        "inference": {"device": "CPU"},
        "logging": {"format": "json", "level": "warning"},
        "dicom": {
            "listen": {"port": port, "address": "127.0.0.1", "ae_title": AE_TITLE, "min_free_mb": 0}
        },
    }
    out.mkdir(parents=True)
    (elsewhere / "work").mkdir(parents=True)
    if elsewhere != out:  # where `started` looks for the status file
        (out / "work").symlink_to(elsewhere / "work")
    path = out / "daemon.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return [sys.executable, "-m", "daemon", "run", "--config", str(path)]


def receiver(port: int, out: Path) -> list[str]:
    out.mkdir(parents=True)
    return [sys.executable, "-c", RECEIVER, str(port), str(out), AE_TITLE]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=REPO / "var")
    parser.add_argument("--only", nargs="+", choices=["storescp", "daemon", "receiver"])
    parser.add_argument(
        "--daemon-reports",
        type=Path,
        help="put the daemon's reports and work folders on this (other) file system",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="SCU %(levelname)s %(name)s: %(message)s")
    for line in cpu_lines():
        print(line)
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.daemon_reports is not None:
        REPORTS_ELSEWHERE.append(Path(tempfile.mkdtemp(prefix="cstore-", dir=args.daemon_reports)))
    with tempfile.TemporaryDirectory(prefix="cstore-bench-", dir=args.folder) as tmp:
        root = Path(tmp)
        paths = write_series(root / "series", args.instances)
        size = sum(p.stat().st_size for p in paths)
        print(f"series: {len(paths)} instances, {size / 1e6:.1f} MB, into {root}")
        makers = {"storescp": storescp, "daemon": daemon, "receiver": receiver}
        makers = {name: makers[name] for name in args.only or makers}
        rates: dict[str, list[float]] = {name: [] for name in makers}
        cpu: dict[str, list[float]] = {name: [] for name in makers}
        for round_ in range(args.rounds):
            for name, make in makers.items():
                for attempt in range(3):
                    port, out = free_port(), root / f"{name}-{round_}-{attempt}"
                    try:
                        with started(make(port, out), port, out / "stderr.log") as pid:
                            before = cpu_seconds(pid)
                            seconds = send(port, paths)
                            time.sleep(2.0 if name == "daemon" else 0.0)  # its scans
                            after = cpu_seconds(pid)
                        break
                    except NoAnswer as exc:
                        print(f"round {round_ + 1} {name}: {exc}; run again")
                else:
                    raise SystemExit(f"{name}: three runs without an answer")
                rates[name].append(len(paths) / seconds)
                main_ms = (after[0] - before[0]) / len(paths) * 1000
                children_ms = (after[1] - before[1]) / len(paths) * 1000
                cpu[name].append(main_ms)
                print(
                    f"round {round_ + 1} {name:9s} {len(paths) / seconds:7.1f} instances/s, "
                    f"CPU {main_ms:5.1f} ms/instance"
                    + (f" (+ {children_ms:.1f} ms in its scan workers)" if children_ms else "")
                )
        median = {name: statistics.median(values) for name, values in rates.items()}
        for name, value in median.items():
            megabytes = value * size / len(paths) / 1e6
            ms = statistics.median(cpu[name])
            print(
                f"{name:9s} median {value:7.1f} instances/s ({megabytes:.1f} MB/s), "
                f"CPU {ms:.1f} ms/instance in its main process"
            )
        for name in ("daemon", "receiver"):
            if name in median and "storescp" in median:
                target = " (target >= 0.8)" if name == "daemon" else ""
                print(f"ratio {name} / storescp: {median[name] / median['storescp']:.2f}{target}")


if __name__ == "__main__":
    main()
