"""Format 2 bundles whose lesion segmenter the tests control, built with OpenVINO's graph API.

The segmenter marks as lesion every input pixel whose DWI channel is brighter than ``level``:
``lesion = sigmoid(steepness * (dwi - level))``. Its ADC channel (when it has one) is read but
weighs nothing, so tests can feed either. `add_segmenter` puts it into a copy of any bundle (the
committed default, or one of `tests.scope_bundles`) as ``networks.segmenter`` (in place of the
bundle's own segmenter, if it has one), and rewrites the manifest with
`daemon.shared.bundle.write_manifest`, keeping every other field: a real, verified, loadable
format 2 bundle. `classifier_only` makes the format 1 bundle of a bundle's classifier alone.
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from daemon.shared.bundle import (
    DEFAULT_BUNDLE,
    MANIFEST,
    PREPROCESS,
    SEGMENTER,
    SEGMENTER_CHANNELS,
    write_manifest,
)

if TYPE_CHECKING:
    from pathlib import Path

_KEPT = ("name", "version", "variants", "input", "metrics_summary", "default_variant")
"""Manifest fields `write_manifest` takes as arguments; everything else goes through ``extra``."""


def threshold_segmenter(level: float, *, channels: int = 2, size: int = 128) -> ov.Model:
    """``lesion = sigmoid(60 * (dwi - level))``, input ``image`` (N, size, size, channels)."""
    image = ops.parameter([-1, size, size, channels], np.float32)
    image.output(0).get_tensor().set_names({"image"})
    weights = np.zeros((1, 1, 1, channels), np.float32)
    weights[..., 0] = 1.0
    dwi = ops.reduce_sum(ops.multiply(image, weights), np.array([3], np.int64), keep_dims=True)
    lesion = ops.sigmoid(ops.multiply(ops.subtract(dwi, np.float32(level)), np.float32(60.0)))
    lesion.output(0).get_tensor().set_names({"lesion"})
    return ov.Model([lesion.output(0)], [image], "segmenter-test")


def add_segmenter(
    source: Path,
    folder: Path,
    *,
    level: float = 0.8,
    channels: int = 2,
    threshold: float = 0.5,
    min_lesion_px: int = 4,
    version: str | None = None,
) -> Path:
    """Copy the bundle ``source`` to ``folder`` with a threshold segmenter; return ``folder``."""
    classifier_only(source, folder)
    sub = folder / SEGMENTER
    sub.mkdir()
    ov.save_model(threshold_segmenter(level, channels=channels), str(sub / "model.xml"))
    shutil.copy(folder / PREPROCESS, sub / PREPROCESS)
    networks = {
        SEGMENTER: {
            "task": "segment",
            "variants": {
                "fp16": {
                    "xml": f"{SEGMENTER}/model.xml",
                    "bin": f"{SEGMENTER}/model.bin",
                    "precision": "FP32",
                }
            },
            "default_variant": "fp16",
            "input": {
                "name": "image",
                "shape": [-1, 128, 128, channels],
                "layout": "NHWC",
                "dtype": "f32",
                "channels": list(SEGMENTER_CHANNELS[:channels]),
            },
            "output": "lesion",
            "preprocess": f"{SEGMENTER}/{PREPROCESS}",
            "threshold": threshold,
            "min_lesion_px": min_lesion_px,
            "metrics_summary": {},
        }
    }
    return _rewrite_manifest(folder, version=version, networks=networks)


def classifier_only(source: Path, folder: Path, *, version: str | None = None) -> Path:
    """Copy the bundle ``source`` to ``folder`` without a segmenter: format 1; return ``folder``.

    The classifier's files are kept byte for byte, the manifest rewritten without
    ``networks`` (and as ``version`` if given); no signature.
    """
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("manifest.sig", SEGMENTER))
    return _rewrite_manifest(folder, version=version, networks=None)


def _rewrite_manifest(folder: Path, *, version: str | None, networks: Any) -> Path:
    """The manifest of ``folder`` written again for its files, every other field kept, with
    ``networks`` (format 2) or without (format 1)."""
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    dropped = (*_KEPT, "files", "format_version", "networks", "created_at")
    extra = {k: v for k, v in manifest.items() if k not in dropped}
    if networks is not None:
        extra["networks"] = networks
    write_manifest(
        folder,
        name=manifest["name"],
        version=version or manifest["version"],
        variants=manifest["variants"],
        input_spec=manifest["input"],
        metrics_summary=manifest.get("metrics_summary", {}),
        default_variant=manifest.get("default_variant", "fp16"),
        extra=extra,
    )
    return folder


def default_with_segmenter(folder: Path, **kwargs: Any) -> Path:
    """The committed default bundle plus a threshold segmenter (see `add_segmenter`)."""
    return add_segmenter(DEFAULT_BUNDLE, folder, **kwargs)
