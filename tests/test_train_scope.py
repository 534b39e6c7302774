"""Issue 11 on tiny data with real TensorFlow and OpenVINO: the shifted test set, calibration,
thresholds, the in_scope head trained on synthetic out-of-scope images, and --init-from."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import openvino as ov
import pytest
import structlog
from PIL import Image
from test_dataset import write_image
from test_train_e2e import SPOTS, _slice, make_tiny_dataset

from daemon.shared.bundle import MANIFEST, load_bundle, sha256_file
from trainer.cli import export_main, train_main
from trainer.plots import RELIABILITY_SIZE
from trainer.split import read_split_csv
from trainer.synth import generate
from trainer.synth.outofscope import KINDS

pytestmark = [pytest.mark.train, pytest.mark.slow]

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

LEVEL_KEYS = {
    "n",
    "top1",
    "top3",
    "ece",
    "ece_uncalibrated",
    "no_acute_infarct_recall",
    "per_class_recall",
    "confusion",
}
FINDING_KEYS = {
    "specificity",
    "false_alarm_rate",
    "sensitivity",
    "missed_rate",
    "indeterminate_rate",
}


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def _shifted(root: Path) -> Path:
    """Another acquisition of the tiny classes: brighter, noisier, own seed, PNG and JPEG."""
    rng = np.random.default_rng(77)
    for k, (folder, spot) in enumerate(SPOTS.items()):
        for case in range(2):
            for s in range(2):
                pixels = np.clip(_slice(rng, spot) * 1.2 + rng.normal(0, 8, (96, 96)), 0, 255)
                suffix = (".png", ".jpg")[(case + s) % 2]
                write_image(root / folder / f"s{k}c{case}_{s:02d}_dwi{suffix}", pixels.astype("u1"))
    return root


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("scope")
    cache = tmp_path_factory.getbasetemp() / "synth-anatomy-cache"  # shared with the synth tests
    oos = base / "oos"
    formats = "png=0.4,jpeg=0.3,dicom=0.3"
    generate(oos, out_of_scope=6, formats=formats, seed=5, workers=2, cache_dir=cache)
    return {
        "data": make_tiny_dataset(base / "tiny"),
        "shifted": _shifted(base / "shifted"),
        "oos": oos,
    }


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    settings = (
        f"data.labels={data / 'labels.yaml'}",
        "fit.epochs=8",
        "scope.epoch_share=0.5",
        "export.calibration_images=24",
    )
    return [str(data), "--out", str(out), *[a for s in settings for a in ("--set", s)], *extra]


@pytest.fixture(scope="module")
def run(sets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "scope"
    extra = ("--shifted-test", str(sets["shifted"]), "--out-of-scope", str(sets["oos"]))
    try:
        assert train_main(_args(sets["data"], out, *extra)) == 0
    finally:
        structlog.reset_defaults()
    return out


def _metrics(run: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((run / "metrics.json").read_text())
    return result


def test_both_sets_are_reported_with_the_documented_keys(run: Path) -> None:
    """test and shifted_test: case and slice levels, per format, findings, wrongly refused."""
    metrics = _metrics(run)
    for name in ("test", "shifted_test", "validation"):
        report = metrics[name]
        for level in ("case", "slice"):
            assert set(report[level]) >= LEVEL_KEYS, (name, level)
            assert 0.0 <= report[level]["ece"] <= 1.0
        assert set(report["findings"]) >= FINDING_KEYS
        assert 0.0 <= report["in_scope"]["wrongly_refused"] <= 1.0
    assert set(metrics["test"]["per_format"]) == {"png", "jpeg", "dicom"}
    assert set(metrics["shifted_test"]["per_format"]) == {"png", "jpeg"}
    assert metrics["shifted_test"]["slice"]["n"] == 16
    assert set(metrics["calibration"]) >= {"temperature", "nll_before", "nll_after"}
    assert metrics["calibration"]["nll_after"] <= metrics["calibration"]["nll_before"]
    card = (run / "model_card.md").read_text()
    assert "shifted-acquisition test" in card
    assert "out-of-scope test images refused" in card


def test_plots_of_both_sets_exist_at_their_size(run: Path) -> None:
    """Reliability diagrams at RELIABILITY_SIZE; confusion matrices sized by the class count."""
    for name in ("reliability_test.png", "reliability_shifted.png"):
        with Image.open(run / name) as image:
            assert image.size == RELIABILITY_SIZE, name
    for name in ("confusion_matrix.png", "confusion_matrix_shifted.png"):
        with Image.open(run / name) as image:
            assert image.size == (750, 600), name  # 4 classes: the 6-inch minimum + colour bar


def test_calibration_and_thresholds_travel_in_the_bundle(run: Path) -> None:
    """The daemon reads back the temperature, thresholds and output roles the run chose."""
    metrics = _metrics(run)
    bundle = load_bundle(run / "bundle")
    assert bundle.temperature == pytest.approx(metrics["calibration"]["temperature"])
    assert bundle.outputs == {"classes": "classes", "in_scope": "in_scope"}
    assert bundle.finding_thresholds is not None
    finding = metrics["thresholds"]["finding"]
    assert bundle.finding_thresholds["acute_infarct"] == pytest.approx(finding["acute_infarct"])
    assert bundle.in_scope_threshold == pytest.approx(
        metrics["thresholds"]["in_scope"]["threshold"]
    )
    assert bundle.manifest["keras_model"] == "model.keras"
    shipped = keras.models.load_model(run / "bundle" / "model.keras")
    weights = 4 * shipped.count_params()
    assert (run / "bundle" / "model.keras").stat().st_size < 1.2 * weights  # no optimizer state


def test_thresholds_meet_the_target_on_validation(run: Path) -> None:
    """Chosen on validation slices, they keep false alarms within 1 - target_specificity there."""
    metrics = _metrics(run)
    finding = metrics["thresholds"]["finding"]
    rates = metrics["validation"]["findings"]
    assert rates["false_alarm_rate"] <= 1.0 - finding["target_specificity"]
    assert rates["missed_rate"] <= 1.0 - finding["target_sensitivity"]


def test_in_scope_refuses_out_of_scope_images_better_than_chance(run: Path) -> None:
    """On held-out out-of-scope images (their own split) refusals far exceed wrong DWI refusals.

    The tiny DWI stand-ins are plain ellipses with spots, an easier contrast with the
    out-of-scope kinds than real synthetic DWI; this checks that the head learns, not its figures.
    """
    metrics = _metrics(run)
    oos = metrics["out_of_scope"]["test"]
    assert oos["n"] == len(KINDS)  # one test image of every kind
    assert oos["refused"] >= metrics["test"]["in_scope"]["wrongly_refused"] + 0.3
    rows = read_split_csv(run / "split_out_of_scope.csv")
    assert len({r.case_id for r in rows}) == len(rows)  # each image its own case, one split


def test_both_outputs_are_named_in_every_variant_and_match_keras(run: Path, sets: dict) -> None:
    """FP16 and INT8 IRs carry `classes` and `in_scope`; the FP16 IR agrees with Keras on both."""
    metrics = _metrics(run)
    export = metrics["export"]
    assert export["outputs"] == {"classes": "classes", "in_scope": "in_scope"}
    assert export["parity"]["max_abs_softmax_delta"] < 0.01
    assert export["parity_in_scope"]["max_abs_softmax_delta"] < 0.01
    assert "int8" in export
    bundle = load_bundle(run / "bundle")
    gate = export["int8_gate"]
    assert set(gate["drop_points"]) == {
        "case_top1",
        "slice_top1",
        "case_top1_shifted",
        "slice_top1_shifted",
    }
    assert bundle.manifest["default_variant"] == ("int8" if gate["int8_default"] else "fp16")
    sample = np.random.default_rng(0).random((2, 128, 128, 3), np.float32)
    for variant in bundle.variants.values():
        compiled = ov.Core().compile_model(str(variant.xml), "CPU")
        result = compiled(sample)
        assert np.asarray(result[compiled.output("classes")]).shape == (2, 4)
        assert np.asarray(result[compiled.output("in_scope")]).shape == (2, 1)
    del sets


def test_export_redoes_the_two_output_bundle(run: Path) -> None:
    """`infarctwatch export` on a two-output run: both outputs, same temperature, new version."""
    temperature = load_bundle(run / "bundle").temperature
    assert export_main([str(run), "--version", "0.1.1"]) == 0
    bundle = load_bundle(run / "bundle")
    assert bundle.version == "0.1.1"
    assert bundle.outputs == {"classes": "classes", "in_scope": "in_scope"}
    assert bundle.temperature == pytest.approx(temperature, rel=1e-3)


def test_init_from_reuses_the_weights_and_records_the_parent(
    run: Path, sets: dict[str, Path], tmp_path: Path
) -> None:
    """--init-from with --freeze features: conv kernels unchanged, dense trained, parent named."""
    parent = run / "bundle"
    out = tmp_path / "child"
    args = _args(sets["data"], out, "--init-from", str(parent), "--freeze", "features")
    args += ["--set", "fit.epochs=2", "--set", "export.int8=false"]
    assert train_main(args) == 0
    manifest = json.loads((out / "bundle" / MANIFEST).read_text())
    expected = {
        "name": "infarctwatch-seed",
        "version": load_bundle(parent).version,
        "sha256": sha256_file(parent / MANIFEST),
    }
    assert manifest["parent"] == expected
    assert load_bundle(out / "bundle").parent == expected
    assert expected["sha256"] in (out / "bundle" / "model_card.md").read_text()
    before = keras.models.load_model(parent / "model.keras")
    after = keras.models.load_model(out / "model.keras")
    for name in ("block1_conv", "block2_conv"):
        for old, new in zip(
            before.get_layer(name).weights, after.get_layer(name).weights, strict=True
        ):
            np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
    old_dense = np.asarray(before.get_layer("logits").kernel)
    assert not np.array_equal(old_dense, np.asarray(after.get_layer("logits").kernel))


def test_init_from_with_other_labels_says_what_to_do(
    run: Path, sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The project's 36-class label map against the 4-class parent: exit 1, differences named."""
    args = [str(sets["data"]), "--out", str(tmp_path / "x"), "--init-from", str(run / "bundle")]
    assert train_main(args) == 1
    err = capsys.readouterr().err
    assert "only in the label map" in err
    assert "data.labels" in err
    assert not (tmp_path / "x").exists()
