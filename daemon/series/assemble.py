"""The series report: from the images of one series to one document, by documented rules.

Pure functions over `daemon.scan.slices.SliceRecord` s, the same whether the images were scanned
just now or read back from their reports after a restart (docs/daemon.md, "Series").

**What each image is.** An image with a prediction (status ``ok``) is an analysed *slice*. An image
``not_analysed`` for ``NOT_B1000`` with a b-value of at most `B0_MAX` is a *b0 image*; one whose
ImageType or series description names an ADC map is an *ADC image*; any other ``not_analysed``
image, and every image whose report is an error, is listed under ``other_images``. Only slices
are analysed; the rest are listed.

**Status.** ``ok``: slices, no gap. ``incomplete``: slices, with a gap in the InstanceNumbers (of
every image of the series; 1..ImagesInAcquisition when the header gives it, else between the
lowest and the highest number) or in the slice positions (a step between neighbouring positions
over `GAP_FACTOR` times the median step, with at least three): ``missing`` lists them. The
positions are those of the slices and of the images that arrived in their place but were refused
by the image check (``OUT_OF_SCOPE_IMAGE``) or could not be read (an error report): such an image
is listed in ``other_images``, not missing. b0 images and other b-values are left out: they share
the positions of the b1000 images and would hide one that never arrived.
``not_analysed``: no slice (an ADC, T1, FLAIR, CT... series, or only b0 images): ``reason`` is the
most frequent reason of its images (an ADC series: ``NOT_DWI``, and ``dwi_series`` names the DWI
series of the same study with the same geometry). ``error``: every image got an error report.

**Finding.** Each slice: its image report's ``prediction.finding`` (the bundle's calibrated
thresholds, `daemon.scan.decision`); for a report without one (written before schema 1.1):
``acute_infarct`` when its most probable label is a location with a probability of at least
`CONFIDENT`, ``no_acute_infarct`` when it is `NO_INFARCT` with at least `CONFIDENT`, else
``indeterminate``. The series: ``acute_infarct`` when any slice is (one
confident slice suffices); else ``no_acute_infarct`` when every slice is; else ``indeterminate``;
then, when the study's ADC series was read for the lesion map, checked against restricted
diffusion (`daemon.series.adc`).
``locations`` has one entry per location label seen on a confident slice: the slices that show it
(indices into ``slices``; a lesion seen on adjacent slices is one location) and its highest
probability (``basis``: ``confident_slices``); then one per label of a lesion the ADC found
restricted that no confident slice names (the lesion's slices, the label's highest probability on
them; ``basis``: ``restricted_lesion``): a series made acute by its ADC says where. A
``not_analysed`` or ``error`` series has no finding (null) and no location.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any

from daemon.series.adc import checked_finding

if TYPE_CHECKING:
    from collections.abc import Iterable

    from daemon.scan.slices import SliceRecord

SCHEMA_VERSION = "1.2"
NO_INFARCT = "No acute infarct"
"""The model's negative class (the first label of every infarctwatch bundle)."""
CONFIDENT = 0.5
"""A slice's most probable label counts as its finding from this probability on."""
B0_MAX = 50.0
"""A b-value (s/mm²) up to this is a b0 image (scanners write 0, some 5 or 50)."""
GAP_FACTOR = 1.5
"""A step between neighbouring slices over this many times the median step is a gap."""
POSITION_DECIMALS = 2
"""Slice positions are compared to 0.01 mm (the same slice written twice is one position)."""

_ADC = re.compile(r"(?<![A-Z])E?ADC(?![A-Z])", re.IGNORECASE)


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting ``slice2`` before ``slice10`` (digit runs compare as numbers)."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.lower())
        for part in re.split(r"(\d+)", name)
        if part
    )


def is_adc(record: SliceRecord) -> bool:
    """True when the image's ImageType or series description names an ADC map."""
    texts = (*record.image_type, record.series_description or "")
    return any(_ADC.search(text) for text in texts)


def kind_of(record: SliceRecord) -> str:
    """``slice``, ``b0``, ``adc`` or ``other`` (see the module docstring)."""
    if record.status == "ok":
        return "slice"
    if record.status == "not_analysed" and is_adc(record):
        return "adc"
    if (
        record.status == "not_analysed"
        and record.reason_code == "NOT_B1000"
        and record.b_value is not None
        and record.b_value <= B0_MAX
    ):
        return "b0"
    return "other"


def order(records: Iterable[SliceRecord]) -> list[SliceRecord]:
    """``records`` in slice order.

    Along the slice normal when every image has a position; else by InstanceNumber when every
    image has one; else by the natural order of the file names.
    """
    items = list(records)
    if items and all(r.slice_position is not None for r in items):
        return sorted(items, key=lambda r: (r.slice_position, r.instance_number or 0, r.key))
    if items and all(r.instance_number is not None for r in items):
        return sorted(items, key=lambda r: (r.instance_number, r.key))
    return sorted(items, key=lambda r: (natural_key(r.name), r.key))


