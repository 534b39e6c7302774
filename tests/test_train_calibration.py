"""Temperature scaling and the decision thresholds (numpy only, no network)."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.shared.metrics import expected_calibration_error
from trainer.calibration import (
    ACUTE,
    INDETERMINATE,
    NEGATIVE,
    apply_temperature,
    choose_finding_thresholds,
    choose_scope_threshold,
    finding_rates,
    findings,
    fit_temperature,
    nll,
    scope_rates,
)

pytestmark = pytest.mark.train


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _mis_scaled(n: int = 3000, classes: int = 6, scale: float = 3.0, seed: int = 0) -> tuple:
    """Labels drawn from softmax(z); the 'network' reports softmax(scale * z): over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, classes))
    truth = np.array([rng.choice(classes, p=p) for p in _softmax(z)])
    return _softmax(scale * z), truth


def test_temperature_undoes_an_over_confident_network() -> None:
    """Fitted on a mis-scaled example, T comes out near the scale and NLL and ECE drop."""
    probs, truth = _mis_scaled()
    fitted = fit_temperature(probs, truth)
    calibrated = apply_temperature(probs, fitted["temperature"])
    assert fitted["temperature"] == pytest.approx(3.0, rel=0.15)
    assert fitted["nll_after"] < fitted["nll_before"] - 0.1
    assert nll(calibrated, truth) == pytest.approx(fitted["nll_after"])
    assert expected_calibration_error(calibrated, truth, 15) < 0.5 * expected_calibration_error(
        probs, truth, 15
    )
    np.testing.assert_array_equal(calibrated.argmax(1), probs.argmax(1))


def test_a_calibrated_network_keeps_temperature_near_one() -> None:
    """Already calibrated probabilities are left (almost) alone."""
    probs, truth = _mis_scaled(scale=1.0, seed=1)
    assert fit_temperature(probs, truth)["temperature"] == pytest.approx(1.0, abs=0.15)


def test_thresholds_meet_the_targets_on_the_data_they_were_chosen_on() -> None:
    """At most 5 % of normals called acute_infarct, at most 10 % of infarcts called normal."""
    rng = np.random.default_rng(3)
    n, negative = 800, 0
    truth = rng.integers(0, 5, n)
    p_neg = np.where(truth == negative, rng.beta(5, 2, n), rng.beta(2, 5, n))
    rest = rng.dirichlet(np.ones(4), n) * (1 - p_neg)[:, None]
    probs = np.column_stack([p_neg, rest])
    chosen = choose_finding_thresholds(
        probs, truth, negative, target_specificity=0.95, target_sensitivity=0.90
    )
    rates = finding_rates(findings(probs, negative, chosen), truth, negative)
    assert rates["false_alarm_rate"] <= 0.05
    assert rates["missed_rate"] <= 0.10
    assert 0.5 <= chosen["acute_infarct"] <= 1.0
    assert 0.5 <= chosen["no_acute_infarct"] <= 1.0
    # the thresholds are the lowest meeting the targets: a little lower breaks the target
    lower = {**chosen, "acute_infarct": chosen["acute_infarct"] - 0.02}
    if lower["acute_infarct"] >= 0.5:
        worse = finding_rates(findings(probs, negative, lower), truth, negative)
        assert worse["false_alarm_rate"] > 0.05
    assert rates["indeterminate_rate"] > 0


def test_findings_follow_the_documented_rule() -> None:
    """acute_infarct first, then no_acute_infarct, otherwise indeterminate."""
    probs = np.array([[0.05, 0.95], [0.9, 0.1], [0.5, 0.5], [0.3, 0.7]])
    called = findings(probs, 0, {"acute_infarct": 0.8, "no_acute_infarct": 0.8})
    assert called == [ACUTE, NEGATIVE, INDETERMINATE, INDETERMINATE]


def test_scope_threshold_sits_between_the_two_targets_in_log_odds() -> None:
    """With out-of-scope scores, both validation targets hold and the margin is split evenly."""
    rng = np.random.default_rng(5)
    dwi = rng.beta(40, 1, 1000)  # near 1
    oos = rng.beta(1, 40, 500)  # near 0
    threshold = choose_scope_threshold(dwi, 0.01, oos_scores=oos, min_refused=0.99)
    assert scope_rates(dwi, threshold)["refused"] <= 0.01
    assert scope_rates(oos, threshold)["refused"] >= 0.99
    highest = choose_scope_threshold(dwi, 0.01)
    lowest = float(np.nextafter(np.sort(oos)[::-1][5], 2.0))
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert logit(threshold) - logit(lowest) == pytest.approx(logit(highest) - logit(threshold))
    assert lowest < threshold < highest


def test_scope_threshold_keeps_the_dwi_target_when_the_two_conflict() -> None:
    """Overlapping scores: the DWI-side threshold, as without out-of-scope scores."""
    rng = np.random.default_rng(6)
    dwi = rng.uniform(0.0, 1.0, 400)
    oos = rng.uniform(0.0, 1.0, 400)
    assert choose_scope_threshold(dwi, 0.01, oos_scores=oos) == choose_scope_threshold(dwi, 0.01)


def test_scope_threshold_refuses_at_most_the_allowed_share_of_dwi() -> None:
    """Chosen on DWI scores for <= 1 % refused, it refuses 1 % of them, no more."""
    rng = np.random.default_rng(4)
    dwi = rng.beta(8, 1, 1000)
    threshold = choose_scope_threshold(dwi, 0.01)
    assert scope_rates(dwi, threshold)["refused"] <= 0.01
    assert scope_rates(dwi, float(np.nextafter(threshold, 2.0)))["refused"] > 0.01
