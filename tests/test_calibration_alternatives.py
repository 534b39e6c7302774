"""`scripts/calibration_alternatives.py`: the fits it compares and the case pooling it reports."""

from __future__ import annotations

import numpy as np
from daemon_support import load_script

script = load_script("calibration_alternatives")


def _shy_negative(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes; a network that gives class 0 (the negative) too little: its rows are right
    only half the time although they hold a third of the truth."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, count)
    logits = rng.normal(0.0, 1.0, (count, 3))
    logits[np.arange(count), truth] += 2.0
    logits[:, 0] -= 1.5
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True), truth


def test_a_class_bias_gives_back_what_the_network_withholds_from_a_class() -> None:
    """Fitted on one half, the bias raises the negative class against the others and lowers the
    other half's NLL below what the temperature alone reaches; the negative's bias stays 0."""
    probs, truth = _shy_negative(4000, 1)
    fit_probs, fit_truth = probs[:2000], truth[:2000]
    t_only, no_bias = script.fit(fit_probs, fit_truth, 0, with_bias=False)
    t_bias, bias = script.fit(fit_probs, fit_truth, 0, with_bias=True)
    assert not no_bias.any()
    assert bias[0] == 0.0
    assert (bias[1:] < -0.8).all()  # about -1.5 with no penalty
    held, held_truth = probs[2000:], truth[2000:]
    nll_t = script._nll(script.calibrate(held, t_only), held_truth)
    nll_b = script._nll(script.calibrate(held, t_bias, bias), held_truth)
    assert nll_b < nll_t - 0.05
    recall = np.mean(script.calibrate(held, t_bias, bias)[held_truth == 0].argmax(axis=1) == 0)
    assert recall > np.mean(held[held_truth == 0].argmax(axis=1) == 0) + 0.2


def test_log_pooling_lets_a_slice_veto_what_it_all_but_rules_out() -> None:
    """Slice one favours class 1, slice two gives it 0.02: the mean still picks class 1, the
    geometric mean picks class 2, which both slices support."""
    probs = np.array([[0.05, 0.85, 0.10], [0.35, 0.02, 0.63], [0.9, 0.05, 0.05]])
    pooled, names = script.log_pooled(probs, ["b", "b", "a"])
    assert names == ["a", "b"]
    assert np.allclose(pooled.sum(axis=1), 1.0)
    assert probs[:2].mean(axis=0).argmax() == 1
    assert pooled[1].argmax() == 2
    assert pooled[0].argmax() == 0


def test_figures_names_every_column_and_counts_findings() -> None:
    """One line of the table holds every column; four negative slices, all confidently negative,
    have specificity 1 and no false alarm."""
    probs = np.array([[0.97, 0.02, 0.01]] * 4 + [[0.01, 0.98, 0.01]] * 4)
    truth = np.array([0] * 4 + [1] * 4)
    cases = ["n1", "n1", "n2", "n2", "i1", "i1", "i2", "i2"]
    line = script.figures(probs, truth, cases, 0, {"acute_infarct": 0.9, "no_acute_infarct": 0.5})
    assert set(line) == set(script.COLUMNS)
    assert line["specificity"] == 1.0
    assert line["false_alarm_rate"] == 0.0
    assert line["sensitivity"] == 1.0
    assert line["case_top1"] == line["log_pooled_case_top1"] == 1.0