def slice_finding(record: SliceRecord) -> str:
    """One slice's finding (see the module docstring)."""
    if record.finding is not None:
        return record.finding
    if record.label is None or record.probability is None or record.probability < CONFIDENT:
        return "indeterminate"
    return "no_acute_infarct" if record.label == NO_INFARCT else "acute_infarct"


def missing_instances(records: Iterable[SliceRecord]) -> list[int]:
    """InstanceNumbers absent from the series (see the module docstring)."""
    items = list(records)
    numbers = {r.instance_number for r in items if r.instance_number is not None}
    if not numbers:
        return []
    expected = max((r.expected for r in items if r.expected), default=None)
    low, high = (1, max(expected, *numbers)) if expected else (min(numbers), max(numbers))
    return [n for n in range(low, high + 1) if n not in numbers]


def _at_slice_level(record: SliceRecord, kind: str) -> bool:
    """A slice, or an image at a slice's place that the image check refused or could not read."""
    if kind == "slice":
        return True
    return kind == "other" and (
        record.status == "error" or record.reason_code == "OUT_OF_SCOPE_IMAGE"
    )


def missing_positions(slices: list[SliceRecord]) -> list[float]:
    """Slice positions absent between ``slices`` (see the module docstring)."""
    positions = sorted(
        {round(r.slice_position, POSITION_DECIMALS) for r in slices if r.slice_position is not None}
    )
    if len(positions) < 3:
        return []
    steps = [b - a for a, b in itertools.pairwise(positions)]
    spacing = statistics.median(steps)
    if spacing <= 0:
        return []
    missing: list[float] = []
    for start, step in zip(positions, steps, strict=False):
        if step > GAP_FACTOR * spacing:
            count = round(step / spacing) - 1
            missing += [round(start + spacing * (i + 1), POSITION_DECIMALS) for i in range(count)]
    return missing


def _place(record: SliceRecord) -> dict[str, Any]:
    """What places an image in its series, for every entry of a series report."""
    return {
        "sop_instance_uid": record.sop_uid,
        "instance_number": record.instance_number,
        "slice_position": record.slice_position,
        "b_value": record.b_value,
        "report_id": record.scan_id,
        "frame": record.frame,
    }


def _image(record: SliceRecord) -> dict[str, Any]:
    return {
        **_place(record),
        "status": record.status,
        "code": record.reason_code or record.error_code,
    }


def _slice(record: SliceRecord, *, maps: bool) -> dict[str, Any]:
    entry = {
        **_place(record),
        "finding": slice_finding(record),
        "label": record.label,
        "probability": record.probability,
    }
    if maps:  # since 1.1, a series with lesion maps: the slice's mask file
        entry["lesion_mask"] = record.lesion_mask
    return entry


def analysed_slices(records: Iterable[SliceRecord]) -> list[SliceRecord]:
    """The slices of a series in the order of its report's ``slices``."""
    return [r for r in order(records) if kind_of(r) == "slice"]


