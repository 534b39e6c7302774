"""The DICOM Storage SCP (``dicom.listen``) with real associations on the loopback.

A pynetdicom SCU (the scanner) sends a whole series, built from ``samples/*.dcm`` with new UIDs and
in several transfer syntaxes, to a real ``infarctwatch run`` process; the instances must land in
incoming as files, be reported by the daemon, and be counted in the status file and the log. Then
the refusals: an unknown calling AE title (association rejected), a full disk (0xA700, nothing
half-written; a real tmpfs, and the free-space probe fault-injected where mounting is not
allowed), a port in use (exit 2), and SIGTERM in the middle of a series (what was acknowledged is
kept, nothing else is written).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import io
import os
import signal
import socket
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

import pydicom
import pytest
from daemon_support import (
    BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    REPO,
    ServiceThread,
    cli,
    log_events,
    make_config,
    reports,
    spawn,
    wait_for,
    write_config,
)
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification

from daemon.clock import utc_now
from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.fs import TMP_SUFFIX
from daemon.receive import store as store_module
from daemon.receive.contexts import TRANSFER_SYNTAXES, UNCOMPRESSED
from daemon.receive.scp import OUT_OF_RESOURCES, SUCCESS
from daemon.receive.store import IncomingStore, Outcome, instance_name
from daemon.service.status import describe, read_status

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from pydicom.dataset import Dataset

SAMPLES = sorted((REPO / "samples").glob("*.dcm"))
SCANNER = "SCANNER_1"
OURS = "IW_TEST"
SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    DeflatedExplicitVRLittleEndian,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def series(count: int, syntaxes: Sequence[str] = (ExplicitVRLittleEndian,)) -> list[Dataset]:
    """A DWI series of ``count`` instances from the samples: new UIDs, positions, patient data."""
    study, series_uid = generate_uid(), generate_uid()
    cache: dict[tuple[Path, str], Dataset] = {}
    out = []
    for i in range(count):
        source, syntax = SAMPLES[i % len(SAMPLES)], syntaxes[i % len(syntaxes)]
        key = (source, syntax)
        if key not in cache:
            ds = pydicom.dcmread(source)
            if pydicom.uid.UID(syntax).is_compressed:
                ds.compress(syntax)
            elif syntax == ImplicitVRLittleEndian:  # re-encoded, as a sender stores it
                ds.file_meta.TransferSyntaxUID = syntax
                buffer = io.BytesIO()
                ds.save_as(buffer, implicit_vr=True, little_endian=True)
                ds = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
            else:
                ds.file_meta.TransferSyntaxUID = syntax
            cache[key] = ds
        ds = copy.deepcopy(cache[key])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-120.0, -120.0, -60.0 + 5.0 * i]
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, BIRTH_DATE
        out.append(ds)
    return out


class _Shut(threading.Event):
    """Stands in for pynetdicom's reactor checkpoint while a test sends: it never opens."""

    def set(self) -> None:
        return


@contextlib.contextmanager
def reactor_held(assoc: Any) -> Iterator[None]:
    """Keep a pynetdicom SCU's own reactor thread off the answers while the test sends.

    pynetdicom 3.0's ``send_c_store`` pauses the association's reactor around each request, but
    on a loaded machine the reactor can still take the answer off the queue first (it logs
    "Received unexpected C-STORE service message"); the store then waits for the DIMSE timeout
    and returns no status, which would fail a test for a fault of the sender. So the reactor is
    parked on its (cleared) checkpoint for the whole association, and the checkpoint
    ``send_c_store`` opens after each answer is a `_Shut` one. Released before the association
    ends.
    """
    checkpoint = assoc._reactor_checkpoint
    checkpoint.clear()
    wait_for(lambda: assoc._is_paused, timeout=10, what="the reactor to pause")
    time.sleep(0.05)  # nothing is queued yet: a last turn of the reactor takes nothing
    assoc._reactor_checkpoint = _Shut()
    try:
        yield
    finally:
        assoc._reactor_checkpoint = checkpoint
        checkpoint.set()


