"""How long after its last image a series report appears, beyond the quiet time.

``.venv/bin/python bench/series.py [--slices 30] [--rounds 5] [--stable-s 2] [--workers 2]``

A real daemon (``python -m daemon run``, its worker processes, the committed bundle) watches a
temporary incoming folder. Each round drops a DWI series of ``--slices`` slices at once (each file
written as a dotfile, then all renamed into incoming back to back; built from the committed DWI
sample with its own UIDs, InstanceNumbers and positions) and waits for its report in
``reports/series/``. Measured from the rename of the last image:

* **quiet**: the series does not say how many images it holds, so it completes after
  ``series.stable_s`` of quiet: the figure is the time to the report minus ``stable_s``;
* **count**: the same series with ImagesInAcquisition, which completes as soon as its last image
  is reported: the figure is the time to the report.

Both include scanning the 30 images (decode, inference, image reports) that were still queued
when the last one arrived. Target: <= 1 s on 2 cores. The median and worst round are printed.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
import yaml
from machine import cpu_lines
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "05-right-basal-ganglia.dcm"


def series_files(slices: int, *, counted: bool) -> tuple[str, list[tuple[str, bytes]]]:
    """The series' UID and its files (name, bytes)."""
    study, series = generate_uid(), generate_uid()
    files = []
    for number in range(1, slices + 1):
        ds = pydicom.dcmread(SAMPLE)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [-120.0, -120.0, 5.0 * number]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        if counted:
            ds.ImagesInAcquisition = slices
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append((f"{series[-12:]}-{number:03d}.dcm", buffer.getvalue()))
    return series, files


def series_report(reports: Path, uid: str) -> Path:
    import hashlib  # noqa: PLC0415

    return reports / "series" / f"{hashlib.sha256(f'dicom:{uid}'.encode()).hexdigest()[:20]}.json"


def one_round(incoming: Path, reports: Path, slices: int, *, counted: bool) -> float:
    """Seconds from the last image's rename to its series report."""
    uid, files = series_files(slices, counted=counted)
    for name, data in files:
        (incoming / f".{name}.part").write_bytes(data)
    for name, _ in files:
        (incoming / f".{name}.part").rename(incoming / name)
    last = time.monotonic()
    target = series_report(reports, uid)
    deadline = last + 120
    while not target.exists():
        if time.monotonic() > deadline:
            msg = "no series report within 120 s"
            raise SystemExit(msg)
        time.sleep(0.002)
    return time.monotonic() - last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stable-s", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for line in cpu_lines():
        print(line)
    print(f"cores: {os.cpu_count()}; slices {args.slices}; series.stable_s {args.stable_s} s")
    with tempfile.TemporaryDirectory(prefix="iw-series-") as tmp:
        root = Path(tmp)
        config = {
            "incoming": str(root / "incoming"),
            "reports": str(root / "reports"),
            "work": str(root / "work"),
            "inference": {"device": "CPU"},
            "pipeline": {"decode_workers": args.workers},
            "outcome": {"success": "delete", "failure": "delete"},
            "series": {"stable_s": args.stable_s},
            "logging": {"format": "json", "level": "warning"},
        }
        (root / "incoming").mkdir()
        path = root / "daemon.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(path)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        try:
            status = root / "work" / "status.json"
            while not (status.exists() and '"running"' in status.read_text(encoding="utf-8")):
                time.sleep(0.05)
            one_round(root / "incoming", root / "reports", 4, counted=True)  # warm up
            results: dict[str, list[float]] = {"quiet": [], "count": []}
            for _ in range(args.rounds):
                for mode in ("quiet", "count"):
                    took = one_round(
                        root / "incoming", root / "reports", args.slices, counted=mode == "count"
                    )
                    results[mode].append(took - (args.stable_s if mode == "quiet" else 0.0))
        finally:
            daemon.terminate()
            daemon.wait(60)
    for mode, values in results.items():
        label = "report - last arrival - stable_s" if mode == "quiet" else "report - last arrival"
        print(
            f"{mode:5s} ({label}): median {statistics.median(values):.3f} s, "
            f"worst {max(values):.3f} s, best {min(values):.3f} s over {len(values)} rounds"
        )


if __name__ == "__main__":
    main()
