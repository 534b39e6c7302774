"""Segmentation metrics per case, with the ISLES'22 definitions.

A case's slices are stacked (slice order) into one volume of input-square planes; its lesions are
the 3-D connected parts of that stack (`daemon.shared.lesions.label`: 8-connected in a slice, face
connected through the slab). Per case:

* **Dice** ``2 |T & P| / (|T| + |P|)`` over the stack, on cases with a true lesion;
* **lesion-wise F1**: a true lesion is detected (a true positive) when at least one predicted
  voxel overlaps it, else it is a false negative; a predicted lesion that overlaps no true lesion
  is a false positive; ``F1 = 2 TP / (2 TP + FP + FN)`` (cases with a true lesion);
* **absolute volume difference** ``|V_pred - V_true|`` in mL, each volume the sum over slices of
  voxel count x that slice's voxel volume (input-pixel area x slice thickness);
* **lesion count difference** ``n_pred - n_true`` (and its absolute value);
* on normal cases (no true lesion): whether no lesion is predicted, and the false-positive volume.

`summarise` reduces the per-case figures to a split's numbers (means, medians, shares).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from daemon.shared.lesions import label

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt


@dataclass(frozen=True)
class CaseScore:
    """The figures of one case (see the module docstring); NaN where not defined."""

    case_id: str
    slices: int
    true_lesions: int
    predicted_lesions: int
    dice: float
    detected: int
    false_positives: int
    f1: float
    true_ml: float
    predicted_ml: float

    @property
    def normal(self) -> bool:
        """The case has no true lesion."""
        return self.true_lesions == 0

    @property
    def avd_ml(self) -> float:
        """Absolute volume difference, mL."""
        return abs(self.predicted_ml - self.true_ml)

    @property
    def count_difference(self) -> int:
        """Predicted minus true lesion count."""
        return self.predicted_lesions - self.true_lesions


def dice(truth: npt.NDArray[Any], predicted: npt.NDArray[Any]) -> float:
    """Dice of two masks; NaN when both are empty."""
    t, p = np.asarray(truth, bool), np.asarray(predicted, bool)
    total = int(t.sum()) + int(p.sum())
    return math.nan if total == 0 else 2.0 * int((t & p).sum()) / total


def lesion_detection(
    truth: npt.NDArray[Any], predicted: npt.NDArray[Any]
) -> tuple[int, int, int, int]:
    """``(true lesions, predicted lesions, detected true lesions, false-positive lesions)``."""
    t_labels, n_true = label(truth)
    p_labels, n_pred = label(predicted)
    overlap = (t_labels > 0) & (p_labels > 0)
    detected = len(np.unique(t_labels[overlap]))
    matched = len(np.unique(p_labels[overlap]))
    return n_true, n_pred, detected, n_pred - matched


def f1_score(detected: int, false_positives: int, missed: int) -> float:
    """``2 TP / (2 TP + FP + FN)``; NaN when all three are zero."""
    denominator = 2 * detected + false_positives + missed
    return math.nan if denominator == 0 else 2.0 * detected / denominator


def volume_ml(mask: npt.NDArray[Any], voxel_ml: npt.NDArray[Any]) -> float:
    """Volume of a (slices, H, W) mask whose slice ``z`` has voxels of ``voxel_ml[z]`` mL."""
    counts = np.asarray(mask, bool).reshape(len(voxel_ml), -1).sum(axis=1)
    return float(np.dot(counts, np.asarray(voxel_ml, np.float64)))


def score_case(
    case_id: str,
    truth: npt.NDArray[Any],
    predicted: npt.NDArray[Any],
    voxel_ml: npt.NDArray[Any],
) -> CaseScore:
    """The figures of one case from its stacked ``(slices, H, W)`` truth and prediction."""
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    n_true, n_pred, detected, false_positives = lesion_detection(truth, predicted)
    return CaseScore(
        case_id=case_id,
        slices=len(truth),
        true_lesions=n_true,
        predicted_lesions=n_pred,
        dice=dice(truth, predicted) if n_true else math.nan,
        detected=detected,
        false_positives=false_positives,
        f1=f1_score(detected, false_positives, n_true - detected) if n_true else math.nan,
        true_ml=volume_ml(truth, voxel_ml),
        predicted_ml=volume_ml(predicted, voxel_ml),
    )


def _stat(values: Sequence[float], how: str) -> float | None:
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return None
    return float(np.median(clean) if how == "median" else np.mean(clean))


def summarise(scores: Sequence[CaseScore]) -> dict[str, Any]:
    """A split's figures from its cases' (None where no case qualifies)."""
    lesion = [s for s in scores if not s.normal]
    normal = [s for s in scores if s.normal]
    detected = sum(s.detected for s in lesion)
    true_total = sum(s.true_lesions for s in lesion)
    false_positives = sum(s.false_positives for s in scores)
    fp_ml = [s.predicted_ml for s in normal]
    return {
        "cases": len(scores),
        "lesion_cases": len(lesion),
        "normal_cases": len(normal),
        "dice_mean": _stat([s.dice for s in lesion], "mean"),
        "dice_median": _stat([s.dice for s in lesion], "median"),
        "lesion_f1_mean": _stat([s.f1 for s in lesion], "mean"),
        "lesion_f1_pooled": (
            None
            if not scores or (true_total + false_positives) == 0
            else f1_score(detected, false_positives, true_total - detected)
        ),
        "avd_ml_median": _stat([s.avd_ml for s in lesion], "median"),
        "avd_ml_mean": _stat([s.avd_ml for s in lesion], "mean"),
        "count_difference_mean": _stat([float(s.count_difference) for s in lesion], "mean"),
        "count_difference_abs_mean": _stat(
            [float(abs(s.count_difference)) for s in lesion], "mean"
        ),
        "true_lesions": true_total,
        "detected_lesions": detected,
        "false_positive_lesions": false_positives,
        "normal_clean_share": (
            None if not normal else sum(s.predicted_lesions == 0 for s in normal) / len(normal)
        ),
        "normal_fp_ml_mean": _stat(fp_ml, "mean"),
        "normal_fp_ml_max": max(fp_ml) if fp_ml else None,
    }


def case_rows(scores: Sequence[CaseScore]) -> list[dict[str, Any]]:
    """Per-case figures as plain dicts (with AVD and count difference), for metrics.json."""
    return [
        {**asdict(s), "avd_ml": s.avd_ml, "count_difference": s.count_difference} for s in scores
    ]
