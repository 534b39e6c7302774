"""One training run in named steps: `prepare`, `fit`, `evaluate_and_bundle`.

`prepare` scans the dataset, splits it by case, makes the run folder and loads the tensors;
`evaluate_and_bundle` evaluates, exports the IR and builds the bundle.

The run folder (``--out``)::

    config.yaml              the full resolved configuration
    run.json                 dataset root, versions of every framework, git commit, timings
    labels.json              class labels in output order
    split.csv                file, raw_label, label, case_id, split (no case in two splits)
    history.json             per-epoch losses and accuracies
    model.keras              the fitted Keras model
    split_out_of_scope.csv   the out-of-scope images' split (with data.out_of_scope)
    metrics.json             test and shifted-test metrics, calibration, thresholds, out of
                             scope, validation, export parity (docs/training.md lists the keys)
    training_curves.png      loss and accuracy per epoch
    confusion_matrix.png     case-level test confusion matrix (confusion_matrix_shifted.png)
    reliability_test.png     reliability diagram, before and after calibration (and _shifted)
    model_card.md            data, split, metrics, intended use (research only)
    bundle/                  the verified model bundle (`daemon.shared.bundle` layout)

``infarctwatch export RUN`` re-runs evaluate -> export -> bundle from a finished run folder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import structlog

from daemon.shared.dataset import Dataset, Sample, class_counts, file_format, scan
from daemon.shared.labels import DEFAULT_LABELS, LabelMap, load_label_map
from trainer import export as ir
from trainer.assess import NEGATIVE_CLASS, assess
from trainer.augment import mirror_table
from trainer.calibration import (
    apply_temperature,
    choose_finding_thresholds,
    choose_scope_threshold,
    fit_temperature,
)
from trainer.card import model_card
from trainer.config import TrainConfig, dump_config, load_config
from trainer.dataset import Tensors, load_tensors
from trainer.errors import DatasetError, RunFolderError
from trainer.fit import FitResult, ScopeImages, fit
from trainer.inputs import model_inputs
from trainer.package import BundleJob, ShiftedSet, build_bundle
from trainer.parent import Parent, load_parent
from trainer.plots import plot_confusion, plot_curves, plot_reliability
from trainer.records import versions, write_json
from trainer.scope_data import ScopeSplit, load_out_of_scope, load_shifted
from trainer.split import (
    TEST,
    TRAIN,
    VALIDATION,
    SplitRow,
    assign_cases,
    leaked_cases,
    read_split_csv,
    split_rows,
    summary,
    write_split_csv,
)

log = structlog.get_logger("trainer.run")
REPO = Path(__file__).resolve().parent.parent
_PREDICT_BATCH = 256


@dataclass(frozen=True)
class RunPaths:
    """Where each artefact of a run lives (see the module docstring)."""

    root: Path

    @property
    def config(self) -> Path:
        """``config.yaml``."""
        return self.root / "config.yaml"

    @property
    def run_json(self) -> Path:
        """``run.json``."""
        return self.root / "run.json"

    @property
    def labels(self) -> Path:
        """``labels.json``."""
        return self.root / "labels.json"

    @property
    def split(self) -> Path:
        """``split.csv``."""
        return self.root / "split.csv"

    @property
    def history(self) -> Path:
        """``history.json``."""
        return self.root / "history.json"

    @property
    def model(self) -> Path:
        """``model.keras``."""
        return self.root / "model.keras"

    @property
    def metrics(self) -> Path:
        """``metrics.json``."""
        return self.root / "metrics.json"

    @property
    def curves(self) -> Path:
        """``training_curves.png``."""
        return self.root / "training_curves.png"

    @property
    def confusion(self) -> Path:
        """``confusion_matrix.png``."""
        return self.root / "confusion_matrix.png"

    @property
    def confusion_shifted(self) -> Path:
        """``confusion_matrix_shifted.png``."""
        return self.root / "confusion_matrix_shifted.png"

    @property
    def reliability(self) -> Path:
        """``reliability_test.png``."""
        return self.root / "reliability_test.png"

    @property
    def reliability_shifted(self) -> Path:
        """``reliability_shifted.png``."""
        return self.root / "reliability_shifted.png"

    @property
    def scope_split(self) -> Path:
        """``split_out_of_scope.csv``."""
        return self.root / "split_out_of_scope.csv"

    @property
    def card(self) -> Path:
        """``model_card.md``."""
        return self.root / "model_card.md"

    @property
    def bundle(self) -> Path:
        """``bundle``."""
        return self.root / "bundle"


@dataclass(frozen=True)
class RunResult:
    """What a finished run produced."""

    run: Path
    bundle: Path
    metrics: dict[str, Any]


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def check_run_folder(out: Path) -> None:
    """Refuse a run folder that already holds files (a run is never overwritten).

    Raises:
        RunFolderError: ``out`` exists and is not an empty folder.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunFolderError(
            f"run folder {out} already exists and is not empty: choose another --out"
        )


