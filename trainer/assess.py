"""The full report of one held-out set: what `metrics.json` holds for ``test`` and ``shifted_test``.

Every figure is computed on the calibrated probabilities (what reports serve), except
``ece_uncalibrated``. Per set::

    case, slice            n, top1, top3, ece, ece_uncalibrated, no_acute_infarct_recall,
                           per_class_recall, confusion (`daemon.shared.metrics.evaluate`)
    per_format             {png|jpeg|dicom|...: {slices, slice_top1, slice_top3,
                           no_acute_infarct_recall, cases, case_top1, case_top3}}
    findings               `trainer.calibration.finding_rates` of the slices
    in_scope               {n, refused}: DWI slices wrongly refused (two-output models only)
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from daemon.shared.dataset import file_format
from daemon.shared.metrics import (
    aggregate_cases,
    evaluate,
    expected_calibration_error,
    top_k_accuracy,
)
from trainer.calibration import finding_rates, findings, scope_rates

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

NEGATIVE_CLASS = "No acute infarct"


def _recall(probs: npt.NDArray[np.floating], truth: npt.NDArray[np.integer], negative: int) -> Any:
    mask = truth == negative
    if negative < 0 or not mask.any():
        return None
    return float(np.mean(probs[mask].argmax(axis=1) == negative))


def _per_format(  # noqa: PLR0917  (one set's arrays)
    probs: npt.NDArray[np.floating],
    truth: npt.NDArray[np.integer],
    cases: Sequence[str],
    formats: Sequence[str],
    negative: int,
    top_k: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    case_probs, case_truth, case_ids = aggregate_cases(probs, truth, cases)
    per_case: dict[str, Counter[str]] = {}
    for case, fmt in zip(cases, formats, strict=True):
        per_case.setdefault(case, Counter())[fmt] += 1
    case_format = [per_case[c].most_common(1)[0][0] for c in case_ids]
    for fmt in sorted(set(formats)):
        rows = np.array([f == fmt for f in formats])
        crow = np.array([f == fmt for f in case_format], bool)
        out[fmt] = {
            "slices": int(rows.sum()),
            "slice_top1": top_k_accuracy(probs[rows], truth[rows], 1),
            f"slice_top{top_k}": top_k_accuracy(probs[rows], truth[rows], top_k),
            "no_acute_infarct_recall": _recall(probs[rows], truth[rows], negative),
            "cases": int(crow.sum()),
            "case_top1": top_k_accuracy(case_probs[crow], case_truth[crow], 1)
            if crow.any()
            else None,
            f"case_top{top_k}": top_k_accuracy(case_probs[crow], case_truth[crow], top_k)
            if crow.any()
            else None,
        }
    return out


def assess(
    *,
    raw: npt.NDArray[np.floating],
    calibrated: npt.NDArray[np.floating],
    truth: npt.NDArray[np.integer],
    cases: Sequence[str],
    files: Sequence[str],
    classes: Sequence[str],
    thresholds: dict[str, float],
    scope_scores: npt.NDArray[np.floating] | None,
    scope_threshold: float | None,
    top_k: int,
    bins: int,
) -> dict[str, Any]:
    """The report of one set (see the module docstring)."""
    negative = list(classes).index(NEGATIVE_CLASS) if NEGATIVE_CLASS in classes else -1
    out = evaluate(calibrated, truth, list(cases), classes, top_k=top_k, bins=bins)
    raw_case, _, _ = aggregate_cases(raw, truth, list(cases))
    cal_case, cal_truth, _ = aggregate_cases(calibrated, truth, list(cases))
    for level, (p_raw, p_cal, t) in (
        ("slice", (raw, calibrated, truth)),
        ("case", (raw_case, cal_case, cal_truth)),
    ):
        out[level]["ece_uncalibrated"] = expected_calibration_error(p_raw, t, bins)
        out[level]["no_acute_infarct_recall"] = _recall(p_cal, t, negative)
    formats = [file_format(f) for f in files]
    out["per_format"] = _per_format(calibrated, truth, list(cases), formats, negative, top_k)
    if negative >= 0:
        out["findings"] = finding_rates(findings(calibrated, negative, thresholds), truth, negative)
    if scope_scores is not None and scope_threshold is not None:
        out["in_scope"] = {"wrongly_refused": scope_rates(scope_scores, scope_threshold)["refused"]}
        out["in_scope"]["n"] = len(scope_scores)
    return out
