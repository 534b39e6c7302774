"""Public DICOM test suites through the real daemon: nothing in them is a DWI b1000 slice.

Every DICOM file of pydicom's own test files and of pydicom-data (CT, MR T1/T2, NM, RT dose,
ultrasound, secondary captures, reports, malformed and truncated objects, every transfer syntax),
of pynetdicom's and of nibabel's (among them real Siemens DTI mosaics at b = 0 and 1000 and a
Philips MPRAGE, gzipped) goes through one ``run --once`` of the real daemon with its defaults and
the embedded bundle. None of them is what the model was made for, so none may get an answer. A
header that says "not MR" decides alone: such a file is never decoded, so its pixels, however
odd, cannot turn it into a failure.
"""

from __future__ import annotations

import gzip
import io
from collections import Counter
from pathlib import Path
from typing import Any

import nibabel
import pydicom
import pynetdicom
import pytest
from daemon_support import (
    PYDICOM_DATA,
    PYDICOM_FILES,
    REPO,
    files_under,
    make_config,
    reports,
    run_once,
)

NIBABEL = Path(nibabel.__file__).parent
OTHERS = sorted(
    {
        *(Path(pynetdicom.__file__).parent / "tests" / "dicom_files").glob("*.dcm"),
        *NIBABEL.rglob("*.dcm"),
        *NIBABEL.rglob("*.dcm.gz"),
    }
)
"""pynetdicom's and nibabel's DICOM test files (nibabel: the [train] extra, through nilearn)."""
SUITES = sorted({*PYDICOM_FILES.rglob("*.dcm"), *PYDICOM_DATA.glob("*.dcm"), *OTHERS})


def _header_modality(path: Path) -> str | None:
    """Modality of an image object, read independently of the daemon (None: not an image)."""
    try:
        ds = pydicom.dcmread(path, force=True)
        has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
        modality = ds.get("Modality")
        # A header whose image size or frame count is unreadable is invalid (badVR.dcm).
        int(ds.get("Rows") or 0), int(ds.get("Columns") or 0), int(ds.get("NumberOfFrames") or 1)
    except Exception:  # noqa: BLE001 - unreadable here is unreadable there: no expectation
        return None
    return str(modality) if has_pixels and modality else None


def _cut_pixels(path: Path) -> bytes:
    """The file with its pixel data cut to a tenth: decoding it can only fail."""
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 10]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("suites")
    # thresholds={}: the bundle's own in_scope threshold, as in service (see `write_config`).
    config = make_config(root, watch={"stable_s": 0}, thresholds={})
    config.incoming.mkdir(parents=True)
    names: dict[str, Path] = {}
    for index, path in enumerate(SUITES):
        name = f"{index:03d}-{path.name.removesuffix('.gz')}"
        data = path.read_bytes()
        (config.incoming / name).write_bytes(
            gzip.decompress(data) if path.suffix == ".gz" else data
        )
        names[name] = path
    (config.incoming / "ct-cut.dcm").write_bytes(_cut_pixels(PYDICOM_FILES / "CT_small.dcm"))
    dwi = REPO / "samples" / "05-right-basal-ganglia.dcm"
    (config.incoming / "dwi-cut.dcm").write_bytes(_cut_pixels(dwi))
    code = run_once(config)
    return {"code": code, "config": config, "reports": reports(config.reports), "names": names}


def test_the_suites_are_all_there() -> None:
    assert PYDICOM_DATA != PYDICOM_FILES, "pydicom-data (the test extra) is installed"
    assert len(OTHERS) >= 10
    assert len(SUITES) >= 150


def test_real_siemens_dwi_mosaics_are_refused_with_their_b_value(outcome) -> None:
    """nibabel's DTI mosaics (ImageType ...\\MOSAIC, slices tiled in one 896 x 896 image) are a
    real scanner's diffusion images, but not one slice: refused by their header, b read from
    Siemens' private tag."""
    found = outcome["reports"]
    mosaics = {name: found[name] for name in outcome["names"] if "siemens_dwi_" in name}
    assert len(mosaics) == 2
    for name, report in mosaics.items():
        assert report["status"] == "not_analysed"
        assert report["reason"]["code"] == "NOT_DWI"
        assert "mosaic" in report["reason"]["message"]
        b = 1000.0 if "siemens_dwi_1000" in name else 0.0
        assert report["source"]["dicom"]["diffusion_b_value"] == b


def test_no_public_test_file_gets_an_answer(outcome) -> None:
    assert outcome["code"] == 0
    found = outcome["reports"]
    assert set(outcome["names"]) <= set(found), "every file gets its report"
    answered = [name for name in outcome["names"] if found[name]["status"] == "ok"]
    assert answered == []
    assert all(found[name].get("prediction") is None for name in outcome["names"])
    codes = Counter(
        (found[name].get("reason") or found[name].get("error"))["code"] for name in outcome["names"]
    )
    assert "INTERNAL_ERROR" not in codes, codes
    assert codes["NOT_MR"] >= 90 and codes["NOT_DWI"] >= 15, codes


def test_every_image_whose_header_says_not_mr_is_not_analysed_not_failed(outcome) -> None:
    found = outcome["reports"]
    not_mr = {
        name: modality
        for name, path in outcome["names"].items()
        if (modality := _header_modality(path)) not in (None, "MR")
    }
    assert len(not_mr) >= 90
    wrong = {
        name: (found[name]["status"], (found[name].get("reason") or found[name].get("error")))
        for name in not_mr
        if found[name]["status"] != "not_analysed" or found[name]["reason"]["code"] != "NOT_MR"
    }
    assert wrong == {}
    # Among them, objects whose pixels the daemon would refuse (RT dose 10x10 pixels, corrupt
    # NM JPEG): decided from the header, never decoded.
    assert {"RTDOSE", "NM"} <= set(not_mr.values())


def test_a_ct_with_corrupt_pixels_is_not_mr_and_a_dwi_with_them_fails(outcome) -> None:
    found, config = outcome["reports"], outcome["config"]
    assert found["ct-cut.dcm"]["status"] == "not_analysed"
    assert found["ct-cut.dcm"]["reason"]["code"] == "NOT_MR"
    assert found["dwi-cut.dcm"]["status"] == "error"
    assert found["dwi-cut.dcm"]["error"]["code"] == "TRUNCATED_IMAGE"
    done, failed = files_under(config.work / "done"), files_under(config.work / "failed")
    assert "ct-cut.dcm" in done and "dwi-cut.dcm" in failed