def prepare_run_folder(out: Path) -> RunPaths:
    """Create the run folder (see `check_run_folder`).

    Raises:
        RunFolderError: ``out`` exists and is not an empty folder.
    """
    check_run_folder(out)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return RunPaths(out.resolve())


def _label_indices(samples: tuple[Sample, ...], classes: tuple[str, ...]) -> npt.NDArray[np.int64]:
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[s.label] for s in samples], np.int64)


def _dataset_summary(dataset: Dataset, skipped: list[Any]) -> dict[str, Any]:
    return {
        "root": str(dataset.root.resolve()),
        "slices": len(dataset.samples),
        "cases": len({s.case_id for s in dataset.samples}),
        "case_ids_from": dataset.case_ids_from,
        "excluded": dataset.excluded,
        "per_class_slices": class_counts(dataset.samples),
        "skipped": [dataclasses.asdict(s) for s in skipped],
    }


@dataclass(frozen=True)
class Prepared:
    """A dataset scanned, split by case and preprocessed once, with its run folder made."""

    paths: RunPaths
    labels: LabelMap
    dataset: Dataset
    rows: list[SplitRow]
    untrained: list[str]
    tensors: dict[str, Tensors]
    shifted: Tensors | None = None
    """The shifted-acquisition test set (data.shifted_test)."""
    scope: ScopeSplit | None = None
    """The out-of-scope images, split (data.out_of_scope)."""


def train(data: Path, cfg: TrainConfig, out: Path) -> RunResult:
    """Run every step on a folder-per-class dataset; return the run and its bundle.

    Raises:
        TrainerError: a dataset, label, run-folder or export problem (the message says which).
    """
    started = time.monotonic()
    check_run_folder(out)
    cfg = _with_absolute_paths(cfg)
    parent = _parent(cfg)
    if parent is not None:
        cfg = dataclasses.replace(
            cfg,
            model=dataclasses.replace(
                cfg.model, architecture=parent.architecture, width=parent.width
            ),
        )
    prepared = prepare(Path(data), cfg, out)
    train_t, val_t = prepared.tensors[TRAIN], prepared.tensors[VALIDATION]
    classes = prepared.labels.classes
    scope = prepared.scope
    result = fit(
        cfg,
        train_grey=train_t.grey,
        train_labels=_label_indices(train_t.samples, classes),
        val_grey=val_t.grey,
        val_labels=_label_indices(val_t.samples, classes),
        num_classes=len(classes),
        mirror=mirror_table(prepared.labels),
        scope=None
        if scope is None
        else ScopeImages(scope.tensors[TRAIN].grey, scope.tensors[VALIDATION].grey),
        init=None if parent is None else parent.model,
        negative=classes.index(NEGATIVE_CLASS) if NEGATIVE_CLASS in classes else None,
    )
    paths = prepared.paths
    result.model.save(paths.model)
    write_json(paths.history, result.history)
    plot_curves(result.history, result.best_epoch, paths.curves)
    metrics = _training_metrics(prepared, cfg, result)
    if parent is not None:
        metrics["parent"] = parent.info
    held_out = HeldOut(
        prepared.tensors[TEST],
        val_t,
        _calibration_inputs(train_t, classes, cfg, scope),
        shifted=prepared.shifted,
        scope=scope,
    )
    bundle = evaluate_and_bundle(
        paths,
        cfg,
        classes=classes,
        model=result.model,
        held_out=held_out,
        metrics=metrics,
        parent=None if parent is None else parent.info,
    )
    metrics["seconds_total"] = round(time.monotonic() - started, 1)
    write_json(paths.metrics, metrics)
    log.info("run_done", run=str(paths.root), seconds=metrics["seconds_total"])
    return RunResult(paths.root, bundle, metrics)


