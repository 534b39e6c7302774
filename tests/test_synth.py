"""infarctwatch synth: dataset layout, manifest, formats, determinism and the command line."""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFilter

from daemon.shared.decode import decode
from daemon.shared.labels import load_label_map, normalise_name
from daemon.shared.preprocess import PreprocessSpec, preprocess
from trainer.errors import SynthError
from trainer.synth import cases, generate
from trainer.synth.cli import main
from trainer.synth.manifest import ManifestRow, read_manifest
from trainer.synth.options import parse_formats, parse_slices

if TYPE_CHECKING:
    from pathlib import Path

FORMATS = "png=0.4,jpeg=0.3,dicom=0.3"
MATRIX = 128


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One anatomy cache for the whole session (shared with test_synth_anatomy)."""
    return tmp_path_factory.getbasetemp() / "synth-anatomy-cache"


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    """Every class, one case each, two slices, all three formats, with montages."""
    out = tmp_path_factory.mktemp("synth") / "data"
    generate(
        out,
        cases_per_class=1,
        slices_per_case=2,
        formats=FORMATS,
        seed=3,
        workers=1,
        matrix=MATRIX,
        cache_dir=synth_cache,
        montage_dir=out.parent / "montage",
        negative_share="balanced",
    )
    return out


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class TestLayout:
    def test_manifest_has_the_columns_and_every_file(self, dataset: Path) -> None:
        """manifest.csv lists every DWI file with the documented columns; the files exist."""
        rows = read_manifest(dataset / "manifest.csv")
        assert list(rows[0]) == ManifestRow.columns()
        for column in ("file", "raw_label", "label", "case_id", "slice_mm", "lesion_volume_ml"):
            assert column in rows[0]
        assert len(rows) == 27 * 2
        for row in rows:
            assert (dataset / row["file"]).is_file()
            assert (dataset / row["adc_file"]).is_file()
        on_disk = {str(p.relative_to(dataset)) for p in dataset.rglob("*_dwi.*")}
        assert on_disk == {row["file"] for row in rows}

    def test_folders_are_raw_variants_of_the_label(self, dataset: Path) -> None:
        """Each file sits in a folder named by a raw variant that maps back to its class; every
        class has a folder."""
        label_map = load_label_map()
        rows = read_manifest(dataset / "manifest.csv")
        for row in rows:
            folder = row["file"].split("/")[0]
            assert folder == row["raw_label"]
            assert label_map.canonical(folder) == row["label"]
        assert {row["label"] for row in rows} == set(label_map.classes)

    def test_case_ids_are_unique_and_the_filename_prefix(self, dataset: Path) -> None:
        """Case ids are unique per case, a case's files share one folder, and the user-style
        pattern ^(?P<case>[^_]+)_ recovers the case id from every file name."""
        rows = read_manifest(dataset / "manifest.csv")
        folders: dict[str, set[str]] = {}
        for row in rows:
            name = row["file"].split("/")[1]
            match = re.match(r"^(?P<case>[^_]+)_", name)
            assert match is not None
            assert match.group("case") == row["case_id"]
            assert re.fullmatch(r"c\d{6}_\d{2}_dwi\.(png|jpg|dcm)", name)
            folders.setdefault(row["case_id"], set()).add(row["raw_label"])
        assert len(folders) == 27
        assert all(len(f) == 1 for f in folders.values())

    def test_raw_variants_spread_over_cases(self, tmp_path: Path, synth_cache: Path) -> None:
        """A class's cases cycle through its raw folder names (canonical name first)."""
        label = "Left thalamus"
        rows = generate(
            tmp_path / "d",
            cases_per_class=3,
            slices_per_case=1,
            classes=label,
            workers=1,
            matrix=96,
            cache_dir=synth_cache,
            adc=False,
        )
        variants = cases.folder_variants(load_label_map(), label)
        assert [r.raw_label for r in rows] == [variants[i % len(variants)] for i in range(3)]
        assert all(r.adc_file == "" for r in rows)
        assert not list((tmp_path / "d").rglob("*_adc.png"))

    def test_provenance_credits_the_anatomy(self, dataset: Path) -> None:
        """synth.json records the options and credits MNI152 and AAL3, with the disclaimer."""
        data = json.loads((dataset / "synth.json").read_text(encoding="utf-8"))
        assert data["options"]["seed"] == 3
        text = " ".join(data["credits"])
        assert "Louis Collins" in text
        assert "Automated anatomical labelling atlas 3" in text
        assert "research use only" in data["disclaimer"].lower()
        assert sum(c["slices"] for c in data["classes"].values()) == 54

    def test_montages_are_written(self, dataset: Path) -> None:
        """--montage writes regions.png and one sheet per class."""
        sheets = {p.name for p in (dataset.parent / "montage").glob("*.png")}
        assert "regions.png" in sheets
        assert "Left_pons.png" in sheets
        assert len(sheets) == 28

    def test_lesion_columns_follow_the_class(self, dataset: Path) -> None:
        """Normal cases have no lesion; two-lesion classes two; every lesion slice shows area."""
        for row in read_manifest(dataset / "manifest.csv"):
            count = int(row["lesion_count"])
            if row["label"] == "No acute infarct":
                assert count == 0
                assert float(row["lesion_volume_ml"]) == 0
                assert float(row["lesion_area_mm2"]) == 0
            else:
                expected = 2 if " and " in row["label"] else 1
                assert count == expected
                assert float(row["lesion_volume_ml"]) > 0
                assert float(row["lesion_area_mm2"]) >= cases.MIN_LESION_AREA_MM2 * count * 0.99


