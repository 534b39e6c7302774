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
    metrics.json             test metrics (case and slice level), validation, export parity
    training_curves.png      loss and accuracy per epoch
    confusion_matrix.png     case-level test confusion matrix
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

from trainer import export as ir
from trainer.augment import mirror_table
from trainer.card import model_card
from trainer.config import TrainConfig, dump_config, load_config
from trainer.dataset import Dataset, Sample, Tensors, class_counts, load_tensors, scan
from trainer.errors import DatasetError, RunFolderError
from trainer.fit import FitResult, fit
from trainer.inputs import model_inputs
from trainer.labels import REPO_LABELS, LabelMap, load_label_map
from trainer.metrics import evaluate
from trainer.package import BundleJob, build_bundle
from trainer.plots import plot_confusion, plot_curves
from trainer.records import versions, write_json
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


def train(data: Path, cfg: TrainConfig, out: Path) -> RunResult:
    """Run every step on a folder-per-class dataset; return the run and its bundle.

    Raises:
        TrainerError: a dataset, label, run-folder or export problem (the message says which).
    """
    started = time.monotonic()
    check_run_folder(out)
    cfg = _with_absolute_labels(cfg)
    prepared = prepare(Path(data), cfg, out)
    train_t, val_t = prepared.tensors[TRAIN], prepared.tensors[VALIDATION]
    classes = prepared.labels.classes
    result = fit(
        cfg,
        train_grey=train_t.grey,
        train_labels=_label_indices(train_t.samples, classes),
        val_grey=val_t.grey,
        val_labels=_label_indices(val_t.samples, classes),
        num_classes=len(classes),
        mirror=mirror_table(prepared.labels),
    )
    paths = prepared.paths
    result.model.save(paths.model)
    write_json(paths.history, result.history)
    plot_curves(result.history, result.best_epoch, paths.curves)
    metrics = _training_metrics(prepared, cfg, result)
    held_out = HeldOut(prepared.tensors[TEST], val_t, _calibration_inputs(train_t, classes, cfg))
    bundle = evaluate_and_bundle(
        paths, cfg, classes=classes, model=result.model, held_out=held_out, metrics=metrics
    )
    metrics["seconds_total"] = round(time.monotonic() - started, 1)
    write_json(paths.metrics, metrics)
    log.info("run_done", run=str(paths.root), seconds=metrics["seconds_total"])
    return RunResult(paths.root, bundle, metrics)


def _with_absolute_labels(cfg: TrainConfig) -> TrainConfig:
    """The label map path made absolute, so that the run's config.yaml works from anywhere."""
    if not cfg.data.labels:
        return cfg
    absolute = str(Path(cfg.data.labels).resolve())
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, labels=absolute))


def prepare(data: Path, cfg: TrainConfig, out: Path) -> Prepared:
    """Scan the dataset, split it by case (before any augmentation), make the run folder, load.

    The run folder is made only once the dataset and its split are known to be usable, so a
    dataset problem leaves no half-made run.

    Raises:
        DatasetError: no usable dataset or split.
    """
    labels = load_label_map(Path(cfg.data.labels) if cfg.data.labels else REPO_LABELS)
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
    write_json(
        paths.run_json,
        {
            "data_root": str(dataset.root.resolve()),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": versions(),
            "git_commit": _git_commit(),
        },
    )
    return Prepared(paths, labels, dataset, rows, untrained, tensors)


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
            "seconds": round(result.seconds, 1),
            "final": {k: v[-1] for k, v in result.history.items() if v},
        },
    }


def _calibration_inputs(
    train_t: Tensors, classes: tuple[str, ...], cfg: TrainConfig
) -> npt.NDArray[np.float32]:
    indices = ir.calibration_indices(
        _label_indices(train_t.samples, classes), cfg.export.calibration_images, cfg.seed
    )
    return model_inputs(train_t.grey[indices], cfg.preprocess.channels)


def _predict(model: keras.Model, tensors: Tensors, channels: int) -> npt.NDArray[np.float32]:
    if not len(tensors.samples):
        return np.zeros((0, model.output_shape[-1]), np.float32)
    inputs = model_inputs(tensors.grey, channels)
    return np.asarray(model.predict(inputs, batch_size=_PREDICT_BATCH, verbose=0), np.float32)


def _split_metrics(
    probs: npt.NDArray[np.float32], tensors: Tensors, classes: tuple[str, ...], cfg: TrainConfig
) -> dict[str, Any]:
    return evaluate(
        probs,
        _label_indices(tensors.samples, classes),
        [s.case_id for s in tensors.samples],
        classes,
        top_k=cfg.evaluate.top_k,
        bins=cfg.evaluate.ece_bins,
    )


@dataclass(frozen=True)
class HeldOut:
    """What evaluation and export read: held-out splits and the INT8 calibration images."""

    test: Tensors
    validation: Tensors
    calibration: npt.NDArray[np.float32]


def evaluate_and_bundle(
    paths: RunPaths,
    cfg: TrainConfig,
    *,
    classes: tuple[str, ...],
    model: keras.Model,
    held_out: HeldOut,
    metrics: dict[str, Any],
) -> Path:
    """Evaluate on held-out cases, then export, check and publish the bundle.

    Updates ``metrics`` in place and writes ``metrics.json``, the plots and the model card.

    Raises:
        ExportError: conversion, quantisation, the parity gate or bundle verification failed.
    """
    channels = cfg.preprocess.channels
    test = held_out.test
    keras_probs = _predict(model, test, channels)
    metrics["test"] = _split_metrics(keras_probs, test, classes, cfg)
    validation = held_out.validation
    val_probs = _predict(model, validation, channels)
    metrics["validation"] = _split_metrics(val_probs, validation, classes, cfg)
    case = metrics["test"]["case"]
    log.info(
        "test_metrics",
        cases=case["n"],
        case_top1=case["top1"],
        case_topk=case[f"top{cfg.evaluate.top_k}"],
        slice_top1=metrics["test"]["slice"]["top1"],
        ece=case["ece"],
    )
    title = f"Test cases ({case['n']}): top-1 {100 * case['top1']:.1f} % (research use only)"
    plot_confusion(np.array(case["confusion"]), classes, paths.confusion, title)
    job = BundleJob(
        cfg=cfg,
        classes=classes,
        model=model,
        workdir=paths.root,
        test_inputs=model_inputs(test.grey, channels),
        test_truth=_label_indices(test.samples, classes),
        test_cases=tuple(s.case_id for s in test.samples),
        keras_probs=keras_probs,
        calibration=held_out.calibration,
    )
    return build_bundle(job, metrics, paths.bundle, on_metrics=lambda m: _write_card(paths, cfg, m))


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
    calibration = model_inputs(calib_t.grey, cfg.preprocess.channels)
    metrics: dict[str, Any] = {}
    if paths.metrics.is_file():
        metrics = json.loads(paths.metrics.read_text(encoding="utf-8"))
    metrics["classes"] = list(classes)
    held_out = HeldOut(test, validation, calibration)
    bundle = evaluate_and_bundle(
        paths, cfg, classes=classes, model=model, held_out=held_out, metrics=metrics
    )
    return RunResult(paths.root, bundle, metrics)
