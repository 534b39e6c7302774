"""A DICOM file whose header says "not a DWI b1000 MR slice" gets a not_analysed report.

One ``run --once`` of the real daemon (real worker processes, the committed bundle) over pydicom's
own test files, the untouched DWI samples, and copies of a DWI sample with one attribute changed
(`daemon.shared.dicom_scope` has the rules).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
import pytest
from daemon_support import (
    PYDICOM_FILES,
    REPO,
    files_under,
    make_config,
    reports,
    run_once,
)
from PIL import Image
from structlog.testing import capture_logs

from daemon.errors import ConfigError
from daemon.outbox.capture import secondary_capture
from daemon.service.status import describe
from daemon.shared.dicom_scope import (
    B_RANGE,
    CODES,
    MIN_DWI_TE_MS,
    MIN_DWI_TR_MS,
    MIN_NON_DWI_TI_MS,
    Header,
    judge,
)

if TYPE_CHECKING:
    from collections.abc import Callable

SAMPLES = REPO / "samples"
DWI_SAMPLE = "05-right-basal-ganglia.dcm"
VENDOR_TAGS = {
    # vendor: (group, private creator, element offset, VR, value for b=0, value for b=1000)
    "siemens": (0x0019, "SIEMENS MR HEADER", 0x0C, "IS", "0", "1000"),
    "ge": (0x0043, "GEMS_PARM_01", 0x39, "IS", ["1000000000", "8", "0", "0"], ["1000001000", "8"]),
    "philips": (0x2001, "Philips Imaging DD 001", 0x03, "FL", 0.0, 1000.0),
}


def _variant(change: Callable[[pydicom.Dataset], None]) -> bytes:
    """The DWI sample with ``change`` applied to its header (pixels untouched)."""
    ds = pydicom.dcmread(SAMPLES / DWI_SAMPLE)
    change(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _set(keyword: str, value: Any) -> Callable[[pydicom.Dataset], None]:
    def change(ds: pydicom.Dataset) -> None:
        setattr(ds, keyword, value)

    return change


def _vendor_b(vendor: str, b1000: bool) -> Callable[[pydicom.Dataset], None]:
    """Only the vendor's private b-value tag, holding b=0 (or b=1000)."""
    group, creator, offset, vr, zero, thousand = VENDOR_TAGS[vendor]

    def change(ds: pydicom.Dataset) -> None:
        del ds.DiffusionBValue
        block = ds.private_block(group, creator, create=True)
        block.add_new(offset, vr, thousand if b1000 else zero)

    return change


def _stripped(**attributes: Any) -> Callable[[pydicom.Dataset], None]:
    """Nothing left that says diffusion (as an export that empties descriptions leaves it), and
    ``attributes`` set: the acquisition's type and timing are all that speak."""

    def change(ds: pydicom.Dataset) -> None:
        for keyword in ("DiffusionBValue", "SeriesDescription", "SequenceName", "ScanningSequence"):
            delattr(ds, keyword)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)

    return change


def _sequence_name_only(name: str) -> Callable[[pydicom.Dataset], None]:
    """No b-value tag left (an anonymiser stripped the private ones): Siemens' SequenceName."""

    def change(ds: pydicom.Dataset) -> None:
        del ds.DiffusionBValue
        ds.SequenceName = name

    return change


REFUSED = {
    # name: (bytes, the reason code)
    "b0-sequence-name.dcm": (_variant(_sequence_name_only("*ep_b0")), "NOT_B1000"),
    "flair-by-its-timing.dcm": (
        _variant(_stripped(RepetitionTime=9000, EchoTime=120, InversionTime=2500)),
        "NOT_DWI",
    ),
    "t1-by-its-timing.dcm": (_variant(_stripped(RepetitionTime=550, EchoTime=12)), "NOT_DWI"),
    "t1-3d.dcm": (_variant(_stripped(MRAcquisitionType="3D")), "NOT_DWI"),
    "mr-small-t2-spin-echo.dcm": ((PYDICOM_FILES / "MR_small.dcm").read_bytes(), "NOT_DWI"),
    "ct-small.dcm": ((PYDICOM_FILES / "CT_small.dcm").read_bytes(), "NOT_MR"),
    "adc-map.dcm": (_variant(_set("ImageType", ["DERIVED", "PRIMARY", "ADC"])), "NOT_DWI"),
    "flair.dcm": (_variant(_set("SeriesDescription", "t2_tirm_tra_dark-fluid FLAIR")), "NOT_DWI"),
    "b0-standard-tag.dcm": (_variant(_set("DiffusionBValue", 0)), "NOT_B1000"),
    "perfusion.dcm": (_variant(_set("SeriesDescription", "ep2d_perf_p2")), "NOT_DWI"),
    "sagittal.dcm": (_variant(_set("ImageOrientationPatient", [0, 1, 0, 0, 0, -1])), "NOT_AXIAL"),
    **{
        f"b0-{vendor}-tag.dcm": (_variant(_vendor_b(vendor, b1000=False)), "NOT_B1000")
        for vendor in VENDOR_TAGS
    },
}


