"""The worker processes: whole scans in a child, crashes, hangs and bugs contained to one file."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from typing import TYPE_CHECKING

import pytest
from daemon_support import files_under, image_bytes, make_config, reports, running, wait_for
from decoder_faults import serve_nothing, serve_with_faults

from daemon.clock import utc_now
from daemon.config import InferenceConfig, OutcomeConfig
from daemon.errors import WorkerStartError
from daemon.intake.claims import ClaimArea
from daemon.records import Claim, Decoded
from daemon.scan.protocol import Finished, ModelChoice, ScanSetup
from daemon.scan.read import Rejected, configure_decoders, decode_claim
from daemon.service.status import describe
from daemon.shared.bundle import DEFAULT_BUNDLE, load_bundle
from daemon.shared.decode import DecodeLimits
from daemon.shared.preprocess import PreprocessSpec
from daemon.workers import process as worker_process
from daemon.workers.process import WorkerProcess

if TYPE_CHECKING:
    from pathlib import Path

SPEC = PreprocessSpec()
MAX_BYTES = 1 << 26


def _claim(folder: Path, name: str, data: bytes) -> Claim:
    path = folder / name
    path.write_bytes(data)
    return Claim("0000000000000001-abcdef", path, name, dt.datetime.now(dt.UTC), time.monotonic())


@pytest.fixture
def worker():
    """A started worker with the fault-injecting child, stopped after the test."""
    made = WorkerProcess(0, DecodeLimits(), MAX_BYTES, timeout_s=1.0, target=serve_with_faults)
    made.start()
    yield made
    made.close()


@pytest.fixture
def area(tmp_path) -> ClaimArea:
    made = ClaimArea(tmp_path / "incoming", tmp_path / "work", OutcomeConfig())
    for folder in made.folders():
        folder.mkdir(parents=True)
    return made


@pytest.fixture
def setup(tmp_path, area) -> ScanSetup:
    (tmp_path / "reports").mkdir()
    return ScanSetup(tmp_path / "reports", 3, area, InferenceConfig(device="CPU"))


@pytest.fixture
def model() -> ModelChoice:
    bundle = load_bundle(DEFAULT_BUNDLE)
    return ModelChoice(bundle.path, "fp16", bundle.sha256)


def _claims(area: ClaimArea, *names: str, data: bytes | None = None) -> tuple[Claim, ...]:
    """Claim a new file per name in ``area`` (a distinct PNG each, unless ``data`` is given)."""
    claims = []
    for seed, name in enumerate(names):
        path = area.incoming / name
        path.write_bytes(image_bytes("PNG", seed=seed) if data is None else data)
        claim = area.claim(path)
        assert claim is not None
        claims.append(claim)
    return tuple(claims)


class TestDecodeWorker:
    """Containment, one claim at a time, on the production path (`WorkerProcess.scan`)."""

    @staticmethod
    def _one(worker, area, setup, model, name: str, *, data: bytes | None = None):
        (answer,) = worker.scan(_claims(area, name, data=data), model, setup)
        return answer

    def test_a_scan_reads_the_file_like_the_in_process_stage(
        self, worker, area, setup, model
    ) -> None:
        """The report's source is what `decode_claim` finds in the file here (hash, size...)."""
        configure_decoders()
        data = image_bytes("PNG")
        path = area.incoming.parent / "copy.png"
        path.write_bytes(data)
        here = decode_claim(
            Claim("x", path, "scan.png", dt.datetime.now(dt.UTC), time.monotonic()),
            SPEC,
            DecodeLimits(),
            MAX_BYTES,
        )
        answer = self._one(worker, area, setup, model, "scan.png", data=data)
        assert isinstance(here, Decoded)
        assert isinstance(answer, Finished)
        assert answer.ok
        source = reports(setup.reports)["scan.png"]["source"]
        assert source["sha256"] == here.source.sha256
        assert source["bytes"] == here.source.bytes == len(data)
        assert (source["format"], source["width"], source["height"], source["bits"]) == (
            here.source.format,
            here.source.width,
            here.source.height,
            here.source.bits,
        )

    def test_bad_input_is_reported_with_its_code(self, worker, area, setup, model) -> None:
        """A scan error in the child is that file's error report with the stable code."""
        answer = self._one(worker, area, setup, model, "x.png", data=b"not an image")
        assert isinstance(answer, Finished)
        assert answer.failure is not None
        assert answer.failure.code == "NOT_AN_IMAGE"
        assert reports(setup.reports)["x.png"]["error"]["code"] == "NOT_AN_IMAGE"
        assert worker.restarts == 0

    def test_a_crash_costs_one_file_and_the_worker_is_replaced(
        self, worker, area, setup, model
    ) -> None:
        """A segfault gives DECODER_CRASHED with the file's hash; the next file is scanned."""
        data = image_bytes("PNG", seed=1)
        worker.scan((), model, setup)
        first_pid = worker.pid
        outcome = self._one(worker, area, setup, model, "segfault.png", data=data)
        assert isinstance(outcome, Rejected)
        assert outcome.failure.code == "DECODER_CRASHED"
        assert "SIGSEGV" in outcome.failure.message
        assert outcome.source.bytes == len(data)
        assert outcome.source.sha256 is not None
        assert outcome.claim.path.exists()  # still in processing/: the daemon reports it
        assert worker.restarts == 1
        after = self._one(worker, area, setup, model, "fine.png", data=data)
        assert isinstance(after, Finished)
        assert after.ok
        assert worker.pid != first_pid

    def test_a_hang_is_cut_at_the_timeout(self, worker, area, setup, model) -> None:
        """A decoder stuck longer than decode_timeout_s is killed: DECODE_TIMEOUT, then work."""
        worker.scan((), model, setup)
        started = time.monotonic()
        outcome = self._one(worker, area, setup, model, "hang.png")
        assert time.monotonic() - started < 30  # the hang itself lasts an hour
        assert isinstance(outcome, Rejected)
        assert outcome.failure.code == "DECODE_TIMEOUT"
        assert worker.restarts == 1
        after = self._one(worker, area, setup, model, "ok.png")
        assert isinstance(after, Finished)
        assert after.ok

    def test_an_unexpected_exception_is_an_internal_error_without_restart(
        self, worker, area, setup, model
    ) -> None:
        """A bug in decoding becomes INTERNAL_ERROR; the child lives on."""
        worker.scan((), model, setup)
        pid = worker.pid
        outcome = self._one(worker, area, setup, model, "bug.png")
        assert isinstance(outcome, Finished)
        assert outcome.failure is not None
        assert outcome.failure.code == "INTERNAL_ERROR"
        assert "ZeroDivisionError" in outcome.failure.message
        assert worker.restarts == 0
        assert worker.pid == pid

    def test_a_child_that_died_while_idle_is_replaced_without_blaming_a_file(
        self, worker, area, setup, model
    ) -> None:
        """Killed between batches (the OOM killer, an admin): the next file is scanned normally."""
        worker.scan((), model, setup)
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        time.sleep(0.2)
        outcome = self._one(worker, area, setup, model, "scan.png")
        assert isinstance(outcome, Finished)
        assert outcome.ok
        assert worker.restarts == 1

    def test_the_child_ignores_stop_signals_sent_to_the_whole_group(
        self, worker, area, setup, model
    ) -> None:
        """SIGTERM and SIGINT (systemd stop, Ctrl-C) leave the child to the daemon's own stop."""
        worker.scan((), model, setup)
        pid = worker.pid
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
        outcome = self._one(worker, area, setup, model, "scan.png")
        assert isinstance(outcome, Finished)
        assert outcome.ok
        assert worker.restarts == 0
        assert worker.pid == pid

    def test_a_child_that_cannot_start_is_a_start_error(self) -> None:
        """A child that exits before it is ready raises WorkerStartError, with its exit code."""
        broken = WorkerProcess(0, DecodeLimits(), MAX_BYTES, timeout_s=1.0, target=serve_nothing)
        broken.start()
        with pytest.raises(WorkerStartError, match="exit code 3"):
            broken.wait_ready(timeout=30)
        broken.close()


