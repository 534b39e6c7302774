"""One evaluation from start to end: list the files, compile the model, score, write the folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from daemon import DISCLAIMER, GENERATOR
from daemon.clock import iso, utc_now
from daemon.evaluate import drawing, outputs
from daemon.evaluate.figures import labelled_figures, out_of_scope_figures
from daemon.evaluate.inputs import list_inputs
from daemon.evaluate.progress import Progress
from daemon.evaluate.scoring import ScanSettings, score
from daemon.scan.decision import resolve
from daemon.scan.inference import Engine
from daemon.scan.read import configure_decoders, warm_up
from daemon.scan.report import VERSION
from daemon.shared.bundle import load_bundle
from daemon.shared.decode import DecodeLimits
from daemon.shared.labels import load_label_map
from daemon.shared.metrics import aggregate_cases

if TYPE_CHECKING:
    from pathlib import Path
    from typing import TextIO

    from daemon.config import DaemonConfig
    from daemon.evaluate.inputs import Inputs
    from daemon.evaluate.scoring import Row
    from daemon.shared.dataset import DatasetLayout

log = structlog.get_logger("infarctwatch.evaluate")


@dataclass(frozen=True)
class Request:
    """What to evaluate, with what, and where to write it."""

    data: Path
    bundle: Path
    variant: str
    """``fp16``, ``int8`` or ``auto`` (the bundle's ``default_variant``)."""
    out: Path
    config: DaemonConfig
    """The daemon's configuration: limits, DICOM header rules, inference settings, top-k."""
    layout: DatasetLayout
    labels: Path
    bins: int = 15
    progress: bool | None = None
    """Draw a bar (True), log progress lines (False), or decide from the stream (None)."""


def _variant(request: Request, default: str) -> str:
    return default if request.variant == "auto" else request.variant


def _model(engine: Engine, bundle_path: Path) -> dict[str, Any]:
    info = engine.info
    return {
        "name": info.name,
        "version": info.version,
        "bundle_sha256": info.bundle_sha256,
        "variant": info.variant,
        "weights_precision": info.weights_precision,
        "precision": info.precision,
        "device_requested": info.device_requested,
        "device_used": info.device_used,
        "path": str(bundle_path),
    }


def _labelled_pngs(
    rows: list[Row],
    *,
    figures: dict[str, Any],
    classes: tuple[str, ...],
    folder: Path,
    title: list[str],
    bins: int,
) -> None:
    matrix = np.array(figures["slice"]["confusion"], np.int64)
    drawing.confusion_png(
        matrix, classes, folder / outputs.CONFUSION, [*title, "slice level, rows: true class"]
    )
    analysed = [r for r in rows if r.status == "ok"]
    probs = np.array([r.probabilities for r in analysed], np.float64).reshape(-1, len(classes))
    truth = np.array([classes.index(r.item.truth) for r in analysed], np.int64)
    case_probs, case_truth, _ = aggregate_cases(probs, truth, [r.item.case for r in analysed])
    levels = [
        ("slice", probs, truth, outputs.finite(figures["slice"]["ece"])),
        ("case", case_probs, case_truth, outputs.finite(figures["case"]["ece"])),
    ]
    drawing.reliability_png(levels, bins, folder / outputs.RELIABILITY, title)


def _data(inputs: Inputs) -> dict[str, Any]:
    return {
        "path": str(inputs.root.resolve()),
        "files": len(inputs.items),
        "cases": len({(i.case, i.truth) for i in inputs.items}),
        "excluded": inputs.excluded,
        "case_ids_from": inputs.case_ids_from,
    }


def run_evaluation(request: Request, stream: TextIO) -> dict[str, Any]:
    """Evaluate ``request.data`` and write ``request.out``; returns what metrics.json holds.

    Raises:
        DatasetError: a bad folder, a file without a case id, or ``out`` exists.
        LabelMapError: a class folder the label map or the model does not know.
        BundleError: the bundle fails verification.
        EngineError: OpenVINO cannot compile it on the device.
    """
    outputs.claim_folder(request.out)
    config = request.config
    bundle = load_bundle(request.bundle)
    labels = load_label_map(request.labels)
    inputs = list_inputs(request.data, request.layout, labels, bundle.labels)
    configure_decoders()
    warm_up()
    variant = _variant(request, str(bundle.manifest.get("default_variant", "fp16")))
    engine = Engine.compile(bundle, config.inference, variant)
    rule = resolve(bundle, config.thresholds)
    settings = ScanSettings(
        DecodeLimits(max_pixels=config.limits.max_pixels),
        config.limits.max_file_bytes,
        (config.limits.b_value_min, config.limits.b_value_max)
        if config.limits.dicom_header_rules
        else None,
        config.inference.top_k,
    )
    model = _model(engine, bundle.path)
    log.info(
        "evaluate_start",
        kind=inputs.kind,
        files=len(inputs.items),
        model=model["name"],
        version=model["version"],
        variant=model["variant"],
        device=model["device_used"],
    )
    progress = Progress(len(inputs.items), stream, bar=request.progress)
    try:
        rows = list(
            score(inputs.root, inputs.items, engine, rule, settings=settings, done=progress)
        )
    finally:
        progress.close()
        engine.close()
    classes = bundle.labels
    top_k = config.inference.top_k
    if inputs.kind == "labelled":
        figures = labelled_figures(rows, classes, top_k=top_k, bins=request.bins)
    else:
        figures = out_of_scope_figures(rows)
    metrics: dict[str, Any] = {
        "kind": inputs.kind,
        "data": _data(inputs),
        "model": model,
        "settings": {
            "top_k": top_k,
            "bins": request.bins,
            "labels": str(request.labels),
            "case_pattern": request.layout.case_pattern,
            "exclude": request.layout.exclude,
            "dicom_b_range": None if settings.b_range is None else list(settings.b_range),
            "decision": rule.log_fields(),
        },
        "classes": list(classes),
        **figures,
        "evaluated_at": iso(utc_now()),
        "generator": {"name": GENERATOR, "version": VERSION},
        "disclaimer": DISCLAIMER,
    }
    title = [
        (
            f"{model['name']} {model['version']} ({model['variant']}, {model['device_used']}) "
            f"on {inputs.root.name}: {len(rows)} files"
        ),
        "research use only, not for diagnosis",
    ]
    with outputs.staged(request.out) as folder:
        outputs.write_metrics(folder / outputs.METRICS, metrics)
        outputs.write_results(folder / outputs.RESULTS, rows, inputs.kind)
        if inputs.kind == "labelled":
            _labelled_pngs(
                rows,
                figures=figures,
                classes=classes,
                folder=folder,
                title=title,
                bins=request.bins,
            )
    log.info("evaluate_done", files=len(rows), out=str(request.out))
    return outputs.finite(metrics)  # type: ignore[no-any-return]