def _binary_png(mode: str) -> bytes:
    """A lesion mask as synth and the daemon write them: two grey levels (or two colours)."""
    mask = np.zeros((256, 256), np.uint8)
    mask[100:140, 90:150] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def _own_capture() -> bytes:
    """The daemon's own Secondary Capture of the DWI sample, as a PACS would send it back."""
    report = {
        "status": "ok",
        "prediction": {"label": "Right basal ganglia", "probability": 0.9},
        "model": {"name": "infarctwatch-compact", "version": "2.4.0", "bundle_sha256": "0" * 64},
    }
    return secondary_capture((SAMPLES / DWI_SAMPLE).read_bytes(), report, "0" * 16).data


REFUSED["own-secondary-capture.dcm"] = (_own_capture(), "OWN_RESULT")

# Refused before inference, whatever the in_scope threshold (these tests run with it at 0).
PICTURES = {
    "lesion-mask.png": (_binary_png("L"), "OUT_OF_SCOPE_IMAGE"),
    "lesion-mask-rgb.png": (_binary_png("RGB"), "OUT_OF_SCOPE_IMAGE"),
}
REFUSED |= PICTURES
ANALYSED = {
    **{
        f"b1000-{vendor}-tag.dcm": _variant(_vendor_b(vendor, b1000=True)) for vendor in VENDOR_TAGS
    },
    "b1000-sequence-name.dcm": _variant(_sequence_name_only("*ep_b1000t")),
    # A DWI with STIR fat suppression (TI 180 ms) and nothing else left that says diffusion.
    "no-b-dwi-stir-timing.dcm": _variant(
        _stripped(RepetitionTime=5200, EchoTime=89, InversionTime=180)
    ),
    "sample-01.dcm": (SAMPLES / "01-no-acute-infarct.dcm").read_bytes(),
    "sample-05.dcm": (SAMPLES / DWI_SAMPLE).read_bytes(),
}


def _expected_label(sample: str) -> str:
    with (SAMPLES / "manifest.csv").open(encoding="utf-8") as rows:
        return next(row["label"] for row in csv.DictReader(rows) if row["file"] == sample)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> dict[str, Any]:
    """One --once run over the refused and the analysed files: reports, folders, logs, status."""
    root = tmp_path_factory.mktemp("scope")
    config = make_config(root, watch={"stable_s": 0})
    config.incoming.mkdir(parents=True)
    for name, (data, _) in REFUSED.items():
        (config.incoming / name).write_bytes(data)
    for name, data in ANALYSED.items():
        (config.incoming / name).write_bytes(data)
    with capture_logs() as logs:
        code = run_once(config)
    status = json.loads(config.status_path.read_text(encoding="utf-8"))
    return {
        "code": code,
        "config": config,
        "reports": reports(config.reports),  # each one validated against the schema
        "logs": logs,
        "status": status,
    }


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_out_of_scope_file_is_not_analysed_with_its_code(outcome, name) -> None:
    """No prediction, no error, the rule's code; the file goes to done/, not failed/."""
    report = outcome["reports"][name]
    assert report["status"] == "not_analysed"
    assert report["reason"]["code"] == REFUSED[name][1], report["reason"]["message"]
    assert report["prediction"] is None
    assert report["error"] is None
    assert report["timing"]["infer_ms"] is None
    assert name in files_under(outcome["config"].work / "done")


@pytest.mark.parametrize("name", sorted(ANALYSED))
def test_dwi_b1000_dicom_is_analysed_as_before(outcome, name) -> None:
    """b = 1000 in any vendor's tag, and the untouched samples: ok, no reason, a b of 1000; a DWI
    whose header says nothing of diffusion but a timing that fits one: ok, no b-value.

    A variant has the sample's pixels: it gets the untouched sample's very prediction.
    """
    report = outcome["reports"][name]
    assert report["status"] == "ok", report.get("reason") or report["error"]
    assert "reason" not in report
    expected_b = None if name.startswith("no-b-") else 1000.0
    assert report["source"]["dicom"]["diffusion_b_value"] == expected_b
    if name.startswith(("b1000-", "no-b-")):
        assert report["prediction"] == outcome["reports"]["sample-05.dcm"]["prediction"]
    if name != "sample-01.dcm":
        assert report["prediction"]["label"] == _expected_label(DWI_SAMPLE)


