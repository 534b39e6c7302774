"""Would another calibration than one temperature serve better? Measured on a finished run.

``.venv/bin/python scripts/calibration_alternatives.py RUN``

RUN is a run folder of `infarctwatch train` whose config names a shifted test set. Its Keras model
gives the slice probabilities of the validation split, the test split and the shifted test set
(the run's own split and preprocessing, as `trainer.run.export_run` loads them). Two calibrations
are fitted on the validation slices, each by minimising their negative log-likelihood:

* ``temperature``: one number T, ``softmax(log(p) / T)``: what bundles hold and the daemon applies;
* ``temperature + class bias``: T and one bias per class (the 'No acute infarct' bias fixed at 0,
  a small L2 penalty on the others), ``softmax(log(p) / T + b)``: vector scaling without its
  per-class scale, which can move a class's share of the answers, not only their confidence.

For each, the finding thresholds are chosen on validation as the trainer chooses them
(`trainer.calibration.choose_finding_thresholds`, the run's target specificity and sensitivity),
and each test set gets one line: slice top-1 and ECE (15 bins), case top-1 and ECE (the mean of a
case's slice probabilities, as the trainer's case figures), 'No acute infarct' recall of the
cases, and the findings of the slices (specificity, false alarms, sensitivity, missed infarcts,
indeterminate). A last column gives case top-1 when a case's slices are pooled by the mean of
their log-probabilities (their geometric mean: a class one slice all but rules out loses the case)
instead of their mean: information about the pooling, not a calibration. docs/training.md
(*Calibration and findings*) gives what this shows. Needs the ``[train]`` extra. Research use
only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from daemon.shared.labels import DEFAULT_LABELS, load_label_map
from daemon.shared.metrics import aggregate_cases, expected_calibration_error
from trainer.assess import NEGATIVE_CLASS
from trainer.calibration import choose_finding_thresholds, finding_rates, findings
from trainer.config import load_config
from trainer.dataset import load_tensors
from trainer.run import RunPaths, _label_indices, _predict, _rows_to_samples
from trainer.scope_data import load_shifted
from trainer.split import TEST, VALIDATION, read_split_csv

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
BINS = 15
COLUMNS = (
    "slice_top1",
    "slice_ece",
    "case_top1",
    "case_ece",
    "nai_recall",
    "specificity",
    "false_alarm_rate",
    "sensitivity",
    "missed_rate",
    "indeterminate_rate",
    "log_pooled_case_top1",
)
"""The columns of the table, in order: the keys of `figures`."""
BIAS_PENALTY = 1e-3
"""L2 weight on the class biases: keeps a class seldom seen in validation from drifting."""


def calibrate(probs: Floats, temperature: float, bias: Floats | None = None) -> Floats:
    """``softmax(log(probs) / temperature + bias)`` row by row."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    if bias is not None:
        logits = logits + bias
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    normalised: Floats = out / out.sum(axis=1, keepdims=True)
    return normalised


def _nll(probs: Floats, truth: Ints) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, 1.0))))


def fit(probs: Floats, truth: Ints, negative: int, *, with_bias: bool) -> tuple[float, Floats]:
    """Temperature (and class biases, the ``negative`` class's held at 0) minimising the NLL."""
    classes = probs.shape[1]
    others = np.array([i for i in range(classes) if i != negative])

    def unpack(x: Floats) -> tuple[float, Floats]:
        bias = np.zeros(classes)
        if with_bias:
            bias[others] = x[1:]
        return float(np.exp(x[0])), bias

    def loss(x: Floats) -> float:
        temperature, bias = unpack(x)
        penalty = BIAS_PENALTY * float(np.sum(bias**2))
        return _nll(calibrate(probs, temperature, bias), truth) + penalty

    start = np.zeros(1 + (len(others) if with_bias else 0))
    return unpack(minimize(loss, start, method="L-BFGS-B").x)


