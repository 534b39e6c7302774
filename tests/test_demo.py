"""scripts/demo, run for real on the test venv (the edge install itself is CI's job: .ci/run)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "scripts" / "demo"
pytestmark = pytest.mark.slow


def _samples() -> list[str]:
    with (REPO / "samples" / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        return [row["file"] for row in csv.DictReader(handle)]


def _not_dwi() -> dict[str, str]:
    listed = json.loads((REPO / "samples" / "not-dwi.json").read_text(encoding="utf-8"))
    return {item["file"]: item["expected_code"] for item in listed}


def _series_files() -> list[str]:
    return [f"series-01_{p.name}" for p in (REPO / "samples" / "series-01").glob("*.dcm")]


def _demo(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/demo on this venv (no install) with its folders in ``tmp_path``."""
    return subprocess.run(
        [str(DEMO)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={
            **os.environ,
            "DEMO_VENV": sys.prefix,
            "DEMO_SKIP_INSTALL": "1",
            "DEMO_DIR": str(tmp_path / "demo"),
            "DEMO_TIMEOUT": "120",
            **env,
        },
    )


def test_demo_reports_every_sample_and_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    """One line per DWI sample, the not-DWI pictures refused, the series reported with its lesion
    map (volume, key images), exit 0."""
    result = _demo(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    lines = [line for line in out.splitlines() if "(true class:" in line]
    assert sorted(line.split()[0] for line in lines) == sorted(_samples())
    assert all(" p=" in line for line in lines)
    refused = [line for line in out.splitlines() if "not analysed:" in line]
    assert {line.split()[0]: line.split()[3].rstrip(":") for line in refused} == _not_dwi()
    series = [line for line in out.splitlines() if line.lstrip().startswith("series '")]
    assert len(series) == 2  # the DWI series and its ADC series
    assert any("NOT_DWI" in line for line in series)  # the ADC series: listed, not analysed
    # The DWI series: acute, and where (its restricted lesion's place when no slice is confident).
    assert any("acute_infarct: Right parietal lobe on " in line for line in series), series
    (lesion_map,) = [line for line in out.splitlines() if line.lstrip().startswith("lesion map:")]
    assert " mL in all (" in lesion_map and "key images: overlays/" in lesion_map
    assert ", ADC " in lesion_map and "(restricted)" in lesion_map  # the study's ADC series read
    assert "lesion overlays: " in out
    assert out.count("Research use only") == 1
    assert "stopped cleanly (exit 0)" in out
    assert out.rstrip().endswith("demo: OK")
    demo = tmp_path / "demo"
    dropped = [*_samples(), *_not_dwi(), *_series_files()]
    assert len(list((demo / "reports").glob("*.json"))) == len(dropped)
    assert len(list((demo / "reports" / "series").glob("*.json"))) == 2
    summary = lesion_map.split("key images: ")[1].strip()
    assert (demo / "reports" / summary).read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in (demo / "work" / "done").iterdir()) == sorted(dropped)
    assert not [p for p in (demo / "incoming").iterdir() if not p.name.startswith(".")]


def test_demo_fails_with_a_reason_when_the_daemon_cannot_start(tmp_path: Path) -> None:
    """A daemon that exits at start-up makes the demo exit non-zero, saying so, at once."""
    result = _demo(tmp_path, DEVICE="NO_SUCH_DEVICE")
    assert result.returncode != 0
    assert "demo: FAILED: the daemon exited with code 2 while starting" in result.stderr
    assert "NO_SUCH_DEVICE" in result.stderr  # the daemon's own message, from its log
    assert "demo: OK" not in result.stdout
