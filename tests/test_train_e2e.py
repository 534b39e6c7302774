"""End to end on tiny data: train -> export -> bundle, verified and run with real OpenVINO."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import openvino as ov
import pytest
import structlog
from test_dataset import write_image

from daemon.shared.bundle import load_bundle
from daemon.shared.decode import decode
from daemon.shared.preprocess import preprocess
from trainer.cli import export_main, train_main
from trainer.split import leaked_cases, read_split_csv

pytestmark = [pytest.mark.train, pytest.mark.slow]

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# Four classes, spots in clearly different places; folder names exercise the merge map.
LABELS_YAML = """\
classes:
  - No acute infarct
  - Left frontal lobe
  - Right frontal lobe
  - Genu of the corpus callosum
merge:
  Normal: No acute infarct
  Genu corpus callosum: Genu of the corpus callosum
"""
SPOTS = {
    "Normal": None,
    "Left frontal lobe": (0.33, 0.30),
    "Right frontal lobe": (0.33, 0.70),
    "Genu corpus callosum": (0.55, 0.50),
}
FORMATS = (".png", ".jpg", ".dcm")
CASES, SLICES, SIZE = 4, 3, 96


def _slice(rng: np.random.Generator, spot: tuple[float, float] | None) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.where(((yy - 48) / 38) ** 2 + ((xx - 48) / 32) ** 2 < 1, 80.0, 0.0)
    image += rng.random((SIZE, SIZE)) * 10
    if spot:
        cy, cx = spot[0] * SIZE + rng.normal(0, 2), spot[1] * SIZE + rng.normal(0, 2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 40] = 250
    return image.astype(np.uint8)


def make_tiny_dataset(root: Path) -> Path:
    """4 classes x 4 cases x 3 slices, PNG, JPEG and DICOM mixed, plus ADC maps to be ignored."""
    rng = np.random.default_rng(0)
    for k, (folder, spot) in enumerate(SPOTS.items()):
        for case in range(CASES):
            for s in range(SLICES):
                pixels = _slice(rng, spot)
                suffix = FORMATS[(case + s + k) % len(FORMATS)]
                write_image(root / folder / f"k{k}c{case}_{s:02d}_dwi{suffix}", pixels)
                write_image(root / folder / f"k{k}c{case}_{s:02d}_adc.png", 255 - pixels)
    (root / "labels.yaml").write_text(LABELS_YAML)
    return root


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """The CLI configures structlog for the process; put the defaults back after each test."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


def _train_args(data: Path, out: Path, labels: Path | None = None) -> list[str]:
    return [
        str(data),
        "--out",
        str(out),
        "--version",
        "0.0.1-test",
        "--set",
        f"data.labels={labels or data / 'labels.yaml'}",
        "--set",
        "split.validation=0.25",
        "--set",
        "split.test=0.25",
        "--set",
        "fit.epochs=2",
        "--set",
        "fit.schedule=constant",
        "--set",
        "fit.learning_rate=0.002",
        "--set",
        "augment.images_per_class=48",
        "--set",
        "augment.laterality_flip=0.5",
        "--set",
        "export.calibration_images=24",
    ]


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    try:
        assert train_main(_train_args(data, out)) == 0
    finally:
        structlog.reset_defaults()
    return out


def test_run_folder_holds_every_artefact(run: Path) -> None:
    """Config, split, history, Keras model, metrics, plots, model card and bundle are written."""
    for name in (
        "config.yaml",
        "run.json",
        "labels.json",
        "split.csv",
        "history.json",
        "model.keras",
        "metrics.json",
        "training_curves.png",
        "confusion_matrix.png",
        "model_card.md",
    ):
        assert (run / name).is_file(), name
    assert (run / "bundle" / "manifest.json").is_file()
    assert not (run / ".bundle-partial").exists()
    assert "research use only" in (run / "model_card.md").read_text().lower()
    assert json.loads((run / "history.json").read_text())["loss"]


def test_split_is_by_case_and_ignores_adc_maps(run: Path) -> None:
    """No case is in two splits; only DWI slices are listed; every class is in train and test."""
    rows = read_split_csv(run / "split.csv")
    assert leaked_cases(rows) == {}
    assert len(rows) == len(SPOTS) * CASES * SLICES
    assert not any("_adc" in r.file for r in rows)
    for split in ("train", "validation", "test"):
        assert {r.label for r in rows if r.split == split} == {
            "No acute infarct",
            "Left frontal lobe",
            "Right frontal lobe",
            "Genu of the corpus callosum",
        }