class Scanner:
    """A pynetdicom SCU: one association, C-ECHO and C-STOREs, statuses recorded."""

    def __init__(self, port: int, *, calling: str = SCANNER, called: str = OURS) -> None:
        self.port, self.calling, self.called = port, calling, called
        self.statuses: dict[str, int | None] = {}
        """SOPInstanceUID -> the status answered (None: no answer, the association ended)."""
        self.rejection: tuple[int, int, int] | None = None

    @contextlib.contextmanager
    def association(self, syntaxes: Sequence[str] = SYNTAXES) -> Iterator[Any]:
        ae = AE(ae_title=self.calling)
        ae.dimse_timeout = 10  # an aborted association is noticed by its next store
        ae.add_requested_context(Verification)
        for syntax in syntaxes:
            ae.add_requested_context(MRImageStorage, [syntax])
        assoc = ae.associate("127.0.0.1", self.port, ae_title=self.called)
        # pynetdicom's close() forgets its socket without closing it when shutdown() fails on a
        # socket the peer closed first (a daemon stopping mid-series): held here, closed below.
        raw = getattr(assoc.dul.socket, "socket", None)
        try:
            if assoc.is_rejected:
                rsp = assoc.acceptor.primitive
                self.rejection = (rsp.result, rsp.result_source, rsp.diagnostic)
            if not assoc.is_established:
                yield assoc
                return
            with reactor_held(assoc):
                yield assoc
        finally:
            if assoc.is_established:
                assoc.release()
            elif not assoc.is_aborted and not assoc.is_rejected:
                assoc.abort()
            if assoc.ident is not None:  # a rejected association never started its thread
                assoc.join(timeout=10)
            if raw is not None:
                raw.close()

    def send(self, datasets: Sequence[Dataset]) -> dict[str, int | None]:
        with self.association() as assoc:
            assert assoc.is_established, "association refused"
            answered = True
            for ds in datasets:
                if not answered or not assoc.is_established or assoc.is_aborted:
                    self.statuses[ds.SOPInstanceUID] = None
                    continue
                status = assoc.send_c_store(ds).get("Status")
                self.statuses[ds.SOPInstanceUID] = status
                answered = status is not None  # no answer: the association has ended
        return self.statuses


def listening_config(tmp_path: Path, port: int, **sections: Any) -> Path:
    listen = {
        "port": port,
        "address": "127.0.0.1",
        "ae_title": OURS,
        "allowed_calling_ae_titles": [SCANNER, "PACS"],
        "min_free_mb": 0,
        **sections.pop("listen", {}),
    }
    return write_config(tmp_path, dicom={"listen": listen}, **sections)


