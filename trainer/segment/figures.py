"""The segmenter's figure: typical and worst test cases, truth and prediction outlined (matplotlib).

Rows: *typical* (the lesion cases whose Dice is nearest the median), *worst* (the lowest Dice)
and, when a normal case got a predicted lesion, the normal cases with the largest false-positive
volume. Each panel shows the case's slice with the largest true (else predicted) lesion area: the
DWI input, the true outline in green and the predicted outline in magenta, titled with the case's
Dice and volumes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

    from trainer.segment.data import SegTensors
    from trainer.segment.metrics import CaseScore

_PER_ROW = 4


def pick_cases(scores: list[CaseScore]) -> dict[str, list[CaseScore]]:
    """Typical, worst and false-positive cases (see the module docstring)."""
    lesion = [s for s in scores if not s.normal and not math.isnan(s.dice)]
    rows: dict[str, list[CaseScore]] = {}
    if lesion:
        median = float(np.median([s.dice for s in lesion]))
        rows["typical"] = sorted(lesion, key=lambda s: abs(s.dice - median))[:_PER_ROW]
        rows["worst"] = sorted(lesion, key=lambda s: s.dice)[:_PER_ROW]
    false = sorted(
        (s for s in scores if s.normal and s.predicted_ml > 0), key=lambda s: -s.predicted_ml
    )
    if false:
        rows["normal, false positive"] = false[:_PER_ROW]
    return rows


def plot_cases(
    scores: list[CaseScore],
    tensors: SegTensors,
    predicted: npt.NDArray[np.bool_],
    path: Path,
    title: str,
) -> None:
    """Write the figure to ``path`` (PNG)."""
    rows = pick_cases(scores)
    cases = tensors.cases()
    n_rows = max(1, len(rows))
    fig, axes = plt.subplots(n_rows, _PER_ROW, figsize=(3.2 * _PER_ROW, 3.4 * n_rows), dpi=90)
    axes = np.atleast_2d(axes)
    for ax in axes.reshape(-1):
        ax.axis("off")
    for r, (name, picked) in enumerate(rows.items()):
        for c, score in enumerate(picked):
            idx = cases[score.case_id]
            truth_area = tensors.masks[idx].reshape(len(idx), -1).sum(axis=1)
            pred_area = predicted[idx].reshape(len(idx), -1).sum(axis=1)
            best = int(np.argmax(truth_area if truth_area.any() else pred_area))
            i = idx[best]
            ax = axes[r, c]
            ax.imshow(tensors.images[i, :, :, 0].astype(np.float32), cmap="gray", vmin=0, vmax=1)
            for mask, colour in ((tensors.masks[i] > 0, "lime"), (predicted[i], "magenta")):
                if mask.any():
                    ax.contour(mask.astype(np.float32), levels=[0.5], colors=colour, linewidths=1)
            dice = "n/a" if math.isnan(score.dice) else f"{score.dice:.2f}"
            ax.set_title(
                f"{name}: {score.case_id}\nDice {dice}, {score.true_ml:.2f} -> "
                f"{score.predicted_ml:.2f} mL",
                fontsize=8,
            )
    fig.suptitle(f"{title} (green: truth, magenta: prediction). Research use only.", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
