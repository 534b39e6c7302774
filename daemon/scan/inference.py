"""OpenVINO: compiles a verified bundle and runs scans through an ``AsyncInferQueue``.

One `Engine` is one compiled bundle with its pool of infer requests. Scan workers call
`Engine.submit` with the preprocessed tensor; OpenVINO runs the request on its own threads and
calls back with the job (passed as ``userdata``), which hands the `Outputs` on. `Engine.close`
ends with ``wait_all()``.

A bundle whose manifest names its outputs (``outputs: {"classes": ..., "in_scope": ...}``) has
them read by those names, never by position; one that names none has one output, the class
probabilities. What the outputs mean for a report (calibration, finding, refusal) is
`daemon.scan.decision`'s business.

Each scan worker process compiles its own `Engine` (`Engine.compile` with ``one_thread``). The
daemon compiles none to serve: `check_compiles` proves that the device takes a bundle the way the
workers will compile it, reads what they will report (precision, devices, infer requests), and
drops it (`daemon.model.holder`).

A format 2 bundle's lesion segmenter (`daemon.shared.bundle.Network`) is compiled beside the
classifier, on the same device with the same options (`Segmenter`), with its own
``AsyncInferQueue``: `Engine.segmenter` is None for a classifier-only bundle. What its map means
(threshold, small parts, source pixels) is `daemon.lesionmaps.slice`'s business.

OpenVINO is imported at module level on purpose: importing it starts a helper thread, which
should exist before the service (and any test's thread-leak check) starts.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints

from daemon.errors import EngineError
from daemon.records import ModelInfo, SegmenterInfo

if TYPE_CHECKING:
    from daemon.config import InferenceConfig
    from daemon.shared.bundle import Bundle, Network

CLASSES, IN_SCOPE = "classes", "in_scope"


@dataclass(frozen=True)
class Outputs:
    """One image's network outputs."""

    classes: npt.NDArray[np.float32]
    """The class probabilities, in label order, as the network gives them (uncalibrated)."""
    in_scope: float | None = None
    """The in_scope score of a two-output bundle; None for a one-output bundle."""


# (job, outputs or None, inference latency in ms, error message or None)
Done = Callable[[Any, Outputs | None, float, str | None], None]
# (job, lesion probability plane (H, W) or None, inference latency in ms, error message or None)
SegmentDone = Callable[[Any, npt.NDArray[np.float32] | None, float, str | None], None]


def _precision_of(core: ov.Core, compiled: ov.CompiledModel, devices: list[str]) -> str:
    """The inference precision in use, asked of the compiled model, else of the one device used.

    AUTO/MULTI do not answer INFERENCE_PRECISION_HINT themselves; their single execution device
    does (its default is what the compiled network got).
    """
    try:
        return str(compiled.get_property(hints.inference_precision).to_string())
    except RuntimeError:
        pass
    if len(devices) == 1:
        try:
            return str(core.get_property(devices[0], hints.inference_precision).to_string())
        except RuntimeError:
            pass
    return "unknown"


def _checked_model(core: ov.Core, bundle: Bundle, variant_name: str) -> tuple[ov.Model, str, str]:
    variant = bundle.variant(variant_name)
    try:
        model = core.read_model(str(variant.xml), str(variant.bin))
    except RuntimeError as exc:
        msg = f"OpenVINO cannot read {variant.xml.name} of bundle {bundle.path}: {exc}"
        raise EngineError(msg) from exc
    spec = bundle.preprocess
    expected = (spec.input_size, spec.input_size, spec.channels)
    _check_outputs(model, bundle)
    shape = model.input(0).get_partial_shape()
    dims = tuple(d.get_length() if d.is_static else -1 for d in shape)
    if len(dims) != 4 or dims[1:] != expected:
        msg = f"bundle {bundle.path}: network input {shape} does not take NHWC {expected} tensors"
        raise EngineError(msg)
    model.reshape([1, *expected])
    classes = _output(model, bundle, CLASSES).get_partial_shape()[-1]
    if not classes.is_static or classes.get_length() != len(bundle.labels):
        msg = (
            f"bundle {bundle.path}: the network has {classes} outputs but labels.json names "
            f"{len(bundle.labels)} labels"
        )
        raise EngineError(msg)
    if bundle.outputs is not None and IN_SCOPE in bundle.outputs:
        scope = _output(model, bundle, IN_SCOPE).get_partial_shape()
        if not scope.is_static or math.prod(d.get_length() for d in scope) != 1:
            msg = (
                f"bundle {bundle.path}: the in_scope output {bundle.outputs[IN_SCOPE]!r} gives "
                f"{scope} values per image, not one score"
            )
            raise EngineError(msg)
    return model, variant.name, variant.precision


