"""Probabilities that mean what they say: temperature scaling and the decision thresholds (numpy).

Temperature scaling: the network's softmax ``p`` is replaced by ``softmax(log(p) / T)``, which is
``softmax(logits / T)`` for the network's own logits (the log-softmax differs from the logits by a
per-row constant). ``T`` is the one number that minimises the negative log-likelihood of the
validation slices (a 1-D search on ``log T``: a coarse grid, then golden-section refinement).
``T > 1`` softens an over-confident network, ``T < 1`` sharpens an under-confident one; the argmax
never changes, so accuracy does not either.

Findings (`choose_finding_thresholds`), on calibrated probabilities, with ``p_neg`` the
probability of 'No acute infarct' and ``p_inf = 1 - p_neg``::

    p_inf >= t_acute_infarct       -> acute_infarct      (checked first)
    p_neg >= t_no_acute_infarct    -> no_acute_infarct
    otherwise                      -> indeterminate

``t_acute_infarct`` is the lowest threshold at which at most ``1 - target_specificity`` of the
validation 'No acute infarct' slices would be called ``acute_infarct``; ``t_no_acute_infarct`` the
lowest at which at most ``1 - target_sensitivity`` of the validation infarct slices would be called
``no_acute_infarct``. Both are at least 0.5, so the two rules cannot both hold unless a
probability sits exactly on 0.5.

In scope (`choose_scope_threshold`): an image is refused when the ``in_scope`` output is below the
threshold; the threshold is the highest at which at most ``max_wrongly_refused`` of the validation
DWI slices would be refused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Sequence

Probs = npt.NDArray[np.floating]
Ints = npt.NDArray[np.integer]
ACUTE, NEGATIVE, INDETERMINATE = "acute_infarct", "no_acute_infarct", "indeterminate"
FINDINGS = (ACUTE, NEGATIVE, INDETERMINATE)
_EPS = 1e-12
_LOG_T_RANGE = (math.log(0.05), math.log(20.0))
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def apply_temperature(probs: Probs, temperature: float) -> npt.NDArray[np.float64]:
    """``softmax(log(p) / T)`` row by row (probabilities clipped at 1e-12 before the log)."""
    logits = np.log(np.clip(np.asarray(probs, np.float64), _EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    out: npt.NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
    return out


def nll(probs: Probs, truth: Ints) -> float:
    """Mean negative log-likelihood of the true classes."""
    if len(truth) == 0:
        return float("nan")
    picked = np.asarray(probs, np.float64)[np.arange(len(truth)), truth]
    return float(-np.mean(np.log(np.clip(picked, _EPS, 1.0))))


def fit_temperature(probs: Probs, truth: Ints) -> dict[str, Any]:
    """The temperature minimising validation NLL, with the NLL before and after.

    Returns ``{"method": "temperature", "temperature": T, "nll_before", "nll_after", "n"}``;
    ``T`` is 1.0 when there is nothing to fit on.
    """
    n = len(truth)
    before = nll(probs, truth)
    if n == 0:
        return {
            "method": "temperature",
            "temperature": 1.0,
            "nll_before": None,
            "nll_after": None,
            "n": 0,
        }

    def loss(log_t: float) -> float:
        return nll(apply_temperature(probs, math.exp(log_t)), truth)

    grid = np.linspace(*_LOG_T_RANGE, 61)
    values = [loss(float(g)) for g in grid]
    best = int(np.argmin(values))
    lo, hi = float(grid[max(best - 1, 0)]), float(grid[min(best + 1, len(grid) - 1)])
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = loss(b)
    log_t = (lo + hi) / 2.0
    after = loss(log_t)
    if after > before:  # T = 1 lies in the range; never return something worse than it
        log_t, after = 0.0, before
    return {
        "method": "temperature",
        "temperature": math.exp(log_t),
        "nll_before": before,
        "nll_after": after,
        "n": n,
    }


def _lowest_threshold(scores: npt.NDArray[np.float64], allowed: float) -> float:
    """Lowest t >= 0.5 such that the share of ``scores`` >= t is at most ``allowed``."""
    if len(scores) == 0:
        return 0.5
    ordered = np.sort(scores)[::-1]
    may = math.floor(allowed * len(ordered) + 1e-9)
    if may >= len(ordered):
        return 0.5
    # Scores strictly above the (may+1)-th highest may pass; that score itself must not.
    blocker = float(ordered[may])
    return max(0.5, float(np.nextafter(blocker, 2.0)))


def choose_finding_thresholds(
    calibrated: Probs,
    truth: Ints,
    negative: int,
    *,
    target_specificity: float,
    target_sensitivity: float,
) -> dict[str, float]:
    """Thresholds for ``finding`` chosen on calibrated validation probabilities.

    See the module docstring. ``negative`` is the index of 'No acute infarct'.
    """
    p_neg = np.asarray(calibrated, np.float64)[:, negative]
    is_neg = truth == negative
    t_inf = _lowest_threshold(1.0 - p_neg[is_neg], 1.0 - target_specificity)
    t_neg = _lowest_threshold(p_neg[~is_neg], 1.0 - target_sensitivity)
    return {"acute_infarct": t_inf, "no_acute_infarct": t_neg}


def findings(calibrated: Probs, negative: int, thresholds: dict[str, float]) -> list[str]:
    """The ``finding`` of each row (see the module docstring)."""
    p_neg = np.asarray(calibrated, np.float64)[:, negative]
    out = []
    for value in p_neg:
        if 1.0 - value >= thresholds["acute_infarct"]:
            out.append(ACUTE)
        elif value >= thresholds["no_acute_infarct"]:
            out.append(NEGATIVE)
        else:
            out.append(INDETERMINATE)
    return out


def finding_rates(called: Sequence[str], truth: Ints, negative: int) -> dict[str, Any]:
    """How the findings fare against the truth.

    ``specificity``: share of 'No acute infarct' rows called ``no_acute_infarct``;
    ``false_alarm_rate``: share of them called ``acute_infarct``; ``sensitivity``: share of infarct
    rows called ``acute_infarct``; ``missed_rate``: share of them called ``no_acute_infarct``;
    ``indeterminate_rate``: share of all rows called ``indeterminate``.
    """
    calls = np.array(called, dtype=object)
    is_neg = truth == negative

    def share(mask: npt.NDArray[np.bool_], finding: str) -> float | None:
        return float(np.mean(calls[mask] == finding)) if mask.any() else None

    return {
        "n": len(calls),
        "negatives": int(is_neg.sum()),
        "infarcts": int((~is_neg).sum()),
        "specificity": share(is_neg, NEGATIVE),
        "false_alarm_rate": share(is_neg, ACUTE),
        "sensitivity": share(~is_neg, ACUTE),
        "missed_rate": share(~is_neg, NEGATIVE),
        "indeterminate_rate": float(np.mean(calls == INDETERMINATE)) if len(calls) else None,
    }


def choose_scope_threshold(
    dwi_scores: npt.NDArray[np.floating],
    max_wrongly_refused: float,
    *,
    oos_scores: npt.NDArray[np.floating] | None = None,
    min_refused: float = 0.99,
) -> float:
    """The in_scope threshold (refuse when score < t) chosen on validation scores.

    Without ``oos_scores``: the highest threshold refusing at most ``max_wrongly_refused`` of the
    DWI scores. With them: halfway in log-odds between that and the lowest threshold refusing at
    least ``min_refused`` of the out-of-scope scores (the widest margin on both sides), or the
    first when the two conflict (no threshold meets both).
    """
    scores = np.sort(np.asarray(dwi_scores, np.float64))
    if len(scores) == 0:
        return 0.5
    may = math.floor(max_wrongly_refused * len(scores) + 1e-9)
    # The (may+1)-th lowest score must pass (score >= t), so t is at most that score.
    highest = 1.0 if may >= len(scores) else float(scores[may])
    if oos_scores is None or len(oos_scores) == 0:
        return highest
    others = np.sort(np.asarray(oos_scores, np.float64))[::-1]
    passing = math.floor((1.0 - min_refused) * len(others) + 1e-9)
    # At most `passing` out-of-scope scores may reach t: t is just above the next one.
    lowest = 0.0 if passing >= len(others) else float(np.nextafter(others[passing], 2.0))
    if lowest > highest:
        return highest
    low, high = (min(max(t, 1e-6), 1.0 - 1e-6) for t in (lowest, highest))
    mid = (math.log(low / (1.0 - low)) + math.log(high / (1.0 - high))) / 2.0
    return min(max(1.0 / (1.0 + math.exp(-mid)), lowest), highest)


def scope_rates(
    scores: npt.NDArray[np.floating], threshold: float
) -> dict[str, float | int | None]:
    """Share of ``scores`` refused (below ``threshold``)."""
    refused = np.asarray(scores) < threshold
    return {"n": len(refused), "refused": float(refused.mean()) if len(refused) else None}
