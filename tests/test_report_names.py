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
    assert document["schema_version"] == "1.3"


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


def _as_json(value: object) -> bytes:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False).encode() + b"\n"


def _reports() -> list[dict]:
    """Reports of every shape: ok, error, DICOM, odd names and text, an internal error."""
    from daemon.records import Failure  # noqa: PLC0415
    from daemon.shared.decode import DicomInfo  # noqa: PLC0415

    ok = _result("scan.png")
    dicom = DicomInfo("1.2.3", "1.2.3.4", "1.2.3.4.5", "MR", "MONOCHROME2", 1000.0, 3, 1)
    odd = _result(os.fsdecode(b'caf\xc3\xa9 "quoted" \\ tab\t \xe2\x80\xa8 50%.dcm'))
    with_dicom = ScanResult(
        odd.claim,
        Source(odd.claim.name, 5, "c" * 64, "dicom", 256, 256, 16, dicom),
        MODEL,
        Prediction(("a", "b"), (1e-07, 0.9999999)),
        None,
        0.1,
        123456.789,
    )
    failed = ScanResult(ok.claim, Source("x.png"), MODEL, failure=Failure("NOT_AN_IMAGE", "\x00"))
    return [
        report.build_report(ok, 2),
        report.build_report(ok, 0),
        report.build_report(with_dicom, 5),
        report.build_report(failed, 2),
        report.internal_error_report(ok, "unexpected KeyError: 'x' (at a.py:1 in f)"),
    ]


def test_reports_are_encoded_exactly_as_json_dumps_writes_them() -> None:
    """Every report's file is byte for byte ``json.dumps(indent=2, ensure_ascii=False)``."""
    for document in _reports():
        assert report._dumps(document) == _as_json(document)


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        {"a": {}, "b": [], "c": [[]], "d": [{}]},
        {"nested": {"deeper": {"list": [1, 2.5, None, True, False, "x", {"k": -0.0}]}}},
        {"floats": [0.1, 1e-300, 1.7976931348623157e308, -2.0, 1e16, 123456789.125]},
        {"ints": [0, -1, 2**70], "bools": {"t": True, "f": False}, "none": None},
        {"text": '\u2028\u2029\x7f\x1f"\\/ \U0001f600 e\u0301'},
        ("a tuple", ("inner",)),
        {"k" * 300: "v"},
    ],
)
def test_the_encoder_writes_what_json_dumps_writes(value: object) -> None:
    """Any nesting of what a report can hold: the same text as the standard encoder."""
    assert report._dumps(value) == _as_json(value)  # type: ignore[arg-type]


def _deep(depth: int) -> dict:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return {"deep": value}


@pytest.mark.parametrize(
    "value",
    [
        {3: "int key", 2.5: "float key", True: "bool key", None: "none key"},
        {"subclass": type("Sub", (float,), {})(0.5)},
        {"np": __import__("numpy").float64(0.125)},
        _deep(30),
    ],
)
def test_what_the_encoder_does_not_know_is_left_to_json_dumps(value: object) -> None:
    """Keys that are not text, subclasses, deep nesting: still json.dumps's exact text."""
    assert report._dumps(value) == _as_json(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), object()])
def test_what_json_cannot_hold_fails_as_json_dumps_fails(bad: object) -> None:
    """A NaN or a foreign object raises json.dumps's own error, from json.dumps."""
    with pytest.raises((ValueError, TypeError)) as ours:
        report._dumps({"x": [bad]})  # type: ignore[dict-item]
    with pytest.raises((ValueError, TypeError)) as theirs:
        _as_json({"x": [bad]})
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)
    assert ours.traceback[-1].frame.code.name == theirs.traceback[-1].frame.code.name