class TestScanBatches:
    """`WorkerProcess.scan`: whole scans in the child, and a failing claim blamed alone."""

    @staticmethod
    def _claims(area: ClaimArea, *names: str) -> tuple[Claim, ...]:
        return _claims(area, *names)

    def test_a_batch_is_reported_and_put_away(self, tmp_path, worker, area, setup, model) -> None:
        """Each claim gets a valid report and goes to done/; the answers follow the claims."""
        claims = self._claims(area, "a.png", "b.png", "c.png")
        answers = worker.scan(claims, model, setup)
        assert [a.claim for a in answers] == list(claims)
        assert all(isinstance(a, Finished) and a.ok and a.action == "moved" for a in answers)
        found = reports(setup.reports)
        assert sorted(found) == ["a.png", "b.png", "c.png"]
        version = load_bundle(DEFAULT_BUNDLE).version
        assert {d["model"]["version"] for d in found.values()} == {version}
        assert files_under(tmp_path / "work" / "done") == ["a.png", "b.png", "c.png"]
        assert worker.restarts == 0

    def test_a_crash_in_a_batch_blames_only_the_file_that_crashes_alone(
        self, tmp_path, worker, area, setup, model
    ) -> None:
        """The batch is retried a claim at a time: one DECODER_CRASHED, the others reported."""
        claims = self._claims(area, "first.png", "segfault.png", "last.png")
        answers = worker.scan(claims, model, setup)
        first, crashed, last = answers
        assert isinstance(first, Finished) and first.ok
        assert isinstance(last, Finished) and last.ok
        assert isinstance(crashed, Rejected)
        assert crashed.claim == claims[1]
        assert crashed.failure.code == "DECODER_CRASHED"
        assert crashed.source.sha256 is not None
        assert worker.restarts == 2  # the batch's child, then the one it crashed alone
        assert sorted(reports(setup.reports)) == ["first.png", "last.png"]
        assert claims[1].path.exists()  # still in processing/: the daemon reports it

    def test_a_hang_in_a_batch_times_out_alone(self, tmp_path, worker, area, setup, model) -> None:
        """A batch stuck past the timeout is retried a claim at a time: one DECODE_TIMEOUT."""
        hung, fine = worker.scan(self._claims(area, "hang.png", "fine.png"), model, setup)
        assert isinstance(hung, Rejected)
        assert hung.failure.code == "DECODE_TIMEOUT"
        assert isinstance(fine, Finished) and fine.ok

    def test_a_bug_on_one_claim_is_its_internal_error_report(
        self, tmp_path, worker, area, setup, model
    ) -> None:
        """An unexpected exception while decoding one claim: that claim's error report, no retry."""
        bug, fine = worker.scan(self._claims(area, "bug.png", "fine.png"), model, setup)
        assert isinstance(bug, Finished)
        assert bug.failure is not None
        assert bug.failure.code == "INTERNAL_ERROR"
        assert "ZeroDivisionError" in bug.failure.message
        assert isinstance(fine, Finished) and fine.ok
        assert reports(setup.reports)["bug.png"]["error"]["code"] == "INTERNAL_ERROR"
        assert files_under(tmp_path / "work" / "failed") == ["bug.png"]
        assert worker.restarts == 0

    def test_an_os_error_outside_a_claim_is_reported_not_a_silent_crash(
        self, tmp_path, worker, area, setup, model
    ) -> None:
        """An OSError in the scan itself (not the pipe) is a bug report with its cause, no exit."""
        fine, failing = worker.scan(self._claims(area, "fine.png", "oserror.png"), model, setup)
        assert isinstance(fine, Finished) and fine.ok
        assert isinstance(failing, Rejected)
        assert failing.failure.code == "INTERNAL_ERROR"
        assert "injected I/O error" in failing.failure.message
        assert worker.restarts == 0  # the child answered: nothing crashed

    def test_a_model_the_worker_cannot_serve_is_a_start_error(
        self, worker, area, setup, model
    ) -> None:
        """A bundle that is not the one the daemon checked (its sha256 differs) is refused."""
        other = ModelChoice(model.path, model.variant, "0" * 64)
        with pytest.raises(WorkerStartError, match="changed since the daemon loaded it"):
            worker.scan(self._claims(area, "a.png"), other, setup)