def test_the_b_value_is_reported_from_whichever_tag_holds_it(outcome) -> None:
    """source.dicom.diffusion_b_value from any tag (GE: its 10^9 offset removed)."""
    found = outcome["reports"]
    for vendor in VENDOR_TAGS:
        assert found[f"b0-{vendor}-tag.dcm"]["source"]["dicom"]["diffusion_b_value"] == 0.0
        assert found[f"b1000-{vendor}-tag.dcm"]["source"]["dicom"]["diffusion_b_value"] == 1000.0
    assert "GE (0043,1039)" in found["b0-ge-tag.dcm"]["reason"]["message"]
    assert found["b0-sequence-name.dcm"]["source"]["dicom"]["diffusion_b_value"] == 0.0
    assert "SequenceName (0018,0024)" in found["b0-sequence-name.dcm"]["reason"]["message"]
    assert found["b1000-sequence-name.dcm"]["source"]["dicom"]["diffusion_b_value"] == 1000.0


def test_status_file_and_status_command_count_them(outcome) -> None:
    """The status file counts not_analysed apart from processed and failed; status shows it."""
    status = outcome["status"]
    assert outcome["code"] == 0
    assert status["not_analysed"] == len(REFUSED)
    assert status["processed"] == len(ANALYSED)
    assert status["failed"] == 0
    text, _ = describe(status, outcome["config"].status_path, dt.datetime.now(dt.UTC))
    assert f"not analysed {len(REFUSED)}" in text


def test_scan_log_line_says_not_analysed_and_the_code(outcome) -> None:
    """One 'scan' event per refused file: status=not_analysed and its code, no file name."""
    refused = [e for e in outcome["logs"] if e["event"] == "scan" and e["status"] != "ok"]
    assert sorted(e["code"] for e in refused) == sorted(code for _, code in REFUSED.values())
    assert {e["status"] for e in refused} == {"not_analysed"}
    text = str(outcome["logs"])
    assert not any(name in text for name in (*REFUSED, *ANALYSED))


