"""Keras -> OpenVINO IR (FP16), NNCF post-training INT8, and the parity checks.

The route that works for Keras 3 models: ``model.export(dir)`` writes a TensorFlow SavedModel,
OpenVINO's TensorFlow frontend reads it, ``openvino.save_model(..., compress_to_fp16=True)``
writes the FP16 IR. INT8 comes from ``nncf.quantize`` on the converted OpenVINO model with a
class-balanced calibration subset of training images (never validation or test images).

The SavedModel is read with ``Core.read_model`` rather than ``openvino.convert_model``: both use
the same TensorFlow frontend and give the same network (identical outputs, measured), but
``convert_model`` also opens an ``openvino_telemetry`` session that, without an opt-out file in
the user's home, starts background threads sending usage events over the network. A trainer that
runs offline and beside patient data does not phone home.

Parity: the FP16 IR is compiled with ``INFERENCE_PRECISION_HINT=f32`` (so only the FP16 weights
differ from Keras, not the CPU's bf16 arithmetic) and compared with Keras on the test split: the
largest absolute softmax difference and the share of equal argmaxes. The deployed-style accuracy of
each variant (default CPU precision) is measured on the same split.

Output names: the IR's outputs are renamed ``classes`` (the softmax) and, for a two-output model,
``in_scope`` (the sigmoid, shape ``(n, 1)``), told apart by shape; the manifest records them
(`OUTPUT_NAMES`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nncf
import numpy as np
import numpy.typing as npt
import openvino as ov
import structlog

from trainer.errors import ExportError

if TYPE_CHECKING:
    import keras

log = structlog.get_logger("trainer.export")
FP16_XML, INT8_XML = "model.xml", "model-int8.xml"
CLASSES, IN_SCOPE = "classes", "in_scope"
_BATCH = 128


@dataclass(frozen=True)
class Outputs:
    """What a network gives for a batch: class probabilities and, if it has the head, in_scope."""

    classes: npt.NDArray[np.float32]
    in_scope: npt.NDArray[np.float32] | None = None
    """``(n,)`` in-scope probabilities."""


def calibration_indices(
    labels: npt.NDArray[np.integer], count: int, seed: int
) -> npt.NDArray[np.int64]:
    """Up to ``count`` indices, taken round-robin over classes from per-class shuffles."""
    rng = np.random.default_rng([seed, 0xCA1B])
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < count and any(pools):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(int(pool.pop()))
    return np.array(sorted(chosen), np.int64)


def to_openvino(model: keras.Model, workdir: Path) -> ov.Model:
    """Export ``model`` as a SavedModel under ``workdir`` and convert it to an OpenVINO model."""
    saved = Path(workdir) / "saved_model"
    shutil.rmtree(saved, ignore_errors=True)
    try:
        model.export(str(saved), verbose=False)
        ov_model = ov.Core().read_model(str(saved))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ExportError(f"converting the Keras model to OpenVINO failed: {exc}") from exc
    finally:
        shutil.rmtree(saved, ignore_errors=True)
    name_outputs(ov_model)
    return ov_model


def name_outputs(ov_model: ov.Model) -> dict[str, str]:
    """Name the outputs ``classes`` and ``in_scope`` (by shape); return role -> output name."""
    outputs = list(ov_model.outputs)
    if len(outputs) == 1:
        outputs[0].get_tensor().set_names({CLASSES})
        return {CLASSES: CLASSES}
    for port in outputs:
        last = port.get_partial_shape()[-1]
        is_scope = last.is_static and last.get_length() == 1
        port.get_tensor().set_names({IN_SCOPE if is_scope else CLASSES})
    names = {p.get_any_name() for p in outputs}
    if names != {CLASSES, IN_SCOPE}:
        raise ExportError(f"cannot tell the two outputs apart by shape: {sorted(names)}")
    return {CLASSES: CLASSES, IN_SCOPE: IN_SCOPE}


def output_roles(ov_model: ov.Model) -> dict[str, str]:
    """The manifest's ``outputs``: role -> IR output name."""
    names = {p.get_any_name() for p in ov_model.outputs}
    return {role: role for role in (CLASSES, IN_SCOPE) if role in names}


