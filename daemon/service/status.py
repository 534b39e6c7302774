"""Counters, and the status file that ``infarctwatch status`` reads.

The daemon rewrites the status file (JSON, atomically) every `STATUS_INTERVAL_S` seconds, within
`STATUS_MIN_GAP_S` of a change of the counters, and a last time at exit with ``state: stopped``.
A reader decides from it
whether the daemon is running: the state says so, the pid is alive, and the file is fresh (a
daemon that stopped updating it for three intervals is hung or gone).

``state``: ``starting``, ``waiting`` (for a folder that is missing or unwritable: ``waiting_for``
says which), ``running``, ``degraded`` (storage fails: ``storage`` holds the reason, since when,
the claims held and the next retry), ``stopping``, ``stopped`` (cleanly) or ``failed`` (with
``exit_code``). ``last_error`` is the last error the daemon met (``at``, ``message``) or null.

Counters: ``processed`` scans got a prediction, ``not_analysed`` ones a ``not_analysed`` report
(not a DWI b1000 slice: `daemon.shared.dicom_scope`, `daemon.scan.decision`), ``failed`` ones an
error report; ``pending`` are claimed and not yet reported (the queue depth); ``waiting`` are
seen in incoming/ but not yet taken (still being written, or no free slot); ``ignored`` counts
the distinct names in incoming/ that are never taken (dotfiles, ignored suffixes, folders when not
recursive). ``folders`` says how often a folder the daemon owns vanished and was recreated
(`daemon.intake.folders`), and the last time. ``series`` counts the series reports written since
start-up by status (``reported``, ``ok``, ``incomplete``, ``not_analysed``, ``error``,
``last_reported_at``) and the series still ``open`` (`daemon.series.tracker`).

``model`` names the model in service and, from `daemon.model.reload`, when it was loaded, the models
folder watched for hot reloads, the last reload and ``reload_error`` (the last version that failed
to load, with its message, until a later reload succeeds). ``inbox`` is `daemon.model.inbox`'s
state; ``outbox`` the DICOM results' (`daemon.outbox`: captures written, failed, staged, the last
error, and under ``send`` the sender's destination, sent, queued, failed tries, dead-lettered, last
error), or null without ``outputs.dicom.outbox``. ``receiver`` is the DICOM Storage SCP's
(`daemon.receive.scp`; null when ``dicom.listen`` is not set): where it listens, its associations,
rejections, instances stored and refused, the last refusal. ``decoders`` counts the scan worker
processes (``workers``) and their ``restarts``: the key keeps its name for compatibility, like
``pipeline.decode_workers`` in the config.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.clock import iso, utc_now
from daemon.fs import write_atomic

if TYPE_CHECKING:
    from pathlib import Path

STATUS_INTERVAL_S = 5.0
STATUS_MIN_GAP_S = 1.0
"""After a scan the file is rewritten sooner, but at most once per this many seconds."""
STALE_AFTER_INTERVALS = 3
STATUS_VERSION = 1
"""The status file's ``version``: `write_status` stamps it, `describe` reads no other."""


@dataclass(frozen=True)
class CounterSnapshot:
    """The counters at one moment."""

    processed: int
    failed: int
    last_scan_at: dt.datetime | None
    not_analysed: int = 0