def _with_absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """Paths in the config made absolute, so that the run's config.yaml works from anywhere."""

    def absolute(value: str | None) -> str | None:
        return str(Path(value).resolve()) if value else value

    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data,
            labels=absolute(cfg.data.labels),
            shifted_test=absolute(cfg.data.shifted_test),
            out_of_scope=absolute(cfg.data.out_of_scope),
        ),
        finetune=dataclasses.replace(cfg.finetune, init_from=absolute(cfg.finetune.init_from)),
    )


def _parent(cfg: TrainConfig) -> Parent | None:
    """The bundle to start from, its labels checked against the label map (before any work)."""
    if not cfg.finetune.init_from:
        return None
    labels = load_label_map(Path(cfg.data.labels) if cfg.data.labels else DEFAULT_LABELS)
    parent = load_parent(Path(cfg.finetune.init_from), labels.classes)
    log.info("init_from", **parent.info, freeze=cfg.finetune.freeze)
    return parent


def prepare(data: Path, cfg: TrainConfig, out: Path) -> Prepared:
    """Scan the dataset, split it by case (before any augmentation), make the run folder, load.

    The run folder is made only once the dataset and its split are known to be usable, so a
    dataset problem leaves no half-made run.

    Raises:
        DatasetError: no usable dataset or split.
    """
    labels = load_label_map(Path(cfg.data.labels) if cfg.data.labels else DEFAULT_LABELS)
    dataset = scan(data, cfg.data, labels)
    counts = class_counts(dataset.samples)
    untrained = [c for c in labels.classes if c not in counts]
    log.info(
        "dataset",
        root=str(dataset.root),
        slices=len(dataset.samples),
        excluded=dataset.excluded,
        classes=len(counts),
        case_ids_from=dataset.case_ids_from,
    )
    if untrained:
        log.warning("classes_without_data", classes=untrained)
    assignment = assign_cases(
        dataset.samples, validation=cfg.split.validation, test=cfg.split.test, seed=cfg.seed
    )
    rows = split_rows(dataset.samples, assignment)
    leaks = leaked_cases(rows)
    if leaks:  # cannot happen by construction; checked because the whole evaluation rests on it
        raise DatasetError(f"cases in more than one split: {sorted(leaks)[:10]}")
    parts = {
        name: tuple(s for s in dataset.samples if assignment[s.case_id] == name)
        for name in (TRAIN, VALIDATION, TEST)
    }
    log.info(
        "split", **{name: len(samples) for name, samples in parts.items()}, cases=len(assignment)
    )
    if not parts[TRAIN] or not parts[TEST]:
        raise DatasetError(
            "the split left no training or no test cases: a class needs at least 2 cases"
        )
    extras = (
        (cfg.data.shifted_test, "shifted test set"),
        (cfg.data.out_of_scope, "out-of-scope dataset"),
    )
    for extra, what in extras:
        if extra and not Path(extra).is_dir():
            raise DatasetError(f"the {what} {extra} does not exist")
    paths = prepare_run_folder(out)
    dump_config(cfg, paths.config)
    write_json(paths.labels, list(labels.classes))
    write_split_csv(paths.split, rows)
    tensors = {
        name: load_tensors(
            dataset.root,
            samples,
            cfg.preprocess,
            workers=cfg.data.workers,
            dtype=np.float16 if name == TRAIN else np.float32,
        )
        for name, samples in parts.items()
    }
    shifted, scope = _extra_sets(cfg, labels, cfg.data.workers)
    if scope is not None:
        write_split_csv(paths.scope_split, scope.rows)
    write_json(
        paths.run_json,
        {
            "data_root": str(dataset.root.resolve()),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": versions(),
            "git_commit": _git_commit(),
        },
    )
    return Prepared(paths, labels, dataset, rows, untrained, tensors, shifted, scope)


def _extra_sets(
    cfg: TrainConfig, labels: LabelMap, workers: int
) -> tuple[Tensors | None, ScopeSplit | None]:
    """The shifted-acquisition test set and the out-of-scope set, when the config names them."""
    shifted = None
    if cfg.data.shifted_test:
        _, shifted = load_shifted(Path(cfg.data.shifted_test), cfg.data, labels, cfg.preprocess)
    scope = None
    if cfg.data.out_of_scope:
        scope = load_out_of_scope(
            Path(cfg.data.out_of_scope), cfg.split, cfg.preprocess, seed=cfg.seed, workers=workers
        )
    return shifted, scope