class TestFormats:
    def test_every_file_decodes_with_the_daemon(self, dataset: Path) -> None:
        """`daemon.shared.decode` reads every PNG, JPEG and DICOM file; preprocess: a tensor."""
        rows = read_manifest(dataset / "manifest.csv")
        assert {row["format"] for row in rows} == {"png", "jpeg", "dicom"}
        for row in rows:
            path = dataset / row["file"]
            decoded = decode(path.read_bytes(), path.name)
            assert decoded.format == row["format"]
            tensor = preprocess(decoded.pixels, PreprocessSpec())
            assert tensor.shape == (128, 128, 3)
            if row["format"] == "jpeg":
                assert (decoded.width, decoded.height) == (512, 512)
            else:
                assert (decoded.width, decoded.height) == (MATRIX, MATRIX)

    def test_dicom_attributes(self, dataset: Path) -> None:
        """DICOM files are 16-bit MR with spacing, thickness, location, b = 1000, synthetic
        patient name and deterministic 2.25 UIDs; nothing identifies a real person."""
        rows = [r for r in read_manifest(dataset / "manifest.csv") if r["format"] == "dicom"]
        assert rows
        for row in rows:
            ds = pydicom.dcmread(dataset / row["file"])
            assert ds.Modality == "MR"
            assert ds.BitsAllocated == 16
            if "standard" in row["b_value_tags"].split(";"):
                assert float(ds.DiffusionBValue) == float(row["b_value"])
            assert float(ds.PixelSpacing[0]) == pytest.approx(
                float(row["display_pixel_mm"]), abs=1e-3
            )
            assert float(ds.SliceThickness) == float(row["slice_thickness_mm"])
            assert float(ds.SliceLocation) == pytest.approx(float(row["slice_location_mm"]), 0.01)
            assert str(ds.PatientName) == f"SYNTHETIC^{row['case_id'].upper()}"
            assert ds.PatientBirthDate == ""
            assert str(ds.StudyInstanceUID).startswith("2.25.")
            assert ds.pixel_array.dtype == np.uint16

    def test_adc_is_16_bit_in_micro_units(self, dataset: Path) -> None:
        """ADC maps are 16-bit PNGs in 1e-6 mm2/s: CSF near 3000, brain tissue around 700-900."""
        row = read_manifest(dataset / "manifest.csv")[0]
        with Image.open(dataset / row["adc_file"]) as image:
            assert image.mode.startswith("I")
            adc = np.asarray(image)
        brain = adc[adc > 0]
        assert 600 < np.median(brain) < 1300
        assert brain.max() > 2500

    def test_screenshot_corners_carry_text(self, dataset: Path) -> None:
        """JPEG screenshots have burned-in annotation in the corners (the viewport is black)."""
        rows = [r for r in read_manifest(dataset / "manifest.csv") if r["format"] == "jpeg"]
        for row in rows:
            with Image.open(dataset / row["file"]) as image:
                pixels = np.asarray(image.convert("L"))
            assert pixels[:40, :120].max() > 150
            assert pixels[-40:, -120:].max() > 150


