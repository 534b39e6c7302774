"""Held-out metrics: top-k, case aggregation by mean probability, calibration, recall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from daemon.shared.metrics import (
    aggregate_cases,
    confusion_matrix,
    evaluate,
    expected_calibration_error,
    per_class_recall,
    top_k_accuracy,
)


def test_top_k_counts_the_true_class_among_the_k_most_probable() -> None:
    """Top-1 and top-2 on hand-made rows."""
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]])
    truth = np.array([0, 2, 0])
    assert top_k_accuracy(probs, truth, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(probs, truth, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(probs, truth, 3) == 1.0
    assert math.isnan(top_k_accuracy(probs[:0], truth[:0], 1))


def test_a_case_is_predicted_from_the_mean_of_its_slices() -> None:
    """Two weak right slices outvote one confident wrong slice only through the mean."""
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.3, 0.7], [0.2, 0.8]])
    truth = np.array([1, 1, 1, 1])
    case_probs, case_truth, cases = aggregate_cases(probs, truth, ["a", "a", "a", "b"])
    assert cases == ["a", "b"]
    assert case_probs[0] == pytest.approx([0.5, 0.5])
    assert case_truth.tolist() == [1, 1]
    result = evaluate(probs, truth, ["a", "a", "a", "b"], ["x", "y"], top_k=2, bins=10)
    assert result["slice"]["n"] == 4 and result["case"]["n"] == 2
    assert result["slice"]["top1"] == pytest.approx(0.75)


def test_calibration_error_of_a_perfectly_calibrated_and_an_overconfident_model() -> None:
    """80 % confident and 80 % right: ECE 0. 100 % confident and 50 % right: ECE 0.5."""
    probs = np.tile([0.8, 0.2], (10, 1))
    truth = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, truth, 10) == pytest.approx(0.0)
    sure = np.tile([1.0, 0.0], (4, 1))
    assert expected_calibration_error(sure, np.array([0, 0, 1, 1]), 15) == pytest.approx(0.5)


def test_confusion_and_recall_per_class() -> None:
    """Rows are true classes; an absent class has recall None."""
    matrix = confusion_matrix(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), 3)
    assert matrix.tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 0]]
    recall = per_class_recall(matrix, ["a", "b", "c"])
    assert recall == {"a": 0.5, "b": pytest.approx(2 / 3), "c": None}
