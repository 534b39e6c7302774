"""Held-out metrics, slice-level and case-level (numpy only): ``train`` and ``evaluate`` use these.

A *case* here is one patient's slices of one class (``case_id`` + true class; a case whose slices
all share one class, the usual situation, is simply that patient). Its probabilities are the mean
of its slices' probabilities, and its prediction is the argmax of that mean.

Expected calibration error: slices (or cases) binned by their top probability into equal-width
bins; the weighted mean over bins of |accuracy - mean confidence|.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Sequence

Probs = npt.NDArray[np.floating]
Ints = npt.NDArray[np.integer]


def top_k_accuracy(probs: Probs, truth: Ints, k: int) -> float:
    """Share of rows whose true class is among the ``k`` most probable."""
    if len(truth) == 0:
        return float("nan")
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == truth[:, None], axis=1)))


def aggregate_cases(
    probs: Probs, truth: Ints, case_ids: Sequence[str]
) -> tuple[Probs, Ints, list[str]]:
    """Mean slice probabilities per (case, true class); rows in first-seen order."""
    keys: dict[tuple[str, int], list[int]] = {}
    for i, (case, label) in enumerate(zip(case_ids, truth.tolist(), strict=True)):
        keys.setdefault((case, int(label)), []).append(i)
    if not keys:
        return np.zeros((0, probs.shape[1]), np.float64), np.zeros(0, np.int64), []
    case_probs = np.stack([probs[rows].mean(axis=0) for rows in keys.values()])
    case_truth = np.array([label for _, label in keys], np.int64)
    return case_probs, case_truth, [case for case, _ in keys]


def reliability_bins(
    probs: Probs, truth: Ints, bins: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """(mean confidence, accuracy, count) per equal-width bin of top probability.

    A bin holds the rows whose top probability is in ``(lower, upper]`` (the first bin also
    takes 0); an empty bin's confidence and accuracy are NaN.
    """
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == truth) if len(probs) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    conf, acc, count = np.full(bins, np.nan), np.full(bins, np.nan), np.zeros(bins, np.int64)
    for b in range(bins):
        mask = which == b
        count[b] = int(mask.sum())
        if mask.any():
            conf[b], acc[b] = confidence[mask].mean(), correct[mask].mean()
    return conf, acc, count


def expected_calibration_error(probs: Probs, truth: Ints, bins: int) -> float:
    """ECE with ``bins`` equal-width confidence bins (`reliability_bins`)."""
    if len(truth) == 0:
        return float("nan")
    conf, acc, count = reliability_bins(probs, truth, bins)
    filled = count > 0
    weights = count[filled] / len(truth)
    return float(np.sum(weights * np.abs(acc[filled] - conf[filled])))


def confusion_matrix(truth: Ints, predicted: Ints, num_classes: int) -> Ints:
    """``[true, predicted]`` counts."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def per_class_recall(matrix: Ints, classes: Sequence[str]) -> dict[str, float | None]:
    """Recall of each class; None for a class absent from the held-out data."""
    totals = matrix.sum(axis=1)
    return {
        name: (float(matrix[i, i] / totals[i]) if totals[i] else None)
        for i, name in enumerate(classes)
    }


def _level(
    probs: Probs, truth: Ints, classes: Sequence[str], top_k: int, bins: int
) -> dict[str, Any]:
    predicted = probs.argmax(axis=1) if len(truth) else np.zeros(0, np.int64)
    matrix = confusion_matrix(truth, predicted, len(classes))
    return {
        "n": len(truth),
        "top1": top_k_accuracy(probs, truth, 1),
        f"top{top_k}": top_k_accuracy(probs, truth, top_k),
        "ece": expected_calibration_error(probs, truth, bins),
        "per_class_recall": per_class_recall(matrix, classes),
        "confusion": matrix.tolist(),
    }


def evaluate(
    probs: Probs,
    truth: Ints,
    case_ids: Sequence[str],
    classes: Sequence[str],
    *,
    top_k: int,
    bins: int,
) -> dict[str, Any]:
    """Slice- and case-level metrics of one split (see the module docstring)."""
    case_probs, case_truth, _ = aggregate_cases(probs, truth, case_ids)
    return {
        "case": _level(case_probs, case_truth, classes, top_k, bins),
        "slice": _level(probs, truth, classes, top_k, bins),
    }


def accuracy_summary(
    probs: Probs, truth: Ints, case_ids: Sequence[str], top_k: int
) -> dict[str, float]:
    """Top-1 and top-k at both levels, without the per-class detail (for export variants)."""
    case_probs, case_truth, _ = aggregate_cases(probs, truth, case_ids)
    return {
        "case_top1": top_k_accuracy(case_probs, case_truth, 1),
        f"case_top{top_k}": top_k_accuracy(case_probs, case_truth, top_k),
        "slice_top1": top_k_accuracy(probs, truth, 1),
        f"slice_top{top_k}": top_k_accuracy(probs, truth, top_k),
    }
