"""The daemon's series lesion maps against the truth of synthetic studies, voxel by voxel.

``.venv/bin/python scripts/series_maps.py FOLDER [FOLDER...] [--run [--model BUNDLE]] [--cases]
[--complete N]``

Each FOLDER holds ``data/``, the studies, and ``reports/``, what the daemon wrote for them
(``--run`` runs it first: ``infarctwatch run --once`` on a copy in ``FOLDER/incoming``):

* the ``--out`` of `scripts/series_volumes.py`: ``data/series.json`` and the masks beside the
  b1000 images are the truth;
* or phantom studies, `scripts/independent_phantom.py studies FOLDER/data --masks FOLDER/masks`:
  ``data/truth.csv`` and ``masks/`` are the truth (`phantom_truth`).

``reports/`` holds the daemon's series reports and the mask of every slice
(`daemon.lesionmaps.files`). Each DWI series is one case: its slices' masks stacked
in the report's slice order, the truth the same way, scored with the trainer's ISLES'22
definitions (`trainer.segment.metrics`: Dice, lesion-wise F1 on 3-D connected lesions, absolute
volume difference, lesion count difference, normal series without any lesion). A slice the daemon
did not analyse (refused, failed) is not in the stack, nor its truth. Scored:

* ``map``: every lesion of the series report (``lesion_volume_ml``);
* ``restricted``: only the lesions whose ADC is restricted (``adc.restricted``, the lesions of
  ``restricted_volume_ml``, `daemon.series.adc`); needs the study's ADC read on the series;
* ``completed`` (with ``--complete N``; an experiment, not what the daemon reports): the
  restricted lesions grown up to N pixels in-plane through the voxels whose ADC (the values files
  of the study's ADC series, as the daemon reads them) is above 0 and below 620 x 1e-6 mm²/s,
  the ischaemic-core threshold: the map draws infarcts smaller than they are, could the ADC
  complete them? docs/training.md (*Series maps against the truth*) gives the answer.

The voxel volume is the DWI series' pixel area x slice spacing of its truth. Prints one
line per set and folder; with ``--cases``, one line per infarct series. Needs the ``[train]``
extra. Research use only.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage

from daemon.lesionmaps.files import adc_name, read_adc, read_mask
from daemon.series.adc import REFERENCE_ADC, RESTRICTED_ADC
from daemon.shared.lesions import label
from trainer.segment.metrics import CaseScore, score_case, summarise

if TYPE_CHECKING:
    from collections.abc import Callable

IN_PLANE = np.zeros((3, 3, 3), np.bool_)
IN_PLANE[1] = True
"""The 8 in-plane neighbours of a voxel of a stack (slices first), never across slices."""


@dataclass(frozen=True)
class Series:
    """One DWI series: its truth and the daemon's masks, stacked in the report's slice order."""

    name: str
    truth: npt.NDArray[np.bool_]
    found: npt.NDArray[np.bool_]
    restricted: npt.NDArray[np.bool_] | None
    adc: npt.NDArray[np.float32] | None
    voxel_ml: float


def _restricted_only(
    found: npt.NDArray[np.bool_], lesions: list[dict[str, Any]]
) -> npt.NDArray[np.bool_] | None:
    """The voxels of ``found``'s restricted lesions; None when a lesion has no ADC check.

    The series report numbers its lesions as `daemon.shared.lesions.label` numbers the stack.
    """
    labels, count = label(found)
    if count != len(lesions):
        msg = f"{count} lesions in the masks, {len(lesions)} in the report"
        raise ValueError(msg)
    checks = [lesion.get("adc") or {} for lesion in lesions]
    if not all(checks):
        return None
    keep = np.array([False, *(bool(check["restricted"]) for check in checks)])
    restricted: npt.NDArray[np.bool_] = keep[labels]
    return restricted


def _truth(path: Path) -> npt.NDArray[np.bool_]:
    """A true mask as a bool array: every pixel above 0.

    Synth writes the lesion's number there (docs/synth.md), the phantom 255.
    """
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0


def _adc_stack(
    reports: Path,
    report: dict[str, Any],
    documents: dict[str, dict[str, Any]],
    shape: tuple[int, ...],
) -> npt.NDArray[np.float32]:
    """The ADC at each of ``report``'s slices (NaN where none), as the daemon reads it."""
    adc = documents[report["adc_series"][0]["id"]]
    by_position = {round(i["slice_position"], 1): i["report_id"] for i in adc["adc_images"]}
    stack = np.full(shape, np.nan, np.float32)
    for z, entry in enumerate(report["slices"]):
        scan = by_position.get(round(entry["slice_position"], 1))
        values = None if scan is None else read_adc(reports / adc_name(scan))
        if values is not None and values.shape == shape[1:]:
            stack[z] = values
    return stack


