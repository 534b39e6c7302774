"""PNG plots of a run: training curves and the case-level confusion matrix (matplotlib Agg)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt

from daemon.shared.metrics import reliability_bins

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


def plot_curves(history: dict[str, list[float]], best_epoch: int, path: Path) -> None:
    """Loss and accuracy per epoch, training (augmented) and validation."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in history:
                label = "validation" if key.startswith("val_") else "training (augmented)"
                ax.plot(epochs, history[key], style, label=label)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linewidth=0.8, label=f"kept: epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(visible=True, alpha=0.3)
        ax.legend()
    fig.suptitle("infarctwatch training (research use only)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(
    matrix: npt.NDArray[np.integer], classes: Sequence[str], path: Path, title: str
) -> None:
    """Row-normalised confusion matrix with the counts written in non-empty cells."""
    n = len(classes)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, np.float64), where=totals > 0)
    side = max(6.0, 0.38 * n + 3)
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=100)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i, j in zip(*np.nonzero(matrix), strict=True):
        colour = "white" if share[i, j] > 0.5 else "black"
        ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.04, label="share of the true class")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


RELIABILITY_SIZE = (600, 600)
"""Pixel size of a reliability diagram PNG."""


def plot_reliability(
    raw: npt.NDArray[np.floating],
    *,
    calibrated: npt.NDArray[np.floating],
    truth: npt.NDArray[np.integer],
    bins: int,
    path: Path,
    title: str,
) -> None:
    """Reliability diagram (accuracy against confidence, ``bins`` bins), before and after scaling.

    Written at `RELIABILITY_SIZE` pixels; marker area follows the bin's share of the slices.
    """
    width, height = RELIABILITY_SIZE
    fig, ax = plt.subplots(figsize=(width / 100, height / 100), dpi=100)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for probs, name, style in ((raw, "network", "o--"), (calibrated, "calibrated", "s-")):
        conf, acc, count = reliability_bins(np.asarray(probs), truth, bins)
        keep = count > 0
        ax.plot(conf[keep], acc[keep], style, label=name, markersize=4)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.grid(visible=True, alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(title, fontsize=9)
    fig.savefig(path)
    plt.close(fig)
