"""infarctwatch synth --series: DWI studies (geometry, UIDs, b-values, ADC, T1/FLAIR), enhanced
multi-frame files, the truth file against the lesion masks, determinism and the command line."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from daemon.shared.dicom_scope import NOT_B1000, NOT_DWI, b_value_of, judge, read_header
from trainer.synth import SeriesSpec, generate
from trainer.synth.cli import main
from trainer.synth.manifest import read_manifest
from trainer.synth.series import window_positions

if TYPE_CHECKING:
    from pathlib import Path

MATRIX = 64
CLASSES = ("No acute infarct", "Left frontal lobe", "Right frontal and parietal lobes")
SEED = 11


def _generate(
    out: Path, cache: Path, spec: SeriesSpec, *, workers: int = 1, seed: int = SEED
) -> None:
    generate(
        out,
        cases_per_class=1,
        classes=CLASSES,
        negative_share="balanced",
        seed=seed,
        workers=workers,
        matrix=MATRIX,
        cache_dir=cache,
        series=spec,
    )


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One anatomy cache for the whole session (shared with the other synth tests)."""
    return tmp_path_factory.getbasetemp() / "synth-anatomy-cache"


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    """Three studies covering the brain (a normal, one lesion, two lesions), with T1 or FLAIR."""
    out = tmp_path_factory.mktemp("series") / "data"
    _generate(out, synth_cache, SeriesSpec(structural="mixed"))
    return out


