"""The segmenter end to end on a tiny synthetic set: real TensorFlow training, the case split,
the format 2 bundle (load_bundle, deploy verify, OpenVINO by the declared names), and the CLI's
usage and configuration errors."""

from __future__ import annotations

import csv
import json
import shutil
from typing import TYPE_CHECKING

import numpy as np
import openvino as ov
import pytest
import structlog

from daemon.shared.bundle import DEFAULT_BUNDLE, load_bundle
from deploy.cli import main as deploy_main
from trainer.cli import train_main
from trainer.config import load_config
from trainer.errors import TrainConfigError
from trainer.split import leaked_cases, read_split_csv
from trainer.synth import generate

pytestmark = [pytest.mark.train, pytest.mark.slow]

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

CLASSES = "No acute infarct,Left frontal lobe,Right thalamus,Left insula"
FAST = [
    "--set",
    "segment.epochs=2",
    "--set",
    "segment.slices_per_epoch=24",
    "--set",
    "segment.batch_size=8",
    "--set",
    "split.validation=0.25",
    "--set",
    "split.test=0.25",
]


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """The CLI configures structlog for the process; put the defaults back after each test."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny training set (PNG, JPEG screenshots, DICOM; ADC and masks) and a shifted one."""
    root = tmp_path_factory.mktemp("segment")
    common = {"classes": CLASSES, "workers": 1, "negative_share": "balanced"}
    generate(
        root / "data",
        cases_per_class=4,
        slices_per_case=2,
        formats="png=0.5,jpeg=0.25,dicom=0.25",
        seed=11,
        **common,  # type: ignore[arg-type]
    )
    generate(
        root / "shifted",
        cases_per_class=1,
        slices_per_case=2,
        profile="shifted",
        seed=1011,
        **common,
    )  # type: ignore[arg-type]
    return root / "data", root / "shifted"