def _training_metrics(prepared: Prepared, cfg: TrainConfig, result: FitResult) -> dict[str, Any]:
    """The run's metrics before evaluation: data, split and how the fit went."""
    skipped = [s for t in prepared.tensors.values() for s in t.skipped]
    return {
        "research_use_only": True,
        "classes": list(prepared.labels.classes),
        "data": _dataset_summary(prepared.dataset, skipped),
        "split": summary(prepared.rows),
        "classes_without_data": prepared.untrained,
        "training": {
            "architecture": cfg.model.architecture,
            "parameters": int(result.model.count_params()),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "images_per_class": result.images_per_class,
            "steps_per_epoch": result.steps_per_epoch,
            "stopped_by_time_budget": result.stopped_by_time,
            "in_scope_head": len(result.model.outputs) == 2,
            "init_from": cfg.finetune.init_from,
            "frozen_layers": list(result.frozen),
            "seconds": round(result.seconds, 1),
            "final": {k: v[-1] for k, v in result.history.items() if v},
        },
    }


def _calibration_inputs(
    train_t: Tensors, classes: tuple[str, ...], cfg: TrainConfig, scope: ScopeSplit | None
) -> npt.NDArray[np.float32]:
    """Class-balanced training images for INT8, plus out-of-scope ones in the epoch share."""
    indices = ir.calibration_indices(
        _label_indices(train_t.samples, classes), cfg.export.calibration_images, cfg.seed
    )
    grey = train_t.grey[indices]
    if scope is not None and len(scope.tensors[TRAIN].samples):
        oos = scope.tensors[TRAIN].grey
        count = min(len(oos), round(cfg.scope.epoch_share * len(indices)))
        rng = np.random.default_rng([cfg.seed, 0xCA1C])
        grey = np.concatenate([grey, oos[np.sort(rng.permutation(len(oos))[:count])]])
    return model_inputs(grey, cfg.preprocess.channels)


def _predict(model: keras.Model, tensors: Tensors, channels: int) -> ir.Outputs:
    """Class probabilities and, for a two-output model, in_scope of every tensor."""
    two = len(model.outputs) == 2
    width = model.outputs[0].shape[-1]
    if not len(tensors.samples):
        return ir.Outputs(
            np.zeros((0, width), np.float32), np.zeros(0, np.float32) if two else None
        )
    inputs = model_inputs(tensors.grey, channels)
    out = model.predict(inputs, batch_size=_PREDICT_BATCH, verbose=0)
    if not two:
        return ir.Outputs(np.asarray(out, np.float32))
    return ir.Outputs(np.asarray(out[0], np.float32), np.asarray(out[1], np.float32).reshape(-1))


@dataclass(frozen=True)
class HeldOut:
    """What evaluation and export read: held-out splits and the INT8 calibration images."""

    test: Tensors
    validation: Tensors
    calibration: npt.NDArray[np.float32]
    shifted: Tensors | None = None
    scope: ScopeSplit | None = None


@dataclass(frozen=True)
class Decisions:
    """What is fitted on validation after training: temperature and thresholds."""

    calibration: dict[str, Any]
    finding: dict[str, Any] | None
    in_scope: dict[str, Any] | None

    @property
    def temperature(self) -> float:
        """The fitted temperature."""
        return float(self.calibration["temperature"])

    def manifest(self) -> dict[str, Any]:
        """The manifest fields the daemon reads (docs/training.md)."""
        thresholds: dict[str, Any] = {}
        if self.finding is not None:
            thresholds["finding"] = self.finding
        if self.in_scope is not None:
            thresholds["in_scope"] = self.in_scope
        out: dict[str, Any] = {
            "calibration": {
                **self.calibration,
                "applies_to": "classes",
                "fitted_on": "validation slices",
                "formula": "softmax(log(p) / temperature)",
            }
        }
        if thresholds:
            out["thresholds"] = thresholds
        return out


