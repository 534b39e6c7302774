"""Every supported input gets a prediction; every bad input an error report with a stable code.

One ``--once`` run of the real service (real OpenVINO, committed bundle, CPU) over a folder holding
all of them; each report is validated against schemas/report.schema.json.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
import pytest
from daemon_support import (
    BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    PYDICOM_DATA,
    PYDICOM_FILES,
    brain_slice,
    dicom_bytes,
    files_under,
    image_bytes,
    make_config,
    png_claiming,
    reports,
    run_once,
)
from PIL import Image
from pydicom.encaps import encapsulate
from structlog.testing import capture_logs

from daemon.errors import ImageTooLargeError
from daemon.records import Claim
from daemon.scan.read import Rejected, configure_decoders, decode_claim
from daemon.shared.bundle import DEFAULT_BUNDLE, load_bundle
from daemon.shared.decode import DecodeLimits, decode
from daemon.shared.preprocess import PreprocessSpec

if TYPE_CHECKING:
    from pathlib import Path

GOOD: dict[str, bytes] = {}
BAD: dict[str, tuple[bytes | None, str]] = {}


def _png(mode: str) -> bytes:
    return image_bytes("PNG", mode=mode)


def _palette_png() -> bytes:
    eight = (brain_slice() / brain_slice().max() * 255).astype(np.uint8)
    image = Image.fromarray(eight).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    image.info["transparency"] = 0
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _constant_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((128, 128), 7, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _nan_tiff() -> bytes:
    pixels = brain_slice(128).astype(np.float32)
    pixels[10, 10] = np.nan
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "TIFF")
    return buffer.getvalue()


def _sized_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _build_inputs() -> None:
    GOOD.update(
        {
            "grey16.png": _png("I;16"),
            "grey8.png": _png("L"),
            "rgb.png": _png("RGB"),
            "palette.png": _palette_png(),
            "slice.jpg": image_bytes("JPEG", mode="L"),
            "slice.bmp": image_bytes("BMP", mode="RGB"),
            "slice16.tif": image_bytes("TIFF", mode="I;16"),
            "MR_small.dcm": (PYDICOM_FILES / "MR_small.dcm").read_bytes(),
            "handmade.dcm": dicom_bytes(slope=2.0, intercept=-100.0),
            "inverted.dcm": dicom_bytes(photometric="MONOCHROME1"),
            "multiframe.dcm": dicom_bytes([brain_slice(128, seed=s) for s in range(5)]),
            "raw-dataset.dcm": dicom_bytes(raw=True),  # no preamble: recognised by its name
            "jpeg_ls.dcm": (PYDICOM_FILES / "MR_small_jpeg_ls_lossless.dcm").read_bytes(),
        }
    )
    good_png = _png("I;16")
    BAD.update(
        {
            "empty.png": (b"", "EMPTY_FILE"),
            "truncated.png": (good_png[: len(good_png) * 2 // 3], "TRUNCATED_IMAGE"),
            "notes.txt": (b"this is not an image at all\n" * 20, "NOT_AN_IMAGE"),
            "bomb.png": (png_claiming(100_000, 100_000), "IMAGE_TOO_LARGE"),
            "sliver.png": (_sized_png(2000, 20), "BAD_DIMENSIONS"),
            "tiny.png": (_sized_png(8, 8), "BAD_DIMENSIONS"),
            "blank.png": (_constant_png(), "BLANK_IMAGE"),
            "nan.tif": (_nan_tiff(), "UNSUPPORTED_IMAGE"),
            "gif-in-disguise.png": (_gif(), "NOT_AN_IMAGE"),
            "huge.png": (os.urandom(300_000), "FILE_TOO_LARGE"),
            "MR_truncated.dcm": (
                (PYDICOM_FILES / "MR_truncated.dcm").read_bytes(),
                "TRUNCATED_IMAGE",
            ),
            "mpeg2.dcm": (_mpeg2_dicom(), "DICOM_UNSUPPORTED_TRANSFER_SYNTAX"),
            "rtplan.dcm": ((PYDICOM_FILES / "rtplan.dcm").read_bytes(), "DICOM_NO_PIXEL_DATA"),
            "garbage.dcm": (b"\0" * 128 + b"DICM" + os.urandom(200), "DICOM_INVALID"),
            "link-to-passwd.png": (None, "NOT_A_REGULAR_FILE"),
            "a-fifo.png": (None, "NOT_A_REGULAR_FILE"),
        }
    )


def _mpeg2_dicom() -> bytes:
    """A DICOM slice whose pixel data claims MPEG-2 video, a syntax no plugin decodes."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(200)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(brain_slice().astype(np.uint8)).save(buffer, "GIF")
    return buffer.getvalue()