def test_the_service_reports_a_crashing_file_and_goes_on(tmp_path, monkeypatch) -> None:
    """In the running service, a file that kills its decoder gets an error report in failed/."""
    monkeypatch.setattr(worker_process, "serve", serve_with_faults)  # the children inject faults
    config = make_config(tmp_path, pipeline={"decode_workers": 1})
    config.incoming.mkdir(parents=True)
    with running(config):
        (config.incoming / "segfault.png").write_bytes(image_bytes("PNG", seed=2))
        (config.incoming / "after.png").write_bytes(image_bytes("PNG", seed=3))
        wait_for(lambda: len(list(config.reports.glob("*.json"))) == 2, what="two reports")
    status = json.loads((config.work / "status.json").read_text(encoding="utf-8"))
    # One restart when the crashing file was scanned alone, two when the two files shared a batch
    # (the batch's worker, then the one the file crashed alone: see TestScanBatches).
    restarts = status["decoders"]["restarts"]
    assert status["decoders"]["workers"] == 1
    assert restarts in (1, 2)
    text, _ = describe(status, config.work / "status.json", utc_now())
    assert f"1 worker processes, {restarts} restarted after a crash or a timeout" in text
    found = reports(config.reports)
    assert found["segfault.png"]["status"] == "error"
    assert found["segfault.png"]["error"]["code"] == "DECODER_CRASHED"
    assert found["segfault.png"]["source"]["sha256"] is not None
    assert found["after.png"]["status"] == "ok"
    assert files_under(config.work / "failed") == ["segfault.png"]
    assert files_under(config.work / "done") == ["after.png"]