def test_metrics_hold_case_and_slice_figures_and_parity(run: Path) -> None:
    """metrics.json: test top-1/top-3 at case and slice level, recall, confusion, ECE, parity."""
    metrics = json.loads((run / "metrics.json").read_text())
    case, slc = metrics["test"]["case"], metrics["test"]["slice"]
    assert case["n"] == 4 and slc["n"] == 12
    for level in (case, slc):
        assert 0.0 <= level["top1"] <= level["top3"] <= 1.0
        assert 0.0 <= level["ece"] <= 1.0
        assert len(level["confusion"]) == 4
        assert set(level["per_class_recall"]) == set(metrics["classes"])
    export = metrics["export"]
    assert export["parity"]["n"] == 12
    assert export["parity"]["max_abs_softmax_delta"] < 0.01
    assert export["parity"]["argmax_agreement"] == 1.0
    assert {"case_top1", "case_top3", "slice_top1"} <= set(export["fp16"])
    assert {"case_top1", "case_top3", "slice_top1"} <= set(export["int8"])
    assert 0.0 <= export["int8_vs_fp16"]["argmax_agreement"] <= 1.0
    assert metrics["data"]["excluded"] == len(SPOTS) * CASES * SLICES
    assert metrics["training"]["parameters"] == 2304 * 4 + 4 + 4864 + 102464


def test_bundle_verifies_and_both_variants_run_on_openvino(run: Path, data: Path) -> None:
    """load_bundle accepts the bundle; FP16 and INT8 give softmax rows for a real test slice."""
    bundle = load_bundle(run / "bundle")
    assert bundle.name == "infarctwatch-seed"
    assert bundle.version == "0.0.1-test"
    assert set(bundle.variants) == {"fp16", "int8"}
    assert bundle.labels == (
        "No acute infarct",
        "Left frontal lobe",
        "Right frontal lobe",
        "Genu of the corpus callosum",
    )
    summary = bundle.manifest["metrics_summary"]
    assert {"case_top1", "case_top3", "parity_max_abs_softmax_delta", "int8_case_top1"} <= set(
        summary
    )
    assert bundle.manifest["input"]["shape"] == [-1, 128, 128, 3]
    test_file = next(r.file for r in read_split_csv(run / "split.csv") if r.split == "test")
    path = data / test_file
    tensor = preprocess(decode(path.read_bytes(), path.name).pixels, bundle.preprocess)[np.newaxis]
    core = ov.Core()
    for variant in bundle.variants.values():
        compiled = core.compile_model(str(variant.xml), "CPU")
        probs = np.asarray(compiled(tensor)[compiled.output(0)])
        assert probs.shape == (1, 4)
        assert probs.sum() == pytest.approx(1.0, abs=1e-2)


def test_export_redoes_the_bundle_from_a_finished_run(run: Path) -> None:
    """`infarctwatch export RUN --version` rewrites a verified bundle with fresh parity figures."""
    try:
        assert export_main([str(run), "--version", "0.0.2-test"]) == 0
    finally:
        structlog.reset_defaults()
    bundle = load_bundle(run / "bundle")
    assert bundle.version == "0.0.2-test"
    metrics = json.loads((bundle.path / "metrics.json").read_text())
    assert metrics["export"]["parity"]["argmax_agreement"] == 1.0
    assert "0.0.2-test" in (run / "config.yaml").read_text()


def test_train_refuses_an_existing_run_folder(
    run: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-empty --out is never overwritten: exit 1 and a message saying so."""
    assert train_main(_train_args(data, run)) == 1
    assert "already exists" in capsys.readouterr().err


def test_train_stops_on_bad_settings_before_reading_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A configuration problem exits 2 with its key path; nothing is created."""
    out = tmp_path / "run"
    assert train_main([str(tmp_path), "--out", str(out), "--set", "fit.epochs=0"]) == 2
    assert "At 'fit.epochs'" in capsys.readouterr().err
    assert not out.exists()


def test_train_refuses_unknown_class_folders(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder the label map does not know stops the run with exit 1, naming the folder."""
    rng = np.random.default_rng(1)
    for folder in ("Left frontal lobe", "Scout images"):
        write_image(tmp_path / "data" / folder / "p1_01_dwi.png", _slice(rng, (0.4, 0.4)))
    assert train_main(_train_args(tmp_path / "data", tmp_path / "run", data / "labels.yaml")) == 1
    err = capsys.readouterr().err
    assert "  - Scout images" in err
    assert "Left frontal lobe" not in err
    assert not (tmp_path / "run").exists()


def test_export_of_a_folder_that_is_no_run_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`infarctwatch export` on an empty folder exits 1 and names what is missing."""
    assert export_main([str(tmp_path)]) == 1
    assert "finished training run" in capsys.readouterr().err