@pytest.fixture(scope="module")
def run(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real segmenter run (2 short epochs) into a format 2 bundle."""
    out = tmp_path_factory.mktemp("run") / "run"
    argv = [str(data[0]), "--task", "segment", "--classifier", str(DEFAULT_BUNDLE)]
    argv += ["--shifted-test", str(data[1]), "--out", str(out), "--version", "9.9.9-seg", *FAST]
    assert train_main(argv) == 0
    structlog.reset_defaults()
    return out


def test_training_runs_real_epochs(run: Path) -> None:
    """history.json holds two epochs of finite training and validation losses."""
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == 2 and len(history["val_loss"]) == 2
    assert all(np.isfinite(history["loss"])) and all(np.isfinite(history["val_loss"]))


def test_no_case_is_on_two_sides(run: Path) -> None:
    """split.csv puts every case in one split, and the test figures cover test cases only."""
    rows = read_split_csv(run / "split.csv")
    assert not leaked_cases(rows)
    test_cases = {r.case_id for r in rows if r.split == "test"}
    train_cases = {r.case_id for r in rows if r.split == "train"}
    assert test_cases and train_cases and not test_cases & train_cases
    metrics = json.loads((run / "metrics.json").read_text())
    scored = {c["case_id"] for c in metrics["test"]["with_adc"]["per_case"]}
    assert scored == test_cases


def test_metrics_come_with_and_without_adc_on_both_test_sets(run: Path) -> None:
    """metrics.json: test and shifted test, each with and without ADC; targets; the rule."""
    metrics = json.loads((run / "metrics.json").read_text())
    for where in ("test", "shifted_test", "validation"):
        for adc in ("with_adc", "without_adc"):
            figures = metrics[where][adc]
            assert figures["cases"] == len(figures["per_case"]) > 0
    assert metrics["test"]["with_adc_slices"] > 0  # the PNG and DICOM slices' ADC was placed
    assert set(metrics["targets"]) >= {"dice_in_distribution.with_adc", "dice_shifted.without_adc"}
    post = metrics["postprocessing"]
    assert 0 < post["threshold"] <= 1 and post["min_lesion_px"] >= 1 and post["grid"]
    # chosen on what the daemon feeds (DWI alone): the chosen pair's grid row is the validation
    # figure without ADC
    assert post["chosen_on"] == "dwi_only"
    (row,) = [
        g
        for g in post["grid"]
        if (g["threshold"], g["min_lesion_px"]) == (post["threshold"], post["min_lesion_px"])
    ]
    assert row["dice_mean"] == pytest.approx(metrics["validation"]["without_adc"]["dice_mean"])
    png = (run / "segmentation_cases.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_bundle_is_format_2_and_keeps_the_classifier(run: Path) -> None:
    """load_bundle reads the new version with a segmenter; every classifier file is unchanged."""
    bundle = load_bundle(run / "bundle")
    source = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())
    manifest = bundle.manifest
    assert manifest["format_version"] == 2 and bundle.version == "9.9.9-seg"
    assert bundle.name == source["name"]
    assert set(bundle.variants) == set(source["variants"])
    classifier = {rel: e for rel, e in source["files"].items() if not rel.startswith("segmenter/")}
    for rel, entry in classifier.items():  # the default's own segmenter is replaced
        assert manifest["files"][rel]["sha256"] == entry["sha256"], rel
    network = bundle.segmenter
    assert network is not None
    assert network.input_shape == (-1, 128, 128, 2) and network.channels == ("dwi", "adc")
    assert network.output == "lesion" and 0 < network.threshold <= 1
    assert network.preprocess == bundle.preprocess
    summary = manifest["networks"]["segmenter"]["metrics_summary"]
    assert summary["threshold"] == network.threshold and "test_with_adc_dice_mean" in summary
    assert (run / "bundle" / "segmenter" / "model_card.md").read_text().startswith("## Lesion")


def test_segmenter_runs_in_openvino_by_its_declared_names(run: Path) -> None:
    """The FP16 IR takes `image` (N, 128, 128, 2) and gives `lesion` (N, 128, 128, 1) in [0, 1]."""
    network = load_bundle(run / "bundle").segmenter
    assert network is not None
    variant = network.variant("fp16")
    assert variant.precision == "FP16"
    compiled = ov.Core().compile_model(str(variant.xml), "CPU")
    batch = np.random.default_rng(0).random((3, 128, 128, 2), dtype=np.float32)
    out = compiled({network.input_name: batch})[compiled.output(network.output)]
    assert out.shape == (3, 128, 128, 1)
    assert np.all((out >= 0) & (out <= 1))


def test_deploy_verify_accepts_the_bundle(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`infarctwatch deploy verify` checks the new bundle (sha256 of every file) and accepts it."""
    assert deploy_main(["verify", str(run / "bundle"), "--no-config"]) == 0
    capsys.readouterr()


def test_segmenter_needs_masks(tmp_path: Path, data: tuple[Path, Path]) -> None:
    """A dataset whose manifest lacks mask_file stops the run before it makes a run folder."""
    copy = tmp_path / "nomasks"
    shutil.copytree(data[0], copy)
    with (copy / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with (copy / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["file", "case_id"])
        writer.writeheader()
        writer.writerows({"file": r["file"], "case_id": r["case_id"]} for r in rows)
    out = tmp_path / "run"
    argv = [str(copy), "--task", "segment", "--classifier", str(DEFAULT_BUNDLE), "--out", str(out)]
    assert train_main(argv) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "segment"], "needs the classifier bundle"),
        (["--task", "segment", "--classifier", "b", "--out-of-scope", "x"], "--out-of-scope"),
        (["--classifier", "b"], "--classifier applies to --task segment only"),
        (["--task", "segment", "--classifier", "b", "--set", "segment.epochs=0"], "segment.epochs"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Flags of the other task, a missing classifier and bad segment settings: exit 2, named."""
    assert train_main([str(tmp_path), "--out", str(tmp_path / "run"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_segment_config_problems_are_reported_with_key_paths(tmp_path: Path) -> None:
    """Every problem of the segment section at once, each with its key path."""
    path = tmp_path / "train.yaml"
    path.write_text(
        "segment:\n  epochs: many\n  adc_dropout: 2\n  colour: red\n"
        "  augment:\n    flip: -1\n  architecture: vgg\n  version: 'not a version'\n"
    )
    with pytest.raises(TrainConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    for key in (
        "segment.epochs",
        "segment.adc_dropout",
        "segment.colour",
        "segment.augment.flip",
        "segment.architecture",
        "segment.version",
    ):
        assert f"At '{key}'" in text, key
    assert len(caught.value.problems) == 6
