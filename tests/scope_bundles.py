"""Two-output bundles whose answers the tests control, built with OpenVINO's own graph API.

The network reads one number of the preprocessed image, its mean brightness ``m`` (the daemon's
own decode and preprocessing make the tensor), and gives

* ``classes``: ``softmax(m * w + b)``, where only 'No acute infarct' depends on ``m``: its logit is
  ``slope * (m - m_even) + log(sum(exp(b_other)))``, so p('No acute infarct') is 1/2 at ``m_even``,
  rises with brightness and falls in the dark;
* ``in_scope``: ``sigmoid(steepness * (m - m_scope))``, above 1/2 for images brighter than
  ``m_scope``.

`ellipse_png` makes 16-bit PNG slices whose ``m`` follows their ``level``; `mean_brightness`
measures ``m`` the daemon's way, so a fixture can put ``m_even`` and ``m_scope`` between its
images and know which side each one falls on. The bundle is a real one: OpenVINO IR written by
``ov.save_model``, the committed bundle's labels and preprocessing, and a manifest written by
`daemon.shared.bundle.write_manifest` with the optional fields docs/training.md defines
(``outputs``, ``calibration``, ``thresholds``, ``default_variant``).

Its second variant is named ``int8`` so that ``model.variant`` can choose between two, but it
holds FP32 weights (its manifest says so): the tests only look at which variant is served.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from PIL import Image

from daemon.shared.bundle import DEFAULT_BUNDLE, LABELS, PREPROCESS, write_manifest
from daemon.shared.decode import decode
from daemon.shared.preprocess import PreprocessSpec, preprocess

if TYPE_CHECKING:
    from pathlib import Path

LABEL_LIST: list[str] = json.loads((DEFAULT_BUNDLE / LABELS).read_text(encoding="utf-8"))
NEGATIVE = "No acute infarct"
SPEC = PreprocessSpec.from_dict(
    json.loads((DEFAULT_BUNDLE / PREPROCESS).read_text(encoding="utf-8"))
)


def ellipse_png(level: float, size: int = 128, seed: int = 0) -> bytes:
    """A 16-bit PNG: an ellipse of tissue at ``level`` (0-1) of full scale, one full-scale spot.

    The spot sets the normalisation's top, so the tissue's level sets the tensor's mean.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    tissue = ((yy - c) / (0.35 * size)) ** 2 + ((xx - c) / (0.3 * size)) ** 2 < 1
    spot = tissue & (((yy - 0.31 * size) / 6) ** 2 + ((xx - 0.55 * size) / 6) ** 2 < 1)
    image = np.zeros((size, size))
    image[tissue] = 3000.0 * level
    image[spot] = 3000.0
    image += rng.random((size, size)) * 30.0
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint16)).save(buffer, "PNG")
    return buffer.getvalue()


def mean_brightness(data: bytes) -> float:
    """The mean of the tensor the daemon makes of ``data`` (its decode and preprocessing)."""
    return float(preprocess(decode(data).pixels, SPEC).mean())


@dataclass(frozen=True)
class Network:
    """The numbers of the network (see the module docstring)."""

    m_even: float
    m_scope: float
    slope: float = 25.0
    steepness: float = 60.0
    seed: int = 0

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``w`` and ``b`` of the class logits ``m * w + b``, shape ``(1, classes)`` each."""
        rng = np.random.default_rng(self.seed)
        n = len(LABEL_LIST)
        neg = LABEL_LIST.index(NEGATIVE)
        b = rng.normal(0.0, 0.5, n)
        others = np.delete(b, neg)
        w = np.zeros(n)
        w[neg] = self.slope
        b[neg] = -self.slope * self.m_even + float(np.log(np.exp(others).sum()))
        return w[None, :].astype(np.float32), b[None, :].astype(np.float32)

    def model(self, *, in_scope: bool = True, swap: bool = False) -> ov.Model:
        """The OpenVINO model: input ``image`` NHWC, outputs ``classes`` (and ``in_scope``).

        ``swap``: ``in_scope`` is the first output, ``classes`` the second.
        """
        spec = SPEC
        image = ops.parameter([-1, spec.input_size, spec.input_size, spec.channels], np.float32)
        image.output(0).get_tensor().set_names({"image"})
        mean = ops.reduce_mean(image, np.array([1, 2, 3], np.int64), keep_dims=False)
        column = ops.unsqueeze(mean, np.array([1], np.int64))
        w, b = self.weights()
        classes = ops.softmax(ops.add(ops.matmul(column, w, False, False), b), 1)
        outputs = [classes]
        if in_scope:
            shifted = ops.subtract(column, np.array([[self.m_scope]], np.float32))
            outputs.append(
                ops.sigmoid(ops.multiply(shifted, np.array([[self.steepness]], np.float32)))
            )
        outputs[0].output(0).get_tensor().set_names({"classes"})
        if in_scope:
            outputs[1].output(0).get_tensor().set_names({"in_scope"})
        if swap:
            outputs.reverse()
        return ov.Model([o.output(0) for o in outputs], [image], "scope-test")


def write_bundle(
    folder: Path,
    network: Network,
    *,
    version: str = "1.0.0-scope",
    temperature: float | None = 2.0,
    finding: dict[str, float] | None = None,
    in_scope_threshold: float | None = 0.5,
    default_variant: str = "fp16",
    outputs: dict[str, str] | None = None,
    two_outputs: bool = True,
    swap_outputs: bool = False,
) -> Path:
    """A verified-loadable bundle folder of ``network`` with the given manifest fields.

    ``finding``: ``{"acute_infarct": t, "no_acute_infarct": t}`` (None: no thresholds.finding).
    ``outputs``: the manifest's ``outputs`` (default: both roles by their own names).
    ``swap_outputs``: the IR lists ``in_scope`` first.
    """
    folder.mkdir(parents=True)
    for xml, fp16 in (("model.xml", True), ("model-int8.xml", False)):
        model = network.model(in_scope=two_outputs, swap=swap_outputs)
        ov.save_model(model, str(folder / xml), compress_to_fp16=fp16)
    shutil.copy(DEFAULT_BUNDLE / LABELS, folder / LABELS)
    shutil.copy(DEFAULT_BUNDLE / PREPROCESS, folder / PREPROCESS)
    extra: dict[str, Any] = {}
    if outputs is not None:
        extra["outputs"] = outputs
    elif two_outputs:
        extra["outputs"] = {"classes": "classes", "in_scope": "in_scope"}
    if temperature is not None:
        extra["calibration"] = {
            "method": "temperature",
            "temperature": temperature,
            "formula": "softmax(log(p) / temperature)",
        }
    thresholds: dict[str, Any] = {}
    if finding is not None:
        thresholds["finding"] = {"negative_class": NEGATIVE, **finding}
    if in_scope_threshold is not None:
        thresholds["in_scope"] = {
            "threshold": in_scope_threshold,
            "refuse_when": "in_scope < threshold",
        }
    if thresholds:
        extra["thresholds"] = thresholds
    write_manifest(
        folder,
        name="scope-test",
        version=version,
        variants={
            "fp16": {"xml": "model.xml", "bin": "model.bin", "precision": "FP16"},
            "int8": {"xml": "model-int8.xml", "bin": "model-int8.bin", "precision": "FP32"},
        },
        input_spec={"name": "image", "shape": [-1, 128, 128, 3], "layout": "NHWC", "dtype": "f32"},
        metrics_summary={},
        default_variant=default_variant,
        extra=extra,
    )
    return folder