_build_inputs()


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> dict[str, Any]:
    """One --once run over every good and bad input; its reports and folders."""
    root = tmp_path_factory.mktemp("inputs")
    # pydicom's files are T2 spin echo, CT...: decoded either way, refused after decoding by the
    # header rules (tests/test_daemon_scope.py). Off here, so each gets the prediction compared.
    limits = {"max_file_bytes": 250_000, "dicom_header_rules": False}
    config = make_config(root, limits=limits, watch={"stable_s": 0})
    config.incoming.mkdir(parents=True)
    for name, data in GOOD.items():
        (config.incoming / name).write_bytes(data)
    for name, (data, _) in BAD.items():
        if data is not None:
            (config.incoming / name).write_bytes(data)
    (config.incoming / "link-to-passwd.png").symlink_to("/etc/passwd")
    os.mkfifo(config.incoming / "a-fifo.png")
    with capture_logs() as logs:
        code = run_once(config)
    return {"code": code, "config": config, "reports": reports(config.reports), "logs": logs}


def test_once_exits_0_with_one_report_per_input(outcome) -> None:
    """--once returns 0 after every input got exactly one report (bad ones included)."""
    assert outcome["code"] == 0
    assert sorted(outcome["reports"]) == sorted([*GOOD, *BAD])


@pytest.mark.parametrize("name", sorted(GOOD))
def test_supported_input_gets_a_prediction(outcome, name) -> None:
    """PNG/JPEG/BMP/TIFF in grey, RGB and palette, and DICOM variants are classified."""
    report = outcome["reports"][name]
    assert report["status"] == "ok", report["error"]
    prediction = report["prediction"]
    assert prediction["label"] in prediction["probabilities"]
    assert abs(sum(prediction["probabilities"].values()) - 1.0) < 1e-3
    assert prediction["top_k"][0]["label"] == prediction["label"]
    assert len(prediction["top_k"]) == 3
    assert report["source"]["sha256"] is not None


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_gets_an_error_report_with_a_stable_code(outcome, name) -> None:
    """Each kind of bad input maps to its documented error code and lands in failed/."""
    report = outcome["reports"][name]
    assert report["status"] == "error"
    assert report["error"]["code"] == BAD[name][1], report["error"]["message"]
    assert report["prediction"] is None
    assert name in files_under(outcome["config"].work / "failed")


def test_image_too_large_names_the_configured_limit(outcome) -> None:
    """A bomb that Pillow refuses from its header is reported against limits.max_pixels."""
    message = outcome["reports"]["bomb.png"]["error"]["message"]
    limit = f"{outcome['config'].limits.max_pixels:,}"
    assert message == (
        f"image declares 10,000,000,000 pixels, more than the limit of {limit} (limits.max_pixels)"
    )


def test_inputs_leave_the_incoming_folder(outcome) -> None:
    """Good inputs are in done/, bad ones in failed/, nothing in incoming or processing."""
    config = outcome["config"]
    assert files_under(config.work / "done") == sorted(GOOD)
    assert files_under(config.incoming) == [".infarctwatch/lock"]


def test_links_are_moved_as_links_and_never_followed(outcome) -> None:
    """The symlink went to failed/ as a link: /etc/passwd was neither read nor copied."""
    moved = outcome["config"].work / "failed" / "link-to-passwd.png"
    assert moved.is_symlink()
    report = outcome["reports"]["link-to-passwd.png"]
    assert report["source"]["sha256"] is None
    assert "symbolic link" in report["error"]["message"]


def test_dicom_report_carries_uids_and_frame_never_patient_data(outcome) -> None:
    """UIDs, modality, b-value and the frame used are reported; name, ID, birth date never."""
    report = outcome["reports"]["multiframe.dcm"]
    dicom = report["source"]["dicom"]
    assert dicom["frames"] == 5 and dicom["frame_used"] == 2
    assert dicom["modality"] == "MR" and dicom["diffusion_b_value"] == 1000
    assert (
        dicom["sop_instance_uid"] and dicom["study_instance_uid"] and dicom["series_instance_uid"]
    )
    for document in outcome["reports"].values():
        text = str(document)
        for secret in (PATIENT_NAME, PATIENT_ID, BIRTH_DATE, "CompressedSamples"):
            assert secret not in text


def test_logs_identify_scans_by_id_never_by_file_name(outcome) -> None:
    """One 'scan' event per input, keyed by the short id; no file name appears in any event."""
    scans = [e for e in outcome["logs"] if e["event"] == "scan"]
    assert len(scans) == len(GOOD) + len(BAD)
    ids = {r["id"] for r in outcome["reports"].values()}
    assert {e["scan"] for e in scans} == ids
    text = str(outcome["logs"])
    for name in (*GOOD, *BAD):
        assert name not in text
    assert PATIENT_NAME not in text