@pytest.fixture(scope="session")
def small_classic(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    """Five positions around the lesion, classic files, a FLAIR series."""
    out = tmp_path_factory.mktemp("series") / "classic"
    _generate(out, synth_cache, SeriesSpec(slices=5, structural="flair"))
    return out


@pytest.fixture(scope="session")
def small_enhanced(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    """The same studies as `small_classic`, as one Enhanced MR file per series."""
    out = tmp_path_factory.mktemp("series") / "enhanced"
    _generate(out, synth_cache, SeriesSpec(slices=5, structural="flair", multiframe=True))
    return out


def _truth(root: Path) -> list[dict[str, Any]]:
    studies: list[dict[str, Any]] = json.loads((root / "series.json").read_text("utf-8"))["studies"]
    return studies


def _series(study: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(s for s in study["series"] if s["kind"] == kind)


def _read_folder(root: Path, folder: str) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted((root / folder).glob("*.dcm"))]


def _normal(ds: pydicom.Dataset) -> np.ndarray[Any, np.dtype[np.float64]]:
    orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
    return np.asarray(np.cross(orientation[:3], orientation[3:]), dtype=np.float64)


def _along_normal(ds: pydicom.Dataset) -> float:
    return float(np.dot([float(v) for v in ds.ImagePositionPatient], _normal(ds)))


def _mask(root: Path, name: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.asarray(Image.open(root / name))


class TestGeometry:
    def test_positions_lie_along_the_normal_at_the_stated_spacing(self, studies: Path) -> None:
        """Per series: one orientation, slice positions along its normal one SpacingBetweenSlices
        apart (3-7 mm slabs plus a gap), the same in-plane origin and pixel spacing, b0 and
        b1000 at every position, and as many positions as the truth file says."""
        for study in _truth(studies):
            for series in study["series"]:
                images = _read_folder(studies, series["folder"])
                assert len(images) == series["images"]
                spacing = float(images[0].SpacingBetweenSlices)
                thickness = float(images[0].SliceThickness)
                assert 3.0 <= thickness <= 7.0
                assert thickness <= spacing <= 1.3 * thickness + 1e-6
                assert spacing == pytest.approx(series["spacing_mm"])
                for ds in images:
                    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
                    assert (
                        list(ds.ImagePositionPatient)[:2]
                        == list(images[0].ImagePositionPatient)[:2]
                    )
                    assert list(ds.PixelSpacing) == list(images[0].PixelSpacing)
                    assert float(ds.SliceLocation) == pytest.approx(_along_normal(ds), abs=1e-3)
                    assert (ds.Rows, ds.Columns) == (MATRIX, MATRIX)
                by_b: dict[float | None, list[float]] = defaultdict(list)
                for ds in images:
                    by_b[b_value_of(ds)[0]].append(_along_normal(ds))
                for positions in by_b.values():
                    steps = np.diff(sorted(positions))
                    assert np.allclose(steps, spacing, atol=2e-3), steps
                    assert sorted(positions) == pytest.approx(series["positions_mm"], abs=1e-3)
                if series["kind"] == "dwi":
                    assert sorted(k for k in by_b if k is not None) == [0, series["b_values"][1]]
                    assert len(by_b[0]) == series["slices"] == len(images) // 2

    def test_the_series_covers_the_brain(self, studies: Path) -> None:
        """A whole-brain series: 15-50 positions spanning at least 120 mm, its first and last
        slices showing less than half the brain area of the largest."""
        for study in _truth(studies):
            dwi = _series(study, "dwi")
            assert 15 <= dwi["slices"] <= 50
            positions = dwi["positions_mm"]
            assert positions[-1] - positions[0] >= 120
            rows = [
                r
                for r in read_manifest(studies / "manifest.csv")
                if r["case_id"] == study["case_id"]
            ]
            rows.sort(key=lambda r: int(r["slice_index"]))
            brain = [  # the ADC map is 0 outside the head's signal
                int((pydicom.dcmread(studies / r["adc_file"]).pixel_array > 0).sum()) for r in rows
            ]
            assert max(brain[0], brain[-1]) < 0.5 * max(brain)

    def test_instance_numbers_run_from_one_without_gaps(self, studies: Path) -> None:
        """InstanceNumbers of a series are 1..n, each once, ImagesInAcquisition is n."""
        for study in _truth(studies):
            for series in study["series"]:
                images = _read_folder(studies, series["folder"])
                numbers = sorted(int(ds.InstanceNumber) for ds in images)
                assert numbers == list(range(1, len(images) + 1))
                assert {int(ds.ImagesInAcquisition) for ds in images} == {len(images)}


class TestIdentity:
    def test_uids_are_shared_and_unique_as_in_a_real_study(self, studies: Path) -> None:
        """One StudyInstanceUID and FrameOfReferenceUID per study, one SeriesInstanceUID per
        series (different between series and studies), a SOPInstanceUID per image, unique over
        the dataset and equal to the file meta's; the truth file names the same UIDs."""
        seen_sop: set[str] = set()
        seen_series: set[str] = set()
        seen_study: set[str] = set()
        for study in _truth(studies):
            assert study["study_instance_uid"] not in seen_study
            seen_study.add(study["study_instance_uid"])
            for series in study["series"]:
                images = _read_folder(studies, series["folder"])
                assert {ds.StudyInstanceUID for ds in images} == {study["study_instance_uid"]}
                assert {ds.FrameOfReferenceUID for ds in images} == {
                    study["frame_of_reference_uid"]
                }
                assert {ds.SeriesInstanceUID for ds in images} == {series["series_instance_uid"]}
                assert series["series_instance_uid"] not in seen_series
                seen_series.add(series["series_instance_uid"])
                assert {int(ds.SeriesNumber) for ds in images} == {series["series_number"]}
                for ds in images:
                    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
                    assert ds.SOPInstanceUID not in seen_sop
                    seen_sop.add(ds.SOPInstanceUID)
                    assert str(ds.SOPInstanceUID).startswith("2.25.")

    def test_no_patient_identifiers(self, studies: Path) -> None:
        """Synthetic names only: SYNTHETIC^<case>, no birth date, identity removed."""
        for study in _truth(studies):
            for series in study["series"]:
                for ds in _read_folder(studies, series["folder"]):
                    assert str(ds.PatientName) == study["patient_name"]
                    assert str(ds.PatientName).startswith("SYNTHETIC^C")
                    assert ds.PatientBirthDate == ""
                    assert ds.PatientIdentityRemoved == "YES"


class TestContents:
    def test_b0_b1000_adc_and_structural_series_are_told_apart_by_the_header_rules(
        self, studies: Path
    ) -> None:
        """The daemon's header rules (`daemon.shared.dicom_scope`) accept the b1000 images,
        refuse the b0 images as NOT_B1000, the ADC and T1/FLAIR series as NOT_DWI; every study
        has a DWI and an ADC series and one T1 or FLAIR series."""
        kinds_seen = set()
        for study in _truth(studies):
            kinds = [s["kind"] for s in study["series"]]
            assert kinds[:2] == ["dwi", "adc"]
            assert len(kinds) == 3
            assert kinds[2] in ("t1", "flair")
            kinds_seen.add(kinds[2])
            for series in study["series"]:
                for ds in _read_folder(studies, series["folder"]):
                    verdict = judge(read_header(ds))
                    b, _ = b_value_of(ds)
                    if series["kind"] != "dwi":
                        assert verdict is not None
                        assert verdict.code == NOT_DWI
                    elif b == 0:
                        assert verdict is not None
                        assert verdict.code == NOT_B1000
                        assert "DIFFUSION" in list(ds.ImageType)
                    else:
                        assert verdict is None, verdict
                        assert b == series["b_values"][1]
                        assert list(ds.ImageType)[-1] == "TRACEW"
        assert kinds_seen == {"t1", "flair"}

    def test_b_value_tags_are_where_the_truth_says(self, studies: Path) -> None:
        """The b-value is in DiffusionBValue and/or the vendor private tag the truth names."""
        tags = {
            "standard": 0x00189087,
            "siemens": 0x0019100C,
            "ge": 0x00431039,
            "ge1e9": 0x00431039,
            "philips": 0x20011003,
        }
        for study in _truth(studies):
            dwi = _series(study, "dwi")
            for ds in _read_folder(studies, dwi["folder"]):
                present = {name for name, tag in tags.items() if tag in ds}
                for name in dwi["b_value_tags"]:
                    assert name in present

    def test_adc_series_has_the_dwi_geometry_and_low_adc_in_the_lesion(self, studies: Path) -> None:
        """The ADC series repeats the DWI positions, names its DWI series, and its values are
        lower inside the lesion mask than in the brain around it; the b1000 image is brighter
        there."""
        for study in _truth(studies):
            dwi, adc = _series(study, "dwi"), _series(study, "adc")
            assert adc["positions_mm"] == dwi["positions_mm"]
            assert adc["dwi_series_instance_uid"] == dwi["series_instance_uid"]
            assert [s["slice"] for s in adc["lesion_slices"]] == [
                s["slice"] for s in dwi["lesion_slices"]
            ]
            if not dwi["lesion_slices"]:
                continue
            rows = {
                int(r["slice_index"]): r
                for r in read_manifest(studies / "manifest.csv")
                if r["case_id"] == study["case_id"]
            }
            best = max(dwi["lesion_slices"], key=lambda s: s["area_mm2"])
            row = rows[best["slice"]]
            mask = _mask(studies, row["mask_file"]) > 0
            adc_pixels = pydicom.dcmread(studies / row["adc_file"]).pixel_array.astype(float)
            b1000 = pydicom.dcmread(studies / row["file"]).pixel_array.astype(float)
            brain = (adc_pixels > 0) & (adc_pixels < 1500) & ~mask
            assert adc_pixels[mask].mean() < 0.85 * adc_pixels[brain].mean()
            assert b1000[mask].mean() > 1.15 * b1000[brain].mean()


class TestTruth:
    def test_lesions_only_on_the_slices_they_span(self, studies: Path) -> None:
        """Masks are non-empty on exactly the truth's lesion slices; each lesion's slices lie
        within its extent in z (plus half a slab); normal studies have no lesion anywhere; the
        label and regions are the case's."""
        rows = read_manifest(studies / "manifest.csv")
        for study in _truth(studies):
            dwi = _series(study, "dwi")
            mine = sorted(
                (r for r in rows if r["case_id"] == study["case_id"]),
                key=lambda r: int(r["slice_index"]),
            )
            assert len(mine) == dwi["slices"]
            shown = [int(r["slice_index"]) for r in mine if _mask(studies, r["mask_file"]).any()]
            assert shown == [s["slice"] for s in dwi["lesion_slices"]]
            normal = study["label"] == "No acute infarct"
            assert (not shown) == normal
            assert (not dwi["lesions"]) == normal
            half = dwi["thickness_mm"] / 2
            for lesion in dwi["lesions"]:
                assert lesion["slices"], lesion
                low, high = lesion["z_range_mm"]
                for number in lesion["slices"]:
                    z = dwi["positions_mm"][number - 1]
                    assert low - half - 1 <= z <= high + half + 1
                    mask = _mask(studies, mine[number - 1]["mask_file"])
                    assert (mask == lesion["number"]).any()
            for row in mine:
                assert row["label"] == study["label"]
                labels = set(np.unique(_mask(studies, row["mask_file"])).tolist())
                assert labels <= set(range(len(dwi["lesions"]) + 1))

    def test_volumes_agree_with_the_masks(self, studies: Path) -> None:
        """mask_volume_ml is the masks' pixel count x pixel area x slice spacing; the patient
        volume is close to it (whole slabs, gaps and partial volume) and to the MNI volume
        scaled by the head's size."""
        rows = read_manifest(studies / "manifest.csv")
        for study in _truth(studies):
            dwi = _series(study, "dwi")
            mine = [r for r in rows if r["case_id"] == study["case_id"]]
            pixel = float(mine[0]["display_pixel_mm"])
            size = float(mine[0]["head_scale"])
            for lesion in dwi["lesions"]:
                pixels = sum(
                    int((_mask(studies, r["mask_file"]) == lesion["number"]).sum()) for r in mine
                )
                assert lesion["mask_volume_ml"] == pytest.approx(
                    pixels * pixel**2 * dwi["spacing_mm"] / 1000, rel=0.01
                )
                assert 0.4 < lesion["mask_volume_ml"] / lesion["volume_ml"] < 1.6
                assert 0.7 < lesion["volume_ml"] / (lesion["mni_volume_ml"] * size**3) < 1.3
            assert dwi["lesion_volume_ml"] == pytest.approx(
                sum(lesion["volume_ml"] for lesion in dwi["lesions"]), abs=2e-3
            )

    def test_two_lesion_case_names_both_regions(self, studies: Path) -> None:
        """The two-lesion class gives two lesions with their regions and masks 1 and 2."""
        study = next(s for s in _truth(studies) if s["label"] == CLASSES[2])
        lesions = _series(study, "dwi")["lesions"]
        assert [lesion["region"] for lesion in lesions] == [
            "Right frontal lobe",
            "Right parietal lobe",
        ]
        assert all(lesion["slices"] for lesion in lesions)

    def test_manifest_names_every_image_and_mask(self, studies: Path) -> None:
        """One manifest row per position: its b1000, b0, ADC and mask files exist, the mask has
        the image's size, the instance numbers are those in the files."""
        for row in read_manifest(studies / "manifest.csv"):
            b1000 = pydicom.dcmread(studies / row["file"])
            b0 = pydicom.dcmread(studies / row["b0_file"])
            adc = pydicom.dcmread(studies / row["adc_file"])
            assert int(b1000.InstanceNumber) == int(row["instance_number"])
            assert int(b0.InstanceNumber) == int(row["b0_instance_number"])
            assert int(adc.InstanceNumber) == int(row["adc_instance_number"])
            assert b_value_of(b0)[0] == 0
            assert _mask(studies, row["mask_file"]).shape == b1000.pixel_array.shape
            assert _along_normal(b1000) == pytest.approx(_along_normal(adc), abs=1e-3)


class TestMultiframe:
    def test_enhanced_files_carry_every_frame_with_position_and_b_value(
        self, small_classic: Path, small_enhanced: Path
    ) -> None:
        """One Enhanced MR Image Storage file per series, read by pydicom: per-frame
        ImagePositionPatient and (DWI) DiffusionBValue; each frame's pixels are those of the
        classic file with the same position and b-value made from the same seed."""
        for study in _truth(small_enhanced):
            for series in study["series"]:
                files = sorted((small_enhanced / series["folder"]).glob("*.dcm"))
                assert len(files) == 1
                ds = pydicom.dcmread(files[0])
                assert ds.SOPClassUID == pydicom.uid.EnhancedMRImageStorage
                assert int(ds.NumberOfFrames) == series["images"]
                frames = ds.pixel_array
                assert frames.shape == (series["images"], MATRIX, MATRIX)
                classic = {
                    (_along_normal(c), b_value_of(c)[0]): c.pixel_array
                    for c in _read_folder(small_classic, series["folder"])
                }
                spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
                assert float(spacing.SpacingBetweenSlices) == series["spacing_mm"]
                positions = set()
                for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
                    z = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
                    positions.add(round(z, 3))
                    b = (
                        float(item.MRDiffusionSequence[0].DiffusionBValue)
                        if "MRDiffusionSequence" in item
                        else None
                    )
                    if series["kind"] == "dwi":
                        assert b in (0.0, float(series["b_values"][1]))
                    match = next(
                        pixels
                        for (cz, cb), pixels in classic.items()
                        if abs(cz - z) < 1e-3 and (cb == b or series["kind"] != "dwi")
                    )
                    assert np.array_equal(frames[index], match)
                assert sorted(positions) == pytest.approx(series["positions_mm"], abs=1e-3)
                assert series["slices"] == 5

    def test_small_series_shows_the_lesion(self, small_classic: Path) -> None:
        """With --series-slices 5 every lesion case shows its lesions on the series; a normal
        case shows none."""
        for study in _truth(small_classic):
            dwi = _series(study, "dwi")
            assert dwi["slices"] == 5
            normal = study["label"] == "No acute infarct"
            assert (not dwi["lesion_slices"]) == normal
            assert all(lesion["slices"] for lesion in dwi["lesions"])


class TestWindow:
    def test_window_holds_the_anchor_and_centres_on_the_lesion(self) -> None:
        """A short series holds the designed slice and is centred on the lesion's middle as
        near as the grid allows; without a lesion it lies around the designed slice."""
        assert window_positions(anchor=0.0, spacing=5.0, count=5, centre=12.0) == [
            0.0,
            5.0,
            10.0,
            15.0,
            20.0,
        ]
        assert window_positions(anchor=0.0, spacing=5.0, count=5, centre=-100.0) == [
            -20.0,
            -15.0,
            -10.0,
            -5.0,
            0.0,
        ]
        assert window_positions(anchor=0.0, spacing=5.0, count=3, centre=4.0) == [0.0, 5.0, 10.0]
        assert window_positions(anchor=0.0, spacing=5.0, count=4) == [-10.0, -5.0, 0.0, 5.0]
        assert window_positions(anchor=1.0, spacing=4.0, count=1, centre=30.0) == [1.0]


class TestDeterminism:
    def test_same_seed_same_files_whatever_the_workers(
        self, tmp_path: Path, synth_cache: Path, small_classic: Path
    ) -> None:
        """The same seed makes byte-identical studies with one worker or two; another seed
        makes other UIDs."""
        _generate(
            tmp_path / "two", synth_cache, SeriesSpec(slices=5, structural="flair"), workers=2
        )

        def digest(root: Path) -> dict[str, str]:
            return {
                str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*"))
                if p.is_file()
            }

        assert digest(tmp_path / "two") == digest(small_classic)
        _generate(tmp_path / "other", synth_cache, SeriesSpec(slices=2), seed=SEED + 1)
        uids = {s["study_instance_uid"] for s in _truth(tmp_path / "other")}
        assert not uids & {s["study_instance_uid"] for s in _truth(small_classic)}


class TestCommandLine:
    def test_series_from_the_command_line(
        self, tmp_path: Path, synth_cache: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--series --multiframe --series-slices 3 writes one study per case and says so."""
        out = tmp_path / "cli"
        code = main(
            [
                str(out),
                "--series",
                "--multiframe",
                "--series-slices",
                "3",
                "--classes",
                "Left thalamus",
                "--cases-per-class",
                "1",
                "--negative-share",
                "balanced",
                "--matrix",
                "64",
                "--workers",
                "1",
                "--no-progress",
                "--cache-dir",
                str(synth_cache),
            ]
        )
        assert code == 0
        assert "1 stud" in capsys.readouterr().out
        assert sorted(p.name for p in (out / "c000000").iterdir()) == ["adc", "dwi"]
        assert json.loads((out / "synth.json").read_text("utf-8"))["dataset"] == "series"

    @pytest.mark.parametrize(
        "argv",
        [["--multiframe"], ["--structural", "t1"], ["--series-slices", "3"]],
        ids=["multiframe", "structural", "series-slices"],
    )
    def test_series_options_need_series(
        self, tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A series option without --series is refused with exit 2 and nothing is written."""
        assert main([str(tmp_path / "x"), *argv]) == 2
        assert "--series" in capsys.readouterr().err
        assert not (tmp_path / "x").exists()