def _decide(
    cfg: TrainConfig,
    classes: tuple[str, ...],
    val: ir.Outputs,
    val_truth: npt.NDArray[np.int64],
    oos_val: npt.NDArray[np.float32] | None = None,
) -> Decisions:
    """Fit the temperature, then the finding and in_scope thresholds, on validation slices.

    ``oos_val``: the in_scope scores of the validation out-of-scope images (`ScopeConfig.rule`).
    """
    calibration = fit_temperature(val.classes, val_truth)
    calibrated = apply_temperature(val.classes, calibration["temperature"])
    finding = None
    if NEGATIVE_CLASS in classes and len(val_truth):
        c = cfg.calibration
        chosen = choose_finding_thresholds(
            calibrated,
            val_truth,
            classes.index(NEGATIVE_CLASS),
            target_specificity=c.target_specificity,
            target_sensitivity=c.target_sensitivity,
        )
        finding = {
            "negative_class": NEGATIVE_CLASS,
            **chosen,
            "target_specificity": c.target_specificity,
            "target_sensitivity": c.target_sensitivity,
            "on": "calibrated slice probabilities",
        }
    in_scope = None
    if val.in_scope is not None:
        midpoint = cfg.scope.rule == "midpoint" and oos_val is not None
        in_scope = {
            "threshold": choose_scope_threshold(
                val.in_scope,
                cfg.scope.max_wrongly_refused,
                oos_scores=oos_val if midpoint else None,
                min_refused=cfg.scope.min_refused,
            ),
            "max_wrongly_refused": cfg.scope.max_wrongly_refused,
            "min_refused": cfg.scope.min_refused if midpoint else None,
            "rule": "midpoint" if midpoint else "dwi",
            "refuse_when": "in_scope < threshold",
        }
    log.info(
        "calibrated",
        temperature=round(calibration["temperature"], 4),
        nll_before=calibration["nll_before"],
        nll_after=calibration["nll_after"],
        finding=finding and {k: finding[k] for k in ("acute_infarct", "no_acute_infarct")},
        in_scope=in_scope and in_scope["threshold"],
    )
    return Decisions(calibration, finding, in_scope)


def _assess(
    cfg: TrainConfig,
    classes: tuple[str, ...],
    tensors: Tensors,
    out: ir.Outputs,
    decisions: Decisions,
) -> dict[str, Any]:
    return assess(
        raw=out.classes,
        calibrated=apply_temperature(out.classes, decisions.temperature),
        truth=_label_indices(tensors.samples, classes),
        cases=[s.case_id for s in tensors.samples],
        files=[s.rel for s in tensors.samples],
        classes=classes,
        thresholds=decisions.finding or {"acute_infarct": 1.0, "no_acute_infarct": 1.0},
        scope_scores=out.in_scope,
        scope_threshold=None if decisions.in_scope is None else decisions.in_scope["threshold"],
        top_k=cfg.evaluate.top_k,
        bins=cfg.evaluate.ece_bins,
    )


def _refusals(
    scope: ScopeSplit, split: str, scores: npt.NDArray[np.float32], threshold: float
) -> dict[str, Any]:
    """Out-of-scope images refused by the in_scope check: overall, per kind, format, code."""
    tensors = scope.tensors[split]
    refused = scores < threshold
    groups: dict[str, dict[str, list[bool]]] = {"per_kind": {}, "per_format": {}, "per_code": {}}
    for sample, r in zip(tensors.samples, refused.tolist(), strict=True):
        groups["per_kind"].setdefault(sample.label, []).append(r)
        groups["per_format"].setdefault(file_format(sample.rel), []).append(r)
        code = scope.expected_code.get(sample.rel) or "unknown"
        groups["per_code"].setdefault(code, []).append(r)
    out: dict[str, Any] = {
        "n": len(refused),
        "refused": float(refused.mean()) if len(refused) else None,
        "not_preprocessed": len(tensors.skipped),
        "not_preprocessed_codes": sorted({s.code for s in tensors.skipped}),
    }
    for key, table in groups.items():
        out[key] = {name: {"n": len(v), "refused": float(np.mean(v))} for name, v in table.items()}
    return out


