"""The figures of an evaluation, computed from its rows (what ``metrics.json`` holds).

Labelled set. Accuracy figures are computed over the files the daemon analysed (status ``ok``)
with `daemon.shared.metrics` (the functions ``train`` uses), at two levels:

    slice   every analysed file
    case    the mean probabilities of a case's analysed files (`aggregate_cases`)

each with n, top1, top-k, ECE (``bins`` bins), 'No acute infarct' recall, per-class recall and
the confusion matrix. Beside them: how many files were refused (``not_analysed``) or failed
(``error``) and with which code, ``top1_all_files`` (a refused or failed file counts as wrong: what
a site sees in service), the findings given per true finding when the reports carry one, and
the same figures per file format.

Out-of-scope set. Every file should be refused: the share refused overall, per kind and per
format, with the codes given and how many were the code the set expects.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from daemon.shared.metrics import evaluate, top_k_accuracy

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    from daemon.evaluate.scoring import Row

NEGATIVE_CLASS = "No acute infarct"
"""The class whose recall is the model's specificity."""
REFUSED = "not_analysed"


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def outcomes(rows: Sequence[Row]) -> dict[str, Any]:
    """Files per status, the share refused and failed, and the codes given."""
    status = Counter(r.status for r in rows)
    return {
        "files": len(rows),
        "ok": status["ok"],
        "not_analysed": status[REFUSED],
        "error": status["error"],
        "refused_share": _share(status[REFUSED], len(rows)),
        "error_share": _share(status["error"], len(rows)),
        "by_code": dict(sorted(Counter(r.code for r in rows if r.code).items())),
    }


def _arrays(
    rows: Sequence[Row], classes: Sequence[str]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], list[str]]:
    analysed = [r for r in rows if r.status == "ok"]
    probs = np.array([r.probabilities for r in analysed], np.float64).reshape(-1, len(classes))
    truth = np.array([classes.index(r.item.truth) for r in analysed], np.int64)
    return probs, truth, [r.item.case for r in analysed]


def _negative_recall(level: dict[str, Any]) -> float | None:
    recall: float | None = level["per_class_recall"].get(NEGATIVE_CLASS)
    return recall


def _findings(rows: Sequence[Row]) -> dict[str, dict[str, int]] | None:
    """Findings given, per true finding (``no_acute_infarct`` or ``acute_infarct``)."""
    given = [r for r in rows if r.status == "ok" and r.finding]
    if not given:
        return None
    table: dict[str, Counter[str]] = {}
    for row in given:
        true = "no_acute_infarct" if row.item.truth == NEGATIVE_CLASS else "acute_infarct"
        table.setdefault(true, Counter())[row.finding] += 1
    return {true: dict(sorted(counts.items())) for true, counts in sorted(table.items())}


def _accuracy(rows: Sequence[Row], classes: Sequence[str], top_k: int, bins: int) -> dict[str, Any]:
    probs, truth, cases = _arrays(rows, classes)
    levels = evaluate(probs, truth, cases, classes, top_k=top_k, bins=bins)
    for level in levels.values():
        level["no_acute_infarct_recall"] = _negative_recall(level)
    correct = int(np.sum(probs.argmax(axis=1) == truth)) if len(truth) else 0
    levels["slice"]["files"] = len(rows)
    levels["slice"]["top1_all_files"] = _share(correct, len(rows))
    return levels


def _per_format_labelled(rows: Sequence[Row], classes: Sequence[str], top_k: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fmt in sorted({r.format for r in rows}):
        subset = [r for r in rows if r.format == fmt]
        probs, truth, _ = _arrays(subset, classes)
        negative = truth == classes.index(NEGATIVE_CLASS) if NEGATIVE_CLASS in classes else None
        recall = None
        if negative is not None and negative.any():
            recall = float(np.mean(probs[negative].argmax(axis=1) == truth[negative]))
        out[fmt] = {
            **outcomes(subset),
            "slice_top1": top_k_accuracy(probs, truth, 1) if len(truth) else None,
            f"slice_top{top_k}": top_k_accuracy(probs, truth, top_k) if len(truth) else None,
            "no_acute_infarct_recall": recall,
        }
    return out


def labelled_figures(
    rows: Sequence[Row], classes: Sequence[str], *, top_k: int, bins: int
) -> dict[str, Any]:
    """The figures of a labelled set (see the module docstring)."""
    levels = _accuracy(rows, classes, top_k, bins)
    figures: dict[str, Any] = {
        "outcomes": outcomes(rows),
        "slice": levels["slice"],
        "case": levels["case"],
        "per_format": _per_format_labelled(rows, classes, top_k),
    }
    findings = _findings(rows)
    if findings is not None:
        figures["findings"] = findings
    return figures


def _refusals(rows: Sequence[Row]) -> dict[str, Any]:
    refused = [r for r in rows if r.status == REFUSED]
    expected = [r for r in refused if r.item.expected_code and r.code == r.item.expected_code]
    return {
        **outcomes(rows),
        "expected_codes": dict(
            sorted(Counter(r.item.expected_code for r in rows if r.item.expected_code).items())
        ),
        "refused_with_expected_code": len(expected),
        "labels_given": dict(sorted(Counter(r.label for r in rows if r.label).items())),
    }


def out_of_scope_figures(rows: Sequence[Row]) -> dict[str, Any]:
    """The figures of an out-of-scope set: refusals overall, per kind and per format."""
    return {
        "outcomes": _refusals(rows),
        "per_kind": {
            kind: _refusals([r for r in rows if r.item.truth == kind])
            for kind in sorted({r.item.truth for r in rows})
        },
        "per_format": {
            fmt: _refusals([r for r in rows if r.format == fmt])
            for fmt in sorted({r.format for r in rows})
        },
    }