@contextlib.contextmanager
def daemon_process(config_path: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``infarctwatch run`` listening on its port; SIGTERM at the end (exit 0 checked)."""
    config = load_config(config_path)
    process = spawn("run", "--config", str(config_path), log=log)
    try:
        wait_for(
            lambda: (
                process.poll() is not None
                or (read_status(config.status_path) or {}).get("state") == "running"
            ),
            timeout=120,
            what="the daemon to run",
        )
        assert process.poll() is None, log.read_text()
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]


def status_of(config_path: Path) -> dict[str, Any]:
    document = read_status(load_config(config_path).status_path)
    assert document is not None
    return document


def received_files(folder: Path) -> list[Path]:
    """Every received instance's file below ``folder`` (claim area and done/ included)."""
    return sorted(folder.rglob("*.dcm"))


# ------------------------------------------------------------------------ a whole series


@pytest.mark.slow  # a real daemon
def test_a_series_over_c_store_is_written_into_incoming_and_reported(tmp_path) -> None:
    """C-ECHO, then 24 instances in six transfer syntaxes: every one stored, reported, counted.

    The file names are hashes of the SOPInstanceUIDs; each report names its instance's UIDs; the
    status file and one ``dicom_association`` log line count them; no patient attribute and no UID
    reaches the log.
    """
    port = free_port()
    path = listening_config(tmp_path, port)
    config = load_config(path)
    log = tmp_path / "daemon.log"
    sent = series(24, SYNTAXES)
    scanner = Scanner(port)
    with daemon_process(path, log):
        with scanner.association() as assoc:
            assert assoc.is_established
            assert assoc.send_c_echo().Status == SUCCESS
            accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
            assert set(SYNTAXES) <= accepted
            for ds in sent:
                scanner.statuses[ds.SOPInstanceUID] = assoc.send_c_store(ds).Status
        assert set(scanner.statuses.values()) == {SUCCESS}
        wait_for(lambda: len(list(config.reports.glob("*.json"))) >= 24, what="24 reports")
        wait_for(lambda: status_of(path)["receiver"]["stored"] == 24, what="the status file")
        receiver = status_of(path)["receiver"]
    found = reports(config.reports)
    assert len(found) == 24
    by_name = {doc["source"]["name"]: doc for doc in found.values()}
    for ds in sent:
        doc = by_name[instance_name(ds.SOPInstanceUID)]
        assert doc["status"] == "ok", doc["error"]
        assert doc["source"]["dicom"]["sop_instance_uid"] == ds.SOPInstanceUID
        assert doc["source"]["dicom"]["series_instance_uid"] == ds.SeriesInstanceUID
    kept = received_files(config.work / "done")
    assert len(kept) == 24
    syntaxes = {pydicom.dcmread(p).file_meta.TransferSyntaxUID for p in kept}
    assert syntaxes == set(SYNTAXES)  # stored as sent, compressed or not
    assert receiver["associations"] == 1
    assert receiver["echoes"] == 1
    assert receiver["stored_bytes"] == sum(p.stat().st_size for p in kept)
    assert receiver["rejected"] == receiver["no_space"] == receiver["failed"] == 0
    assert receiver["listening"] is True
    events = log_events(log)
    ends = [e for e in events if e["event"] == "dicom_association"]
    assert len(ends) == 1
    assert ends[0]["outcome"] == "released"
    assert ends[0]["calling_ae"] == SCANNER
    assert ends[0]["stored"] == 24
    assert ends[0]["echoes"] == 1
    text = log.read_text(encoding="utf-8")
    for secret in (PATIENT_NAME, PATIENT_ID, BIRTH_DATE, sent[0].StudyInstanceUID):
        assert secret not in text
    assert not any(ds.SOPInstanceUID in text for ds in sent)
    assert any(e["event"] == "dicom_stopped" for e in events)
    assert received_files(config.incoming) == []  # all claimed, reported and moved to done/


@pytest.mark.slow  # a real daemon
def test_unknown_calling_ae_title_and_wrong_called_ae_title_are_rejected(tmp_path) -> None:
    """With an allow-list, another calling AE title is rejected (1, 1, 3); a wrong called AE
    title too (1, 1, 7). Nothing is written; each rejection is one log line and counted."""
    port = free_port()
    path = listening_config(tmp_path, port)
    config = load_config(path)
    log = tmp_path / "daemon.log"
    intruder = Scanner(port, calling="INTRUDER")
    misaddressed = Scanner(port, called="SOMEONE_ELSE")
    with daemon_process(path, log):
        for scanner in (intruder, misaddressed):
            with scanner.association() as assoc:
                assert assoc.is_rejected
                assert not assoc.is_established
        allowed = Scanner(port, calling="PACS")  # the second allowed title works
        assert set(allowed.send(series(2)).values()) == {SUCCESS}
        wait_for(lambda: len(list(config.reports.glob("*.json"))) == 2, what="two reports")
        wait_for(lambda: status_of(path)["receiver"]["rejected"] == 2, what="the status file")
        text, _ = describe(status_of(path), config.status_path, utc_now())
    assert intruder.rejection == (1, 1, 3)  # rejected-permanent, service user, calling AE title
    assert misaddressed.rejection == (1, 1, 7)  # ... called AE title not recognised
    assert "2 REJECTED" in text and f"{OURS} on 127.0.0.1:{port}" in text
    rejections = [e for e in log_events(log) if e["event"] == "dicom_association_rejected"]
    assert [e["calling_ae"] for e in rejections] == ["INTRUDER", SCANNER]
    assert rejections[0]["reason"] == "calling AE title not allowed"


@pytest.mark.slow  # a real daemon
def test_a_port_in_use_stops_the_start_with_exit_2_and_a_clear_error(tmp_path) -> None:
    """Another process listens on the port: exit 2 (as a configuration error), naming the key,
    the address and the reason, before the model is loaded; the status file says FAILED."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = listening_config(tmp_path, port)
        started = time.monotonic()
        result = cli("run", "--config", str(path))
    assert result.returncode == 2, result.stderr
    expected = f"At 'dicom.listen.port': cannot listen on 127.0.0.1:{port}: Address already in use"
    assert expected in result.stderr
    assert "bundle_sha256" not in result.stderr  # stopped before the model was loaded
    document = status_of(path)
    assert document["state"] == "failed"
    assert document["exit_code"] == 2
    assert expected in document["last_error"]["message"]
    print(f"\nport in use: exit 2 after {time.monotonic() - started:.2f} s")


# ------------------------------------------------------------------------ stopping


@pytest.mark.slow  # a real daemon
def test_sigterm_in_the_middle_of_a_series_keeps_every_acknowledged_instance(tmp_path) -> None:
    """SIGTERM while a series streams in: the stores in flight finish, the association is then
    aborted; every instance answered 0x0000 is a complete file (reported, or waiting in incoming
    for the next start), no other instance left a file, no temporary is left; exit 0."""
    port = free_port()
    path = listening_config(tmp_path, port)
    config = load_config(path)
    log = tmp_path / "daemon.log"
    sent = series(400)
    scanner = Scanner(port)
    with daemon_process(path, log) as process:
        sender = threading.Thread(target=scanner.send, args=(sent,))
        sender.start()
        wait_for(lambda: len(scanner.statuses) >= 30, what="30 instances sent")
        process.send_signal(signal.SIGTERM)
        sender.join(timeout=60)
        assert not sender.is_alive()
    acknowledged = {uid for uid, status in scanner.statuses.items() if status == SUCCESS}
    others = {ds.SOPInstanceUID for ds in sent} - acknowledged
    assert len(acknowledged) >= 30
    assert others, "the whole series went through before the stop: nothing was tested"
    answers = {scanner.statuses.get(uid) for uid in others}
    assert answers <= {OUT_OF_RESOURCES, None}  # refused while stopping, or never answered
    kept = {p.name: p for p in received_files(config.incoming) + received_files(config.work)}
    for uid in acknowledged:
        name = instance_name(uid)
        assert name in kept, "an acknowledged instance was lost"
        assert pydicom.dcmread(kept[name]).SOPInstanceUID == uid  # complete, readable
    assert not {instance_name(uid) for uid in others} & set(kept)
    assert not list(config.incoming.glob(f".*{TMP_SUFFIX}"))
    events = log_events(log)
    end = next(e for e in events if e["event"] == "dicom_association")
    assert end["outcome"] == "aborted_at_stop"
    assert end["stored"] == len(acknowledged)
    stopping = next(i for i, e in enumerate(events) if e["event"] == "stopping")
    stopped = next(i for i, e in enumerate(events) if e["event"] == "dicom_stopped")
    assert stopping < stopped
    took = _seconds(events[stopped]["timestamp"]) - _seconds(events[stopping]["timestamp"])
    print(f"\nSIGTERM mid-series: receiver closed {took:.2f} s after 'stopping'")
    assert status_of(path)["receiver"]["listening"] is False


def _seconds(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


# ------------------------------------------------------------------------ a full disk


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[bool]:
    """A tmpfs of ``size`` on ``folder``; yields False (nothing mounted) where mount is refused."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    try:
        yield mounted.returncode == 0
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow  # a real daemon
def test_a_full_incoming_disk_is_answered_out_of_resources(tmp_path) -> None:
    """Incoming on a 4 MiB tmpfs, ``min_free_mb: 1``, files kept there: the first instances are
    stored and reported, the rest answered 0xA700 with nothing half-written; once space is freed,
    the sender's retry of the refused ones is stored."""
    incoming = tmp_path / "incoming"
    with tmpfs(incoming, "4m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here: the fault-injected probe test covers it")
        port = free_port()
        path = listening_config(
            tmp_path, port, listen={"min_free_mb": 1}, outcome={"success": "keep"}
        )
        config = load_config(path)
        log = tmp_path / "daemon.log"
        sent = series(40)
        with daemon_process(path, log):
            statuses = Scanner(port).send(sent)
            stored = [uid for uid, s in statuses.items() if s == SUCCESS]
            refused = [uid for uid, s in statuses.items() if s == OUT_OF_RESOURCES]
            assert stored and refused
            assert len(stored) + len(refused) == 40
            wait_for(lambda: len(list(config.reports.glob("*.json"))) == len(stored))
            assert not list(incoming.rglob(f"*{TMP_SUFFIX}"))
            names = {p.name for p in received_files(incoming)}
            assert names == {instance_name(uid) for uid in stored}
            for file in received_files(incoming):
                assert pydicom.dcmread(file).PixelData  # complete
            wait_for(lambda: status_of(path)["receiver"]["no_space"] == len(refused))
            receiver = status_of(path)["receiver"]
            assert receiver["last_refusal"]["reason"].startswith("no_space: ")
            # the operator frees space; the sender retries what was refused
            for file in received_files(incoming / ".infarctwatch" / "done"):
                file.unlink()
            started = time.monotonic()
            retry = Scanner(port).send([ds for ds in sent if ds.SOPInstanceUID in refused])
            assert set(retry.values()) == {SUCCESS}
            wait_for(lambda: len(list(config.reports.glob("*.json"))) == 40, what="40 reports")
            took = time.monotonic() - started
            print(f"\nfull disk: {len(refused)} refused; all reported {took:.2f} s after the retry")
    refusals = [e for e in log_events(log) if e["event"] == "dicom_store_refused"]
    assert len(refusals) == 1  # once per association
    assert refusals[0]["status"] == "0xA700"


@pytest.mark.slow  # a real daemon
def test_the_free_space_probe_refuses_before_anything_is_written(tmp_path, monkeypatch) -> None:
    """The probe fault-injected (in-process daemon): below ``min_free_mb`` every store is
    answered 0xA700 and no file appears; above it, stores go through again."""
    free = {"bytes": 10 << 30}
    monkeypatch.setattr(store_module, "free_space", lambda _folder: free["bytes"])
    port = free_port()
    config = make_config(
        tmp_path,
        dicom={
            "listen": {
                "port": port,
                "address": "127.0.0.1",
                "ae_title": OURS,
                "min_free_mb": 100,
            }
        },
    )
    service = ServiceThread(config).start()
    try:
        free["bytes"] = 100 << 20  # less than min_free_mb once the instance is counted
        refused = Scanner(port).send(series(3))
        assert set(refused.values()) == {OUT_OF_RESOURCES}
        assert received_files(config.incoming) == []
        assert received_files(config.work) == []
        free["bytes"] = 10 << 30
        stored = Scanner(port).send(series(3))
        assert set(stored.values()) == {SUCCESS}
        wait_for(lambda: len(list(config.reports.glob("*.json"))) == 3, what="three reports")
    finally:
        assert service.stop() == 0
    receiver = service.service.receiver
    assert receiver is not None
    assert receiver.to_status()["no_space"] == 3
    assert receiver.to_status()["stored"] == 3


def test_a_write_that_fills_the_disk_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    """The probe says there is room but the real file system fills up while writing: ENOSPC is
    a refusal for space and neither the file nor its temporary is left."""
    folder = tmp_path / "incoming"
    with tmpfs(folder, "256k") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here")
        monkeypatch.setattr(store_module, "free_space", lambda _folder: 1 << 40)
        kept = IncomingStore(folder, 0).keep("1.2.3.4", b"\0" * (512 << 10))
        assert kept.outcome is Outcome.NO_SPACE
        assert kept.error is not None and kept.error.startswith("ENOSPC")
        assert list(folder.iterdir()) == []


# ------------------------------------------------------------------------ small pieces


def test_names_are_hashes_of_the_sop_instance_uid() -> None:
    """Same instance, same name (a resend replaces); never any of the UID's text."""
    name = instance_name("1.2.826.0.1.3680043.8.498.1")
    assert name == instance_name(" 1.2.826.0.1.3680043.8.498.1 ")
    assert name.endswith(".dcm") and len(name) == 36
    assert "1.2.826" not in name
    assert name != instance_name("1.2.826.0.1.3680043.8.498.2")


def test_every_accepted_transfer_syntax_has_a_decoder_here() -> None:
    """The SCP accepts only what the daemon can decode: pydicom finds a plugin for each."""
    from pydicom.pixels import get_decoder  # noqa: PLC0415

    for uid in TRANSFER_SYNTAXES:
        if uid in UNCOMPRESSED or uid == DeflatedExplicitVRLittleEndian:
            continue
        assert get_decoder(uid).is_available, uid


def test_listen_keys_are_checked_with_the_rest(tmp_path) -> None:
    """Port, address and AE titles out of bounds are configuration problems, all at once."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "dicom:\n"
        "  listen: {port: 0, address: scanner.local, ae_title: WAY_TOO_LONG_AE_TITLE,\n"
        "           allowed_calling_ae_titles: ['A\\\\B'], min_free_mb: -1, colour: red}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    for expected in (
        "At 'dicom.listen.port': must be at least 1",
        "At 'dicom.listen.address': must be an IPv4 or IPv6 address",
        "At 'dicom.listen.ae_title': an AE title must have 1-16 printable characters",
        "At 'dicom.listen.allowed_calling_ae_titles': an AE title must have",
        "At 'dicom.listen.min_free_mb': must be at least 0",
        "At 'dicom.listen.colour': unknown key",
    ):
        assert any(p.startswith(expected) for p in problems), expected
    assert len(problems) == 6
    assert load_config().dicom.listen is None  # off by default
    on = tmp_path / "on.yaml"
    on.write_text("dicom: {listen: {}}\n", encoding="utf-8")
    listen = load_config(on).dicom.listen
    assert listen is not None
    assert (listen.port, listen.ae_title, listen.allowed_calling_ae_titles) == (
        11112,
        "INFARCTWATCH",
        (),
    )


def test_status_prints_the_receiver_and_its_last_refusal(tmp_path) -> None:
    """``infarctwatch status`` shows the receiver's counters; a refusal line once there is one."""
    now = utc_now()
    document = {
        "version": 1,
        "state": "running",
        "pid": os.getpid(),
        "started_at": now.isoformat(),
        "updated_at": now.isoformat(),
        "receiver": {
            "address": "0.0.0.0:11112",
            "ae_title": "INFARCTWATCH",
            "associations": 31,
            "active": 1,
            "rejected": 0,
            "stored": 1240,
            "stored_bytes": 164_300_000,
            "no_space": 0,
            "failed": 0,
            "last_refusal": None,
        },
    }
    text, code = describe(document, tmp_path / "status.json", now)
    assert code == 0
    assert "  dicom        INFARCTWATCH on 0.0.0.0:11112: 1,240 stored (164.3 MB)" in text
    assert "31 association(s) (1 open)" in text
    assert "REJECTED" not in text and "refused" not in text
    document["receiver"] |= {
        "no_space": 17,
        "rejected": 2,
        "last_refusal": {"at": "2026-12-07T02:01:10Z", "reason": "no_space: 0 MiB free"},
    }
    text, _ = describe(document, tmp_path / "status.json", now)
    assert "2 REJECTED" in text
    assert (
        "  refused      17 DICOM instance(s), 17 out of resources; last at 2026-12-07T02:01:10Z: "
        "no_space: 0 MiB free"
    ) in text
    document["receiver"] = None
    assert "dicom" not in describe(document, tmp_path / "status.json", now)[0]
