"""Restricted diffusion in a series' lesions, from the ADC map of its study, and what it decides.

An acute infarct restricts diffusion: bright on b1000 **and** dark on the ADC map, below about
`RESTRICTED_ADC` (620 x 1e-6 mm²/s, the ischaemic-core threshold of commercial DWI software).
Bright on b1000 with a normal or high ADC is something else: T2 shine-through, white-matter
hyperintensities, an old infarct, choroid plexus, a susceptibility artefact. A reader checks the
ADC map before calling an infarct; so does the series report when the study's ADC series is there.

**The ADC of each slice.** The DWI series' ADC series is the one the tracker links (same study,
same orientation, shared slice positions: ``adc_series`` of the report). Each DWI slice takes the
ADC image at its own slice position (to 0.1 mm) whose values file the scan worker wrote
(`daemon.lesionmaps.files.adc_name`: an ADC map scanned by a bundle with a segmenter); an ADC image
of another matrix than the slice's mask is not used.

**Each lesion** (`daemon.series.lesions`) gets ``adc``, over its voxels that have an ADC value
(null when none has): ``median`` (1e-6 mm²/s), ``restricted_ml`` (the volume of its voxels below
`RESTRICTED_ADC`; null when the voxel volume is unknown), ``restricted_share`` (their share),
``reference_share`` (the same share for the tissue on the same slices outside every lesion:
`REFERENCE_ADC`, neither background nor CSF) and ``restricted``: true when the lesion's share
exceeds the reference's by at least `MIN_EXCESS`. Noise spreads the ADC of normal tissue below
620 too, and as much inside a look-alike as around it: the reference measures it on the same
slices. A mask drawn wider than the infarct still has far more restricted voxels than the
tissue around it.

**The series' finding** (`finding`): the classifier's rule (`daemon.series.assemble`), then

* a restricted lesion makes it ``acute_infarct``, whatever the classifier said of its slices
  (what the map marks is bright on b1000 and restricted: the definition; a classifier that
  called those slices normal missed it, and the slices' own reports keep its answer);
* ``acute_infarct`` without any restricted lesion becomes ``indeterminate`` when every slice had
  its ADC (the classifier saw an infarct the ADC does not confirm);
* otherwise (no ADC series, or slices without one) the classifier's finding stands.

``adc_slices`` in the series report says on how many slices the ADC was read (null: no ADC
series linked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from daemon.lesionmaps.files import adc_name, read_adc

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    import numpy.typing as npt

    from daemon.scan.slices import SliceRecord

RESTRICTED_ADC = 620.0
"""1e-6 mm²/s: below this, diffusion is restricted (the ischaemic-core threshold)."""
MIN_EXCESS = 0.1
"""A lesion is restricted when the share of its voxels below `RESTRICTED_ADC` exceeds that of the
tissue around it on the same slices (`REFERENCE_ADC`) by at least this much."""
REFERENCE_ADC = (0.0, 1500.0)
"""1e-6 mm²/s: the ADC values that count as tissue for the reference share (above 0: not the
background; below 1,500: not CSF)."""
_POSITION_DECIMALS = 1


def adc_by_slice(
    reports: Path, slices: list[SliceRecord], adc_images: Iterable[SliceRecord]
) -> list[npt.NDArray[np.float32] | None]:
    """The ADC values at each slice's position (module docstring), None where there are none."""
    by_position: dict[float, str] = {}
    for record in sorted(adc_images, key=lambda r: r.key):
        if record.slice_position is not None:
            by_position.setdefault(round(record.slice_position, _POSITION_DECIMALS), record.scan_id)
    found: list[npt.NDArray[np.float32] | None] = []
    for record in slices:
        position = record.slice_position
        scan = None if position is None else by_position.get(round(position, _POSITION_DECIMALS))
        found.append(None if scan is None else read_adc(reports / adc_name(scan)))
    return found


def lesion_adc(
    values: npt.NDArray[np.float32],
    reference: npt.NDArray[np.float32],
    voxel_ml: float | None,
) -> dict[str, Any] | None:
    """A lesion's ``adc`` (module docstring).

    ``values``: the ADC of its voxels that have one; ``reference``: the ADC of the tissue on the
    same slices outside every lesion (`REFERENCE_ADC`).
    """
    if values.size == 0:
        return None
    low = int((values < RESTRICTED_ADC).sum())
    share = low / values.size
    noise = float((reference < RESTRICTED_ADC).mean()) if reference.size else 0.0
    return {
        "median": round(float(np.median(values)), 1),
        "restricted_ml": None if voxel_ml is None else round(low * voxel_ml, 4),
        "restricted_share": round(share, 4),
        "reference_share": round(noise, 4),
        "restricted": share - noise >= MIN_EXCESS,
    }


def checked_finding(finding: str, slice_findings: list[str], fields: dict[str, Any] | None) -> str:
    """The series' finding once its lesions' ADC is known (module docstring)."""
    if not fields or not fields.get("adc_slices"):
        return finding
    if any((lesion.get("adc") or {}).get("restricted") for lesion in fields.get("lesions") or []):
        return "acute_infarct"
    if finding == "acute_infarct" and fields["adc_slices"] == len(slice_findings):
        return "indeterminate"
    return finding
