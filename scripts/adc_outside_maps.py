"""How much restricted ADC each synthetic study shows, map or no map: can the ADC alone reassure?

``.venv/bin/python scripts/adc_outside_maps.py FOLDER [FOLDER...]``

Each FOLDER is the ``--out`` of `scripts/series_volumes.py` (its ``data/series.json`` says which
studies hold an infarct; ``reports/`` holds the daemon's series reports and the ADC values files
of the ADC series, `daemon.lesionmaps.files`). For every DWI series with a linked ADC series, the
ADC of each slice is read at the slice's position, and over the tissue (ADC above 0 and below
1,500 x 1e-6 mm²/s, at least two pixels inside the head's edge) the script prints:

* ``low share``: the share of tissue voxels below 620 (the ischaemic-core threshold,
  `daemon.series.adc.RESTRICTED_ADC`): noise puts normal tissue there at a low SNR;
* ``largest``: the largest 3-D connected cluster of such voxels (`daemon.shared.lesions.label`),
  in voxels;
* the series report's ``finding`` and the truth (infarct volume in mL, or normal).

One line per study, normal studies first, each group by ``low share``. A rule that turned an
``indeterminate`` series into ``no_acute_infarct`` from the ADC alone would have to keep every
infarct (its cluster) above every reassured normal study; docs/daemon.md (*Restricted diffusion*)
gives what this shows. Needs scipy (the ``[train]`` extra). Research use only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from daemon.lesionmaps.files import adc_name, read_adc
from daemon.series.adc import REFERENCE_ADC, RESTRICTED_ADC
from daemon.shared.lesions import label

NORMAL = "No acute infarct"
EDGE_PX = 2
"""Tissue within this many pixels of the background is left out (partial volume at the edge)."""


def restricted(stack: list[npt.NDArray[np.float32]]) -> tuple[float, int]:
    """The share of tissue voxels below `RESTRICTED_ADC` and the largest cluster of them."""
    values = np.stack(stack)
    low_adc, high_adc = REFERENCE_ADC
    inside = np.stack([ndimage.binary_erosion(v > low_adc, iterations=EDGE_PX) for v in values])
    tissue = inside & (values < high_adc)
    below = tissue & (values < RESTRICTED_ADC)
    labels, count = label(below)
    largest = int(np.bincount(labels.reshape(-1))[1:].max()) if count else 0
    return float(below.sum() / max(int(tissue.sum()), 1)), largest


def studies(folder: Path) -> list[dict[str, Any]]:
    """One row per DWI series of ``folder`` with its ADC read on every slice."""
    reports = folder / "reports"
    found = (json.loads(path.read_text("utf-8")) for path in reports.glob("series/*.json"))
    documents = {document["id"]: document for document in found}
    truth = {
        series["series_instance_uid"]: series
        for study in json.loads((folder / "data/series.json").read_text("utf-8"))["studies"]
        for series in study["series"]
    }
    rows = []
    for document in documents.values():
        if document["status"] not in ("ok", "incomplete") or not document["adc_series"]:
            continue
        adc = documents[document["adc_series"][0]["id"]]
        by_position = {round(i["slice_position"], 1): i["report_id"] for i in adc["adc_images"]}
        stack = []
        for entry in document["slices"]:
            scan = by_position.get(round(entry["slice_position"], 1))
            values = None if scan is None else read_adc(reports / adc_name(scan))
            if values is None:
                break
            stack.append(values)
        else:
            share, largest = restricted(stack)
            series = truth[document["series_instance_uid"]]
            rows.append(
                {
                    "folder": folder.name,
                    "infarct": series["label"] != NORMAL,
                    "volume_ml": series["mask_volume_ml"],
                    "finding": document["finding"],
                    "share": share,
                    "largest": largest,
                }
            )
    return rows


def main() -> None:
    """Read each folder, print one line per study."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    rows = [row for folder in parser.parse_args().folders for row in studies(folder)]
    for row in sorted(rows, key=lambda r: (r["infarct"], r["share"])):
        truth = f"infarct {row['volume_ml']:6.2f} mL" if row["infarct"] else "normal"
        print(
            f"{row['folder']:24s} {truth:18s} finding {row['finding']:16s} "
            f"low share {row['share']:.4f}  largest {row['largest']:6d} voxels"
        )


if __name__ == "__main__":
    main()