def test_an_empty_b_range_is_a_config_error(tmp_path) -> None:
    """limits.b_value_min above b_value_max would refuse every b: the config is refused."""
    with pytest.raises(ConfigError, match="b_value_min"):
        make_config(tmp_path, limits={"b_value_min": 1600, "b_value_max": 700})


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (Header(modality="US"), "NOT_MR"),
        (Header(manufacturer="infarctwatch", modality="MR", b_value=1000.0), "OWN_RESULT"),
        (Header(manufacturer="SIEMENS", b_value=1000.0), None),
        (Header(texts=(("ImageType", "eADC"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "ep2d_diff TRACEW-ADC"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "t1_mprage_sag"),)), "NOT_DWI"),
        (Header(texts=(("ProtocolName", "AX T2 FSE"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "3-plane localizer"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "Survey_32ch"),)), "NOT_DWI"),
        (Header(scanning_sequence="GR"), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "t2_tirm_tra_dark-fluid"),)), "NOT_DWI"),
        (Header(texts=(("SequenceName", "*tfl3d1_ns"), ("ImageType", "LOC"))), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "ep2d_diff_3scan_trace_p2"),)), None),
        (Header(texts=(("SeriesDescription", "HEADCASE ep2d_diff"),)), None),
        (Header(b_value=500.0, b_value_tag="t"), "NOT_B1000"),
        (Header(b_value=2000.0, b_value_tag="t"), "NOT_B1000"),
        (Header(texts=(("SeriesDescription", "DWI T2 b1000"),), b_value=1000.0), None),
        (Header(texts=(("ImageType", "TRACEW"),), scanning_sequence="EP", b_value=1000.0), None),
        (Header(scanning_sequence="SE\\EP"), None),
        (Header(scanning_sequence="SE", texts=(("SeriesDescription", "Ax DWI"),)), None),
        (Header(modality="MR", b_value=B_RANGE[0]), None),
        (Header(), None),
        # Other series of a stroke protocol, as the vendors name them.
        (
            Header(texts=(("SeriesDescription", "Apparent Diffusion Coefficient (mm2/s)"),)),
            "NOT_DWI",
        ),
        (
            Header(texts=(("SeriesDescription", "Exponential Apparent Diffusion Coefficient"),)),
            "NOT_DWI",
        ),
        (Header(texts=(("SeriesDescription", "dADC"),)), "NOT_DWI"),
        (Header(texts=(("ImageType", "DIFFUSION"), ("ImageType", "FA"))), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "DTI_ColFA"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "ep2d_perf_p2"),), scanning_sequence="EP"), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "Ax PWI DSC"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "TMAX"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "pCASL_3D"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "Ax SWAN"),), scanning_sequence="EP\\GR"), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "SWI_Images"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "tof_3d_multi-slab_MIP_TRA"),)), "NOT_DWI"),
        (Header(texts=(("ImageType", "PROJECTION IMAGE"),)), "NOT_DWI"),
        (
            Header(texts=(("ImageType", "DIFFUSION"), ("ImageType", "MOSAIC")), b_value=1000.0),
            "NOT_DWI",
        ),
        (Header(texts=(("SeriesDescription", "t1_mprage_sag_p2_iso"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "Ax 3D BRAVO"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "sT1W_3D_TFE"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "AX FSE PD"),)), "NOT_DWI"),
        (Header(texts=(("ProtocolName", "t2_space_dark-fluid_sag"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "Ax GRE"),)), "NOT_DWI"),
        (Header(texts=(("SeriesDescription", "HASTE DWI"),)), None),
        # DWI b1000 as the vendors name it stays in.
        (Header(texts=(("SeriesDescription", "Ax DWI ASSET"),), scanning_sequence="EP\\SE"), None),
        (
            Header(
                texts=(("SeriesDescription", "DWI_SENSE"),), scanning_sequence="SE", b_value=1000.0
            ),
            None,
        ),
        (Header(texts=(("SequenceName", "*ep_b1000t"), ("ImageType", "TRACEW"))), None),
        (Header(texts=(("SeriesDescription", "DWI b1000 FAST"),)), None),
        (Header(texts=(("SeriesDescription", "sDWI"),), scanning_sequence="SE"), None),
        (Header(texts=(("SeriesDescription", "sDWI"),), echo_ms=8.0), None),
        # The plane: axial, tilted up to 45 degrees, in; sagittal and coronal out.
        (Header(normal=(0.0, 0.0, 1.0)), None),
        (Header(normal=(0.0, -0.6, 0.8)), None),
        (Header(normal=(1.0, 0.0, 0.0)), "NOT_AXIAL"),
        (Header(normal=(0.0, 1.0, 0.1)), "NOT_AXIAL"),
        (Header(b_value=0.0, normal=(1.0, 0.0, 0.0)), "NOT_B1000"),
        # How it was acquired, when nothing says diffusion: 3D, short TE or TR, a long TI.
        (Header(acquisition="3D"), "NOT_DWI"),
        (Header(acquisition="2D"), None),
        (Header(echo_ms=4.0, repetition_ms=2300.0), "NOT_DWI"),
        (Header(echo_ms=90.0, repetition_ms=600.0), "NOT_DWI"),
        (Header(echo_ms=120.0, repetition_ms=9000.0, inversion_ms=2500.0), "NOT_DWI"),
        (Header(echo_ms=3.0, repetition_ms=1900.0, inversion_ms=900.0), "NOT_DWI"),
        (Header(echo_ms=MIN_DWI_TE_MS, repetition_ms=MIN_DWI_TR_MS), None),
        (Header(echo_ms=95.0, repetition_ms=4000.0), None),  # a T2 or a DWI: cannot tell
        (Header(echo_ms=70.0, repetition_ms=5000.0, inversion_ms=180.0), None),  # STIR fat-sat
        (Header(inversion_ms=MIN_NON_DWI_TI_MS), "NOT_DWI"),
        # A b-value or a diffusion word overrules the timing.
        (Header(acquisition="3D", texts=(("SeriesDescription", "DWI 3D RESOLVE"),)), None),
        (Header(echo_ms=30.0, b_value=1000.0, b_value_tag="t"), None),
        (Header(echo_ms=30.0, b_value=0.0, b_value_tag="t"), "NOT_B1000"),
    ],
)
def test_rules_table(header: Header, code: str | None) -> None:
    """The rules on headers the files above do not cover (a missing attribute never refuses)."""
    found = judge(header)
    assert (found.code if found else None) == code
    assert found is None or found.code in CODES
