"""Segmenter metrics and post-processing on hand-made masks: known Dice, F1, volumes and counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from daemon.shared.dataset import Sample
from trainer.segment.choose import binarise, choose_postprocessing, score_cases
from trainer.segment.data import SegSample, SegTensors
from trainer.segment.export import parity
from trainer.segment.metrics import (
    dice,
    f1_score,
    lesion_detection,
    score_case,
    summarise,
    volume_ml,
)

pytestmark = pytest.mark.train


def _square(
    shape: tuple[int, ...], top: int, left: int, side: int, z: int | None = None
) -> np.ndarray:
    out = np.zeros(shape, bool)
    if z is None:
        out[top : top + side, left : left + side] = True
    else:
        out[z, top : top + side, left : left + side] = True
    return out


def test_dice_of_known_overlaps() -> None:
    """Squares overlapping by half give Dice 0.5; identical masks 1; disjoint ones 0."""
    a = _square((16, 16), 2, 2, 4)
    b = _square((16, 16), 2, 4, 4)
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, _square((16, 16), 10, 10, 4)) == 0.0
    assert math.isnan(dice(np.zeros((4, 4)), np.zeros((4, 4))))


def test_lesion_wise_detection_and_f1() -> None:
    """Two true lesions, one hit by a prediction, plus one predicted lesion far from any: TP 1,
    FN 1, FP 1, F1 = 2 / (2 + 1 + 1)."""
    truth = _square((32, 32), 2, 2, 4) | _square((32, 32), 20, 20, 4)
    predicted = _square((32, 32), 3, 3, 2) | _square((32, 32), 2, 25, 3)
    n_true, n_pred, detected, false_positives = lesion_detection(truth, predicted)
    assert (n_true, n_pred, detected, false_positives) == (2, 2, 1, 1)
    assert f1_score(detected, false_positives, n_true - detected) == pytest.approx(0.5)


def test_a_lesion_through_two_slices_counts_once() -> None:
    """Stacked slices: a lesion on slices 0 and 1 at the same place is one 3-D lesion; the same
    lesion split by an empty slice is two."""
    through = _square((3, 16, 16), 4, 4, 3, z=0) | _square((3, 16, 16), 5, 5, 3, z=1)
    apart = _square((3, 16, 16), 4, 4, 3, z=0) | _square((3, 16, 16), 4, 4, 3, z=2)
    assert lesion_detection(through, through)[0] == 1
    assert lesion_detection(apart, apart)[0] == 2


def test_volumes_avd_and_count_difference() -> None:
    """Voxel volumes per slice: 9 px x 0.01 mL + 4 px x 0.02 mL = 0.17 mL true; the prediction
    4 px x 0.01 + 2 extra lesions of 1 px on slice 1 = 0.08 mL."""
    voxel_ml = np.array([0.01, 0.02])
    truth = _square((2, 16, 16), 0, 0, 3, z=0) | _square((2, 16, 16), 8, 8, 2, z=1)
    predicted = _square((2, 16, 16), 0, 0, 2, z=0)
    predicted[1, 14, 1] = predicted[1, 1, 14] = True
    assert volume_ml(truth, voxel_ml) == pytest.approx(0.17)
    score = score_case("c1", truth, predicted, voxel_ml)
    assert score.true_ml == pytest.approx(0.17)
    assert score.predicted_ml == pytest.approx(0.08)
    assert score.avd_ml == pytest.approx(0.09)
    assert (score.true_lesions, score.predicted_lesions, score.count_difference) == (2, 3, 1)
    assert score.dice == pytest.approx(2 * 4 / (13 + 6))
    assert score.f1 == pytest.approx(2 * 1 / (2 + 2 + 1))


def test_summary_of_lesion_and_normal_cases() -> None:
    """Normal cases count as clean only without any predicted lesion; their predicted volume is
    the false-positive volume; Dice, F1 and AVD come from the lesion cases only."""
    voxel = np.array([0.1])
    lesion = _square((1, 8, 8), 1, 1, 2, z=0)
    clean = score_case("n1", np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), voxel)
    noisy = score_case("n2", np.zeros((1, 8, 8)), _square((1, 8, 8), 5, 5, 1, z=0), voxel)
    perfect = score_case("l1", lesion, lesion, voxel)
    missed = score_case("l2", lesion, np.zeros((1, 8, 8)), voxel)
    figures = summarise([clean, noisy, perfect, missed])
    assert figures["lesion_cases"] == 2 and figures["normal_cases"] == 2
    assert figures["dice_mean"] == pytest.approx(0.5)
    assert figures["lesion_f1_mean"] == pytest.approx(0.5)
    assert figures["lesion_f1_pooled"] == pytest.approx(2 * 1 / (2 + 1 + 1))
    assert figures["avd_ml_median"] == pytest.approx(0.2)
    assert figures["normal_clean_share"] == pytest.approx(0.5)
    assert figures["normal_fp_ml_mean"] == pytest.approx(0.05)
    assert figures["false_positive_lesions"] == 1


def test_binarise_drops_parts_below_min_lesion_px() -> None:
    """Cut at the threshold, then 8-connected parts under min_lesion_px pixels are dropped."""
    probs = np.zeros((1, 16, 16), np.float32)
    probs[0, 2:5, 2:5] = 0.9  # 9 px
    probs[0, 10, 10] = 0.9  # 1 px
    probs[0, 12:14, 2:4] = 0.4  # below the threshold
    kept = binarise(probs, 0.5, 4)
    assert kept.sum() == 9 and kept[0, 3, 3] and not kept[0, 10, 10]
    assert binarise(probs, 0.5, 1).sum() == 10
    assert binarise(probs, 0.3, 1).sum() == 14


def _tensors(masks: np.ndarray, cases: list[str]) -> SegTensors:
    samples = tuple(
        SegSample(Sample(f"{c}_{i}.png", "x", "x", c), "m.png", None, 1.0, 0.0, 5.0, i, 0.0, False)
        for i, c in enumerate(cases)
    )
    n = len(cases)
    return SegTensors(
        samples,
        np.zeros((n, 16, 16, 2), np.float32),
        masks.astype(np.uint8),
        np.zeros(n, bool),
        np.full(n, 0.005),
        (),
    )


def test_validation_rule_keeps_normal_cases_clean() -> None:
    """A speck of 0.95 on every normal slice: the rule picks a min_lesion_px that removes it
    (>= 2 px) and a threshold that keeps the lesion, and says the target was met."""
    masks = np.zeros((4, 16, 16), bool)
    masks[0, 4:8, 4:8] = masks[1, 4:8, 4:8] = True
    probs = masks.astype(np.float32) * 0.8
    probs[2, 12, 12] = probs[3, 1, 1] = 0.95
    tensors = _tensors(masks, ["l1", "l2", "n1", "n2"])
    chosen = choose_postprocessing(probs, tensors, 0.95)
    assert chosen["target_met"]
    assert chosen["threshold"] <= 0.8 and 2 <= chosen["min_lesion_px"] <= 16
    scores = score_cases(binarise(probs, chosen["threshold"], chosen["min_lesion_px"]), tensors)
    figures = summarise(scores)
    assert figures["normal_clean_share"] == 1.0 and figures["dice_mean"] == 1.0


def test_parity_reports_the_largest_delta_and_mask_agreement() -> None:
    """One pixel moved across the threshold: the delta is its change, the mask Dice drops; one
    pixel in 128 moves the 99.99th percentile of the deltas, one in 1.6 million does not."""
    keras_probs = np.zeros((2, 8, 8), np.float32)
    keras_probs[0, 2:4, 2:4] = 0.9
    ir_probs = keras_probs.copy()
    ir_probs[0, 2, 2] = 0.45
    check = parity(keras_probs, ir_probs, 0.5)
    assert check["n"] == 2
    assert check["max_abs_prob_delta"] == pytest.approx(0.45)
    assert 0.4 < check["p9999_abs_prob_delta"] < 0.45  # 1 of 128 pixels: above the 99.99th
    large = np.zeros((100, 128, 128), np.float32)
    moved = large.copy()
    moved[0, 0, 0] = 0.3
    assert parity(large, moved, 0.5)["p9999_abs_prob_delta"] == 0.0
    assert check["mask_dice"] == pytest.approx(2 * 3 / (4 + 3))
    assert parity(keras_probs, keras_probs, 0.5)["mask_dice"] == 1.0


def test_validation_rule_never_picks_a_pair_that_detects_nothing() -> None:
    """A large bright false lesion on one normal slice survives every detecting pair: the rule
    keeps a pair that finds the lesions (target not met) rather than one that finds nothing."""
    masks = np.zeros((4, 16, 16), bool)
    masks[0, 4:8, 4:8] = masks[1, 4:8, 4:8] = True
    probs = masks.astype(np.float32) * 0.75
    probs[2, 8:14, 8:14] = 0.75
    tensors = _tensors(masks, ["l1", "l2", "n1", "n2"])
    chosen = choose_postprocessing(probs, tensors, 0.95)
    assert not chosen["target_met"]
    assert chosen["threshold"] <= 0.7 and chosen["min_lesion_px"] <= 16
    figures = summarise(
        score_cases(binarise(probs, chosen["threshold"], chosen["min_lesion_px"]), tensors)
    )
    assert figures["dice_mean"] == 1.0 and figures["normal_clean_share"] == 0.5
