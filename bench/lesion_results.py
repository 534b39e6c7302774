"""What the DICOM lesion results cost: the SEG and the TID 1500 SR of one series.

``.venv/bin/python bench/lesion_results.py [--slices 24] [--matrix 256] [--lesion-slices 6]
[--rounds 5]``

Builds in memory a DWI series of ``--slices`` single-frame MR images (``--matrix`` square,
Explicit VR Little Endian, geometry and UIDs of one series) whose masks hold one lesion on
``--lesion-slices`` consecutive slices, and its series report. Then, in this one process:

* the first SEG and SR (importing highdicom and loading its DICOM module tables included);
* ``--rounds`` more of each, `lesion_segmentation` and `lesion_report` plus encoding the object
  (``save_as`` into memory): median wall and CPU (process time) milliseconds, and the bytes.

The CPU time is the steadier figure on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from machine import cpu_lines
from pydicom.uid import MRImageStorage, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # daemon_support

from daemon_support import new_dataset  # the tests' empty MR dataset

from daemon.outbox.seg import lesion_segmentation
from daemon.outbox.sr import lesion_report

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


def series(
    slices: int, matrix: int, lesion_slices: int
) -> tuple[list[Dataset], list[np.ndarray], dict[str, Any]]:
    """The sources, their masks and the series report."""
    study, serie, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(3)
    sources, masks = [], []
    first = (slices - lesion_slices) // 2
    for index in range(slices):
        ds = new_dataset(MRImageStorage)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, serie, frame
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "BENCH^SERIES", "BENCH-1"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20261207", "050000", "", ""
        ds.SeriesNumber, ds.InstanceNumber = 5, index + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-115.0, -115.0, -60.0 + 5.0 * index]
        ds.PixelSpacing, ds.SliceThickness = [0.9, 0.9], 5.0
        ds.Rows = ds.Columns = matrix
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4000, (matrix, matrix), dtype=np.uint16).tobytes()
        sources.append(ds)
        mask = np.zeros((matrix, matrix), bool)
        if first <= index < first + lesion_slices:
            yy, xx = np.mgrid[:matrix, :matrix]
            radius = matrix * (0.05 + 0.02 * (index - first))
            mask[(yy - matrix * 0.4) ** 2 + (xx - matrix * 0.6) ** 2 < radius**2] = True
        masks.append(mask)
    voxel_ml = 0.9 * 0.9 * 5.0 / 1000
    volume = round(sum(int(m.sum()) for m in masks) * voxel_ml, 3)
    lesion = {
        "volume_ml": volume,
        "label": "Left parietal lobe",
        "slices": [
            {"sop_instance_uid": str(s.SOPInstanceUID), "instance_number": int(s.InstanceNumber)}
            for s, m in zip(sources, masks, strict=True)
            if m.any()
        ],
        "centroid_patient_mm": None,
    }
    report = {
        "finding": "acute_infarct",
        "lesions": [lesion],
        "lesion_volume_ml": volume,
        "model": {"name": "bench", "version": "1.0.0", "sha256": "ab" * 32},
    }
    return sources, masks, report


def timed(work: Any) -> tuple[float, float, int]:
    """Wall ms, CPU ms and encoded bytes of ``work()`` (which returns a dataset) + save_as."""
    wall, cpu = time.perf_counter(), time.process_time()
    dataset = work()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return (
        (time.perf_counter() - wall) * 1000,
        (time.process_time() - cpu) * 1000,
        len(buffer.getvalue()),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--matrix", type=int, default=256)
    parser.add_argument("--lesion-slices", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for line in cpu_lines():
        print(line)
    sources, masks, report = series(args.slices, args.matrix, args.lesion_slices)
    print(
        f"series: {args.slices} slices of {args.matrix}x{args.matrix}, "
        f"lesion on {args.lesion_slices}, {report['lesion_volume_ml']} ml"
    )
    wall, cpu, _ = timed(lambda: lesion_segmentation(sources, masks, report))
    print(f"first SEG (highdicom import included): {wall:.0f} ms wall, {cpu:.0f} ms CPU")
    seg = lesion_segmentation(sources, masks, report)
    wall, cpu, _ = timed(lambda: lesion_report(sources, report, seg))
    print(f"first SR: {wall:.0f} ms wall, {cpu:.0f} ms CPU")
    for name, work in (
        ("SEG", lambda: lesion_segmentation(sources, masks, report)),
        ("SR ", lambda: lesion_report(sources, report, seg)),
    ):
        runs = [timed(work) for _ in range(args.rounds)]
        print(
            f"{name}: median {statistics.median(r[0] for r in runs):.0f} ms wall, "
            f"{statistics.median(r[1] for r in runs):.0f} ms CPU, {runs[0][2]:,} bytes"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
