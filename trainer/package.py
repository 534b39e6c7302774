"""Export a fitted model into a verified bundle folder (the `daemon.shared.bundle` layout).

Steps, all in a staging folder beside the destination: FP16 IR, parity against Keras (the gate),
optional NNCF INT8 IR, accuracy of each variant, labels / preprocessing / metrics / model card,
``manifest.json`` via `daemon.shared.bundle.write_manifest`, then `daemon.shared.bundle.load_bundle`
and one inference per variant with the real OpenVINO runtime. Only a bundle that passes all of that
replaces the destination (renamed into place, so a failed export leaves the old bundle intact).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import openvino as ov
import structlog

from daemon.errors import BundleError
from daemon.shared.bundle import load_bundle, write_manifest
from trainer import export as ir
from trainer.errors import ExportError
from trainer.metrics import accuracy_summary
from trainer.records import json_safe, versions, write_json

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import keras

    from trainer.config import TrainConfig

log = structlog.get_logger("trainer.package")


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


def _export_variants(
    job: BundleJob, staging: Path
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Write the IRs into ``staging``; return (variants, input spec, export metrics)."""
    k = job.cfg.evaluate.top_k
    cases = list(job.test_cases)
    fp16_xml = staging / ir.FP16_XML
    spec = ir.write_fp16(job.model, job.workdir, fp16_xml)
    check = ir.parity(job.keras_probs, ir.predict_ir(fp16_xml, job.test_inputs, f32=True))
    log.info("parity", **{key: v for key, v in check.items() if v is not None})
    delta, limit = check["max_abs_softmax_delta"], job.cfg.export.max_softmax_delta
    if delta is not None and delta > limit:
        raise ExportError(
            f"Keras and the FP16 IR differ by up to {delta:.4g} in softmax on the test split, "
            f"more than export.max_softmax_delta={limit:g}"
        )
    fp16_probs = ir.predict_ir(fp16_xml, job.test_inputs, f32=False)
    metrics: dict[str, Any] = {
        "parity": check,
        "fp16": accuracy_summary(fp16_probs, job.test_truth, cases, k),
        "fp16_default_precision_vs_keras": ir.parity(job.keras_probs, fp16_probs),
    }
    variants = {"fp16": {"xml": ir.FP16_XML, "bin": "model.bin", "precision": "FP16"}}
    if job.cfg.export.int8 and len(job.calibration):
        int8_xml = staging / ir.INT8_XML
        ir.write_int8(job.model, job.workdir, int8_xml, job.calibration)
        int8_probs = ir.predict_ir(int8_xml, job.test_inputs, f32=False)
        metrics["int8"] = accuracy_summary(int8_probs, job.test_truth, cases, k)
        metrics["int8_vs_fp16"] = ir.parity(fp16_probs, int8_probs)
        metrics["calibration_images"] = len(job.calibration)
        variants["int8"] = {"xml": ir.INT8_XML, "bin": "model-int8.bin", "precision": "INT8"}
    log.info("variants", **{v: metrics[v] for v in ("fp16", "int8") if v in metrics})
    return variants, spec, metrics


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
    return out


def verify_bundle(bundle: Path, num_classes: int, sample: npt.NDArray[np.float32]) -> None:
    """Load the bundle the way the daemon does and run every variant once.

    Raises:
        ExportError: the bundle does not verify, or a variant does not give softmax rows.
    """
    try:
        loaded = load_bundle(bundle)
    except BundleError as exc:
        raise ExportError(f"the bundle does not verify: {exc}") from exc
    if len(loaded.labels) != num_classes:
        raise ExportError(f"labels.json has {len(loaded.labels)} classes, the model {num_classes}")
    core = ov.Core()
    for variant in loaded.variants.values():
        compiled = core.compile_model(str(variant.xml), "CPU")
        out = np.asarray(compiled(sample)[compiled.output(0)])
        rows_sum_to_one = np.allclose(out.sum(axis=1), 1.0, atol=1e-2)
        if out.shape != (len(sample), num_classes) or not rows_sum_to_one:
            raise ExportError(
                f"variant {variant.name} gives outputs of shape {out.shape}, not softmax"
            )


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
    write_json(staging / "labels.json", list(job.classes))
    write_json(staging / "preprocess.json", cfg.preprocess.to_dict())
    write_json(staging / "metrics.json", metrics)
    (staging / "model_card.md").write_text(card, encoding="utf-8")
    write_manifest(
        staging,
        name=cfg.export.name,
        version=cfg.export.version,
        variants=variants,
        input_spec=spec,
        metrics_summary=json_safe(summary(metrics, cfg.evaluate.top_k)),
        extra={
            "architecture": cfg.model.architecture,
            "research_use_only": True,
            "trained_with": versions(),
        },
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
