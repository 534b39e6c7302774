"""Reading folder-per-class datasets and splitting them by case."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from daemon_support import new_dataset
from PIL import Image
from pydicom.uid import MRImageStorage

from daemon.errors import DatasetError, LabelMapError
from daemon.shared.dataset import Sample, scan
from daemon.shared.labels import load_label_map
from daemon.shared.preprocess import PreprocessSpec
from trainer.config import DataConfig
from trainer.dataset import load_tensors
from trainer.split import (
    SPLITS,
    assign_cases,
    case_labels,
    leaked_cases,
    read_split_csv,
    split_rows,
    write_split_csv,
)

LABELS = load_label_map()


def _slice(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.where(
        ((yy - size / 2) / (0.4 * size)) ** 2 + ((xx - size / 2) / (0.33 * size)) ** 2 < 1,
        90.0,
        0.0,
    )
    return (image + rng.random((size, size)) * 20).astype(np.uint8)


def _write_dicom(path: Path, pixels: np.ndarray) -> None:
    ds = new_dataset(MRImageStorage)
    ds.Modality = "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (pixels.astype(np.uint16) * 16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_image(path: Path, pixels: np.ndarray) -> None:
    """Write a slice in the format its suffix names (PNG, JPEG, BMP, TIFF, DICOM)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".dcm":
        _write_dicom(path, pixels)
    else:
        Image.fromarray(pixels).save(path)


def make_dataset(root: Path, layout: dict[str, list[str]]) -> Path:
    """``layout``: folder name -> file names; each file gets a distinct slice image."""
    for i, (folder, names) in enumerate(layout.items()):
        for j, name in enumerate(names):
            write_image(root / folder / name, _slice(100 * i + j))
    return root


class TestScan:
    def test_every_format_is_read_and_adc_maps_are_excluded(self, tmp_path: Path) -> None:
        """PNG, JPEG, BMP, TIFF and DICOM slices are listed; *_adc.* and other files are not."""
        root = make_dataset(
            tmp_path,
            {
                "Left thalamus": [
                    "c1_01_dwi.png",
                    "c1_02_dwi.jpg",
                    "c1_03_dwi.bmp",
                    "c1_04_dwi.tif",
                    "c1_05_dwi.dcm",
                    "c1_01_adc.png",
                    "c1_05_ADC.dcm",
                ],
            },
        )
        (root / "Left thalamus" / "notes.txt").write_text("not an image")
        (root / "Left thalamus" / ".c1_06_dwi.png").write_bytes(b"hidden")
        dataset = scan(root, DataConfig(manifest=None), LABELS)
        assert sorted(Path(s.rel).name for s in dataset.samples) == [
            "c1_01_dwi.png",
            "c1_02_dwi.jpg",
            "c1_03_dwi.bmp",
            "c1_04_dwi.tif",
            "c1_05_dwi.dcm",
        ]
        assert dataset.excluded == 2
        tensors = load_tensors(root, dataset.samples, PreprocessSpec(), workers=2)
        assert tensors.grey.shape == (5, 128, 128)
        assert tensors.skipped == ()
        assert pydicom.dcmread(root / "Left thalamus" / "c1_05_dwi.dcm").Modality == "MR"

    def test_raw_folder_names_are_merged_onto_canonical_classes(self, tmp_path: Path) -> None:
        """'Normal' and 'No infarct' both become 'No acute infarct'; raw names are kept."""
        root = make_dataset(
            tmp_path,
            {
                "Normal": ["a_1.png"],
                "No infarct": ["b_1.png"],
                "Left thalamic infarct": ["c_1.png"],
                "left_THALAMUS": ["d_1.png"],
            },
        )
        samples = {s.case_id: s for s in scan(root, DataConfig(), LABELS).samples}
        assert samples["a"].label == samples["b"].label == "No acute infarct"
        assert samples["c"].label == samples["d"].label == "Left thalamus"
        assert samples["c"].raw_label == "Left thalamic infarct"

    def test_unknown_folders_are_refused_all_named_at_once(self, tmp_path: Path) -> None:
        """Two unmappable folders: one LabelMapError naming both and saying how to fix it."""
        root = make_dataset(
            tmp_path,
            {"Left thalamus": ["a_1.png"], "Brainstem misc": ["b_1.png"], "Scout": ["c_1.png"]},
        )
        (root / "empty folder").mkdir()
        with pytest.raises(LabelMapError) as err:
            scan(root, DataConfig(), LABELS)
        message = str(err.value)
        assert "'Brainstem misc'" not in message  # listed plainly, one per line
        assert "  - Brainstem misc" in message and "  - Scout" in message
        assert "empty folder" not in message
        assert "merge" in message

    def test_case_ids_come_from_the_manifest_first_then_the_pattern(self, tmp_path: Path) -> None:
        """manifest.csv names the case of listed files; others use data.case_pattern."""
        root = make_dataset(tmp_path, {"Right pons": ["x_1.png", "y_2.png"]})
        with (root / "manifest.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                ["file", "raw_label", "label", "case_id", "slice_mm", "lesion_volume_ml", "format"]
            )
            writer.writerow(
                ["Right pons/x_1.png", "Right pons", "Right pons", "patient-7", "3", "1.2", "png"]
            )
        dataset = scan(root, DataConfig(), LABELS)
        assert sorted(s.case_id for s in dataset.samples) == ["patient-7", "y"]
        assert dataset.case_ids_from == "manifest+pattern"

    def test_files_without_a_case_id_stop_the_scan(self, tmp_path: Path) -> None:
        """A name the case pattern cannot read is an error, not a silent case of its own."""
        root = make_dataset(tmp_path, {"Right pons": ["nounderscore.png"]})
        with pytest.raises(DatasetError, match="no case id"):
            scan(root, DataConfig(), LABELS)

    def test_an_empty_or_missing_dataset_is_an_error(self, tmp_path: Path) -> None:
        """Nothing to train on is said plainly."""
        with pytest.raises(DatasetError, match="does not exist"):
            scan(tmp_path / "nope", DataConfig(), LABELS)
        with pytest.raises(DatasetError, match="no DWI slices"):
            scan(tmp_path, DataConfig(), LABELS)

    def test_unreadable_files_are_skipped_and_listed(self, tmp_path: Path) -> None:
        """A truncated PNG is skipped with its error code; the others load."""
        root = make_dataset(tmp_path, {"Right pons": ["a_1.png", "a_2.png"]})
        bad = root / "Right pons" / "a_2.png"
        bad.write_bytes(bad.read_bytes()[:60])
        dataset = scan(root, DataConfig(), LABELS)
        tensors = load_tensors(root, dataset.samples, PreprocessSpec(), workers=1)
        assert [s.rel for s in tensors.samples] == ["Right pons/a_1.png"]
        assert [(s.rel, s.code) for s in tensors.skipped] == [
            ("Right pons/a_2.png", "TRUNCATED_IMAGE")
        ]