def completed(
    restricted: npt.NDArray[np.bool_], values: npt.NDArray[np.float32], steps: int
) -> npt.NDArray[np.bool_]:
    """``restricted`` grown ``steps`` times to its in-plane neighbours whose ADC is restricted."""
    tissue = (values > REFERENCE_ADC[0]) & (values < RESTRICTED_ADC)  # NaN: False
    grown = restricted.copy()
    for _ in range(steps):
        grown |= ndimage.binary_dilation(grown, structure=IN_PLANE) & tissue
    return grown


@dataclass(frozen=True)
class Truth:
    """One DWI series' truth: its name, the truth mask file at each report slice, the voxel mL."""

    name: str
    series_uid: str
    mask_at: Callable[[dict[str, Any]], Path | None]
    """The mask file of a series report's ``slices`` entry; None: no lesion there."""
    voxel_ml: float


def _synth_mask(files: dict[str, Path], entry: dict[str, Any]) -> Path | None:
    return files.get(entry["sop_instance_uid"])


def _phantom_mask(
    positions: npt.NDArray[np.float64], spacing: float, folder: Path, entry: dict[str, Any]
) -> Path:
    k = int(np.argmin(np.abs(positions - entry["slice_position"])))
    if abs(float(positions[k]) - entry["slice_position"]) > spacing / 2:
        msg = f"no phantom slice at {entry['slice_position']} mm in {folder.name}"
        raise ValueError(msg)
    return folder / f"s{k + 1:03d}.png"


def synth_truth(data: Path) -> list[Truth]:
    """The DWI series of a `trainer.synth` ``--series`` folder (``series.json``)."""
    found = []
    for study in json.loads((data / "series.json").read_text("utf-8"))["studies"]:
        dwi = next(s for s in study["series"] if s["kind"] == "dwi")
        files = {s["b1000_sop_instance_uid"]: data / s["mask_file"] for s in dwi["lesion_slices"]}
        found.append(
            Truth(
                name=f"{study['case_id']} {dwi['label']}",
                series_uid=dwi["series_instance_uid"],
                mask_at=functools.partial(_synth_mask, files),
                voxel_ml=dwi["pixel_mm"] ** 2 * dwi["spacing_mm"] / 1000,
            )
        )
    return found


def phantom_truth(data: Path, masks: Path) -> list[Truth]:
    """The DWI series of `scripts/independent_phantom.py` ``studies DATA --masks MASKS``.

    ``truth.csv`` names each series' slice positions; slice k's mask is ``MASKS/<study>/sKKK.png``.
    A report slice takes the position nearest its own, within half a slice spacing.
    """
    found = []
    with (data / "truth.csv").open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["kind"] == "dwi"]
    for row in rows:
        positions = np.array([float(z) for z in row["slice_positions"].split()])
        pixel, slab = row["geometry"].split()[1:3]  # "160x160 1.44mm 5.8+0.4mm"
        spacing = sum(float(part) for part in slab.removesuffix("mm").split("+"))
        folder = masks / row["study"]

        found.append(
            Truth(
                name=f"{row['study']} {row['label']}",
                series_uid=row["series_uid"],
                mask_at=functools.partial(_phantom_mask, positions, spacing, folder),
                voxel_ml=float(pixel.removesuffix("mm")) ** 2 * spacing / 1000,
            )
        )
    return found