def input_spec(ov_model: ov.Model) -> dict[str, Any]:
    """The manifest's description of the model input."""
    port = ov_model.inputs[0]
    shape = [-1 if dim.is_dynamic else dim.get_length() for dim in port.get_partial_shape()]
    return {"name": port.get_any_name(), "shape": shape, "layout": "NHWC", "dtype": "f32"}


def quantize_int8(ov_model: ov.Model, calibration: npt.NDArray[np.float32]) -> ov.Model:
    """NNCF post-training INT8 quantisation of an OpenVINO model."""
    logging.getLogger("nncf").setLevel(logging.WARNING)
    samples = [calibration[i : i + 1] for i in range(len(calibration))]
    try:
        return nncf.quantize(ov_model, nncf.Dataset(samples), subset_size=len(samples))
    except (RuntimeError, ValueError) as exc:
        raise ExportError(f"NNCF INT8 quantisation failed: {exc}") from exc


def predict_ir(xml: Path, inputs: npt.NDArray[np.float32], *, f32: bool) -> Outputs:
    """The outputs of an IR on CPU, by name; ``f32`` forces full-precision arithmetic."""
    config = {"INFERENCE_PRECISION_HINT": "f32"} if f32 else {}
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    request = compiled.create_infer_request()
    roles = {p.get_any_name(): p for p in compiled.outputs}
    classes_port = roles.get(CLASSES, compiled.output(0))
    scope_port = roles.get(IN_SCOPE)
    width = classes_port.get_partial_shape()[1].get_length()
    probs: list[npt.NDArray[np.float32]] = []
    scope: list[npt.NDArray[np.float32]] = []
    for i in range(0, len(inputs), _BATCH):
        result = request.infer([inputs[i : i + _BATCH]])
        probs.append(np.array(result[classes_port], np.float32))
        if scope_port is not None:
            scope.append(np.array(result[scope_port], np.float32).reshape(-1))
    classes = np.concatenate(probs) if probs else np.zeros((0, width), np.float32)
    if scope_port is None:
        return Outputs(classes)
    return Outputs(classes, np.concatenate(scope) if scope else np.zeros(0, np.float32))


def parity(
    reference: npt.NDArray[np.floating], candidate: npt.NDArray[np.floating]
) -> dict[str, Any]:
    """Largest |softmax difference| and argmax agreement of two prediction arrays."""
    if len(reference) == 0:
        return {"n": 0, "max_abs_softmax_delta": None, "argmax_agreement": None}
    delta = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return {
        "n": len(reference),
        "max_abs_softmax_delta": float(delta.max()),
        "mean_abs_softmax_delta": float(delta.mean()),
        "argmax_agreement": float(np.mean(reference.argmax(1) == candidate.argmax(1))),
    }


def write_fp16(
    model: keras.Model, workdir: Path, xml: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """Convert and save the FP16 IR; return its input spec and output roles."""
    ov_model = to_openvino(model, workdir)
    ov.save_model(ov_model, str(xml), compress_to_fp16=True)
    log.info(
        "ir_written", variant="fp16", file=str(xml), bytes=xml.with_suffix(".bin").stat().st_size
    )
    return input_spec(ov_model), output_roles(ov_model)


def write_int8(
    model: keras.Model, workdir: Path, xml: Path, calibration: npt.NDArray[np.float32]
) -> None:
    """Convert, quantise with NNCF and save the INT8 IR."""
    quantised = quantize_int8(to_openvino(model, workdir), calibration)
    ov.save_model(quantised, str(xml), compress_to_fp16=True)
    log.info(
        "ir_written", variant="int8", file=str(xml), bytes=xml.with_suffix(".bin").stat().st_size
    )