def _samples(cases_per_class: dict[str, int], slices: int = 4) -> list[Sample]:
    return [
        Sample(f"{label}/{label[:3]}{c}_{s}.png", label, label, f"{label[:3]}{c}")
        for label, n in cases_per_class.items()
        for c in range(n)
        for s in range(slices)
    ]


class TestSplit:
    def test_no_case_is_in_two_splits_and_split_csv_round_trips(self, tmp_path: Path) -> None:
        """Every slice of a case shares its split; split.csv records it and reads back equal."""
        samples = _samples({"Left pons": 20, "Right pons": 13, "No acute infarct": 7})
        assignment = assign_cases(samples, validation=0.15, test=0.15, seed=1)
        rows = split_rows(samples, assignment)
        assert leaked_cases(rows) == {}
        path = tmp_path / "split.csv"
        write_split_csv(path, rows)
        assert read_split_csv(path) == rows
        by_case: dict[str, set[str]] = {}
        for row in read_split_csv(path):
            by_case.setdefault(row.case_id, set()).add(row.split)
        assert all(len(splits) == 1 for splits in by_case.values())

    def test_split_is_stratified_by_class(self) -> None:
        """Each class contributes about its share of cases to validation and test."""
        samples = _samples({"Left pons": 20, "Right pons": 40, "No acute infarct": 3})
        assignment = assign_cases(samples, validation=0.15, test=0.15, seed=1)
        per = Counter((label, assignment[case]) for case, label in case_labels(samples).items())
        assert (per["Left pons", "test"], per["Left pons", "validation"]) == (3, 3)
        assert (per["Right pons", "test"], per["Right pons", "validation"]) == (6, 6)
        assert [per["No acute infarct", s] for s in SPLITS] == [1, 1, 1]

    def test_split_is_deterministic_by_seed(self) -> None:
        """The same seed gives the same split; another seed a different one."""
        samples = _samples({"Left pons": 30, "Right pons": 30})
        a = assign_cases(samples, validation=0.2, test=0.2, seed=7)
        assert a == assign_cases(list(reversed(samples)), validation=0.2, test=0.2, seed=7)
        assert a != assign_cases(samples, validation=0.2, test=0.2, seed=8)

    def test_tiny_classes_keep_a_training_case(self) -> None:
        """One case: train only. Two cases: train and test."""
        samples = _samples({"Left pons": 1, "Right pons": 2})
        assignment = assign_cases(samples, validation=0.3, test=0.3, seed=0)
        assert assignment["Lef0"] == "train"
        assert sorted(assignment[c] for c in ("Rig0", "Rig1")) == ["test", "train"]

    def test_a_case_spanning_two_classes_stays_whole(self) -> None:
        """A patient with slices in two class folders is one case, in one split."""
        samples = _samples({"Left pons": 10, "Right pons": 10})
        samples += [
            Sample("No acute infarct/Lef0_9.png", "No acute infarct", "No acute infarct", "Lef0")
        ]
        rows = split_rows(samples, assign_cases(samples, validation=0.2, test=0.2, seed=3))
        assert leaked_cases(rows) == {}
        assert len({r.split for r in rows if r.case_id == "Lef0"}) == 1

    def test_a_malformed_split_csv_is_refused(self, tmp_path: Path) -> None:
        """Wrong columns or an unknown split name are errors."""
        path = tmp_path / "split.csv"
        path.write_text("file,label\nx.png,Left pons\n")
        with pytest.raises(DatasetError, match="columns"):
            read_split_csv(path)
        path.write_text("file,raw_label,label,case_id,split\nx.png,a,Left pons,c1,holdout\n")
        with pytest.raises(DatasetError, match="holdout"):
            read_split_csv(path)