def log_pooled(probs: Floats, cases: list[str]) -> tuple[Floats, list[str]]:
    """Per case, the renormalised mean of its slices' log-probabilities, cases in sorted order."""
    names = sorted(set(cases))
    where = np.array(cases)
    pooled = []
    for name in names:
        logs = np.log(np.clip(probs[where == name], 1e-12, 1.0)).mean(axis=0)
        row = np.exp(logs - logs.max())
        pooled.append(row / row.sum())
    return np.array(pooled), names


def figures(
    calibrated: Floats, truth: Ints, cases: list[str], negative: int, thresholds: dict[str, float]
) -> dict[str, Any]:
    """One line of the table: slice, case, findings and log-pooled case figures."""
    case_probs, case_truth, _ = aggregate_cases(calibrated, truth, cases)
    is_negative = case_truth == negative
    pooled, names = log_pooled(calibrated, cases)
    truth_of = dict(zip(cases, truth.tolist(), strict=True))
    pooled_truth = np.array([truth_of[name] for name in names])
    rates = finding_rates(findings(calibrated, negative, thresholds), truth, negative)
    return {
        "slice_top1": float(np.mean(calibrated.argmax(axis=1) == truth)),
        "slice_ece": expected_calibration_error(calibrated, truth, BINS),
        "case_top1": float(np.mean(case_probs.argmax(axis=1) == case_truth)),
        "case_ece": expected_calibration_error(case_probs, case_truth, BINS),
        "nai_recall": float(np.mean(case_probs[is_negative].argmax(axis=1) == negative)),
        **{key: rates[key] for key in COLUMNS[5:10]},
        "log_pooled_case_top1": float(np.mean(pooled.argmax(axis=1) == pooled_truth)),
    }


def _sets(run: Path) -> tuple[dict[str, tuple[Floats, Ints, list[str]]], int, Any]:
    """Slice probabilities, truth and case ids of validation, test and shifted test."""
    import keras  # noqa: PLC0415 (TensorFlow only once the arguments are read)

    paths = RunPaths(run.resolve())
    cfg = load_config(paths.config, [])
    if not cfg.data.shifted_test:
        raise SystemExit(f"{run}: its config names no shifted test set")
    root = Path(json.loads(paths.run_json.read_text(encoding="utf-8"))["data_root"])
    classes = tuple(json.loads(paths.labels.read_text(encoding="utf-8")))
    rows = read_split_csv(paths.split)
    model = keras.models.load_model(paths.model)
    labels = load_label_map(Path(cfg.data.labels) if cfg.data.labels else DEFAULT_LABELS)
    tensors = {
        name: load_tensors(root, _rows_to_samples(rows, name), cfg.preprocess, workers=2)
        for name in (VALIDATION, TEST)
    }
    tensors["shifted"] = load_shifted(
        Path(cfg.data.shifted_test), cfg.data, labels, cfg.preprocess
    )[1]
    out = {}
    for name, t in tensors.items():
        probs = np.asarray(_predict(model, t, cfg.preprocess.channels).classes, np.float64)
        out[name] = (probs, _label_indices(t.samples, classes), [s.case_id for s in t.samples])
    return out, classes.index(NEGATIVE_CLASS), cfg.calibration


def main() -> None:
    """Print the table for the run folder of the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished run folder of `infarctwatch train`")
    run = parser.parse_args().run
    sets, negative, targets = _sets(run)
    val_probs, val_truth, _ = sets[VALIDATION]
    print("method | set | T | " + " | ".join(COLUMNS))
    for method, with_bias in (("temperature", False), ("temperature + class bias", True)):
        temperature, bias = fit(val_probs, val_truth, negative, with_bias=with_bias)
        thresholds = choose_finding_thresholds(
            calibrate(val_probs, temperature, bias),
            val_truth,
            negative,
            target_specificity=targets.target_specificity,
            target_sensitivity=targets.target_sensitivity,
        )
        for name in (TEST, "shifted"):
            probs, truth, cases = sets[name]
            line = figures(calibrate(probs, temperature, bias), truth, cases, negative, thresholds)
            values = " | ".join(f"{line[c]:.3f}" for c in COLUMNS)
            print(f"{method} | {name} | {temperature:.3f} | {values}")


if __name__ == "__main__":
    main()