def evaluate_and_bundle(
    paths: RunPaths,
    cfg: TrainConfig,
    *,
    classes: tuple[str, ...],
    model: keras.Model,
    held_out: HeldOut,
    metrics: dict[str, Any],
    parent: dict[str, str] | None = None,
) -> Path:
    """Evaluate on held-out cases, calibrate, then export, check and publish the bundle.

    Fits the temperature and thresholds on validation (`_decide`), reports the test and shifted
    test sets and the out-of-scope images with them, updates ``metrics`` in place and writes
    ``metrics.json``, the plots and the model card.

    Raises:
        ExportError: conversion, quantisation, the parity gate or bundle verification failed.
    """
    channels = cfg.preprocess.channels
    test, validation = held_out.test, held_out.validation
    val_out = _predict(model, validation, channels)
    oos_outs = {}  # the out-of-scope splits' outputs, predicted once
    if held_out.scope is not None:
        oos_outs = {
            split: _predict(model, held_out.scope.tensors[split], channels)
            for split in (VALIDATION, TEST)
        }
    oos_val = oos_outs[VALIDATION].in_scope if oos_outs else None
    decisions = _decide(cfg, classes, val_out, _label_indices(validation.samples, classes), oos_val)
    metrics["calibration"] = decisions.calibration
    metrics["thresholds"] = decisions.manifest().get("thresholds", {})
    metrics["validation"] = _assess(cfg, classes, validation, val_out, decisions)
    test_out = _predict(model, test, channels)
    metrics["test"] = _assess(cfg, classes, test, test_out, decisions)
    sets = [("test", test, test_out, paths.confusion, paths.reliability)]
    shifted_out = None
    if held_out.shifted is not None:
        shifted_out = _predict(model, held_out.shifted, channels)
        metrics["shifted_test"] = _assess(cfg, classes, held_out.shifted, shifted_out, decisions)
        sets.append(
            (
                "shifted_test",
                held_out.shifted,
                shifted_out,
                paths.confusion_shifted,
                paths.reliability_shifted,
            )
        )
    scope_inputs, keras_scope = None, test_out.in_scope
    if held_out.scope is not None and decisions.in_scope is not None:
        threshold = decisions.in_scope["threshold"]
        metrics["out_of_scope"] = {}
        for split in (VALIDATION, TEST):
            oos_out = oos_outs[split]
            assert oos_out.in_scope is not None  # noqa: S101  (a two-output model)
            metrics["out_of_scope"][split] = _refusals(
                held_out.scope, split, oos_out.in_scope, threshold
            )
            if split == TEST:
                scope_inputs = model_inputs(held_out.scope.tensors[TEST].grey, channels)
                if test_out.in_scope is not None:
                    keras_scope = np.concatenate([test_out.in_scope, oos_out.in_scope])
    for name, tensors, out, confusion_png, reliability_png in sets:
        _log_and_plot(
            cfg,
            classes,
            name=name,
            tensors=tensors,
            out=out,
            decisions=decisions,
            report=metrics[name],
            pngs=(confusion_png, reliability_png),
        )
    extra = decisions.manifest()
    if parent is not None:
        extra["parent"] = parent
    job = BundleJob(
        cfg=cfg,
        classes=classes,
        model=model,
        workdir=paths.root,
        test_inputs=model_inputs(test.grey, channels),
        test_truth=_label_indices(test.samples, classes),
        test_cases=tuple(s.case_id for s in test.samples),
        keras_probs=test_out.classes,
        calibration=held_out.calibration,
        keras_scope=keras_scope,
        scope_inputs=scope_inputs,
        shifted=None
        if held_out.shifted is None
        else ShiftedSet(
            model_inputs(held_out.shifted.grey, channels),
            _label_indices(held_out.shifted.samples, classes),
            tuple(s.case_id for s in held_out.shifted.samples),
        ),
        manifest_extra=extra,
        temperature=decisions.temperature,
    )
    return build_bundle(job, metrics, paths.bundle, on_metrics=lambda m: _write_card(paths, cfg, m))