class Counters:
    """Scan counters, updated by the report writer and read by the service shell."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processed = 0
        self._failed = 0
        self._not_analysed = 0
        self._last: dt.datetime | None = None

    def record(self, *, ok: bool, not_analysed: bool = False) -> None:
        """Count one finished scan: a prediction, a ``not_analysed`` report, or a failure."""
        with self._lock:
            if ok and not_analysed:
                self._not_analysed += 1
            elif ok:
                self._processed += 1
            else:
                self._failed += 1
            self._last = utc_now()

    def snapshot(self) -> CounterSnapshot:
        """A consistent copy."""
        with self._lock:
            return CounterSnapshot(self._processed, self._failed, self._last, self._not_analysed)


def write_status(path: Path, document: dict[str, Any]) -> None:
    """Replace the status file atomically; ``version`` is `STATUS_VERSION`, first."""
    stamped = {"version": STATUS_VERSION} | {k: v for k, v in document.items() if k != "version"}
    data = json.dumps(stamped, indent=2, sort_keys=False).encode("utf-8") + b"\n"
    write_atomic(path, data, sync_folder=False)


class StatusUnreadableError(OSError):
    """The status file exists but cannot be read (permissions, I/O): not the same as no file."""


def read_status(path: Path) -> dict[str, Any] | None:
    """The status document, or ``None`` when there is no status file or it is not valid JSON.

    Raises:
        StatusUnreadableError: the file is there but cannot be read (e.g. permission denied).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StatusUnreadableError(
            exc.errno, f"cannot read the status file {path}: {exc.strerror or exc}"
        ) from exc
    try:
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def pid_alive(pid: object) -> bool:
    """True when a process with this pid exists (on this machine)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _parse(moment: object) -> dt.datetime | None:
    if not isinstance(moment, str):
        return None
    try:
        return dt.datetime.fromisoformat(moment)
    except ValueError:
        return None


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} days"


EXIT_RUNNING = 0
EXIT_DEAD = 1
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4
"""LSB: the status cannot be determined (the status file is unreadable)."""


def _one_line(text: object, limit: int = 240) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _model_lines(model: dict[str, Any], now: dt.datetime) -> list[str]:
    lines = [
        (
            f"  model        {model.get('name', '?')} {model.get('version', '?')} "
            f"({model.get('precision', '?')} on {model.get('device', '?')}, "
            f"bundle sha256 {str(model.get('bundle_sha256', '?'))[:12]}...)"
        )
    ]
    if "reloads" not in model:
        return lines
    reloaded = _parse(model.get("last_reload_at"))
    watching = model.get("watching")
    text = f"watching {watching}" if watching else "on SIGHUP only (model.path is no models folder)"
    if reloaded is not None:
        text += f"; last reload {iso(reloaded)} ({_ago((now - reloaded).total_seconds())} ago)"
    lines.append(f"  reload       {text}")
    error = model.get("reload_error")
    if isinstance(error, dict):
        lines.append(
            f"  reload error FAILED to load {error.get('version', '?')} at {error.get('at', '?')}, "
            f"still serving {model.get('version', '?')}: {_one_line(error.get('message', '?'))}"
        )
    return lines


def _trouble_lines(document: dict[str, Any]) -> list[str]:
    """Storage trouble, folders waited for and the last error, when there are any."""
    lines = []
    storage = document.get("storage")
    if isinstance(storage, dict) and storage.get("state") == "degraded":
        lines.append(
            f"  storage      DEGRADED since {storage.get('since', '?')}: "
            f"{_one_line(storage.get('reason'), 200)}; {storage.get('held', 0):,} claim(s) held "
            f"in processing/, next retry in {storage.get('retry_in_s', '?')} s"
        )
    lines += [f"  waiting for  {_one_line(w, 200)}" for w in document.get("waiting_for") or ()]
    error = document.get("last_error")
    if isinstance(error, dict):
        lines.append(f"  last error   {error.get('at', '?')}: {_one_line(error.get('message'))}")
    return lines


def _decoder_lines(decoders: object) -> list[str]:
    if not isinstance(decoders, dict):
        return []
    line = f"  decoders     {decoders.get('workers', '?')} worker processes"
    restarts = decoders.get("restarts") or 0
    if restarts:
        line += f", {restarts:,} restarted after a crash or a timeout (see the log)"
    return [line]


def _intake_lines(document: dict[str, Any]) -> list[str]:
    lines = []
    ignored = document.get("ignored")
    if ignored:
        lines.append(f"  ignored      {ignored:,} names in incoming never taken (see the log)")
    folders = document.get("folders")
    last = folders.get("last_recovery") if isinstance(folders, dict) else None
    if isinstance(folders, dict) and isinstance(last, dict):
        count = folders.get("recoveries", 0)
        lines.append(
            f"  folders      RECREATED ({count:,} recover{'y' if count == 1 else 'ies'}); last at "
            f"{last.get('at', '?')}: {_one_line(', '.join(map(str, last.get('changes', []))))}"
        )
    return lines


def _inbox_lines(inbox: object) -> list[str]:
    if not isinstance(inbox, dict):
        return []
    if not inbox.get("enabled"):
        return [f"  inbox        {inbox.get('path')}: DISABLED: {inbox.get('disabled_reason')}"]
    line = (
        f"  inbox        {inbox.get('path')}: {inbox.get('installed', 0)} installed, "
        f"{inbox.get('rejected', 0)} rejected"
    )
    last = inbox.get("last")
    if isinstance(last, dict):
        line += f"; last {last.get('archive')} {last.get('outcome')} at {last.get('at')}" + (
            ": " + _one_line(last.get("reason"), 160) if last.get("outcome") != "installed" else ""
        )
    return [line]


def _outbox_lines(outbox: object) -> list[str]:
    if not isinstance(outbox, dict):
        return []
    head = (
        f"  outbox       {outbox.get('folder')}: {outbox.get('written', 0):,} captures written, "
        f"{outbox.get('failed', 0):,} failed, {outbox.get('staged', 0):,} staged"
    )
    lines = [head]
    error = outbox.get("last_error")
    if isinstance(error, dict):
        lines.append(f"  outbox error {error.get('at', '?')}: {_one_line(error.get('message'))}")
    send = outbox.get("send")
    if isinstance(send, dict):
        lines.append(
            f"  sending      to {send.get('destination')}: {send.get('sent', 0):,} sent, "
            f"{send.get('queued', 0):,} queued, {send.get('failed_tries', 0):,} failed tries, "
            f"{send.get('dead_lettered', 0):,} in dead-letter/"
        )
        error = send.get("last_error")
        if isinstance(error, dict):
            lines.append(
                f"  send error   {error.get('at', '?')}: {_one_line(error.get('message'))}"
            )
    return lines


def _series_lines(series: object) -> list[str]:
    """``series``: the series reported since start-up by status, and those still open."""
    if not isinstance(series, dict) or not (series.get("reported") or series.get("open")):
        return []
    parts = [
        f"{series.get(key, 0):,} {label}"
        for key, label in (
            ("ok", "ok"),
            ("incomplete", "incomplete"),
            ("not_analysed", "not analysed"),
            ("error", "error"),
        )
        if series.get(key)
    ]
    line = f"  series       {series.get('reported', 0):,} reported"
    if parts:
        line += f" ({', '.join(parts)})"
    return [f"{line}, {series.get('open', 0):,} open (waiting for their quiet time)"]


def _receiver_lines(receiver: object) -> list[str]:
    """The DICOM receiver's line (``dicom.listen``), and its last refusal when there was one."""
    if not isinstance(receiver, dict):
        return []
    rejected = receiver.get("rejected", 0)
    line = (
        f"  dicom        {receiver.get('ae_title')} on {receiver.get('address')}: "
        f"{receiver.get('stored', 0):,} stored "
        f"({receiver.get('stored_bytes', 0) / 1e6:,.1f} MB), "
        f"{receiver.get('associations', 0):,} association(s) ({receiver.get('active', 0)} open)"
        + (f", {rejected:,} REJECTED" if rejected else "")
    )
    refused = receiver.get("no_space", 0) + receiver.get("failed", 0)
    last = receiver.get("last_refusal")
    if not refused or not isinstance(last, dict):
        return [line]
    refusals = (
        f"  refused      {refused:,} DICOM instance(s), {receiver.get('no_space', 0):,} out of "
        f"resources; last at {last.get('at')}: {_one_line(last.get('reason'), 120)}"
    )
    return [line, refusals]


