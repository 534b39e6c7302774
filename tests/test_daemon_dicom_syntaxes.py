"""Every transfer syntax a PACS sends is decoded, through the daemon's own workers and model.

Two kinds of evidence:

* **real files** from pydicom's and pydicom-data's test suites (JPEG Extended 12-bit, JPEG
  Lossless process 14 SV1, JPEG-LS, JPEG 2000, RLE, deflated, big endian): each gets a prediction
  from one ``--once`` run of the real service (its worker processes, OpenVINO on CPU), and the
  lossless ones decode to exactly the pixels of their uncompressed twins;
* **the project's own DWI sample** transcoded into every syntax the test can encode (RLE, JPEG-LS
  lossless and near-lossless, JPEG 2000 lossless and lossy, JPEG Baseline, deflated, big endian):
  the daemon's prediction equals the uncompressed file's: the same label and probability for
  lossless syntaxes, the same label for lossy ones.

A syntax without a decoder (MPEG-2 video) is still refused from its header with
``DICOM_UNSUPPORTED_TRANSFER_SYNTAX``; bytes that every installed plugin refuses (pydicom's
``JPEG-lossy.dcm``, whose scan header is invalid) are ``TRUNCATED_IMAGE``.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
import pytest
from daemon_support import PYDICOM_DATA, PYDICOM_FILES, REPO, make_config, reports, run_once
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from daemon.errors import ScanError
from daemon.scan.read import configure_decoders
from daemon.shared.decode import PREFERRED_PLUGINS, DecodeLimits, decode

if TYPE_CHECKING:
    from pathlib import Path

SAMPLE = REPO / "samples" / "05-right-basal-ganglia.dcm"
JPEG_LOSSLESS_P14 = UID("1.2.840.10008.1.2.4.57")
MPEG2 = UID("1.2.840.10008.1.2.4.100")
LOSSLESS_TOLERANCE = 1e-6
"""Same pixels give the same tensor: the probabilities may differ only by float rounding."""

# (file, its transfer syntax): real files the daemon must classify.
REAL = {
    "JPGExtended.dcm": "1.2.840.10008.1.2.4.51",
    "JPEG-LL.dcm": "1.2.840.10008.1.2.4.70",
    "JPGLosslessP14SV1_1s_1f_8b.dcm": "1.2.840.10008.1.2.4.70",
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",
    "emri_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",
    "MR_small_jp2klossless.dcm": "1.2.840.10008.1.2.4.90",
    "MR2_J2KI.dcm": "1.2.840.10008.1.2.4.91",
    "MR_small_RLE.dcm": "1.2.840.10008.1.2.5",
    "emri_small_RLE.dcm": "1.2.840.10008.1.2.5",
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",
    "MR_small_bigendian.dcm": "1.2.840.10008.1.2.2",
    "SC_jpeg_no_color_transform.dcm": "1.2.840.10008.1.2.4.50",
    "MR_small.dcm": "1.2.840.10008.1.2.1",
}
# Lossless real files and their uncompressed twins: decoded pixels must be identical.
TWINS = [
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
    ("MR_small_RLE.dcm", "MR_small.dcm"),
    ("MR_small_bigendian.dcm", "MR_small.dcm"),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("emri_small_RLE.dcm", "emri_small.dcm"),
    ("emri_small_big_endian.dcm", "emri_small.dcm"),
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
    ("693_J2KR.dcm", "693_UNCR.dcm"),
]


def _real(name: str) -> Path:
    for folder in (PYDICOM_FILES, PYDICOM_DATA):
        if (folder / name).exists():
            return folder / name
    msg = f"{name} is in neither pydicom's nor pydicom-data's test files"
    raise FileNotFoundError(msg)


def _relabelled(name: str, syntax: UID) -> bytes:
    """A real file under another transfer syntax UID (its bytes must conform to that one too)."""
    ds = pydicom.dcmread(_real(name))
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _mpeg2() -> bytes:
    """An MR slice whose encapsulated pixel data claims MPEG-2 video: no decoder exists here."""
    ds = pydicom.dcmread(SAMPLE)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(200)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG2
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _written(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _sample_in(syntax: UID, **options: Any) -> bytes:
    """The DWI sample transcoded by pydicom (and its plugins) into ``syntax``."""
    ds = pydicom.dcmread(SAMPLE)
    if syntax == ExplicitVRBigEndian:
        pixels = ds.pixel_array
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">")).tobytes()
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
    else:
        ds.compress(syntax, **options)
    data = _written(ds)
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == syntax
    return data


def _sample_in_jpeg_baseline() -> bytes:
    """The DWI sample as 8-bit JPEG Baseline (Pillow's encoder: pydicom has none for it)."""
    ds = pydicom.dcmread(SAMPLE)
    pixels = ds.pixel_array.astype(np.float64)
    eight = np.round(pixels / pixels.max() * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(eight).save(buffer, "JPEG", quality=95)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return _written(ds)


# name -> (bytes, lossless?)
TRANSCODED: dict[str, tuple[bytes, bool]] = {}


def _transcode() -> None:
    TRANSCODED.update(
        {
            "dwi-rle.dcm": (_sample_in(RLELossless), True),
            "dwi-jpeg-ls.dcm": (_sample_in(JPEGLSLossless), True),
            "dwi-jpeg-ls-near.dcm": (_sample_in(JPEGLSNearLossless, jls_error=3), False),
            "dwi-j2k-lossless.dcm": (_sample_in(JPEG2000Lossless), True),
            "dwi-j2k-lossy.dcm": (_sample_in(JPEG2000, j2k_cr=[15]), False),
            "dwi-jpeg-baseline.dcm": (_sample_in_jpeg_baseline(), False),
            "dwi-deflated.dcm": (_sample_in(DeflatedExplicitVRLittleEndian), True),
            "dwi-big-endian.dcm": (_sample_in(ExplicitVRBigEndian), True),
        }
    )


_transcode()


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """One --once run of the real service: real files, the transcoded sample, the refusals."""
    root = tmp_path_factory.mktemp("syntaxes")
    # pydicom's files are T2 spin echo, CT...: decoded either way, refused after decoding by the
    # header rules (tests/test_daemon_scope.py). Off here, so each gets the prediction compared.
    config = make_config(root, watch={"stable_s": 0}, limits={"dicom_header_rules": False})
    config.incoming.mkdir(parents=True)
    for name in REAL:
        (config.incoming / name).write_bytes(_real(name).read_bytes())
    # Process 14 with selection value 1 is one case of process 14: the same stream, labelled .57.
    (config.incoming / "JPEG-LL-p14.dcm").write_bytes(_relabelled("JPEG-LL.dcm", JPEG_LOSSLESS_P14))
    (config.incoming / "dwi.dcm").write_bytes(SAMPLE.read_bytes())
    for name, (data, _) in TRANSCODED.items():
        (config.incoming / name).write_bytes(data)
    (config.incoming / "mpeg2.dcm").write_bytes(_mpeg2())
    (config.incoming / "JPEG-lossy.dcm").write_bytes(_real("JPEG-lossy.dcm").read_bytes())
    assert run_once(config) == 0
    return reports(config.reports)


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_files_of_every_syntax_get_a_prediction(outcome, name) -> None:
    """Each real test file decodes in a worker and gets a prediction; its syntax is as listed."""
    report = outcome[name]
    assert report["status"] == "ok", report.get("error")
    assert pydicom.dcmread(_real(name)).file_meta.TransferSyntaxUID == REAL[name]
    assert report["prediction"]["label"]


def test_jpeg_lossless_process_14_gets_the_prediction_of_its_sv1_twin(outcome) -> None:
    """JPEG Lossless process 14 (.57) decodes like the same stream labelled SV1 (.70)."""
    p14, sv1 = outcome["JPEG-LL-p14.dcm"], outcome["JPEG-LL.dcm"]
    assert p14["status"] == "ok", p14.get("error")
    assert p14["prediction"]["probabilities"] == sv1["prediction"]["probabilities"]


def test_lossless_real_files_get_the_prediction_of_their_uncompressed_twin(outcome) -> None:
    """MR_small in JPEG-LS, JPEG 2000, RLE and big endian: the probabilities of MR_small.dcm."""
    reference = outcome["MR_small.dcm"]["prediction"]["probabilities"]
    for name in [
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
    ]:
        got = outcome[name]["prediction"]["probabilities"]
        assert got.keys() == reference.keys()
        for label, probability in reference.items():
            assert got[label] == pytest.approx(probability, abs=LOSSLESS_TOLERANCE), name


@pytest.mark.parametrize("name", sorted(TRANSCODED))
def test_the_dwi_sample_in_every_syntax_gets_the_uncompressed_prediction(outcome, name) -> None:
    """Lossless: same label and probability as the uncompressed sample; lossy: same label."""
    reference = outcome["dwi.dcm"]["prediction"]
    assert reference["label"] == "Right basal ganglia"  # the sample's own label (manifest.csv)
    report = outcome[name]
    assert report["status"] == "ok", report.get("error")
    assert report["prediction"]["label"] == reference["label"]
    if TRANSCODED[name][1]:
        assert report["prediction"]["probability"] == pytest.approx(
            reference["probability"], abs=LOSSLESS_TOLERANCE
        )


def test_a_syntax_without_a_decoder_is_refused_by_name(outcome) -> None:
    """MPEG-2 video: DICOM_UNSUPPORTED_TRANSFER_SYNTAX, naming the syntax and its UID."""
    error = outcome["mpeg2.dcm"]["error"]
    assert error["code"] == "DICOM_UNSUPPORTED_TRANSFER_SYNTAX"
    assert "MPEG2" in error["message"] and str(MPEG2) in error["message"]
    assert "no pixel data decoder" in error["message"]


def test_bytes_every_decoder_refuses_are_corrupt_not_unsupported(outcome) -> None:
    """JPEG-lossy.dcm (invalid scan header, pydicom's known-bad file) is TRUNCATED_IMAGE."""
    error = outcome["JPEG-lossy.dcm"]["error"]
    assert error["code"] == "TRUNCATED_IMAGE"
    assert "corrupt or non-conformant" in error["message"] and "libjpeg" in error["message"]


class TestRealFilesDecodeExactly:
    @pytest.mark.parametrize(("compressed", "uncompressed"), TWINS)
    def test_lossless_files_decode_to_the_pixels_of_their_uncompressed_twin(
        self, compressed, uncompressed
    ) -> None:
        """Lossless syntaxes give bit-exact pixels through `daemon.shared.decode.decode`."""
        configure_decoders()
        got = decode(_real(compressed).read_bytes(), compressed)
        expected = decode(_real(uncompressed).read_bytes(), uncompressed)
        assert got.dicom is not None and expected.dicom is not None
        assert got.dicom.frame_used == expected.dicom.frame_used
        np.testing.assert_array_equal(got.pixels, expected.pixels)

    def test_jpeg_ls_near_lossless_real_file_decodes(self) -> None:
        """pydicom's 16-bit near-lossless JPEG-LS file (50x10: smaller than the daemon accepts)."""
        configure_decoders()
        image = decode(
            _real("JPEGLSNearLossless_16.dcm").read_bytes(), "", DecodeLimits(min_side=8)
        )
        assert (image.width, image.height, image.bits) == (10, 50, 16)
        assert image.pixels.max() > image.pixels.min()

    def test_the_daemon_limits_still_apply_to_compressed_files(self) -> None:
        """The same 50x10 file under the daemon's limits: BAD_DIMENSIONS, before decoding."""
        with pytest.raises(ScanError) as caught:
            decode(_real("JPEGLSNearLossless_16.dcm").read_bytes(), "")
        assert caught.value.code == "BAD_DIMENSIONS"


class TestPluginPreference:
    def test_the_preferred_rle_plugin_is_installed(self) -> None:
        """pylibjpeg-rle is offered for RLE, so the daemon's preference for it takes effect."""
        for uid, plugin in PREFERRED_PLUGINS.items():
            assert plugin in get_decoder(UID(uid)).available_plugins

    def test_a_preferred_plugin_that_refuses_falls_back_to_the_others(self, monkeypatch) -> None:
        """Pillow preferred for 12-bit JPEG Extended (it refuses them): libjpeg still decodes."""
        monkeypatch.setitem(PREFERRED_PLUGINS, "1.2.840.10008.1.2.4.51", "pillow")
        data = _real("JPGExtended.dcm").read_bytes()
        image = decode(data, "JPGExtended.dcm")
        expected = pydicom.dcmread(io.BytesIO(data)).pixel_array
        np.testing.assert_array_equal(image.pixels, expected.astype(np.float32))
