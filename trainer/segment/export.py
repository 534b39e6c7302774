"""The segmenter's FP16 IR and the format 2 bundle: the classifier bundle plus ``segmenter/``.

The Keras model goes to OpenVINO the way the classifier does (`trainer.export.to_openvino`); its
input is named ``image`` and its output ``lesion``. Parity: the FP16 IR computed in f32 against
Keras on the test slices, the largest per-pixel probability difference (the export fails above
``segment.max_prob_delta``) and the Dice of the two masks at the chosen threshold.

The bundle: a copy of the classifier bundle (every one of its files byte for byte, checked against
its manifest's sha256; a signature is dropped since the manifest changes), ``segmenter/model.xml``
and ``.bin`` (FP16), ``segmenter/preprocess.json`` (the classifier's spec: the segmenter reads the
classifier's tensor), ``segmenter/metrics.json`` and ``segmenter/model_card.md``, and a format 2
manifest (`daemon.shared.bundle.write_manifest`) with ``networks.segmenter`` and a new version.
It is built in a staging folder, loaded with `daemon.shared.bundle.load_bundle`, the segmenter
run once with the OpenVINO runtime by its declared input and output names, and only then renamed
into place.
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np
import openvino as ov
import structlog

from daemon.errors import BundleError
from daemon.shared.bundle import (
    MANIFEST,
    PREPROCESS,
    SEGMENTER,
    SEGMENTER_CHANNELS,
    SIGNATURE,
    load_bundle,
    write_manifest,
)
from trainer.errors import ExportError
from trainer.export import to_openvino
from trainer.records import json_safe, versions, write_json
from trainer.segment.model import INPUT_NAME, OUTPUT_NAME

if TYPE_CHECKING:
    from pathlib import Path

    import keras
    import numpy.typing as npt

log = structlog.get_logger("trainer.segment.export")
XML, BIN = f"{SEGMENTER}/model.xml", f"{SEGMENTER}/model.bin"
_KEPT = ("name", "version", "variants", "input", "metrics_summary", "default_variant")
"""Manifest fields `write_manifest` takes as arguments; everything else goes through ``extra``."""
_BATCH = 32


def write_ir(model: keras.Model, workdir: Path, xml: Path) -> None:
    """Convert ``model`` and save its FP16 IR with the input ``image`` and output ``lesion``."""
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov_model = to_openvino(model, workdir)
    ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
    ov_model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    ov.save_model(ov_model, str(xml), compress_to_fp16=True)
    log.info("ir_written", network=SEGMENTER, file=str(xml))


def predict_ir(
    xml: Path, images: npt.NDArray[np.floating], *, f32: bool
) -> npt.NDArray[np.float32]:
    """Lesion probabilities ``(n, H, W)`` of an IR on CPU, read by the output's name."""
    config = {"INFERENCE_PRECISION_HINT": "f32"} if f32 else {}
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    request = compiled.create_infer_request()
    port = compiled.output(OUTPUT_NAME)
    out = [
        np.array(request.infer([images[i : i + _BATCH].astype(np.float32)])[port], np.float32)
        for i in range(0, len(images), _BATCH)
    ]
    if not out:
        return np.zeros((0, *images.shape[1:3]), np.float32)
    return np.concatenate(out)[..., 0]


def parity(
    keras_probs: npt.NDArray[np.floating], ir_probs: npt.NDArray[np.floating], threshold: float
) -> dict[str, Any]:
    """Per-pixel differences (largest, 99.99th percentile, mean) and the masks' Dice."""
    if not len(keras_probs):
        return {
            "n": 0,
            "max_abs_prob_delta": None,
            "p9999_abs_prob_delta": None,
            "mean_abs_prob_delta": None,
            "mask_dice": None,
        }
    delta = np.abs(keras_probs.astype(np.float64) - ir_probs.astype(np.float64))
    a, b = keras_probs >= threshold, ir_probs >= threshold
    total = int(a.sum()) + int(b.sum())
    return {
        "n": len(keras_probs),
        "max_abs_prob_delta": float(delta.max()),
        "p9999_abs_prob_delta": float(np.quantile(delta, 0.9999)),
        "mean_abs_prob_delta": float(delta.mean()),
        "mask_dice": 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total,
    }