class TestMasks:
    def test_every_image_has_a_mask_of_its_size(self, dataset: Path) -> None:
        """Each DWI file's mask (manifest ``mask_file``) is an 8-bit PNG of the decoded image's
        size: all zeros on normal slices, labels 1..lesion_count on lesion slices (every lesion
        shows on every slice of its case)."""
        rows = read_manifest(dataset / "manifest.csv")
        masks = {str(p.relative_to(dataset)) for p in dataset.rglob("*_mask.png")}
        assert masks == {row["mask_file"] for row in rows}
        for row in rows:
            decoded = decode((dataset / row["file"]).read_bytes(), row["file"])
            with Image.open(dataset / row["mask_file"]) as image:
                assert image.mode == "L"
                mask = np.asarray(image)
            assert mask.shape == (decoded.height, decoded.width)
            labels = set(np.unique(mask).tolist())
            count = int(row["lesion_count"])
            assert labels == set(range(count + 1)), row["file"]

    def test_mask_area_is_the_lesion_area(self, dataset: Path) -> None:
        """On scanner-matrix PNG and DICOM files the mask's pixels x pixel area is the
        manifest's lesion area on that slice."""
        for row in read_manifest(dataset / "manifest.csv"):
            if row["format"] == "jpeg" or row["lesion_count"] == "0":
                continue
            with Image.open(dataset / row["mask_file"]) as image:
                pixels = int((np.asarray(image) > 0).sum())
            area = pixels * float(row["display_pixel_mm"]) ** 2
            assert area == pytest.approx(float(row["lesion_area_mm2"]), rel=0.01, abs=1.0)

    def test_mask_covers_the_bright_lesion(self, dataset: Path) -> None:
        """The image is brighter under the mask than in the brain around it in every format
        (a JPEG screenshot's mask is placed where the slice is on the canvas; 8-bit windows may
        saturate the lesion), clearly so in the 16-bit DICOM files."""
        for row in read_manifest(dataset / "manifest.csv"):
            if row["lesion_count"] == "0":
                continue
            decoded = decode((dataset / row["file"]).read_bytes(), row["file"])
            image = np.asarray(decoded.pixels, dtype=np.float64)
            image = image.mean(axis=-1) if image.ndim == 3 else image
            with Image.open(dataset / row["mask_file"]) as mask_image:
                mask = np.asarray(mask_image) > 0
            grown = np.asarray(Image.fromarray(mask).filter(ImageFilter.MaxFilter(9))) > 0
            ring = grown & ~mask & (image > 0.2 * image.max())
            factor = 1.15 if row["format"] == "dicom" else 1.0
            assert image[mask].mean() > factor * image[ring].mean(), row["file"]


class TestDeterminism:
    def test_same_seed_same_files_whatever_the_workers(
        self, tmp_path: Path, synth_cache: Path
    ) -> None:
        """Same seed and options give byte-identical datasets, with one worker or two."""
        common = {
            "cases_per_class": 2,
            "slices_per_case": "1-2",
            "formats": FORMATS,
            "seed": 5,
            "classes": "Right pons,No acute infarct,Right frontal and parietal lobes",
            "matrix": 96,
            "cache_dir": synth_cache,
            "negative_share": "balanced",
        }
        generate(tmp_path / "a", workers=1, **common)  # type: ignore[arg-type]
        generate(tmp_path / "b", workers=2, **common)  # type: ignore[arg-type]
        first, second = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
        assert first == second
        assert len(first) > 10

    def test_another_seed_gives_other_images(self, tmp_path: Path, synth_cache: Path) -> None:
        """A different seed changes the pixels."""
        common = {
            "classes": "Left insula",
            "slices_per_case": 1,
            "matrix": 96,
            "cache_dir": synth_cache,
            "workers": 1,
            "adc": False,
        }
        generate(tmp_path / "a", seed=1, **common)  # type: ignore[arg-type]
        generate(tmp_path / "b", seed=2, **common)  # type: ignore[arg-type]
        assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "b")


class TestOptions:
    def test_format_shares_are_normalised(self) -> None:
        """Shares are normalised; aliases and bare names work; bad specs are refused."""
        assert parse_formats("png=2,jpg=1,dcm=1") == (("png", 0.5), ("jpeg", 0.25), ("dicom", 0.25))
        assert parse_formats("dicom") == (("dicom", 1.0),)
        for bad in ("gif", "png=0", "png=x", "png,png", ""):
            with pytest.raises(SynthError):
                parse_formats(bad)

    def test_slice_counts_and_ranges(self) -> None:
        """A count or an inclusive range; zero, reversed and huge ranges are refused."""
        assert parse_slices("3") == (3, 3)
        assert parse_slices("2-4") == (2, 4)
        assert parse_slices(2) == (2, 2)
        for bad in ("0", "4-2", "1-99", "two"):
            with pytest.raises(SynthError):
                parse_slices(bad)

    def test_format_quotas_are_exact(self) -> None:
        """Formats are allocated by exact quotas over the whole run, not by coin flips."""
        allocation = cases.allocate_formats(
            (("png", 0.5), ("jpeg", 0.3), ("dicom", 0.2)), 10, seed=0
        )
        assert sorted(allocation) == ["dicom"] * 2 + ["jpeg"] * 3 + ["png"] * 5

    def test_unsafe_folder_names_are_skipped(self) -> None:
        """Raw names that cannot be folder names ('/' inside) are not used as folders."""
        label_map = load_label_map()
        for label in label_map.classes:
            variants = cases.folder_variants(label_map, label)
            assert variants[0] == label
            assert all("/" not in v for v in variants)
            assert all(label_map.canonical(normalise_name(v)) == label for v in variants)


