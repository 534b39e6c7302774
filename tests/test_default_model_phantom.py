"""The embedded default on images its generator never drew: the independent phantom.

`scripts/independent_phantom.py` (docs/evaluate.md, *A phantom written apart from the
generator*) writes 20 cases (10 normal, 10 infarct, two slices each, PNG, JPEG and DICOM of four
vendors' conventions); ``infarctwatch evaluate`` scores them with the embedded default, as it
serves. What must hold on such data is what a reader relies on: no normal slice called an acute
infarct, next to no infarct slice called reassuringly normal, few DWI slices refused, and most
locations right. Measured with 2.5.0 on this seed: 0 of 18 answered normal slices acute, 1 of
20 infarct slices `no_acute_infarct`, 2 of 40 refused, slice top-1 0.816.
"""

from __future__ import annotations

import csv
import importlib
import json
import sys

import pytest
from daemon_support import REPO, cli

pytestmark = [pytest.mark.slow, pytest.mark.train]

SEED = 31
"""A seed of neither the phantom figures of docs/evaluate.md (4243, 78) nor its unit tests."""


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, str]], dict]:
    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)  # the package scripts/phantom, as its command line finds it
    slices = importlib.import_module("phantom.slices")
    root = tmp_path_factory.mktemp("phantom")
    slices.make_slices(root / "slices", n_cases=20, seed=SEED)
    run = cli("evaluate", str(root / "slices"), "--out", str(root / "eval"), "--device", "CPU")
    assert run.returncode == 0, run.stderr
    with (root / "eval" / "results.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    metrics = json.loads((root / "eval" / "metrics.json").read_text(encoding="utf-8"))
    return rows, metrics


def test_no_normal_phantom_slice_is_called_an_acute_infarct(scored) -> None:
    rows, _ = scored
    normal = [r for r in rows if r["truth"] == "No acute infarct" and r["status"] == "ok"]
    assert len(normal) >= 16
    assert [r["file"] for r in normal if r["finding"] == "acute_infarct"] == []


def test_next_to_no_infarct_slice_is_called_normal(scored) -> None:
    rows, _ = scored
    infarct = [r for r in rows if r["truth"] != "No acute infarct" and r["status"] == "ok"]
    assert len(infarct) >= 18
    assert sum(r["finding"] == "no_acute_infarct" for r in infarct) <= 2


def test_few_phantom_slices_are_refused_and_most_are_placed_right(scored) -> None:
    rows, metrics = scored
    assert len(rows) == 40
    assert all(r["status"] in ("ok", "not_analysed") for r in rows)
    assert sum(r["status"] == "not_analysed" for r in rows) <= 4
    assert metrics["slice"]["top1"] >= 0.7