def describe(document: dict[str, Any] | None, path: Path, now: dt.datetime) -> tuple[str, int]:
    """Human-readable status and the exit code of ``infarctwatch status``.

    Exit codes follow LSB ``status``: 0 running (degraded or waiting included: the daemon is up
    and recovers by itself), 1 failed (it exited with an error, or the file says running but the
    daemon is gone or no longer updates it), 3 stopped cleanly (or no status file), 4 a status
    file of another `STATUS_VERSION`.
    """
    if document is None:
        return f"infarctwatch: not running (no status file at {path})", EXIT_NOT_RUNNING
    if document.get("version") != STATUS_VERSION:
        found = document.get("version")
        text = f"{path} has status version {found!r}; this infarctwatch reads {STATUS_VERSION}"
        return f"infarctwatch: status unknown: {text}", EXIT_UNKNOWN
    state = document.get("state", "unknown")
    pid = document.get("pid")
    updated = _parse(document.get("updated_at"))
    age = (now - updated).total_seconds() if updated else float("inf")
    interval = float(document.get("interval_s") or STATUS_INTERVAL_S)
    if state == "stopped":
        headline = f"infarctwatch: not running (stopped cleanly {_ago(age)} ago; counters below)"
        code = EXIT_NOT_RUNNING
    elif state == "failed":
        headline = (
            f"infarctwatch: FAILED: exited with code {document.get('exit_code', '?')} "
            f"{_ago(age)} ago (last counters below)"
        )
        code = EXIT_DEAD
    elif not pid_alive(pid):
        headline = (
            f"infarctwatch: NOT RUNNING: pid {pid} is gone (stale status from {_ago(age)} ago)"
        )
        code = EXIT_DEAD
    elif age > STALE_AFTER_INTERVALS * interval:
        headline = f"infarctwatch: STALE: pid {pid} has not updated its status for {_ago(age)}"
        code = EXIT_DEAD
    else:
        started = _parse(document.get("started_at"))
        uptime = _ago((now - started).total_seconds()) if started else "?"
        shown = state.upper() if state in ("degraded", "waiting") else state
        headline = f"infarctwatch: {shown} (pid {pid}), up {uptime}"
        code = EXIT_RUNNING
    model = document.get("model") or {}
    last = _parse(document.get("last_scan_at"))
    last_text = f"{iso(last)} ({_ago((now - last).total_seconds())} ago)" if last else "none yet"
    lines = [
        headline,
        f"  processed    {document.get('processed', 0):,}",
        f"  not analysed {document.get('not_analysed', 0):,}",
        f"  failed       {document.get('failed', 0):,}",
        (
            f"  queue        {document.get('pending', 0):,} pending, "
            f"{document.get('waiting', 0):,} waiting in incoming"
        ),
        f"  last scan    {last_text}",
        *_series_lines(document.get("series")),
        *_trouble_lines(document),
        *_intake_lines(document),
        *_decoder_lines(document.get("decoders")),
        *_model_lines(model, now),
        *_inbox_lines(document.get("inbox")),
        *_outbox_lines(document.get("outbox")),
        *_receiver_lines(document.get("receiver")),
        f"  started at   {document.get('started_at', '?')}",
        f"  pid          {pid}",
        f"  status file  {path} (updated {_ago(age)} ago)",
    ]
    return "\n".join(lines), code
