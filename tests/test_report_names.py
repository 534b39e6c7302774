"""Reports of any file name, and a report that cannot be built: checks of `daemon.scan.report`."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from daemon_support import VALIDATOR

from daemon.records import Claim, ModelInfo, Prediction, ScanResult, Source, scan_id
from daemon.scan import report

MODEL = ModelInfo("m", "1.0.0", "a" * 64, "fp16", "FP16", "bf16", "CPU", "CPU", ("a", "b"))


def _result(name: str, *, sha256: str = "b" * 64) -> ScanResult:
    claim = Claim(
        "0000000000000001-abcdef",
        Path("/x") / name,
        name,
        dt.datetime.now(dt.UTC),
        time.monotonic(),
    )
    source = Source(name=name, bytes=10, sha256=sha256, format="png", width=64, height=64, bits=8)
    return ScanResult(claim, source, MODEL, Prediction(("a", "b"), (0.25, 0.75)), None, 1.0, 1.0)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"M\xfcller.png", "M%FCller.png"),
        (b"\xff\xfe/x\x80.dcm", "%FF%FE/x%80.dcm"),
        (b"caf\xc3\xa9 50%.png", "caf\u00e9 50%.png"),
        (b"line\nbreak.png", "line\nbreak.png"),
    ],
)
def test_any_name_gives_valid_json_and_its_exact_bytes(raw: bytes, shown: str) -> None:
    """`name` is valid UTF-8 (``%XX`` for undecodable bytes); `name_base64` only when needed."""
    name = os.fsdecode(raw)
    document, data = report.encode_report(_result(name), 2)
    VALIDATOR.validate(json.loads(data.decode("utf-8")))
    assert document["source"]["name"] == shown
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert base64.b64decode(document["source"]["name_base64"]) == raw
    else:
        assert document["source"]["name_base64"] is None
    assert document["id"].endswith("-" + hashlib.sha256(raw).hexdigest()[:8])
    assert document["schema_version"] == "1.1"


def test_scan_id_hashes_the_raw_bytes_of_the_name() -> None:
    """The name part of the id is the sha256 of the bytes the file system holds."""
    raw = b"M\xfcller.png"
    claim = _result(os.fsdecode(raw)).claim
    assert scan_id(claim, "c" * 64) == "c" * 16 + "-" + hashlib.sha256(raw).hexdigest()[:8]


def test_a_bug_while_building_a_report_is_that_scans_internal_error(monkeypatch) -> None:
    """`build_report` raising: an INTERNAL_ERROR report under the same id, valid and complete."""
    good = _result("fine.png")
    expected_id = good.scan_id

    def broken(result: ScanResult, top_k: int, now: float | None = None) -> dict:
        del result, top_k, now
        return {"probabilities": {"x": float("nan")}}["nope"]  # a KeyError, as a bug would

    monkeypatch.setattr(report, "build_report", broken)
    document, data = report.encode_report(_result(os.fsdecode(b"bad\xfc.png")), 2)
    VALIDATOR.validate(json.loads(data))
    assert document["status"] == "error" and document["prediction"] is None
    assert document["error"]["code"] == "INTERNAL_ERROR"
    assert "KeyError" in document["error"]["message"]
    assert "while building the report" in document["error"]["message"]
    assert document["source"]["name"] == "bad%FC.png"
    fallback, _ = report.encode_report(good, 2)
    assert fallback["id"] == expected_id
    assert fallback["source"]["sha256"] == "b" * 64


def test_other_strings_of_a_report_are_escaped_too() -> None:
    """An error message quoting an undecodable path stays valid JSON."""
    from daemon.records import Failure  # noqa: PLC0415

    result = _result("x.png")
    failed = ScanResult(
        result.claim, result.source, MODEL, failure=Failure("READ_ERROR", "at \udcfc")
    )
    document, data = report.encode_report(failed, 2)
    assert json.loads(data)["error"]["message"] == "at %FC"
    assert document["error"]["message"] == "at %FC"
