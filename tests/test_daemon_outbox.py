"""DICOM results: Secondary Captures in the outbox, sent to a real pynetdicom Storage SCP.

Everything is real: captures made with highdicom from DICOM files and read back with pydicom and
highdicom, the daemon's own scan path, and a Storage SCP (pynetdicom's AE) started by the test on
the loopback. The refusing PACS refuses for real (a failure status, or an association rejected
because the called AE title is wrong); a PACS that is down is a port nobody listens on.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from daemon_support import (
    BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    REPO,
    brain_slice,
    dicom_bytes,
    drop,
    make_config,
    running,
    small_png,
    spawn,
    wait_for,
    write_config,
)
from pydicom.uid import SecondaryCaptureImageStorage
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from daemon import DISCLAIMER
from daemon.clock import utc_now
from daemon.config import DicomSendConfig
from daemon.errors import ConfigError
from daemon.outbox import writer as writer_module
from daemon.outbox.capture import CaptureError, band_rows, secondary_capture
from daemon.outbox.sender import DEAD_LETTER, SENT, OutboxSender
from daemon.outbox.writer import OutboxWriter, staging_folder
from daemon.service.status import describe

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

REPORT = {
    "status": "ok",
    "prediction": {"label": "Right parietal lobe", "probability": 0.87},
    "model": {"name": "seed", "version": "1.0.0", "bundle_sha256": "ab" * 32},
}


def _capture(data: bytes, scan_id: str = "0123456789abcdef-01234567") -> pydicom.Dataset:
    capture = secondary_capture(data, REPORT, scan_id)
    return pydicom.dcmread(io.BytesIO(capture.data))


# -- the capture ---------------------------------------------------------------------------------


class TestCapture:
    def test_read_back_it_is_a_secondary_capture_of_the_source(self) -> None:
        """Same study and patient, new series and instance, the source instance referenced."""
        data = dicom_bytes()
        source = pydicom.dcmread(io.BytesIO(data))
        sc = _capture(data)
        assert sc.SOPClassUID == SecondaryCaptureImageStorage
        assert sc.file_meta.MediaStorageSOPClassUID == SecondaryCaptureImageStorage
        assert sc.Modality == "OT"
        assert sc.StudyInstanceUID == source.StudyInstanceUID
        assert sc.SeriesInstanceUID != source.SeriesInstanceUID
        assert sc.SOPInstanceUID != source.SOPInstanceUID
        assert str(sc.PatientName) == PATIENT_NAME
        assert sc.PatientID == PATIENT_ID
        (reference,) = sc.SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == source.SOPClassUID
        assert sc.ContentQualification == "RESEARCH"
        assert DISCLAIMER in sc.ImageComments
        assert "RESEARCH USE ONLY" in sc.SeriesDescription
        assert sc.BurnedInAnnotation == "NO"
        image = hd.imread(io.BytesIO(secondary_capture(data, REPORT, "x").data))
        assert image.SOPInstanceUID != source.SOPInstanceUID
        assert image.get_frame(1).shape == (sc.Rows, sc.Columns)

    def test_the_answer_and_the_disclaimer_are_burned_in(self) -> None:
        """The bands above and below the slice hold text; the slice itself is the source's."""
        sc = _capture(dicom_bytes([brain_slice(128)]))
        pixels = sc.pixel_array
        assert pixels.dtype == np.uint8
        assert sc.Columns >= 512
        slice_rows = 128 * (sc.Columns // 128)
        answer, middle, disclaimer = band_rows(slice_rows, sc.Columns)
        assert disclaimer.stop == sc.Rows
        assert (pixels[disclaimer] > 128).sum() > 500  # white text on black
        assert (pixels[answer] > 128).sum() > 200
        assert pixels[middle].std() > 20  # the slice, windowed
        blank = _capture_with_label("No acute infarct")
        assert not np.array_equal(blank.pixel_array[answer], pixels[answer])

    def test_same_result_gives_the_same_object(self) -> None:
        """UIDs derive from the source and the scan: a capture written again is the same one."""
        data = dicom_bytes()
        first, again = _capture(data), _capture(data)
        other_scan = _capture(data, "fedcba9876543210-76543210")
        assert first.SOPInstanceUID == again.SOPInstanceUID
        assert first.SeriesInstanceUID == again.SeriesInstanceUID
        assert other_scan.SOPInstanceUID != first.SOPInstanceUID
        assert other_scan.SeriesInstanceUID == first.SeriesInstanceUID  # one series per source's

    def test_a_multi_frame_source_references_the_frame_used(self) -> None:
        """The middle frame is the one analysed, and the one named (1-based)."""
        frames = [brain_slice(128, seed) for seed in range(3)]
        sc = _capture(dicom_bytes(frames))
        assert sc.SourceImageSequence[0].ReferencedFrameNumber == 2

    def test_no_prediction_no_capture(self) -> None:
        with pytest.raises(CaptureError):
            secondary_capture(dicom_bytes(), {**REPORT, "prediction": None}, "x")
        with pytest.raises(CaptureError):
            secondary_capture(small_png(1), REPORT, "x")


def _capture_with_label(label: str) -> pydicom.Dataset:
    report = {**REPORT, "prediction": {"label": label, "probability": 0.99}}
    data = dicom_bytes([brain_slice(128)])
    return pydicom.dcmread(io.BytesIO(secondary_capture(data, report, "y").data))


# -- configuration -------------------------------------------------------------------------------


class TestConfig:
    def test_off_by_default(self, tmp_path: Path) -> None:
        config = make_config(tmp_path)
        assert config.outputs.dicom.outbox is None
        assert config.outputs.dicom.send.host is None

    def test_bounds_are_checked(self, tmp_path: Path) -> None:
        send = {"host": "pacs", "port": 70000, "ae_title": "A" * 17, "max_attempts": 0}
        with pytest.raises(ConfigError) as caught:
            make_config(tmp_path, outputs={"dicom": {"send": send}})
        text = str(caught.value)
        assert "outputs.dicom.send.port" in text
        assert "outputs.dicom.send.ae_title" in text
        assert "outputs.dicom.send.max_attempts" in text

    def test_sending_needs_an_outbox_and_a_growing_back_off(self, tmp_path: Path) -> None:
        send = {"host": "pacs", "backoff_s": 10, "backoff_max_s": 5}
        with pytest.raises(ConfigError) as caught:
            make_config(tmp_path, outputs={"dicom": {"send": send}})
        text = str(caught.value)
        assert "sending needs 'outputs.dicom.outbox'" in text
        assert "outputs.dicom.send.backoff_max_s" in text

    def test_the_outbox_is_not_inside_incoming(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"outputs\.dicom\.outbox"):
            make_config(tmp_path, outputs={"dicom": {"outbox": str(tmp_path / "incoming" / "o")}})


# -- a real Storage SCP ----------------------------------------------------------------------------


class StorageSCP:
    """pynetdicom's AE as a Storage SCP on the loopback, recording what it is sent."""

    def __init__(self, *, status: int = 0x0000, ae_title: str = "TEST-PACS", port: int = 0) -> None:
        self.status = status
        self.received: list[pydicom.Dataset] = []
        self.tries: list[float] = []
        self._lock = threading.Lock()
        self.ae = AE(ae_title=ae_title)
        self.ae.require_called_aet = True
        self.ae.add_supported_context(SecondaryCaptureImageStorage, ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context("1.2.840.10008.5.1.4.1.1.4", ALL_TRANSFER_SYNTAXES)
        self.server = self.ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        self.port = self.server.server_address[1]

    def _store(self, event: Any) -> int:
        with self._lock:
            self.tries.append(time.monotonic())
            if self.status == 0x0000:
                dataset = event.dataset
                dataset.file_meta = event.file_meta
                self.received.append(dataset)
        return self.status

    def uids(self) -> list[str]:
        with self._lock:
            return [str(ds.SOPInstanceUID) for ds in self.received]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scp() -> Iterator[StorageSCP]:
    server = StorageSCP()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def send_config(port: int, **changes: Any) -> DicomSendConfig:
    base = DicomSendConfig(
        host="127.0.0.1",
        port=port,
        ae_title="TEST-PACS",
        timeout_s=5.0,
        max_attempts=3,
        backoff_s=0.2,
        backoff_max_s=1.0,
    )
    return replace(base, **changes)


def fill_outbox(outbox: Path, count: int) -> dict[str, str]:
    """``count`` captures written into ``outbox``; their SOP Instance UIDs by file name."""
    outbox.mkdir(parents=True, exist_ok=True)
    written = {}
    for number in range(count):
        name = f"{number:016x}-0000000{number}"
        capture = secondary_capture(dicom_bytes(), REPORT, name)
        (outbox / f"{name}.dcm").write_bytes(capture.data)
        written[f"{name}.dcm"] = capture.sop_instance_uid
    return written


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.dcm")) if folder.is_dir() else []


class TestSender:
    def test_files_arrive_and_move_to_sent(self, tmp_path: Path, scp: StorageSCP) -> None:
        """What is in the outbox at start is sent: identical SOP Instance UIDs arrive."""
        outbox = tmp_path / "outbox"
        written = fill_outbox(outbox, 3)
        with OutboxSender(outbox, send_config(scp.port)) as sender:
            wait_for(lambda: len(names(outbox / SENT)) == 3, 20, "three files in sent/")
            status = sender.snapshot()
        assert sorted(scp.uids()) == sorted(written.values())
        assert names(outbox) == []
        assert names(outbox / SENT) == sorted(written)
        for name, uid in written.items():
            assert pydicom.dcmread(outbox / SENT / name).SOPInstanceUID == uid
        assert status["sent"] == 3
        assert status["failed_tries"] == 0
        assert status["destination"] == f"TEST-PACS@127.0.0.1:{scp.port}"

    def test_after_send_delete(self, tmp_path: Path, scp: StorageSCP) -> None:
        outbox = tmp_path / "outbox"
        fill_outbox(outbox, 1)
        with OutboxSender(outbox, send_config(scp.port, after_send="delete")):
            wait_for(lambda: len(scp.uids()) == 1, 20, "the file at the SCP")
            wait_for(lambda: names(outbox) == [], 5, "the file deleted")
        assert not (outbox / SENT).exists()

    def test_a_failure_status_ends_in_dead_letter_after_the_stated_tries(
        self, tmp_path: Path
    ) -> None:
        """0xA700 (out of resources) three times, backing off 0.2 s then 0.4 s: dead-letter."""
        refusing = StorageSCP(status=0xA700)
        outbox = tmp_path / "outbox"
        written = fill_outbox(outbox, 1)
        try:
            with OutboxSender(outbox, send_config(refusing.port)) as sender:
                wait_for(lambda: names(outbox / DEAD_LETTER) != [], 20, "the dead-letter file")
                time.sleep(1.5)  # longer than any back-off: no further try comes
                status = sender.snapshot()
        finally:
            refusing.close()
        assert len(refusing.tries) == 3
        gaps = np.diff(refusing.tries)
        assert gaps[0] >= 0.2 - 0.02
        assert gaps[1] >= 0.4 - 0.02
        assert names(outbox / DEAD_LETTER) == sorted(written)
        assert names(outbox) == []
        assert status["dead_lettered"] == 1
        assert status["failed_tries"] == 3
        assert status["sent"] == 0
        assert "0xA700" in status["last_error"]["message"]

    def test_an_association_refused_ends_in_dead_letter(
        self, tmp_path: Path, scp: StorageSCP
    ) -> None:
        """The PACS rejects the association (wrong called AE title): the same bounded tries."""
        outbox = tmp_path / "outbox"
        fill_outbox(outbox, 2)
        config = send_config(scp.port, ae_title="WRONG-AE", max_attempts=2, backoff_s=0.1)
        with OutboxSender(outbox, config) as sender:
            wait_for(lambda: len(names(outbox / DEAD_LETTER)) == 2, 20, "two dead-letter files")
            status = sender.snapshot()
        assert scp.uids() == []
        assert status["dead_lettered"] == 2
        assert status["failed_tries"] == 4
        assert "rejected" in status["last_error"]["message"]

    def test_a_host_that_does_not_resolve_ends_in_dead_letter(self, tmp_path: Path) -> None:
        outbox = tmp_path / "outbox"
        fill_outbox(outbox, 1)
        config = send_config(104, host="no-such-pacs.invalid", max_attempts=2, backoff_s=0.1)
        with OutboxSender(outbox, config) as sender:
            wait_for(lambda: names(outbox / DEAD_LETTER) != [], 20, "the dead-letter file")
            status = sender.snapshot()
        assert status["failed_tries"] == 2
        assert "no connection" in status["last_error"]["message"]

    # pynetdicom 3.0.4 (transport.AssociationSocket.connect) calls shutdown() before close() on a
    # socket whose connect failed; shutdown raises ENOTCONN, so the socket is closed by its
    # finaliser, which warns (ResourceWarning, ignored outside tests). Only that is ignored here.
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    @pytest.mark.filterwarnings("ignore::ResourceWarning")
    def test_a_pacs_down_at_first_then_up_gets_the_files(self, tmp_path: Path) -> None:
        """No listener on the port for the first tries; once the SCP starts, the file is sent."""
        port = free_port()
        outbox = tmp_path / "outbox"
        written = fill_outbox(outbox, 1)
        config = send_config(port, max_attempts=6, backoff_s=0.3, backoff_max_s=0.6)
        with OutboxSender(outbox, config) as sender:
            wait_for(lambda: sender.snapshot()["failed_tries"] >= 1, 20, "a failed try")
            assert "no connection" in sender.snapshot()["last_error"]["message"]
            late = StorageSCP(port=port)
            try:
                wait_for(lambda: names(outbox / SENT) != [], 20, "the file in sent/")
            finally:
                late.close()
            status = sender.snapshot()
        assert late.uids() == list(written.values())
        assert status["sent"] == 1
        assert status["dead_lettered"] == 0

    def test_a_restart_sends_each_file_once(self, tmp_path: Path, scp: StorageSCP) -> None:
        """Sent files are not sent again by the next sender; new ones are."""
        outbox = tmp_path / "outbox"
        fill_outbox(outbox, 2)
        with OutboxSender(outbox, send_config(scp.port)):
            wait_for(lambda: len(names(outbox / SENT)) == 2, 20, "two files sent")
        (outbox / "extra").mkdir()
        with OutboxSender(outbox, send_config(scp.port)) as again:
            time.sleep(0.5)
            assert again.snapshot()["sent"] == 0
        assert len(scp.uids()) == 2


# -- the daemon ------------------------------------------------------------------------------------


def _b0_dicom() -> bytes:
    """A DWI slice declaring b = 0: a not_analysed report, no capture."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    ds.DiffusionBValue = 0
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_the_daemon_writes_a_capture_per_analysed_dicom_and_sends_it(
    tmp_path: Path, scp: StorageSCP
) -> None:
    """One analysed DICOM: one capture, sent; PNG, not_analysed and error inputs: nothing."""
    outbox = tmp_path / "outbox"
    config = make_config(
        tmp_path,
        outputs={
            "dicom": {
                "outbox": str(outbox),
                "send": {"host": "127.0.0.1", "port": scp.port, "ae_title": "TEST-PACS"},
            }
        },
    )
    source = dicom_bytes()
    with running(config) as service:
        drop(config.incoming, "slice.dcm", source)
        drop(config.incoming, "slice.png", small_png(3))
        drop(config.incoming, "b0.dcm", _b0_dicom())
        drop(config.incoming, "broken.dcm", source[:300])
        wait_for(lambda: len(list(config.reports.glob("*.json"))) == 4, 60, "four reports")
        wait_for(lambda: len(names(outbox / SENT)) == 1, 30, "the capture sent")
        status = service.service._outbox_status()
    by_name = {}
    for path in config.reports.glob("*.json"):
        report = json.loads(path.read_text(encoding="utf-8"))
        by_name[report["source"]["name"]] = report
    assert by_name["slice.dcm"]["status"] == "ok"
    assert by_name["b0.dcm"]["status"] == "not_analysed"
    assert by_name["broken.dcm"]["status"] == "error"
    scan_id = by_name["slice.dcm"]["id"]
    assert names(outbox / SENT) == [f"{scan_id}.dcm"]
    assert list(staging_folder(outbox).iterdir()) == []
    sent = pydicom.dcmread(outbox / SENT / f"{scan_id}.dcm")
    assert scp.uids() == [sent.SOPInstanceUID]
    original = pydicom.dcmread(io.BytesIO(source))
    assert sent.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    assert status is not None
    assert status["written"] == 1
    assert status["failed"] == 0
    assert status["send"]["sent"] == 1
    final = json.loads(config.status_path.read_text(encoding="utf-8"))
    assert final["outbox"]["send"]["sent"] == 1
    text, _ = describe(final, config.status_path, utc_now())
    assert f"outbox       {outbox}: 1 captures written, 0 failed, 0 staged" in text
    assert f"sending      to TEST-PACS@127.0.0.1:{scp.port}: 1 sent, 0 queued" in text
    assert PATIENT_NAME not in config.status_path.read_text(encoding="utf-8")


def test_a_capture_staged_before_a_restart_is_written(tmp_path: Path) -> None:
    """A staged file and its report left by a previous run: the writer's start-up sweep."""
    outbox, reports = tmp_path / "outbox", tmp_path / "reports"
    staging_folder(outbox).mkdir(parents=True)
    reports.mkdir()
    scan_id = "0123456789abcdef-01234567"
    (staging_folder(outbox) / f"{scan_id}.dcm").write_bytes(dicom_bytes())
    (reports / f"{scan_id}.json").write_text(json.dumps(REPORT), encoding="utf-8")
    skipped = "fedcba9876543210-76543210"  # its report says not_analysed: dropped, no capture
    (staging_folder(outbox) / f"{skipped}.dcm").write_bytes(dicom_bytes())
    (reports / f"{skipped}.json").write_text(
        json.dumps({**REPORT, "status": "not_analysed", "prediction": None}), encoding="utf-8"
    )
    with OutboxWriter(outbox, reports) as writer:
        wait_for(lambda: names(outbox) == [f"{scan_id}.dcm"], 20, "the capture")
        wait_for(lambda: list(staging_folder(outbox).iterdir()) == [], 5, "staging emptied")
        assert writer.snapshot()["written"] == 1


def test_captures_wait_while_scans_are_pending(tmp_path: Path, monkeypatch) -> None:
    """Busy: no capture yet; idle: made at once; busy for good: made after MAX_DEFER_S."""
    monkeypatch.setattr(writer_module, "MAX_DEFER_S", 1.0)
    outbox, reports = tmp_path / "outbox", tmp_path / "reports"
    staging_folder(outbox).mkdir(parents=True)
    reports.mkdir()
    busy = threading.Event()
    busy.set()
    ids = ["0123456789abcdef-01234567", "fedcba9876543210-76543210"]

    def stage(scan_id: str) -> None:
        (staging_folder(outbox) / f"{scan_id}.dcm").write_bytes(dicom_bytes())
        (reports / f"{scan_id}.json").write_text(json.dumps(REPORT), encoding="utf-8")

    with OutboxWriter(outbox, reports, busy=busy.is_set) as writer:
        stage(ids[0])
        writer.notify(ids[0])
        time.sleep(0.4)
        assert names(outbox) == []  # the scan path first
        busy.clear()
        wait_for(lambda: names(outbox) == [f"{ids[0]}.dcm"], 20, "the capture once idle")
        busy.set()
        started = time.monotonic()
        stage(ids[1])
        writer.notify(ids[1])
        wait_for(lambda: len(names(outbox)) == 2, 20, "the capture after the deferral")
        assert time.monotonic() - started >= 1.0 - 0.05


def test_a_source_without_uids_is_counted_and_dropped(tmp_path: Path) -> None:
    """No Study Instance UID: no capture, the staged file dropped, the failure counted."""
    outbox, reports = tmp_path / "outbox", tmp_path / "reports"
    staging_folder(outbox).mkdir(parents=True)
    reports.mkdir()
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    del ds.StudyInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    scan_id = "0123456789abcdef-01234567"
    (staging_folder(outbox) / f"{scan_id}.dcm").write_bytes(buffer.getvalue())
    (reports / f"{scan_id}.json").write_text(json.dumps(REPORT), encoding="utf-8")
    with OutboxWriter(outbox, reports) as writer:
        wait_for(lambda: writer.snapshot()["failed"] == 1, 20, "the failure counted")
        status = writer.snapshot()
    assert names(outbox) == []
    assert list(staging_folder(outbox).iterdir()) == []
    assert "lacks a Study" in status["last_error"]["message"]
    assert status["written"] == 0


def _events(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text(encoding="utf-8").splitlines()
    for line in lines:
        assert line.startswith("{"), f"not a JSON line: {line!r}"
    return [json.loads(line) for line in lines]


def _serve(config: Path, log: Path, until: Any, what: str) -> list[dict[str, Any]]:
    """``infarctwatch run`` as a real process until ``until()``; SIGTERM; its log events."""
    process = spawn("run", "--config", str(config), log=log)
    try:
        wait_for(until, 90, what)
        time.sleep(1.0)  # a resend would come within this (the sender looks every 5 s at most)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0
    return _events(log)


def test_a_restarted_daemon_sends_the_outbox_once(tmp_path: Path, scp: StorageSCP) -> None:
    """Run 1 (no PACS configured) leaves a capture; run 2 sends it; run 3 sends nothing again.

    Real daemon processes; every stderr line is JSON and names no patient attribute.
    """
    outbox = tmp_path / "outbox"
    first = write_config(tmp_path, outputs={"dicom": {"outbox": str(outbox)}})
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    drop(incoming, "slice.dcm", dicom_bytes())
    events = _serve(first, tmp_path / "run1.log", lambda: names(outbox) != [], "a capture")
    assert [e["event"] for e in events].count("outbox_written") == 1
    (capture,) = names(outbox)
    uid = pydicom.dcmread(outbox / capture).SOPInstanceUID
    send = {"host": "127.0.0.1", "port": scp.port, "ae_title": "TEST-PACS"}
    second = write_config(tmp_path, outputs={"dicom": {"outbox": str(outbox), "send": send}})
    events += _serve(second, tmp_path / "run2.log", lambda: scp.uids() != [], "the capture sent")
    events += _serve(
        second,
        tmp_path / "run3.log",
        lambda: json.loads((tmp_path / "work" / "status.json").read_text())["state"] == "running",
        "run 3 running",
    )
    assert scp.uids() == [uid]
    assert names(outbox / SENT) == [capture]
    assert [e["event"] for e in events].count("outbox_sent") == 1
    text = "".join(p.read_text(encoding="utf-8") for p in tmp_path.glob("run*.log"))
    for identifier in (PATIENT_NAME, PATIENT_ID, BIRTH_DATE):
        assert identifier not in text


def test_the_pacs_drop_in_opens_one_address_and_says_why() -> None:
    """Each directive of the drop-in is commented; it opens IP to one address, nothing more."""
    path = REPO / "systemd" / "infarctwatch.service.d" / "pacs.conf"
    lines = path.read_text(encoding="utf-8").splitlines()
    settings = {}
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith(("#", "[")):
            assert lines[number - 1].startswith("#"), line
            key, _, value = line.partition("=")
            settings[key] = value
    assert settings == {
        "PrivateNetwork": "no",
        "RestrictAddressFamilies": "AF_INET AF_INET6",
        "IPAddressAllow": "192.0.2.10",
    }