def _check_outputs(model: ov.Model, bundle: Bundle) -> None:
    """One input; the outputs the manifest names, by name (or exactly one when it names none)."""
    roles = bundle.outputs or {CLASSES: ""}
    if len(model.inputs) != 1 or len(model.outputs) != len(roles):
        named = ", ".join(f"{role}: {name!r}" for role, name in (bundle.outputs or {}).items())
        wanted = f"the outputs its manifest names ({named})" if named else "one output"
        msg = (
            f"bundle {bundle.path}: the network must have one input and {wanted}; it has "
            f"{len(model.inputs)} input(s) and {len(model.outputs)} output(s)"
        )
        raise EngineError(msg)
    for role in roles:
        _output(model, bundle, role)


def _output(model: ov.Model | ov.CompiledModel, bundle: Bundle, role: str) -> Any:
    """The output port of ``role``: by the manifest's name; the only one when it names none."""
    if bundle.outputs is None:
        return model.output(0)
    name = bundle.outputs[role]
    try:
        return model.output(name)
    except RuntimeError as exc:
        msg = (
            f"bundle {bundle.path}: the network has no output named {name!r} "
            f"(manifest 'outputs.{role}')"
        )
        raise EngineError(msg) from exc


_ONE_CPU_THREAD: dict[Any, Any] = {
    props.inference_num_threads: 1,
    props.num_streams: 1,
    hints.enable_cpu_pinning: False,
}


def _one_thread_options(device: str) -> dict[Any, Any]:
    """Compile options that keep a worker's network on one unpinned CPU thread (see `compile`)."""
    if device == "CPU":
        return dict(_ONE_CPU_THREAD)
    if device.split(":", 1)[0] in {"AUTO", "MULTI", "HETERO"}:
        return {props.device.properties: {"CPU": dict(_ONE_CPU_THREAD)}}
    return {}  # GPU, NPU...: their own scheduling


def _compile(
    bundle: Bundle, config: InferenceConfig, variant: str, *, one_thread: bool
) -> tuple[ov.CompiledModel, ModelInfo, ov.CompiledModel | None]:
    """Read, check and compile ``bundle`` for ``config.device``.

    Returns the compiled network, its info, and the compiled segmenter (None without one).

    Raises:
        EngineError: the network does not fit the bundle's preprocessing or labels, or
            OpenVINO cannot compile it on the device.
    """
    core = _core(config)
    model, variant_name, weights = _checked_model(core, bundle, variant)
    compiled = _compile_on_device(core, model, config, one_thread=one_thread, what="network")
    devices = _devices_of(compiled, config)
    segmenter, segmenter_info = None, None
    if bundle.segmenter is not None and config.lesion_maps:
        segmenter, segmenter_info = _compile_segmenter(
            core, bundle, bundle.segmenter, config, variant, one_thread=one_thread
        )
    info = ModelInfo(
        name=bundle.name,
        version=bundle.version,
        bundle_sha256=bundle.sha256,
        variant=variant_name,
        weights_precision=weights,
        precision=_precision_of(core, compiled, devices),
        device_requested=config.device,
        device_used=",".join(devices),
        labels=bundle.labels,
        segmenter=segmenter_info,
    )
    return compiled, info, segmenter


def _core(config: InferenceConfig) -> ov.Core:
    core = ov.Core()
    if config.cache_dir is not None:
        core.set_property({props.cache_dir: str(config.cache_dir)})
    return core


def _compile_on_device(
    core: ov.Core, model: ov.Model, config: InferenceConfig, *, one_thread: bool, what: str
) -> ov.CompiledModel:
    """``model`` compiled for ``config.device`` with the configured hint and requests.

    Raises:
        EngineError: OpenVINO cannot compile it on the device.
    """
    options: dict[Any, Any] = {
        hints.performance_mode: getattr(hints.PerformanceMode, config.performance_hint)
    }
    if one_thread:
        options.update(_one_thread_options(config.device))
    if config.num_requests:
        options[hints.num_requests] = config.num_requests
    try:
        return core.compile_model(model, config.device, options)
    except RuntimeError as exc:
        available = ", ".join(core.available_devices) or "none"
        msg = (
            f"At 'inference.device': OpenVINO cannot compile the {what} for "
            f"{config.device!r} (devices here: {available}): {str(exc).strip()[-300:]}"
        )
        raise EngineError(msg) from exc


def _devices_of(compiled: ov.CompiledModel, config: InferenceConfig) -> list[str]:
    try:
        return [str(d) for d in compiled.get_property(props.execution_devices)]
    except RuntimeError:
        return [config.device]


