"""One segmenter run (``infarctwatch train DATA --task segment --classifier BUNDLE``).

Steps: read the classifier bundle (its preprocessing is the segmenter's) -> list the slices with
their masks and split them by case (`trainer.split`, as the classifier: no case on both sides) ->
load -> fit -> choose the threshold and smallest lesion on validation -> score the test split and
the shifted test set, each with and without the ADC channel -> figure -> FP16 IR, parity -> the
format 2 bundle. The run folder::

    config.yaml          the full resolved configuration (segment.classifier, the version, ...)
    run.json             dataset root, framework versions, git commit, the classifier bundle
    split.csv            file, raw_label, label, case_id, split
    history.json         per-epoch losses and Dice (training augmented, validation plain)
    model.keras          the fitted Keras segmenter
    metrics.json         split, training, post-processing, validation/test/shifted figures
                         (with_adc, without_adc, per case), targets, export parity
    segmentation_cases.png, segmentation_cases_shifted.png   typical and worst cases
    model_card.md        the segmenter's model-card section (also in bundle/segmenter/)
    bundle/              the classifier bundle + segmenter/ (format 2, a new version)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from daemon.errors import BundleError
from daemon.shared.bundle import load_bundle
from daemon.shared.labels import DEFAULT_LABELS, load_label_map
from trainer.config import TrainConfig, dump_config
from trainer.errors import DatasetError, ExportError, TrainConfigError
from trainer.records import json_safe, versions, write_json
from trainer.run import _git_commit, check_run_folder, prepare_run_folder
from trainer.segment import export
from trainer.segment.card import model_card
from trainer.segment.choose import binarise, choose_postprocessing, score_cases
from trainer.segment.data import SegTensors, list_slices, load_slices
from trainer.segment.figures import plot_cases
from trainer.segment.fit import fit_segmenter, predict
from trainer.segment.metrics import case_rows, summarise
from trainer.split import (
    TEST,
    TRAIN,
    VALIDATION,
    assign_cases,
    leaked_cases,
    split_rows,
    summary,
    write_split_csv,
)

if TYPE_CHECKING:
    import keras

    from daemon.shared.bundle import Bundle

log = structlog.get_logger("trainer.segment.run")
TARGETS = {
    "dice_in_distribution": ("test", "dice_mean", 0.80, ">="),
    "dice_shifted": ("shifted_test", "dice_mean", 0.70, ">="),
    "lesion_f1": ("test", "lesion_f1_mean", 0.85, ">="),
    "lesion_f1_shifted": ("shifted_test", "lesion_f1_mean", 0.85, ">="),
    "median_avd_ml": ("test", "avd_ml_median", 1.0, "<="),
    "median_avd_ml_shifted": ("shifted_test", "avd_ml_median", 1.0, "<="),
    "normal_clean_share": ("test", "normal_clean_share", 0.95, ">="),
    "normal_clean_share_shifted": ("shifted_test", "normal_clean_share", 0.95, ">="),
}
"""The issue's targets: (set, figure, target, comparison), checked with and without ADC."""


@dataclass(frozen=True)
class SegRunResult:
    """What a finished segmenter run produced."""

    run: Path
    bundle: Path
    metrics: dict[str, Any]


def _classifier(cfg: TrainConfig) -> Bundle:
    if not cfg.segment.classifier:
        raise TrainConfigError(
            ["At 'segment.classifier': --task segment needs the classifier bundle (--classifier)"]
        )
    try:
        return load_bundle(Path(cfg.segment.classifier))
    except BundleError as exc:
        raise ExportError(f"the classifier bundle does not verify: {exc}") from exc


def resolve(cfg: TrainConfig, classifier: Bundle) -> TrainConfig:
    """Absolute paths, the version, and the classifier's preprocessing, recorded in config.yaml."""
    shifted = cfg.data.shifted_test
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data, shifted_test=str(Path(shifted).resolve()) if shifted else None
        ),
        segment=dataclasses.replace(
            cfg.segment,
            classifier=str(classifier.path),
            version=cfg.segment.version or f"{classifier.version}+seg",
        ),
        preprocess=classifier.preprocess,
    )


def _evaluate(
    model: keras.Model, tensors: SegTensors, threshold: float, min_px: int
) -> tuple[dict[str, Any], Any, Any]:
    """Figures with the ADC channel as loaded and without it; the with-ADC scores and masks."""
    out: dict[str, Any] = {
        "slices": len(tensors.samples),
        "with_adc_slices": int(tensors.has_adc.sum()),
    }
    kept: tuple[Any, Any] = ([], np.zeros((0,), bool))
    for key, part in (("with_adc", tensors), ("without_adc", tensors.without_adc())):
        predicted = binarise(predict(model, part.images), threshold, min_px)
        scores = score_cases(predicted, part)
        out[key] = {**summarise(scores), "per_case": case_rows(scores)}
        if key == "with_adc":
            kept = (scores, predicted)
    return out, kept[0], kept[1]


