"""The daemon's series lesion maps against the synthetic truth, voxel by voxel.

``.venv/bin/python scripts/series_maps.py FOLDER [FOLDER...]``

Each FOLDER is the ``--out`` of `scripts/series_volumes.py`: ``data/series.json`` and the masks
beside the b1000 images are the truth; ``reports/`` holds the daemon's series reports and the mask
of every slice (`daemon.lesionmaps.files`). Each DWI series is one case: its slices' masks stacked
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

The voxel volume is the DWI series' ``pixel_mm``² x ``spacing_mm`` (series.json). Prints one
line per set and folder; with ``--cases``, one line per infarct series. Needs the ``[train]``
extra. Research use only.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage

from daemon.lesionmaps.files import adc_name, read_adc, read_mask
from daemon.series.adc import REFERENCE_ADC, RESTRICTED_ADC
from daemon.shared.lesions import label
from trainer.segment.metrics import CaseScore, score_case, summarise

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


def _restricted_only(found: npt.NDArray[np.bool_], lesions: list[dict[str, Any]]) -> Any:
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
    return keep[labels]


def _truth(path: Path) -> npt.NDArray[np.bool_]:
    """A synth mask (docs/synth.md: the lesion's number inside, 0 outside) as a bool array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0


def _adc_stack(
    reports: Path, report: dict[str, Any], documents: dict[str, dict[str, Any]], shape: Any
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


def read_series(data: Path, reports: Path) -> list[Series]:
    """Every DWI series of the synth folder ``data`` whose report in ``reports`` has lesion maps."""
    documents, by_uid = {}, {}
    for path in (reports / "series").glob("*.json"):
        document = json.loads(path.read_text("utf-8"))
        documents[document["id"]] = document
        by_uid[document["series_instance_uid"]] = document
    found_series = []
    for study in json.loads((data / "series.json").read_text("utf-8"))["studies"]:
        dwi = next(s for s in study["series"] if s["kind"] == "dwi")
        report = by_uid[dwi["series_instance_uid"]]
        if report.get("lesions") is None:
            continue
        truth_files = {s["b1000_sop_instance_uid"]: s["mask_file"] for s in dwi["lesion_slices"]}
        found, truth = [], []
        for entry in report["slices"]:
            mask = read_mask(reports / entry["lesion_mask"])
            if mask is None:
                msg = f"{entry['lesion_mask']} is not readable"
                raise ValueError(msg)
            found.append(mask)
            true_file = truth_files.get(entry["sop_instance_uid"])
            truth.append(np.zeros_like(mask) if true_file is None else _truth(data / true_file))
        stacked = np.stack(found)
        restricted = (
            None
            if report.get("adc_slices") is None
            else _restricted_only(stacked, report["lesions"])
        )
        found_series.append(
            Series(
                name=f"{study['case_id']} {dwi['label']}",
                truth=np.stack(truth),
                found=stacked,
                restricted=restricted,
                adc=None
                if restricted is None
                else _adc_stack(reports, report, documents, stacked.shape),
                voxel_ml=dwi["pixel_mm"] ** 2 * dwi["spacing_mm"] / 1000,
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
        "--complete",
        type=int,
        default=0,
        metavar="N",
        help="also score the restricted lesions grown N pixels through restricted ADC",
    )
    args = parser.parse_args()
    for folder in args.folders:
        series = read_series(folder / "data", folder / "reports")
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
