"""The committed sample scans: what they are, that the daemon reads them, that they are listed."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pydicom
import pytest

from daemon.shared.bundle import DEFAULT_BUNDLE, load_bundle
from daemon.shared.decode import decode
from daemon.shared.dicom_scope import NOT_B1000, NOT_DWI, b_value_of, judge, read_header
from daemon.shared.labels import load_label_map
from daemon.shared.preprocess import preprocess

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
MANIFEST = SAMPLES / "manifest.csv"
OWN_FILES = {"README.md", "manifest.csv", "synth.json", "make_samples.py"}
SERIES = SAMPLES / "series-01"
SERIES_RECORD = SAMPLES / "series-01.json"
SERIES_FILES = {SERIES.name, SERIES_RECORD.name}
"""The sample DWI series and its record (`TestSeries`)."""
NOT_DWI_DIR = SAMPLES / "not-dwi"
NOT_DWI_RECORD = SAMPLES / "not-dwi.json"
NOT_DWI_FILES = {NOT_DWI_DIR.name, NOT_DWI_RECORD.name}
"""The pictures that are not DWI and their record (`TestNotDwi`)."""
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}


def _rows() -> list[dict[str, str]]:
    with MANIFEST.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


ROWS = _rows()


def _provenance() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / "synth.json").read_text(encoding="utf-8"))
    return data


class TestManifest:
    def test_a_handful_of_small_files_each_listed_once(self) -> None:
        """6 to 10 samples, each listed once, nothing unlisted beside them, well under 1 MB."""
        names = [row["file"] for row in ROWS]
        assert 6 <= len(names) <= 10
        assert len(set(names)) == len(names)
        assert {p.name for p in SAMPLES.iterdir()} == (
            set(names) | OWN_FILES | SERIES_FILES | NOT_DWI_FILES
        )
        assert sum((SAMPLES / name).stat().st_size for name in names) < 800_000

    def test_files_are_the_bytes_the_manifest_describes(self) -> None:
        """Size and sha256 of every file match the manifest (no sample edited by hand)."""
        for row in ROWS:
            data = (SAMPLES / row["file"]).read_bytes()
            assert len(data) == int(row["bytes"]), row["file"]
            assert hashlib.sha256(data).hexdigest() == row["sha256"], row["file"]

    def test_every_expected_label_is_a_class_of_the_label_map_and_the_model(self) -> None:
        """The true class recorded for each file is a canonical class the default model outputs."""
        label_map = load_label_map()
        model_labels = set(load_bundle(DEFAULT_BUNDLE).labels)
        for row in ROWS:
            assert row["label"] in label_map.classes, row["file"]
            assert row["label"] in model_labels, row["file"]

    def test_cover_several_classes_formats_a_normal_and_a_two_lesion_case(self) -> None:
        """Several classes, all three formats, a normal and a two-lesion case."""
        labels = {row["label"] for row in ROWS}
        assert len(labels) >= 5
        assert "No acute infarct" in labels
        assert any(row["lesion_count"] == "2" for row in ROWS)
        assert {row["format"] for row in ROWS} == set(EXTENSIONS)
        for row in ROWS:
            normal = row["label"] == "No acute infarct"
            assert (row["lesion_count"] == "0") == normal, row["file"]
            assert Path(row["file"]).suffix == EXTENSIONS[row["format"]], row["file"]


@pytest.mark.parametrize("row", ROWS, ids=[row["file"] for row in ROWS])
def test_sample_decodes_and_preprocesses_with_the_daemon_code(row: dict[str, str]) -> None:
    """Each sample decodes (`daemon.shared.decode`) as its recorded format: a model input."""
    image = decode((SAMPLES / row["file"]).read_bytes(), row["file"])
    assert image.format == row["format"]
    assert min(image.width, image.height) >= 128
    if row["format"] == "dicom":
        assert image.dicom is not None
        assert image.dicom.modality == "MR"
        assert image.dicom.diffusion_b_value == 1000
    spec = load_bundle(DEFAULT_BUNDLE).preprocess
    tensor = preprocess(image.pixels, spec)
    assert tensor.shape == (spec.input_size, spec.input_size, spec.channels)


class TestDocumentation:
    def test_readme_lists_every_file_with_its_true_class(self) -> None:
        """samples/README.md has one table line per sample naming its file and true class."""
        readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
        lines = [line for line in readme.splitlines() if line.startswith("| `")]
        assert len(lines) == len(ROWS)
        for line, row in zip(lines, ROWS, strict=True):
            assert line.startswith(f"| `{row['file']}` | {row['label']} |"), line

    def test_readme_says_synthetic_and_carries_the_anatomy_credits(self) -> None:
        """The README says the files are synthetic and repeats the credits synth.json carries."""
        readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
        provenance = _provenance()
        assert "synthetic" in readme.lower()
        assert "research use only" in readme.lower()
        assert provenance["credits"], "synth.json lost its credits"
        for credit in provenance["credits"]:
            assert credit in readme
        assert "MNI" in readme
        assert "AAL3" in readme

    def test_provenance_records_the_fixed_seed_and_options(self) -> None:
        """synth.json records the seed and options that make the samples again."""
        options = _provenance()["options"]
        assert options["seed"] == 20261126
        assert options["cases_per_class"] == 1
        assert sorted(options["classes"]) == sorted({row["label"] for row in ROWS})


def _series_record() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SERIES_RECORD.read_text(encoding="utf-8"))
    return data


class TestSeries:
    def test_a_small_complete_series_listed_file_by_file(self) -> None:
        """series-01/ holds exactly the files its record lists, with their sizes and sha256:
        4-6 positions, each with a b0, a b1000 and an ADC image, a few hundred kB in all."""
        record = _series_record()
        files = record["files"]
        assert {p.name for p in SERIES.iterdir()} == {f["file"] for f in files}
        for item in files:
            data = (SERIES / item["file"]).read_bytes()
            assert len(data) == item["bytes"], item["file"]
            assert hashlib.sha256(data).hexdigest() == item["sha256"], item["file"]
        positions = record["truth"]["slices"]
        assert 4 <= positions <= 6
        b = record["truth"]["b_values"][1]
        assert sorted((f["series"], f["b_value"]) for f in files) == sorted(
            [("dwi", 0), ("dwi", b), ("adc", None)] * positions
        )
        assert 200_000 < sum(f["bytes"] for f in files) < 600_000

    def test_series_headers_make_one_study_of_a_dwi_and_an_adc_series(self) -> None:
        """One study and frame of reference; b0 and b1000 images share the DWI series UID, the
        ADC images have their own; the header rules accept the b1000 images only."""
        record = _series_record()
        datasets = {p.name: pydicom.dcmread(p) for p in sorted(SERIES.glob("*.dcm"))}
        assert {ds.StudyInstanceUID for ds in datasets.values()} == {record["study_instance_uid"]}
        assert len({ds.FrameOfReferenceUID for ds in datasets.values()}) == 1
        by_series = {f["file"]: f["series"] for f in record["files"]}
        dwi_uid = record["truth"]["series_instance_uid"]
        adc_uid = record["truth"]["adc_series_instance_uid"]
        for name, ds in datasets.items():
            expected = dwi_uid if by_series[name] == "dwi" else adc_uid
            assert ds.SeriesInstanceUID == expected, name
            verdict = judge(read_header(ds))
            b_value, _ = b_value_of(ds)
            if by_series[name] == "dwi" and b_value:
                assert verdict is None, name
            else:
                assert verdict is not None, name
                assert verdict.code == (NOT_B1000 if by_series[name] == "dwi" else NOT_DWI)

    def test_the_lesion_is_on_the_slices_the_truth_names(self) -> None:
        """The truth names a lesion on the middle slices with a volume; those b1000 files exist
        and decode into model inputs with the daemon's code."""
        record = _series_record()
        truth = record["truth"]
        assert record["label"] != "No acute infarct"
        assert truth["lesions"]
        assert truth["lesion_volume_ml"] > 0
        shown = [item["slice"] for item in truth["lesion_slices"]]
        assert shown
        assert (truth["slices"] + 1) // 2 in shown
        spec = load_bundle(DEFAULT_BUNDLE).preprocess
        for item in truth["lesion_slices"]:
            path = SERIES / item["file"]
            image = decode(path.read_bytes(), path.name)
            assert image.format == "dicom"
            assert preprocess(image.pixels, spec).shape == (
                spec.input_size,
                spec.input_size,
                spec.channels,
            )


class TestNotDwi:
    """samples/not-dwi/: pictures the daemon must refuse, each with the code it must get."""

    def test_each_file_is_listed_with_its_bytes_and_a_refusal_code(self) -> None:
        listed = json.loads(NOT_DWI_RECORD.read_text(encoding="utf-8"))
        assert {item["file"] for item in listed} == {p.name for p in NOT_DWI_DIR.iterdir()}
        for item in listed:
            data = (NOT_DWI_DIR / item["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == item["sha256"], item["file"]
            assert item["expected_code"] in {"NOT_MR", "NOT_DWI", "OUT_OF_SCOPE_IMAGE"}
        assert {item["expected_code"] for item in listed} >= {"NOT_MR", "OUT_OF_SCOPE_IMAGE"}
