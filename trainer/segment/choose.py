"""Probability maps to lesion masks; the threshold and smallest lesion, chosen on validation.

`binarise` cuts a map at ``threshold`` and drops every 8-connected part of a slice smaller than
``min_lesion_px`` input pixels (what the daemon does with the bundle's ``threshold`` and
``min_lesion_px``). `score_cases` stacks each case's slices and scores it
(`trainer.segment.metrics`).

The rule (`choose_postprocessing`), on the validation split only: over the grid `THRESHOLDS` x
`MIN_LESION_PX`, keep the pairs that leave at least ``target_normal_clean`` of the validation
normal cases without any predicted lesion; among them take the one with the best mean of the
lesion cases' mean Dice and the pooled lesion-wise F1 (ties: the higher threshold, then the larger
smallest lesion). Pairs that detect no lesion at all (score 0) are never chosen while another
pair detects one: they keep every normal case clean trivially. When no detecting pair reaches the
target, the detecting pair with the most clean normal cases (then the best score) is taken, and
``target_met`` says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from daemon.shared.lesions import label
from trainer.segment.metrics import CaseScore, score_case, summarise

if TYPE_CHECKING:
    import numpy.typing as npt

    from trainer.segment.data import SegTensors

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_LESION_PX = (1, 2, 4, 8, 16, 32)


def binarise(
    probs: npt.NDArray[np.floating], threshold: float, min_lesion_px: int
) -> npt.NDArray[np.bool_]:
    """``(n, H, W)`` maps cut at ``threshold``, parts under ``min_lesion_px`` pixels dropped."""
    masks = np.asarray(probs) >= threshold
    if min_lesion_px <= 1:
        return masks
    for i, plane in enumerate(masks):
        if not plane.any():
            continue
        labels, count = label(plane)
        sizes = np.bincount(labels.reshape(-1), minlength=count + 1)
        small = sizes < min_lesion_px
        small[0] = False
        masks[i] = plane & ~small[labels]
    return masks


def score_cases(predicted: npt.NDArray[np.bool_], tensors: SegTensors) -> list[CaseScore]:
    """Each case's figures, its slices stacked in slice order."""
    return [
        score_case(case, tensors.masks[idx] > 0, predicted[idx], tensors.voxel_ml[idx])
        for case, idx in tensors.cases().items()
    ]


def _score(summary: dict[str, Any]) -> float:
    parts = [summary.get("dice_mean"), summary.get("lesion_f1_pooled")]
    values = [float(p) for p in parts if p is not None]
    return sum(values) / len(values) if values else 0.0


def choose_postprocessing(
    probs: npt.NDArray[np.floating], tensors: SegTensors, target_normal_clean: float
) -> dict[str, Any]:
    """The threshold and min_lesion_px by the rule in the module docstring, with the grid."""
    grid = []
    for threshold in THRESHOLDS:
        for min_px in MIN_LESION_PX:
            summary = summarise(score_cases(binarise(probs, threshold, min_px), tensors))
            clean = summary["normal_clean_share"]
            grid.append(
                {
                    "threshold": threshold,
                    "min_lesion_px": min_px,
                    "score": _score(summary),
                    "normal_clean_share": clean,
                    "eligible": clean is None or clean >= target_normal_clean,
                    "dice_mean": summary["dice_mean"],
                    "lesion_f1_pooled": summary["lesion_f1_pooled"],
                }
            )
    detecting = [g for g in grid if g["score"] > 0] or grid
    eligible = [g for g in detecting if g["eligible"]]

    def order(g: dict[str, Any]) -> tuple[float, ...]:
        clean = 1.0 if g["normal_clean_share"] is None else g["normal_clean_share"]
        lead = () if eligible else (clean,)
        return (*lead, g["score"], g["threshold"], g["min_lesion_px"])

    best = max(eligible or detecting, key=order)
    return {
        "threshold": best["threshold"],
        "min_lesion_px": best["min_lesion_px"],
        "target_normal_clean": target_normal_clean,
        "target_met": bool(eligible),
        "validation_score": best["score"],
        "rule": "best mean of validation Dice and pooled lesion-wise F1 among the pairs leaving "
        "at least target_normal_clean of validation normal cases without a predicted lesion",
        "grid": grid,
    }