def _log_and_plot(
    cfg: TrainConfig,
    classes: tuple[str, ...],
    *,
    name: str,
    tensors: Tensors,
    out: ir.Outputs,
    decisions: Decisions,
    report: dict[str, Any],
    pngs: tuple[Path, Path],
) -> None:
    case = report["case"]
    log.info(
        "test_metrics",
        set=name,
        cases=case["n"],
        case_top1=case["top1"],
        case_topk=case[f"top{cfg.evaluate.top_k}"],
        slice_top1=report["slice"]["top1"],
        no_acute_infarct_recall=case.get("no_acute_infarct_recall"),
        ece=case["ece"],
        ece_uncalibrated=case["ece_uncalibrated"],
    )
    label = "Test" if name == "test" else "Shifted-acquisition test"
    title = f"{label} cases ({case['n']}): top-1 {100 * case['top1']:.1f} % (research use only)"
    plot_confusion(np.array(case["confusion"]), classes, pngs[0], title)
    plot_reliability(
        out.classes,
        calibrated=apply_temperature(out.classes, decisions.temperature),
        truth=_label_indices(tensors.samples, classes),
        bins=cfg.evaluate.ece_bins,
        path=pngs[1],
        title=f"{label} slices ({len(tensors.samples)}), T = {decisions.temperature:.2f}: "
        f"ECE {report['slice']['ece_uncalibrated']:.3f} -> {report['slice']['ece']:.3f}",
    )


def _write_card(paths: RunPaths, cfg: TrainConfig, metrics: dict[str, Any]) -> str:
    card = model_card(cfg, metrics)
    paths.card.write_text(card, encoding="utf-8")
    write_json(paths.metrics, metrics)
    return card


def _rows_to_samples(rows: list[SplitRow], split: str) -> tuple[Sample, ...]:
    return tuple(
        Sample(rel=r.file, raw_label=r.raw_label, label=r.label, case_id=r.case_id)
        for r in rows
        if r.split == split
    )


def export_run(run: Path, *, name: str | None = None, version: str | None = None) -> RunResult:
    """Redo evaluate -> export -> bundle from a finished run folder.

    Raises:
        RunFolderError: the run folder lacks the model, config, split or data it needs.
    """
    paths = RunPaths(Path(run).resolve())
    for needed in (paths.config, paths.run_json, paths.labels, paths.split, paths.model):
        if not needed.is_file():
            raise RunFolderError(f"{needed} is missing: is {run} a finished training run?")
    overrides = [f"export.name={name}"] if name else []
    overrides += [f"export.version={version}"] if version else []
    cfg = load_config(paths.config, overrides)
    if overrides:
        dump_config(cfg, paths.config)
    info = json.loads(paths.run_json.read_text(encoding="utf-8"))
    data_root = Path(info["data_root"])
    if not data_root.is_dir():
        raise RunFolderError(f"the run's dataset {data_root} is not there any more")
    classes = tuple(json.loads(paths.labels.read_text(encoding="utf-8")))
    rows = read_split_csv(paths.split)
    unknown = sorted({r.label for r in rows} - set(classes))
    if unknown:
        raise RunFolderError(f"split.csv names classes not in labels.json: {', '.join(unknown)}")
    model = keras.models.load_model(paths.model)
    workers = cfg.data.workers
    test = load_tensors(data_root, _rows_to_samples(rows, TEST), cfg.preprocess, workers=workers)
    validation = load_tensors(
        data_root, _rows_to_samples(rows, VALIDATION), cfg.preprocess, workers=workers
    )
    train_samples = _rows_to_samples(rows, TRAIN)
    chosen = ir.calibration_indices(
        _label_indices(train_samples, classes), cfg.export.calibration_images, cfg.seed
    )
    calib_t = load_tensors(
        data_root, tuple(train_samples[i] for i in chosen), cfg.preprocess, workers=workers
    )
    labels = load_label_map(Path(cfg.data.labels) if cfg.data.labels else DEFAULT_LABELS)
    shifted, scope = _extra_sets(cfg, labels, workers)
    if (
        scope is not None
        and paths.scope_split.is_file()
        and read_split_csv(paths.scope_split) != scope.rows
    ):
        raise RunFolderError(
            f"the out-of-scope dataset {cfg.data.out_of_scope} no longer splits as "
            "split_out_of_scope.csv records"
        )
    calibration = _calibration_inputs(calib_t, classes, cfg, scope)
    metrics: dict[str, Any] = {}
    if paths.metrics.is_file():
        metrics = json.loads(paths.metrics.read_text(encoding="utf-8"))
    metrics["classes"] = list(classes)
    held_out = HeldOut(test, validation, calibration, shifted=shifted, scope=scope)
    bundle = evaluate_and_bundle(
        paths,
        cfg,
        classes=classes,
        model=model,
        held_out=held_out,
        metrics=metrics,
        parent=metrics.get("parent"),
    )
    return RunResult(paths.root, bundle, metrics)