def _checked_segmenter(
    core: ov.Core, bundle: Bundle, network: Network, variant_name: str
) -> tuple[ov.Model, str, str]:
    """The segmenter's IR, checked: one input of NHWC (size, size, channels), its named output.

    Raises:
        EngineError: the IR cannot be read or does not fit the manifest's entry.
    """
    variant = network.variant(variant_name)
    try:
        model = core.read_model(str(variant.xml), str(variant.bin))
    except RuntimeError as exc:
        msg = f"OpenVINO cannot read {variant.xml.name} of the segmenter of bundle {bundle.path}"
        raise EngineError(f"{msg}: {exc}") from exc
    size = network.preprocess.input_size
    expected = (size, size, len(network.channels))
    owner = f"bundle {bundle.path}: the segmenter"
    if len(model.inputs) != 1:
        msg = f"{owner} must have one input; it has {len(model.inputs)}"
        raise EngineError(msg)
    shape = model.input(0).get_partial_shape()
    dims = tuple(d.get_length() if d.is_static else -1 for d in shape)
    if len(dims) != 4 or dims[1:] != expected or tuple(network.input_shape[1:]) != expected:
        msg = f"{owner}'s input {shape} does not take NHWC {expected} tensors"
        raise EngineError(msg)
    try:
        model.output(network.output)
    except RuntimeError as exc:
        msg = f"{owner} has no output named {network.output!r} (manifest 'networks.segmenter')"
        raise EngineError(msg) from exc
    model.reshape([1, *expected])
    out = model.output(network.output).get_partial_shape()
    if not out.is_static or tuple(d.get_length() for d in out) != (1, size, size, 1):
        msg = f"{owner}'s output {network.output!r} is {out}, not one (size, size, 1) map"
        raise EngineError(msg)
    return model, variant.name, variant.precision


def _compile_segmenter(
    core: ov.Core,
    bundle: Bundle,
    network: Network,
    config: InferenceConfig,
    variant: str,
    *,
    one_thread: bool,
) -> tuple[ov.CompiledModel, SegmenterInfo]:
    """Read, check and compile the segmenter like the classifier (same device and options)."""
    model, variant_name, weights = _checked_segmenter(core, bundle, network, variant)
    compiled = _compile_on_device(core, model, config, one_thread=one_thread, what="segmenter")
    devices = _devices_of(compiled, config)
    info = SegmenterInfo(
        variant=variant_name,
        weights_precision=weights,
        precision=_precision_of(core, compiled, devices),
        threshold=network.threshold,
        min_lesion_px=network.min_lesion_px,
        channels=network.channels,
    )
    return compiled, info


def check_compiles(
    bundle: Bundle, config: InferenceConfig, variant: str = "fp16"
) -> tuple[ModelInfo, int]:
    """Compile ``bundle`` exactly as a scan worker does, then drop it.

    Proves that the device takes the network, and learns what the workers will report: the
    `ModelInfo` (precision, devices used) and how many infer requests each worker's engine gets.

    Raises:
        EngineError: as `Engine.compile`.
    """
    compiled, info, segmenter = _compile(bundle, config, variant, one_thread=True)
    requests = config.num_requests
    if not requests:
        try:
            requests = int(compiled.get_property(props.optimal_number_of_infer_requests))
        except RuntimeError:
            requests = 1
    del compiled, segmenter
    return info, requests