def _copy_classifier(classifier: Path, staging: Path) -> dict[str, Any]:
    """Copy the classifier bundle into ``staging`` without any old segmenter; its manifest."""
    try:
        source = load_bundle(classifier)
    except BundleError as exc:
        raise ExportError(f"the classifier bundle does not verify: {exc}") from exc
    manifest: dict[str, Any] = json.loads((source.path / MANIFEST).read_text(encoding="utf-8"))
    shutil.copytree(
        source.path, staging, ignore=shutil.ignore_patterns(SIGNATURE), dirs_exist_ok=False
    )
    old = staging / SEGMENTER
    if old.exists():  # a format 2 classifier: its segmenter is replaced, not kept
        shutil.rmtree(old)
    return manifest


def _network_entry(threshold: float, min_lesion_px: int, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": "segment",
        "variants": {"fp16": {"xml": XML, "bin": BIN, "precision": "FP16"}},
        "default_variant": "fp16",
        "input": {
            "name": INPUT_NAME,
            "shape": [-1, 128, 128, len(SEGMENTER_CHANNELS)],
            "layout": "NHWC",
            "dtype": "f32",
            "channels": list(SEGMENTER_CHANNELS),
        },
        "output": OUTPUT_NAME,
        "preprocess": f"{SEGMENTER}/{PREPROCESS}",
        "threshold": threshold,
        "min_lesion_px": min_lesion_px,
        "metrics_summary": summary,
        "architecture": "unet",
        "trained_with": versions(),
        "research_use_only": True,
    }


def check_segmenter(bundle: Path, probe: npt.NDArray[np.float32]) -> None:
    """Load ``bundle`` as the daemon does and run its segmenter once by its declared names.

    Raises:
        ExportError: the bundle does not verify or the segmenter's output is not a probability
            map of shape ``(N, H, W, 1)``.
    """
    try:
        loaded = load_bundle(bundle)
    except BundleError as exc:
        raise ExportError(f"the bundle does not verify: {exc}") from exc
    network = loaded.segmenter
    if network is None:
        raise ExportError("the bundle has no segmenter")
    compiled = ov.Core().compile_model(str(network.variant("fp16").xml), "CPU")
    try:
        out = np.asarray(compiled({network.input_name: probe})[compiled.output(network.output)])
    except RuntimeError as exc:
        raise ExportError(f"the segmenter lacks its declared input or output: {exc}") from exc
    expected = (len(probe), *network.input_shape[1:3], 1)
    if out.shape != expected or not np.all((out >= 0) & (out <= 1)):
        raise ExportError(f"the segmenter gives {out.shape}, not probabilities of {expected}")


def build_bundle(
    classifier: Path,
    dest: Path,
    *,
    ir_dir: Path,
    version: str,
    threshold: float,
    min_lesion_px: int,
    summary: dict[str, Any],
    metrics: dict[str, Any],
    card: str,
    probe: npt.NDArray[np.float32],
) -> Path:
    """Write the format 2 bundle to ``dest`` (see the module docstring); return ``dest``.

    ``ir_dir`` holds the segmenter's ``model.xml`` and ``model.bin``.

    Raises:
        ExportError: the classifier does not verify, one of its files changed, or the new bundle
            does not load or run.
    """
    staging = dest.parent / f".{dest.name}-partial"
    shutil.rmtree(staging, ignore_errors=True)
    manifest = _copy_classifier(classifier, staging)
    sub = staging / SEGMENTER
    sub.mkdir()
    for name in ("model.xml", "model.bin"):
        shutil.copy(ir_dir / name, sub / name)
    shutil.copy(staging / PREPROCESS, sub / PREPROCESS)
    write_json(sub / "metrics.json", metrics)
    (sub / "model_card.md").write_text(card, encoding="utf-8")
    extra = {k: v for k, v in manifest.items() if k not in (*_KEPT, "files", "format_version")}
    extra.pop("created_at", None)
    networks = dict(extra.get("networks") or {})
    networks[SEGMENTER] = _network_entry(threshold, min_lesion_px, summary)
    extra["networks"] = networks
    written = write_manifest(
        staging,
        name=manifest["name"],
        version=version,
        variants=manifest["variants"],
        input_spec=manifest["input"],
        metrics_summary=manifest.get("metrics_summary", {}),
        default_variant=manifest.get("default_variant", "fp16"),
        extra=json_safe(extra),
    )
    changed = [
        rel
        for rel, entry in manifest["files"].items()
        if not rel.startswith(f"{SEGMENTER}/")
        and written["files"].get(rel, {}).get("sha256") != entry["sha256"]
    ]
    if changed:
        raise ExportError(f"classifier files changed in the copy: {changed}")
    check_segmenter(staging, probe)
    old = dest.parent / f".{dest.name}-old"
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    log.info("bundle_written", bundle=str(dest), name=manifest["name"], version=version)
    return dest
