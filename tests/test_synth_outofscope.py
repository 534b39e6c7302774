"""synth --out-of-scope: every kind that is not a DWI b1000 brain slice, with the DICOM header of
its kind, a physically ordered contrast, and the refusal a reader should give."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
import pytest

from daemon.shared.decode import decode
from trainer.synth import anatomy as anatomy_module
from trainer.synth import body, contrasts, generate, render
from trainer.synth.cli import main
from trainer.synth.geometry import random_geometry
from trainer.synth.manifest import read_manifest
from trainer.synth.outofscope import KINDS, OutOfScopeRow
from trainer.synth.profiles import TRAIN

if TYPE_CHECKING:
    from pathlib import Path

    from trainer.synth.anatomy import Anatomy


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One anatomy cache for the whole session (shared with the other synth tests)."""
    return tmp_path_factory.getbasetemp() / "synth-anatomy-cache"


@pytest.fixture(scope="session")
def anatomy(synth_cache: Path) -> Anatomy:
    loaded, _ = anatomy_module.load_anatomy(synth_cache)
    return loaded


@pytest.fixture(scope="session")
def dicoms(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    """Four DICOM files of every out-of-scope kind."""
    out = tmp_path_factory.mktemp("oos") / "dicom"
    generate(out, out_of_scope=4, formats="dicom", seed=2, workers=2, cache_dir=synth_cache)
    return out


def _b_values(ds: Any) -> dict[str, float]:
    """Every b-value the header carries, by where it is (standard or a vendor's private tag)."""
    found: dict[str, float] = {}
    if "DiffusionBValue" in ds:
        found["standard"] = float(ds.DiffusionBValue)
    if (0x0019, 0x100C) in ds:
        found["siemens"] = float(ds[0x0019, 0x100C].value)
    if (0x0043, 0x1039) in ds:
        found["ge"] = float(int(ds[0x0043, 0x1039].value[0]) % 1_000_000_000)
    if (0x2001, 0x1003) in ds:
        found["philips"] = float(ds[0x2001, 0x1003].value)
    return found


def _check_sequence(kind: str, ds: Any) -> None:
    """T1: spin echo, short TR, no inversion, or a 3-D inversion-prepared gradient echo; T2: long
    TE; FLAIR: inversion recovery."""
    if kind == "t1" and "InversionTime" in ds:
        assert list(ds.ScanningSequence) == ["GR", "IR"]
        assert ds.MRAcquisitionType == "3D"
        assert "MPRAGE" in ds.SeriesDescription
        assert 800 < float(ds.InversionTime) < 1200
    elif kind == "t1":
        assert ds.ScanningSequence == "SE"
        assert "T1 SE" in ds.SeriesDescription
        assert "InversionTime" not in ds
        assert float(ds.RepetitionTime) < 1000
    elif kind == "t2":
        assert "T2" in ds.SeriesDescription
        assert float(ds.EchoTime) >= 80
    elif kind == "flair":
        assert "IR" in list(ds.ScanningSequence)
        assert "FLAIR" in ds.SeriesDescription
        assert 2000 < float(ds.InversionTime) < 3000


class TestDicomHeaders:
    def test_each_kind_has_the_header_of_its_kind(self, dicoms: Path) -> None:
        """CT is Modality CT in HU; T1/T2/FLAIR name their sequence (FLAIR with an inversion
        time), carry no b-value and no DIFFUSION image type; ADC says ADC; b0 has b = 0 in the
        standard or a vendor's private tag; pictures are secondary captures (OT)."""
        rows = read_manifest(dicoms / "manifest.csv")
        assert {row["kind"] for row in rows} == set(KINDS)
        vendors: set[str] = set()
        for row in rows:
            ds = pydicom.dcmread(dicoms / row["file"])
            kind = row["kind"]
            assert ds.Modality == row["modality"]
            assert str(ds.PatientName).startswith("SYNTHETIC^")
            image_type = [str(v) for v in ds.ImageType]
            if kind.startswith("ct"):
                assert ds.Modality == "CT"
                assert ds.SOPClassUID == pydicom.uid.CTImageStorage
                assert float(ds.RescaleIntercept) == -1024
                assert row["expected_code"] == "NOT_MR"
            elif KINDS[kind] == "picture":
                assert ds.Modality == "OT"
                assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
                assert row["expected_code"] == "NOT_MR"
            else:
                assert ds.Modality == "MR"
                assert ds.SOPClassUID == pydicom.uid.MRImageStorage
            if kind in ("t1", "t2", "flair"):
                assert "DIFFUSION" not in image_type
                assert not _b_values(ds)
                assert row["expected_code"] == "NOT_DWI"
                assert float(ds.RepetitionTime) > 0
                assert float(ds.EchoTime) > 0
            _check_sequence(kind, ds)
            if kind == "adc":
                assert "ADC" in image_type
                assert row["expected_code"] == "NOT_DWI"
            elif kind == "b0":
                values = _b_values(ds)
                assert values
                assert set(values.values()) == {0.0}
                assert row["expected_code"] == "NOT_B1000"
                vendors |= set(values)
            pixels = decode((dicoms / row["file"]).read_bytes(), row["file"]).pixels
            assert pixels.ndim == 2
            assert pixels.shape[0] >= 64
        assert len(vendors) >= 2  # the standard tag and at least one vendor's

    def test_ct_pixels_are_hounsfield_units(self, dicoms: Path) -> None:
        """After the modality LUT, CT air is about -1000 HU and bone above 700 HU."""
        rows = [r for r in read_manifest(dicoms / "manifest.csv") if r["kind"].startswith("ct")]
        for row in rows:
            hu = decode((dicoms / row["file"]).read_bytes(), row["file"]).pixels
            assert hu.min() < -900
            assert hu.max() > 700


class TestRasterAndLayout:
    def test_png_and_jpeg_kinds_expect_the_image_check(
        self, tmp_path: Path, synth_cache: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """From the command line: one folder per kind, PNG and JPEG files, all expected to be
        refused from the pixels; synth.json says it is an out-of-scope dataset."""
        out = tmp_path / "oos"
        argv = [
            str(out),
            "--out-of-scope",
            "2",
            "--formats",
            "png,jpeg",
            "--cache-dir",
            str(synth_cache),
            "--workers",
            "2",
            "--no-progress",
        ]
        assert main(argv) == 0
        assert f"wrote {2 * len(KINDS)} out-of-scope image(s)" in capsys.readouterr().out
        rows = read_manifest(out / "manifest.csv")
        assert list(rows[0]) == OutOfScopeRow.columns()
        assert {p.name for p in out.iterdir() if p.is_dir()} == set(KINDS)
        for row in rows:
            assert row["file"].split("/")[0] == row["kind"]
            assert row["format"] in ("png", "jpeg")
            assert row["expected_code"] == "OUT_OF_SCOPE_IMAGE"
            decoded = decode((out / row["file"]).read_bytes(), row["file"])
            assert decoded.format == row["format"]
        for kind in KINDS:
            assert {r["format"] for r in rows if r["kind"] == kind} == {"png", "jpeg"}
        trunk = [r for r in rows if r["kind"] == "ct_body"]
        assert {(r["slice_mm"], r["snr"]) for r in trunk} == {("0.0", "0.0")}  # not a head's
        data = json.loads((out / "synth.json").read_text(encoding="utf-8"))
        assert data["dataset"] == "out_of_scope"
        assert data["kinds"] == dict.fromkeys(sorted(KINDS), 2)


@pytest.fixture(scope="module")
def maps(anatomy: Anatomy) -> dict[str, np.ndarray]:
    """Tissue maps of a mid-ventricular slice of one head, with the head around the brain."""
    rng = np.random.default_rng(0)
    geometry = random_geometry(rng, TRAIN)
    scan = render.random_scan(rng, 160, TRAIN)
    z = float(geometry.to_scanner(np.array([0.0, -18.0, 15.0]))[2])
    gm, wm, csf = render.slab_fractions(anatomy, geometry, scan, z)
    return contrasts.head_maps(gm, wm, csf, scan.pixel_mm, rng)


class TestContrast:
    @staticmethod
    def _mean(image: np.ndarray, mask: np.ndarray) -> float:
        assert mask.sum() > 20
        return float(image[mask].mean())

    def test_mr_contrasts_order_the_tissues(self, maps: dict[str, np.ndarray]) -> None:
        """CSF is dark on T1 and FLAIR and bright on T2; white matter is brighter than grey on
        T1, darker on T2 and FLAIR; scalp fat is bright on T1."""
        pure = {name: maps[name] > 0.95 for name in ("wm", "gm", "csf", "fat")}
        rng = np.random.default_rng(1)
        means = {}
        for kind in contrasts.MR_KINDS:
            image = contrasts.mr_image(maps, contrasts.random_sequence(rng, kind))
            means[kind] = {name: self._mean(image, mask) for name, mask in pure.items()}
        t1, t2, flair = means["t1"], means["t2"], means["flair"]
        assert t1["csf"] < t1["gm"] < t1["wm"] < t1["fat"]
        assert t2["csf"] > t2["gm"] > t2["wm"]
        assert flair["csf"] < flair["wm"] < flair["gm"]
        assert flair["csf"] < 0.3 * flair["wm"]

    def test_gradient_echo_t1_is_the_template_look(self, maps: dict[str, np.ndarray]) -> None:
        """The MPRAGE-like T1: white matter far above grey, CSF near black."""
        rng = np.random.default_rng(3)
        sequence = contrasts.random_sequence(rng, "t1", gradient_echo_share=1.0)
        assert sequence.ti > 0
        image = contrasts.mr_image(maps, sequence)
        pure = {name: maps[name] > 0.95 for name in ("wm", "gm", "csf")}
        mean = {name: self._mean(image, mask) for name, mask in pure.items()}
        assert mean["wm"] > 1.3 * mean["gm"]  # spin echo: about 1.2
        assert mean["csf"] < 0.2 * mean["gm"]

    def test_skull_stripped_maps_hold_the_brain_alone(
        self, anatomy: Anatomy, maps: dict[str, np.ndarray]
    ) -> None:
        """head=False: brain tissue as with the head, nothing of skull, fat or skin."""
        rng = np.random.default_rng(0)
        geometry = random_geometry(rng, TRAIN)
        scan = render.random_scan(rng, 160, TRAIN)
        z = float(geometry.to_scanner(np.array([0.0, -18.0, 15.0]))[2])
        gm, wm, csf = render.slab_fractions(anatomy, geometry, scan, z)
        stripped = contrasts.head_maps(gm, wm, csf, scan.pixel_mm, rng, head=False)
        for name in ("bone", "diploe", "fat", "skin"):
            assert maps[name].sum() > 0
            assert stripped[name].sum() == 0
        np.testing.assert_array_equal(stripped["wm"], maps["wm"])

    def test_trunk_ct_is_a_body_not_a_head(self) -> None:
        """The trunk: a wide body of fat, muscle and soft tissue around gas and a vertebra."""
        hu, pixel = body.trunk_ct(np.random.default_rng(4), 256)
        assert hu.shape == (256, 256)
        assert 320 / 256 <= pixel <= 480 / 256
        inside = hu > -500
        rows, cols = np.nonzero(inside)
        assert np.ptp(cols) > 1.2 * np.ptp(rows)  # wider than deep, unlike a head
        assert (hu[inside] < -50).mean() > 0.05  # fat
        assert (hu > 700).sum() > 50  # cortical bone of the vertebra
        assert ((hu > 20) & (hu < 80)).mean() > 0.2

    def test_ct_bone_is_bright_and_brain_ordered(self, maps: dict[str, np.ndarray]) -> None:
        """CT: bone far above brain; grey > white > CSF; fat negative; air -1000."""
        hu = contrasts.ct_image(maps, np.random.default_rng(2))
        bone = self._mean(hu, maps["bone"] > 0.95)
        grey, white = self._mean(hu, maps["gm"] > 0.95), self._mean(hu, maps["wm"] > 0.95)
        fluid = self._mean(hu, maps["csf"] > 0.95)
        assert bone > 700
        assert grey > white > fluid
        assert self._mean(hu, maps["fat"] > 0.95) < -50
        assert hu.min() == pytest.approx(-1000.0)