def read_series(data: Path, reports: Path, masks: Path | None = None) -> list[Series]:
    """Every DWI series of ``data`` whose report in ``reports`` has lesion maps.

    ``data``: a `trainer.synth` ``--series`` folder, or (with ``masks``) phantom studies.
    """
    documents, by_uid = {}, {}
    for path in (reports / "series").glob("*.json"):
        document = json.loads(path.read_text("utf-8"))
        documents[document["id"]] = document
        by_uid[document["series_instance_uid"]] = document
    truths = synth_truth(data) if masks is None else phantom_truth(data, masks)
    found_series = []
    for truth in truths:
        report = by_uid[truth.series_uid]
        if report.get("lesions") is None:
            continue
        found, true = [], []
        for entry in report["slices"]:
            mask = read_mask(reports / entry["lesion_mask"])
            if mask is None:
                msg = f"{entry['lesion_mask']} is not readable"
                raise ValueError(msg)
            found.append(mask)
            true_file = truth.mask_at(entry)
            true.append(np.zeros_like(mask) if true_file is None else _truth(true_file))
        stacked = np.stack(found)
        restricted = (
            None
            if report.get("adc_slices") is None
            else _restricted_only(stacked, report["lesions"])
        )
        found_series.append(
            Series(
                name=truth.name,
                truth=np.stack(true),
                found=stacked,
                restricted=restricted,
                adc=None
                if restricted is None
                else _adc_stack(reports, report, documents, stacked.shape),
                voxel_ml=truth.voxel_ml,
            )
        )
    return found_series


def scores(series: list[Series], kind: str, steps: int = 0) -> list[CaseScore]:
    """Each series scored with its ``map``, its ``restricted`` lesions, or those ``completed``.

    ``steps``: how far ``completed`` grows them (`completed`).
    """
    scored = []
    for one in series:
        predicted = one.found if kind == "map" else one.restricted
        if kind == "completed" and predicted is not None and one.adc is not None:
            predicted = completed(predicted, one.adc, steps)
        if predicted is None:
            continue
        voxel_ml = np.full(len(one.truth), one.voxel_ml)
        scored.append(score_case(one.name, one.truth, predicted, voxel_ml))
    return scored


def _figure(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def line(name: str, summary: dict[str, Any]) -> str:
    """One set's figures on one line."""
    return (
        f"  {name:10s} Dice mean {_figure(summary['dice_mean'])} (median "
        f"{_figure(summary['dice_median'])}); lesion F1 mean {_figure(summary['lesion_f1_mean'])}"
        f" (pooled {_figure(summary['lesion_f1_pooled'])}); detected "
        f"{summary['detected_lesions']} of {summary['true_lesions']}, false-positive lesions "
        f"{summary['false_positive_lesions']}; |volume difference| median "
        f"{_figure(summary['avd_ml_median'], 2)} mL; normal series clean "
        f"{_figure(summary['normal_clean_share'], 2)} of {summary['normal_cases']}"
    )


def main() -> None:
    """Read, score, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--cases", action="store_true", help="one line per infarct series")
    parser.add_argument(
        "--run",
        action="store_true",
        help="first run the daemon on FOLDER/data (copied to FOLDER/incoming) into FOLDER/reports",
    )
    parser.add_argument("--model", type=Path, help="with --run: the bundle (default: the default)")
    parser.add_argument(
        "--complete",
        type=int,
        default=0,
        metavar="N",
        help="also score the restricted lesions grown N pixels through restricted ADC",
    )
    args = parser.parse_args()
    for folder in args.folders:
        if args.run:
            from series_volumes import daemon_reports  # noqa: PLC0415 - a sibling script

            if (folder / "incoming").exists():
                parser.error(f"{folder}/incoming exists: the daemon ran there; drop --run")
            daemon_reports(folder / "data", folder, args.model)
        masks = folder / "masks" if (folder / "masks").is_dir() else None
        series = read_series(folder / "data", folder / "reports", masks)
        print(f"{folder}: {len(series)} DWI series with lesion maps")
        kinds = ("map", "restricted", "completed") if args.complete else ("map", "restricted")
        for name in kinds:
            scored = scores(series, name, args.complete)
            if scored:
                print(line(name, summarise(scored)))
            if args.cases:
                for score in scored:
                    if not score.normal:
                        print(
                            f"    {score.case_id:40s} Dice {score.dice:.3f} lesions "
                            f"{score.detected}/{score.true_lesions} fp {score.false_positives}"
                            f" {score.true_ml:.2f} -> {score.predicted_ml:.2f} mL"
                        )


if __name__ == "__main__":
    main()