class Engine:
    """One compiled bundle and its infer requests."""

    def __init__(
        self, bundle: Bundle, compiled: ov.CompiledModel, queue: ov.AsyncInferQueue, info: ModelInfo
    ) -> None:
        self.bundle = bundle
        self.info = info
        self.requests = len(queue)
        self._compiled = compiled
        self._queue = queue
        self._queue.set_callback(self._on_done)
        self._submit_lock = threading.Lock()
        self._classes = _output(compiled, bundle, CLASSES)
        has_scope = bundle.outputs is not None and IN_SCOPE in bundle.outputs
        self._in_scope = _output(compiled, bundle, IN_SCOPE) if has_scope else None
        self.segmenter: Segmenter | None = None
        """The lesion segmenter of a format 2 bundle, compiled beside the network."""

    @classmethod
    def compile(
        cls,
        bundle: Bundle,
        config: InferenceConfig,
        variant: str = "fp16",
        *,
        one_thread: bool = False,
    ) -> Engine:
        """Read, check and compile ``bundle`` for ``config.device``.

        ``one_thread``: for a scan worker process, one of several, each with its own engine. On
        the CPU (directly or through AUTO) the network then runs in one stream of one thread with
        OpenVINO's CPU pinning off: pinned, every process would put its stream on the first core
        and the processes would queue there (measured: 0.55-0.60 of the pinned-off throughput).

        A format 2 bundle's segmenter is compiled too, the same way (`Engine.segmenter`).

        Raises:
            EngineError: the network (or the segmenter) does not fit the bundle, or OpenVINO
                cannot compile it on the device.
        """
        compiled, info, seg = _compile(bundle, config, variant, one_thread=one_thread)
        engine = cls(bundle, compiled, ov.AsyncInferQueue(compiled, config.num_requests), info)
        if bundle.segmenter is not None and seg is not None:
            engine.segmenter = Segmenter(
                bundle.segmenter, seg, ov.AsyncInferQueue(seg, config.num_requests)
            )
        return engine

    def submit(self, tensor: npt.NDArray[np.float32], job: Any, done: Done) -> None:
        """Start inference on one preprocessed ``(H, W, C)`` tensor.

        A ``(H, W, 1)`` tensor stands for C identical channels: it is spread over them.

        ``done(job, outputs, latency_ms, error)`` is called later on an OpenVINO thread, or
        right here with an error if the request cannot be started. It must be quick and must not
        log (a foreign thread); the pipeline only queues the result.
        """
        try:
            with self._submit_lock:  # one submitter at a time; blocks while every request is busy
                # The tensor is copied (and spread over the channels) straight into the next
                # idle request's input, which the argument-less start_async then runs: half the
                # CPU of passing it as an input (measured 34 against 75 us). The idle queue is
                # FIFO and only this lock's holder takes from it, so the request filled is the
                # request started.
                request = self._queue[self._queue.get_idle_request_id()]
                request.get_input_tensor(0).data[0] = tensor
                self._queue.start_async(userdata=(job, done))
        except (RuntimeError, ValueError) as exc:  # ValueError: a tensor of the wrong shape
            done(job, None, 0.0, f"OpenVINO could not start inference: {str(exc).strip()[-300:]}")

    def _on_done(self, request: ov.InferRequest, userdata: tuple[Any, Done]) -> None:
        job, done = userdata
        outputs: Outputs | None = None
        latency, error = 0.0, None
        try:
            classes = np.array(request.get_tensor(self._classes).data[0], dtype=np.float32)
            scope = None
            if self._in_scope is not None:
                scope = float(request.get_tensor(self._in_scope).data.reshape(-1)[0])
            outputs = Outputs(classes, scope)
            latency = float(request.latency)
        except Exception as exc:  # noqa: BLE001 - reported as this scan's INFERENCE_FAILED
            error = f"reading the output failed: {exc}"
        done(job, outputs, latency, error)

    def wait(self) -> None:
        """Wait until every request started so far has called back (``wait_all``)."""
        self._queue.wait_all()
        if self.segmenter is not None:
            self.segmenter.wait()

    def close(self) -> None:
        """Wait for every request in flight (``wait_all``)."""
        self.wait()


class Segmenter:
    """The compiled lesion segmenter of a bundle and its infer requests."""

    def __init__(
        self, network: Network, compiled: ov.CompiledModel, queue: ov.AsyncInferQueue
    ) -> None:
        self.network = network
        self._queue = queue
        self._queue.set_callback(self._on_done)
        self._submit_lock = threading.Lock()
        self._output = compiled.output(network.output)

    def submit(self, dwi: npt.NDArray[np.float32], job: Any, done: SegmentDone) -> None:
        """Start segmenting one preprocessed DWI plane ``(H, W)``; other channels get zeros.

        The ADC channel (when the network has one) is a plane of zeros: the daemon does not pair
        ADC slices at scan time. ``done(job, plane, latency_ms, error)`` as `Engine.submit`.
        """
        try:
            with self._submit_lock:  # as Engine.submit: the request filled is the request started
                request = self._queue[self._queue.get_idle_request_id()]
                data = request.get_input_tensor(0).data
                data[0, :, :, 0] = dwi
                if data.shape[-1] > 1:
                    data[0, :, :, 1:] = 0.0
                self._queue.start_async(userdata=(job, done))
        except (RuntimeError, ValueError) as exc:
            done(job, None, 0.0, f"OpenVINO could not start segmenting: {str(exc).strip()[-300:]}")

    def _on_done(self, request: ov.InferRequest, userdata: tuple[Any, SegmentDone]) -> None:
        job, done = userdata
        plane: npt.NDArray[np.float32] | None = None
        latency, error = 0.0, None
        try:
            plane = np.array(request.get_tensor(self._output).data[0, :, :, 0], dtype=np.float32)
            latency = float(request.latency)
        except Exception as exc:  # noqa: BLE001 - reported as this image's lesion map error
            error = f"reading the lesion map failed: {exc}"
        done(job, plane, latency, error)

    def wait(self) -> None:
        """Wait until every request started so far has called back (``wait_all``)."""
        self._queue.wait_all()
