"""Export a fitted model into a verified bundle folder (the `daemon.shared.bundle` layout).

Steps, all in a staging folder beside the destination: FP16 IR, parity against Keras (the gate),
optional NNCF INT8 IR, accuracy of each variant, labels / preprocessing / metrics / model card,
``manifest.json`` via `daemon.shared.bundle.write_manifest`, then `daemon.shared.bundle.load_bundle`
and one inference per variant with the real OpenVINO runtime. Only a bundle that passes all of that
replaces the destination (renamed into place, so a failed export leaves the old bundle intact).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import numpy.typing as npt
import openvino as ov
import structlog

from daemon.errors import BundleError
from daemon.shared.bundle import load_bundle, write_manifest
from daemon.shared.metrics import accuracy_summary
from trainer import export as ir
from trainer.calibration import apply_temperature
from trainer.errors import ExportError
from trainer.records import json_safe, versions, write_json

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from trainer.config import TrainConfig

log = structlog.get_logger("trainer.package")
KERAS_FILE = "model.keras"
"""The Keras model in the bundle (no optimizer state): what ``--init-from`` starts from."""


def save_for_finetuning(model: keras.Model, path: Path) -> None:
    """Save ``model`` without its optimizer state (weights and architecture only)."""
    clone = keras.Model.from_config(model.get_config())  # uncompiled: no optimizer state
    clone.set_weights(model.get_weights())
    clone.save(path)


@dataclass(frozen=True)
class BundleJob:
    """Everything the export needs about one fitted model and its test split."""

    cfg: TrainConfig
    classes: tuple[str, ...]
    model: keras.Model
    workdir: Path
    """Scratch space for the SavedModel (removed after conversion)."""
    test_inputs: npt.NDArray[np.float32]
    test_truth: npt.NDArray[np.integer]
    test_cases: tuple[str, ...]
    keras_probs: npt.NDArray[np.float32]
    calibration: npt.NDArray[np.float32]
    keras_scope: npt.NDArray[np.float32] | None = None
    """Keras in_scope outputs on ``test_inputs`` + ``scope_inputs`` (two-output models)."""
    scope_inputs: npt.NDArray[np.float32] | None = None
    """Out-of-scope test images: the in_scope parity also covers them."""
    shifted: ShiftedSet | None = None
    manifest_extra: dict[str, Any] = field(default_factory=dict)
    """Manifest fields beyond format 1's: outputs, calibration, thresholds, parent..."""
    keras_file: bool = True
    """Ship the Keras model (``model.keras``) for fine-tuning with --init-from."""
    temperature: float = 1.0
    """Each variant's accuracy is measured on calibrated probabilities, as reports serve them."""

    def calibrated(self, probs: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """``probs`` with the run's temperature applied."""
        return apply_temperature(probs, self.temperature)


@dataclass(frozen=True)
class ShiftedSet:
    """The shifted test set's inputs, for each variant's accuracy on it."""

    inputs: npt.NDArray[np.float32]
    truth: npt.NDArray[np.integer]
    cases: tuple[str, ...]


def _export_variants(
    job: BundleJob, staging: Path
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Write the IRs into ``staging``; return (variants, input spec, export metrics)."""
    k = job.cfg.evaluate.top_k
    cases = list(job.test_cases)
    fp16_xml = staging / ir.FP16_XML
    spec, roles = ir.write_fp16(job.model, job.workdir, fp16_xml)
    n_test = len(job.test_inputs)
    parity_inputs = job.test_inputs
    if job.scope_inputs is not None and len(job.scope_inputs):
        parity_inputs = np.concatenate([job.test_inputs, job.scope_inputs])
    f32 = ir.predict_ir(fp16_xml, parity_inputs, f32=True)
    check = ir.parity(job.keras_probs, f32.classes[:n_test])
    log.info("parity", **{key: v for key, v in check.items() if v is not None})
    delta, limit = check["max_abs_softmax_delta"], job.cfg.export.max_softmax_delta
    if delta is not None and delta > limit:
        raise ExportError(
            f"Keras and the FP16 IR differ by up to {delta:.4g} in softmax on the test split, "
            f"more than export.max_softmax_delta={limit:g}"
        )
    metrics: dict[str, Any] = {"parity": check, "outputs": roles}
    if job.keras_scope is not None:
        if f32.in_scope is None:
            raise ExportError("the Keras model has an in_scope output and the FP16 IR has not")
        scope_check = ir.parity(job.keras_scope[:, None], f32.in_scope[:, None])
        metrics["parity_in_scope"] = scope_check
        scope_delta = scope_check["max_abs_softmax_delta"]
        if scope_delta is not None and scope_delta > limit:
            raise ExportError(
                f"Keras and the FP16 IR differ by up to {scope_delta:.4g} in in_scope, "
                f"more than export.max_softmax_delta={limit:g}"
            )
    fp16 = ir.predict_ir(fp16_xml, job.test_inputs, f32=False)
    metrics["fp16"] = accuracy_summary(job.calibrated(fp16.classes), job.test_truth, cases, k)
    metrics["fp16_default_precision_vs_keras"] = ir.parity(job.keras_probs, fp16.classes)
    _shifted_accuracy(job, fp16_xml, "fp16", metrics)
    variants = {"fp16": {"xml": ir.FP16_XML, "bin": "model.bin", "precision": "FP16"}}
    if job.cfg.export.int8 and len(job.calibration):
        int8_xml = staging / ir.INT8_XML
        ir.write_int8(job.model, job.workdir, int8_xml, job.calibration)
        int8 = ir.predict_ir(int8_xml, job.test_inputs, f32=False)
        metrics["int8"] = accuracy_summary(job.calibrated(int8.classes), job.test_truth, cases, k)
        metrics["int8_vs_fp16"] = ir.parity(fp16.classes, int8.classes)
        if int8.in_scope is not None and fp16.in_scope is not None:
            metrics["int8_vs_fp16_in_scope"] = ir.parity(
                fp16.in_scope[:, None], int8.in_scope[:, None]
            )
        _shifted_accuracy(job, int8_xml, "int8", metrics)
        metrics["int8_gate"] = int8_gate(metrics, job.cfg.export.int8_default_within)
        metrics["calibration_images"] = len(job.calibration)
        variants["int8"] = {"xml": ir.INT8_XML, "bin": "model-int8.bin", "precision": "INT8"}
    log.info("variants", **{v: metrics[v] for v in ("fp16", "int8") if v in metrics})
    return variants, spec, metrics


def int8_gate(export: dict[str, Any], within: float) -> dict[str, Any]:
    """Whether INT8 is within ``within`` points of FP16 on every top-1 measured (both sets)."""
    drops: dict[str, float] = {}
    for suffix in ("", "_shifted"):
        fp16, int8 = export.get(f"fp16{suffix}"), export.get(f"int8{suffix}")
        if not fp16 or not int8:
            continue
        for key in ("case_top1", "slice_top1"):
            if fp16.get(key) is not None and int8.get(key) is not None:
                drops[f"{key}{suffix}"] = 100.0 * (fp16[key] - int8[key])
    worst = max(drops.values(), default=None)
    return {
        "within_points": within,
        "drop_points": drops,
        "int8_default": worst is not None and worst <= within,
    }


def _shifted_accuracy(job: BundleJob, xml: Path, variant: str, metrics: dict[str, Any]) -> None:
    if job.shifted is None or not len(job.shifted.inputs):
        return
    out = ir.predict_ir(xml, job.shifted.inputs, f32=False)
    metrics[f"{variant}_shifted"] = accuracy_summary(
        job.calibrated(out.classes),
        job.shifted.truth,
        list(job.shifted.cases),
        job.cfg.evaluate.top_k,
    )


def summary(metrics: dict[str, Any], k: int) -> dict[str, Any]:
    """The manifest's ``metrics_summary``: headline test and export figures."""
    test, export = metrics["test"], metrics.get("export", {})
    out = {
        "test_cases": test["case"]["n"],
        "test_slices": test["slice"]["n"],
        "case_top1": test["case"]["top1"],
        f"case_top{k}": test["case"][f"top{k}"],
        "slice_top1": test["slice"]["top1"],
        f"slice_top{k}": test["slice"][f"top{k}"],
        "case_ece": test["case"]["ece"],
        "slice_ece": test["slice"]["ece"],
    }
    if "parity" in export:
        out["parity_max_abs_softmax_delta"] = export["parity"]["max_abs_softmax_delta"]
        out["parity_argmax_agreement"] = export["parity"]["argmax_agreement"]
    for variant in ("fp16", "int8"):
        if variant in export:
            out[f"{variant}_case_top1"] = export[variant]["case_top1"]
            out[f"{variant}_case_top{k}"] = export[variant][f"case_top{k}"]
            out[f"{variant}_slice_top1"] = export[variant]["slice_top1"]
        if f"{variant}_shifted" in export:
            out[f"{variant}_shifted_case_top1"] = export[f"{variant}_shifted"]["case_top1"]
    out["no_acute_infarct_recall"] = test["case"].get("no_acute_infarct_recall")
    out["case_ece_uncalibrated"] = test["case"].get("ece_uncalibrated")
    shifted = metrics.get("shifted_test")
    if shifted:
        out["shifted_case_top1"] = shifted["case"]["top1"]
        out[f"shifted_case_top{k}"] = shifted["case"][f"top{k}"]
        out["shifted_case_ece"] = shifted["case"]["ece"]
        out["shifted_no_acute_infarct_recall"] = shifted["case"].get("no_acute_infarct_recall")
    oos = metrics.get("out_of_scope", {}).get("test")
    if oos:
        out["out_of_scope_refused"] = oos.get("refused")
        out["dwi_wrongly_refused"] = test.get("in_scope", {}).get("wrongly_refused")
    return out


def verify_bundle(bundle: Path, num_classes: int, sample: npt.NDArray[np.float32]) -> None:
    """Load the bundle the way the daemon does and run every variant once, by output name.

    Raises:
        ExportError: the bundle does not verify, or a variant does not give softmax rows (and,
            when the manifest names an in_scope output, one probability per image).
    """
    try:
        loaded = load_bundle(bundle)
    except BundleError as exc:
        raise ExportError(f"the bundle does not verify: {exc}") from exc
    if len(loaded.labels) != num_classes:
        raise ExportError(f"labels.json has {len(loaded.labels)} classes, the model {num_classes}")
    core = ov.Core()
    roles = loaded.outputs or {ir.CLASSES: ir.CLASSES}
    for variant in loaded.variants.values():
        compiled = core.compile_model(str(variant.xml), "CPU")
        result = compiled(sample)
        try:
            out = np.asarray(result[compiled.output(roles[ir.CLASSES])])
            scope = (
                np.asarray(result[compiled.output(roles[ir.IN_SCOPE])])
                if ir.IN_SCOPE in roles
                else None
            )
        except RuntimeError as exc:
            raise ExportError(f"variant {variant.name} lacks an output the manifest names") from exc
        rows_sum_to_one = np.allclose(out.sum(axis=1), 1.0, atol=1e-2)
        if out.shape != (len(sample), num_classes) or not rows_sum_to_one:
            raise ExportError(
                f"variant {variant.name} gives outputs of shape {out.shape}, not softmax"
            )
        if scope is not None and (
            scope.shape != (len(sample), 1) or not np.all((scope >= 0) & (scope <= 1))
        ):
            raise ExportError(f"variant {variant.name}: in_scope is not one probability per image")


def build_bundle(
    job: BundleJob,
    metrics: dict[str, Any],
    dest: Path,
    *,
    on_metrics: Callable[[dict[str, Any]], str],
) -> Path:
    """Export, check and write the bundle to ``dest``; return ``dest``.

    ``metrics`` gains an ``export`` section; ``on_metrics`` is then called with it and returns the
    model card text (the caller writes its own copies of metrics and card).

    Raises:
        ExportError: conversion, quantisation, the parity gate or verification failed.
    """
    cfg = job.cfg
    staging = dest.parent / f".{dest.name}-partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    variants, spec, metrics["export"] = _export_variants(job, staging)
    card = on_metrics(metrics)
    extra = dict(job.manifest_extra)
    extra["outputs"] = metrics["export"]["outputs"]
    if job.keras_file:
        save_for_finetuning(job.model, staging / KERAS_FILE)
        extra["keras_model"] = KERAS_FILE
    write_json(staging / "labels.json", list(job.classes))
    write_json(staging / "preprocess.json", cfg.preprocess.to_dict())
    write_json(staging / "metrics.json", metrics)
    (staging / "model_card.md").write_text(card, encoding="utf-8")
    gate = metrics["export"].get("int8_gate", {})
    write_manifest(
        staging,
        name=cfg.export.name,
        version=cfg.export.version,
        variants=variants,
        default_variant="int8" if gate.get("int8_default") else "fp16",
        input_spec=spec,
        metrics_summary=json_safe(summary(metrics, cfg.evaluate.top_k)),
        extra=json_safe(
            {
                "architecture": cfg.model.architecture,
                "width": cfg.model.width,
                "research_use_only": True,
                "trained_with": versions(),
                **extra,
            }
        ),
    )
    size, channels = cfg.preprocess.input_size, cfg.preprocess.channels
    probe = job.test_inputs[:2] if len(job.test_inputs) else np.zeros((1, size, size, channels))
    verify_bundle(staging, len(job.classes), probe.astype(np.float32))
    old = dest.parent / f".{dest.name}-old"
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    log.info("bundle_written", bundle=str(dest), name=cfg.export.name, version=cfg.export.version)
    return dest