def check_targets(metrics: dict[str, Any]) -> dict[str, Any]:
    """Each target of the issue, with and without ADC: value, target, met (None: no data)."""
    out: dict[str, Any] = {}
    for name, (where, key, target, how) in TARGETS.items():
        for adc in ("with_adc", "without_adc"):
            value = metrics.get(where, {}).get(adc, {}).get(key)
            met = None
            if value is not None:
                met = value >= target if how == ">=" else value <= target
            out[f"{name}.{adc}"] = {"value": value, "target": target, "comparison": how, "met": met}
    return out


def manifest_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The segmenter's ``metrics_summary`` in the manifest: headline figures."""
    out: dict[str, Any] = {
        "threshold": metrics["postprocessing"]["threshold"],
        "min_lesion_px": metrics["postprocessing"]["min_lesion_px"],
    }
    for where in ("test", "shifted_test"):
        for adc in ("with_adc", "without_adc"):
            figures = metrics.get(where, {}).get(adc)
            if not figures:
                continue
            prefix = f"{where}_{adc}"
            for key in ("dice_mean", "lesion_f1_mean", "avd_ml_median", "normal_clean_share"):
                out[f"{prefix}_{key}"] = figures.get(key)
            out[f"{prefix}_cases"] = figures.get("cases")
    parity = metrics.get("export", {}).get("parity", {})
    out["parity_max_abs_prob_delta"] = parity.get("max_abs_prob_delta")
    return out


def _split(
    cfg: TrainConfig, data: Path
) -> tuple[Path, dict[str, list[Any]], list[Any], dict[str, Any]]:
    labels = load_label_map(Path(cfg.data.labels) if cfg.data.labels else DEFAULT_LABELS)
    dataset, slices = list_slices(data, cfg.data, labels)
    samples = [s.sample for s in slices]
    assignment = assign_cases(
        samples, validation=cfg.split.validation, test=cfg.split.test, seed=cfg.seed
    )
    rows = split_rows(samples, assignment)
    if leaked := leaked_cases(rows):  # cannot happen by construction; the evaluation rests on it
        raise DatasetError(f"cases in more than one split: {sorted(leaked)[:10]}")
    parts = {
        name: [s for s in slices if assignment[s.sample.case_id] == name]
        for name in (TRAIN, VALIDATION, TEST)
    }
    if not parts[TRAIN] or not parts[TEST]:
        raise DatasetError("the split left no training or no test cases: a class needs 2 cases")
    return dataset.root, parts, rows, summary(rows)


def _choose(cfg: TrainConfig, model: keras.Model, validation: SegTensors) -> dict[str, Any]:
    """The threshold and min_lesion_px on validation, as ``segment.choose_on`` says."""
    if cfg.segment.choose_on == "dwi_only":
        validation = validation.without_adc()
    probs = predict(model, validation.images)
    chosen = choose_postprocessing(probs, validation, cfg.segment.target_normal_clean)
    chosen["chosen_on"] = cfg.segment.choose_on
    return chosen