def test_report_says_what_made_it(outcome) -> None:
    """Model name, version, bundle sha256, precision used, device and the disclaimer."""
    report = outcome["reports"]["grey16.png"]
    assert report["model"]["name"] == load_bundle(DEFAULT_BUNDLE).name
    assert report["model"]["precision"] in ("bf16", "f32", "f16")
    assert report["device"] == {"requested": "CPU", "used": "CPU"}
    assert "Research use only" in report["disclaimer"]
    assert report["timing"]["decode_ms"] > 0 and report["timing"]["infer_ms"] > 0


class TestDecodeStage:
    def _claim(self, path: Path) -> Claim:
        return Claim("c1", path, path.name, dt.datetime.now(dt.UTC), 0.0)

    def test_a_fifo_is_never_opened_for_reading(self, tmp_path) -> None:
        """A fifo with no writer would block a plain open() forever; it is refused at once."""
        fifo = tmp_path / "pipe.png"
        os.mkfifo(fifo)
        result: list[object] = []
        worker = threading.Thread(
            target=lambda: result.append(
                decode_claim(self._claim(fifo), PreprocessSpec(), DecodeLimits(), 1000)
            )
        )
        worker.start()
        worker.join(10)
        assert not worker.is_alive()
        assert isinstance(result[0], Rejected)
        assert result[0].failure.code == "NOT_A_REGULAR_FILE"
        assert "fifo" in result[0].failure.message

    def test_a_file_over_the_limit_is_not_read(self, tmp_path) -> None:
        """FILE_TOO_LARGE comes from the size alone: no hash, so the bytes were never read."""
        big = tmp_path / "big.png"
        big.write_bytes(b"\0" * 5000)
        result = decode_claim(self._claim(big), PreprocessSpec(), DecodeLimits(), 1000)
        assert isinstance(result, Rejected)
        assert result.failure.code == "FILE_TOO_LARGE"
        assert result.source.sha256 is None and result.source.bytes == 5000


@pytest.mark.parametrize(
    ("hint", "limit", "expected"),
    [
        (200_000, 10**9, 200_000),  # the size fstat gave: the whole file
        (10, 10**9, 200_000),  # it grew after fstat: read on to the end
        (200_000, 150_001, 150_001),  # never more than the limit
        (10, 70_000, 70_000),
    ],
)
def test_reading_a_claimed_file_stops_at_its_end_or_at_the_limit(
    tmp_path: Path, hint: int, limit: int, expected: int
) -> None:
    """`_read_up_to` reads to the end whatever size it was told, and never past the limit."""
    from daemon.scan.read import _read_up_to  # noqa: PLC0415 - the reader itself

    data = os.urandom(200_000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _read_up_to(fd, hint, limit) == data[:expected]
    finally:
        os.close(fd)


def test_real_mr_series_from_pydicom_data_are_classified(tmp_path: Path) -> None:
    """Larger real MR files (uncompressed, 1024x1024, RLE) from pydicom-data get predictions."""
    names = ["MR2_UNCI.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"]
    # pydicom's files are T2 spin echo, CT...: decoded either way, refused after decoding by the
    # header rules (tests/test_daemon_scope.py). Off here, so each gets the prediction compared.
    config = make_config(tmp_path, watch={"stable_s": 0}, limits={"dicom_header_rules": False})
    config.incoming.mkdir(parents=True)
    for name in names:
        shutil.copy(PYDICOM_DATA / name, config.incoming / name)
    shutil.copy(PYDICOM_FILES / "MR_small_RLE.dcm", config.incoming / "MR_small_RLE.dcm")
    assert run_once(config) == 0
    found = reports(config.reports)
    assert {n: r["status"] for n, r in found.items()} == dict.fromkeys(
        [*names, "MR_small_RLE.dcm"], "ok"
    )


class TestImageTooLarge:
    @pytest.mark.parametrize(
        ("width", "height", "declared"),
        [
            (5_000, 5_000, "5000x5000 pixels"),  # the daemon's own check, from the header
            (10_000, 10_000, "100,000,000 pixels"),  # Pillow's warning threshold (an error here)
            (100_000, 100_000, "10,000,000,000 pixels"),  # Pillow's hard limit
        ],
    )
    def test_the_message_names_limits_max_pixels(self, width, height, declared) -> None:
        """Whichever check fires first, the message gives the size and the configured limit."""
        configure_decoders()
        with pytest.raises(ImageTooLargeError) as caught:
            decode(png_claiming(width, height), "big.png", DecodeLimits(max_pixels=20_000_000))
        message = caught.value.message
        assert declared in message
        assert message.endswith("more than the limit of 20,000,000 (limits.max_pixels)")
        assert "178956970" not in message and "89478485" not in message  # Pillow's own limits