def _locations(
    slices: list[SliceRecord], lesions: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Confident slices' labels first, then the labels of restricted lesions not among them."""
    found: dict[str, dict[str, Any]] = {}
    for index, record in enumerate(slices):
        if slice_finding(record) != "acute_infarct" or record.label in (None, NO_INFARCT):
            continue  # (an infarct finding whose single most probable label is the negative one)
        assert record.label is not None  # noqa: S101 - acute_infarct has a label
        assert record.probability is not None  # noqa: S101 - and a probability
        entry = found.setdefault(record.label, {"label": record.label, "slices": [], "p": 0.0})
        entry["slices"].append(index)
        entry["p"] = max(entry["p"], record.probability)
    ranked = sorted(found.values(), key=lambda e: (-e["p"], e["label"]))
    located = [_location(e, "confident_slices") for e in ranked]
    confirmed: dict[str, dict[str, Any]] = {}
    for lesion in (lesions or {}).get("lesions") or []:
        label = lesion.get("label")
        if not (lesion.get("adc") or {}).get("restricted") or label in (None, NO_INFARCT, *found):
            continue
        entry = confirmed.setdefault(label, {"label": label, "slices": set(), "p": 0.0})
        for index in (part["index"] for part in lesion["slices"]):
            entry["slices"].add(index)
            entry["p"] = max(entry["p"], dict(slices[index].probabilities).get(label, 0.0))
    for entry in confirmed.values():
        entry["slices"] = sorted(entry["slices"])
    ranked = sorted(confirmed.values(), key=lambda e: (-e["p"], e["label"]))
    return located + [_location(e, "restricted_lesion") for e in ranked]


def _location(entry: dict[str, Any], basis: str) -> dict[str, Any]:
    return {
        "label": entry["label"],
        "slices": entry["slices"],
        "probability": entry["p"],
        "basis": basis,
    }


def series_finding(slices: list[SliceRecord], lesions: dict[str, Any] | None = None) -> str:
    """The series' finding (see the module docstring).

    Checked against the ADC of its lesions when ``lesions`` (the lesion fields) say it was read
    (`daemon.series.adc.checked_finding`).
    """
    findings = [slice_finding(r) for r in slices]
    return checked_finding(classifier_finding(findings), findings, lesions)


def classifier_finding(findings: list[str]) -> str:
    """The series' finding from its slices' findings alone, before any ADC check."""
    if "acute_infarct" in findings:
        return "acute_infarct"
    if findings and all(f == "no_acute_infarct" for f in findings):
        return "no_acute_infarct"
    return "indeterminate"


def _not_analysed_reason(images: list[SliceRecord]) -> dict[str, str]:
    if images and sum(is_adc(r) for r in images) * 2 >= len(images):
        return {"code": "NOT_DWI", "message": "an ADC series (ImageType or description says ADC)"}
    reasons = Counter(r.reason_code for r in images if r.reason_code)
    if not reasons:
        return {"code": "NOT_DWI", "message": "no image of the series is a DWI b1000 slice"}
    code, count = reasons.most_common(1)[0]
    message = next(r.reason_message for r in images if r.reason_code == code) or code
    return {"code": code, "message": f"{count} of {len(images)} images: {message}"}


def _first(records: list[SliceRecord], attribute: str) -> Any:
    return next((getattr(r, attribute) for r in records if getattr(r, attribute) is not None), None)


def build_series_report(
    series_id: str,
    records: list[SliceRecord],
    *,
    folder: str | None,
    duplicates: list[SliceRecord],
    timing: dict[str, Any],
    links: dict[str, Any],
    generator: dict[str, str],
    disclaimer: str,
    lesions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The series report document (``schemas/series-report.schema.json``).

    ``links``: ``adc_series`` (a list) and ``dwi_series`` (or None), from the tracker, which
    knows the other series of the study. ``lesions``: the lesion fields
    (`daemon.series.lesions.lesion_fields`), placed after ``locations``; None: the series
    has no lesion map (no field, and no ``lesion_mask`` in ``slices``).
    """
    ordered = order(records)
    kinds = {r.key: kind_of(r) for r in ordered}
    slices = [r for r in ordered if kinds[r.key] == "slice"]
    status, reason, error, missing = "ok", None, None, None
    if not slices and all(r.status == "error" for r in ordered):
        codes = Counter(r.error_code or "INTERNAL_ERROR" for r in ordered)
        code = codes.most_common(1)[0][0]
        status = "error"
        error = {"code": code, "message": f"none of the {len(ordered)} images could be read"}
    elif not slices:
        status, reason = "not_analysed", _not_analysed_reason(ordered)
    else:
        received = [r for r in ordered if _at_slice_level(r, kinds[r.key])]
        gaps = {
            "instance_numbers": missing_instances(ordered),
            "positions": missing_positions(received),
        }
        if gaps["instance_numbers"] or gaps["positions"]:
            status, missing = "incomplete", gaps
    analysed = status in ("ok", "incomplete")
    maps = lesions is not None
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "series",
        "id": series_id,
        "status": status,
        "reason": reason,
        "error": error,
        "missing": missing,
        "study_instance_uid": _first(ordered, "study_uid"),
        "series_instance_uid": _first(ordered, "series_uid"),
        "folder": folder,
        "modality": _first(ordered, "modality"),
        "series_description": _first(ordered, "series_description"),
        "series_number": _first(ordered, "series_number"),
        "manufacturer": _first(ordered, "manufacturer"),
        "images": len(ordered),
        "duplicates": len(duplicates),
        "expected_images": max((r.expected for r in ordered if r.expected), default=None),
        "finding": series_finding(slices, lesions) if analysed else None,
        "locations": _locations(slices, lesions) if analysed else [],
        **(lesions or {}),
        "slices": [_slice(r, maps=maps) for r in slices],
        "b0_images": [_image(r) for r in ordered if kinds[r.key] == "b0"],
        "adc_images": [_image(r) for r in ordered if kinds[r.key] == "adc"],
        "other_images": [_image(r) for r in ordered if kinds[r.key] == "other"],
        "duplicate_images": [_image(r) for r in sorted(duplicates, key=lambda r: r.scan_id)],
        "adc_series": links.get("adc_series", []),
        "dwi_series": links.get("dwi_series"),
        "model": _first(slices, "model") or _first(ordered, "model"),
        "timing": timing,
        "generator": generator,
        "disclaimer": disclaimer,
    }