def train_segmenter(data: Path, cfg: TrainConfig, out: Path) -> SegRunResult:
    """Run every step (see the module docstring); return the run and its bundle.

    Raises:
        TrainerError: a configuration, dataset, run-folder or export problem.
    """
    started = time.monotonic()
    check_run_folder(out)
    classifier = _classifier(cfg)
    cfg = resolve(cfg, classifier)
    root, parts, rows, split_summary = _split(cfg, Path(data))
    shifted_slices = None
    if cfg.data.shifted_test:
        if not Path(cfg.data.shifted_test).is_dir():
            raise DatasetError(f"the shifted test set {cfg.data.shifted_test} does not exist")
        labels = load_label_map(Path(cfg.data.labels) if cfg.data.labels else DEFAULT_LABELS)
        shifted_root, shifted_list = list_slices(Path(cfg.data.shifted_test), cfg.data, labels)
        shifted_slices = (shifted_root.root, shifted_list)
    run = prepare_run_folder(out).root
    dump_config(cfg, run / "config.yaml")
    write_split_csv(run / "split.csv", rows)
    spec, workers = cfg.preprocess, cfg.data.workers
    tensors = {
        name: load_slices(
            root, part, spec, workers=workers, dtype=np.float16 if name == TRAIN else np.float32
        )
        for name, part in parts.items()
    }
    shifted = (
        None if shifted_slices is None else load_slices(*shifted_slices, spec, workers=workers)
    )
    write_json(
        run / "run.json",
        {
            "task": "segment",
            "data_root": str(root.resolve()),
            "classifier": {
                "path": str(classifier.path),
                "name": classifier.name,
                "version": classifier.version,
                "sha256": classifier.sha256,
            },
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": versions(),
            "git_commit": _git_commit(),
        },
    )
    result = fit_segmenter(cfg, tensors[TRAIN], tensors[VALIDATION])
    result.model.save(run / "model.keras")
    write_json(run / "history.json", result.history)
    chosen = _choose(cfg, result.model, tensors[VALIDATION])
    threshold, min_px = chosen["threshold"], chosen["min_lesion_px"]
    log.info("postprocessing", threshold=threshold, min_lesion_px=min_px, met=chosen["target_met"])
    metrics: dict[str, Any] = {
        "task": "segment",
        "research_use_only": True,
        "classifier": {"name": classifier.name, "version": classifier.version},
        "data": {
            "root": str(root.resolve()),
            "skipped": [dataclasses.asdict(s) for t in tensors.values() for s in t.skipped],
        },
        "split": split_summary,
        "training": {
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "seconds": round(result.seconds, 1),
            "slices_per_epoch": result.slices_per_epoch,
            "steps_per_epoch": result.steps_per_epoch,
            "stopped_by_time": result.stopped_by_time,
            "parameters": int(result.model.count_params()),
        },
        "postprocessing": chosen,
    }
    val_figures, _, _ = _evaluate(result.model, tensors[VALIDATION], threshold, min_px)
    metrics["validation"] = val_figures
    test_figures, scores, predicted = _evaluate(result.model, tensors[TEST], threshold, min_px)
    metrics["test"] = test_figures
    plot_cases(scores, tensors[TEST], predicted, run / "segmentation_cases.png", "Test split")
    if shifted is not None:
        shifted_figures, s_scores, s_pred = _evaluate(result.model, shifted, threshold, min_px)
        metrics["shifted_test"] = shifted_figures
        plot_cases(
            s_scores, shifted, s_pred, run / "segmentation_cases_shifted.png", "Shifted test set"
        )
    metrics["targets"] = check_targets(metrics)
    write_json(run / "metrics.json", metrics)  # the figures survive a failed export
    metrics["export"] = _export_ir(
        cfg, model=result.model, test=tensors[TEST], threshold=threshold, min_px=min_px, run=run
    )
    card = model_card(cfg, metrics)
    (run / "model_card.md").write_text(card, encoding="utf-8")
    metrics_out = json_safe(metrics)
    write_json(run / "metrics.json", metrics_out)
    probe = tensors[TEST].images[:2].astype(np.float32)
    bundle = export.build_bundle(
        classifier.path,
        run / "bundle",
        ir_dir=run / ".ir",
        version=str(cfg.segment.version),
        threshold=threshold,
        min_lesion_px=min_px,
        summary=json_safe(manifest_summary(metrics)),
        metrics=metrics_out,
        card=card,
        probe=probe if len(probe) else np.zeros((1, 128, 128, 2), np.float32),
    )
    shutil.rmtree(run / ".ir", ignore_errors=True)
    metrics["seconds_total"] = round(time.monotonic() - started, 1)
    write_json(run / "metrics.json", metrics)
    log.info("run_done", run=str(run), seconds=metrics["seconds_total"])
    return SegRunResult(run, bundle, json_safe(metrics))


def _export_ir(
    cfg: TrainConfig,
    *,
    model: keras.Model,
    test: SegTensors,
    threshold: float,
    min_px: int,
    run: Path,
) -> dict[str, Any]:
    """Write the FP16 IR into ``run/.ir``; parity against Keras and the FP16 figures on test."""
    xml = run / ".ir" / "model.xml"
    export.write_ir(model, run / ".ir", xml)
    images = test.images.astype(np.float32)
    keras_probs = predict(model, images)
    check = export.parity(keras_probs, export.predict_ir(xml, images, f32=True), threshold)
    log.info("parity", **{k: v for k, v in check.items() if v is not None})
    delta, limit = check["p9999_abs_prob_delta"], cfg.segment.max_prob_delta
    if delta is not None and delta > limit:
        raise ExportError(
            f"Keras and the FP16 IR differ by {delta:.4g} or more in 0.01 % of the lesion "
            f"probabilities on the test split, more than segment.max_prob_delta={limit:g}"
        )
    agreement, least = check["mask_dice"], cfg.segment.min_parity_dice
    if agreement is not None and agreement < least:
        raise ExportError(
            f"the Keras and FP16 IR lesion masks agree with a Dice of {agreement:.4f} on the test "
            f"split, below segment.min_parity_dice={least:g}"
        )
    fp16 = binarise(export.predict_ir(xml, images, f32=False), threshold, min_px)
    return {"parity": check, "fp16_test_with_adc": summarise(score_cases(fp16, test))}