class TestCommandLine:
    def test_refuses_a_non_empty_folder_without_force(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An existing non-empty OUT is an error (exit 2) and is left untouched."""
        out = tmp_path / "out"
        out.mkdir()
        (out / "keep.txt").write_text("mine", encoding="utf-8")
        assert main([str(out), "--cases-per-class", "1"]) == 2
        assert "not empty" in capsys.readouterr().err
        assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"

    def test_force_never_replaces_a_folder_synth_did_not_make(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--force only replaces a previous synth dataset (one with synth.json)."""
        out = tmp_path / "out"
        out.mkdir()
        (out / "keep.txt").write_text("mine", encoding="utf-8")
        assert main([str(out), "--force"]) == 2
        assert "did not make" in capsys.readouterr().err
        assert (out / "keep.txt").exists()

    def test_force_replaces_a_previous_dataset(
        self, tmp_path: Path, synth_cache: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A second run with --force replaces the dataset; no staging folders are left."""
        out = tmp_path / "out"
        argv = [
            str(out),
            "--classes",
            "Left pons",
            "--cases-per-class",
            "1",
            "--slices-per-case",
            "1",
            "--matrix",
            "96",
            "--cache-dir",
            str(synth_cache),
            "--workers",
            "1",
        ]
        assert main(argv) == 0
        (out / "stale.txt").write_text("old", encoding="utf-8")
        assert main([*argv, "--seed", "9", "--force"]) == 0
        assert not (out / "stale.txt").exists()
        assert (out / "manifest.csv").is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
        assert "wrote 1 slice(s) of 1 case(s)" in capsys.readouterr().out

    def test_bad_options_exit_2_with_a_message(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Unknown classes, formats and out-of-range numbers are usage errors, never tracebacks."""
        out = str(tmp_path / "new")
        for argv in (
            [out, "--classes", "Left nose"],
            [out, "--formats", "gif"],
            [out, "--matrix", "4096"],
            [out, "--cases-per-class", "0"],
            [out, "--slices-per-case", "5-1"],
            [out, "--seed", "banana"],
            [out, "--profile", "sideways"],
            [out, "--negative-share", "lots"],
            [out, "--negative-share", "0.99"],
            [out, "--out-of-scope", "-1"],
            [out, "--series", "--series-slices", "99"],
            [out, "--series", "--out-of-scope", "2"],
        ):
            assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Left nose" in err
        assert "gif" in err
        assert "lots" in err
        assert "negative share must be 0..0.95" in err
        assert not (tmp_path / "new").exists()

    def test_help_describes_every_option(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--help exits 0 and documents each option."""
        assert main(["--help"]) == 0
        text = capsys.readouterr().out
        for option in (
            "--cases-per-class",
            "--slices-per-case",
            "--formats",
            "--seed",
            "--workers",
            "--classes",
            "--matrix",
            "--montage",
            "--labels",
            "--force",
            "--profile",
            "--negative-share",
            "--out-of-scope",
            "--series",
            "--multiframe",
            "--structural",
            "--series-slices",
        ):
            assert option in text

    def test_progress_bar_on_request(
        self, tmp_path: Path, synth_cache: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """progress=True draws a tqdm bar on stderr and stops its thread when done."""
        generate(
            tmp_path / "d",
            classes="Left pons",
            cases_per_class=1,
            slices_per_case=2,
            matrix=96,
            cache_dir=synth_cache,
            workers=1,
            progress=True,
        )
        assert "2/2" in capsys.readouterr().err

    def test_a_failure_leaves_nothing_behind(
        self, tmp_path: Path, synth_cache: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If a case fails mid-run, OUT is not created and the staging folder is removed."""
        real = cases.make_case
        calls = {"n": 0}

        def flaky(anatomy: object, job: cases.Job) -> cases.CaseResult:
            calls["n"] += 1
            if calls["n"] == 2:
                raise SynthError("injected failure")
            return real(anatomy, job)  # type: ignore[arg-type]

        monkeypatch.setattr("trainer.synth.pipeline.make_case", flaky)
        out = tmp_path / "out"
        with pytest.raises(SynthError, match="injected"):
            generate(
                out,
                classes="Left pons,Right pons",
                cases_per_class=1,
                slices_per_case=1,
                matrix=96,
                cache_dir=synth_cache,
                workers=1,
            )
        assert list(tmp_path.iterdir()) == []
