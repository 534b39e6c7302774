"""`infarctwatch synth` output is a dataset `infarctwatch train` reads as it is."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import numpy as np
import openvino as ov  # imported up front: its import-time telemetry thread is not this test's
import pytest
import structlog

from daemon.shared.bundle import load_bundle
from daemon.shared.decode import decode
from daemon.shared.labels import load_label_map
from daemon.shared.preprocess import preprocess
from trainer.cli import train_main
from trainer.split import leaked_cases, read_split_csv

pytestmark = [pytest.mark.train, pytest.mark.slow]

if TYPE_CHECKING:
    from pathlib import Path

CLASSES = ("No acute infarct", "Left thalamus", "Right thalamus")


def test_train_reads_synth_output_and_exports_a_bundle(tmp_path: Path) -> None:
    """Tiny synth (3 classes x 3 cases, PNG/JPEG/DICOM, with ADC maps) -> 1 epoch -> bundle."""
    data, run = tmp_path / "synth", tmp_path / "run"
    synth = [
        sys.executable,
        "-m",
        "daemon",
        "synth",
        str(data),
        "--cases-per-class",
        "3",
        "--slices-per-case",
        "1",
        "--classes",
        ",".join(CLASSES),
        "--formats",
        "png,jpeg,dicom",
        "--seed",
        "3",
        "--workers",
        "1",
        "--no-progress",
    ]
    done = subprocess.run(synth, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    train = [
        str(data),
        "--out",
        str(run),
        "--set",
        "fit.epochs=1",
        "--set",
        "augment.images_per_class=16",
        "--set",
        "export.calibration_images=6",
    ]
    try:
        assert train_main(train) == 0
    finally:
        structlog.reset_defaults()
    rows = read_split_csv(run / "split.csv")
    assert leaked_cases(rows) == {}
    assert {r.label for r in rows} == set(CLASSES)
    assert {r.split for r in rows} == {"train", "validation", "test"}
    assert not any("_adc" in r.file for r in rows)
    assert {r.file.rsplit(".", 1)[-1] for r in rows} == {"png", "jpg", "dcm"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["case_ids_from"] == "manifest"
    assert metrics["data"]["skipped"] == []
    bundle = load_bundle(run / "bundle")
    assert bundle.labels == load_label_map().classes
    assert set(bundle.variants) == {"fp16", "int8"}
    path = data / next(r.file for r in rows if r.file.endswith(".dcm"))
    tensor = preprocess(decode(path.read_bytes(), path.name).pixels, bundle.preprocess)
    compiled = ov.Core().compile_model(str(bundle.variant("int8").xml), "CPU")
    probs = np.asarray(compiled(tensor[np.newaxis])[compiled.output(0)])
    assert probs.shape == (1, len(bundle.labels))
