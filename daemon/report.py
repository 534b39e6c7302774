"""Stage 4: the JSON report, one per input, in the format ``schemas/report.schema.json`` publishes.

A report is written atomically (temporary file in the reports folder, made durable, renamed into
place, folder fsynced; the pipeline does this for a whole group of reports at once, see
`daemon.files.write_atomic_group`), so a downstream reader never sees half of one. Its file
name is ``<scan id>.json`` (`daemon.jobs.scan_id`): the same file under the same name always
lands on the same report, which makes re-processing after a crash idempotent.

What a report never holds: DICOM patient attributes (name, ID, birth date...). It does hold the
file name the sender chose (``source.name``), as the site's own reference to the scan.

``schema_version`` is ``MAJOR.MINOR``: a reader written for 1.x reads any 1.y (fields are only
ever added within a major version).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from importlib import metadata
from typing import TYPE_CHECKING, Any

from daemon import DISCLAIMER

if TYPE_CHECKING:
    from pathlib import Path

    from daemon.jobs import ModelInfo, ScanResult, Source

SCHEMA_VERSION = "1.0"
GENERATOR = "infarctwatch"


def _version() -> str:
    try:
        return metadata.version(GENERATOR)
    except metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _source(source: Source) -> dict[str, Any]:
    dicom = source.dicom
    return {
        "name": source.name,
        "sha256": source.sha256,
        "bytes": source.bytes,
        "format": source.format,
        "width": source.width,
        "height": source.height,
        "bits": source.bits,
        "dicom": None
        if dicom is None
        else {
            "study_instance_uid": dicom.study_instance_uid,
            "series_instance_uid": dicom.series_instance_uid,
            "sop_instance_uid": dicom.sop_instance_uid,
            "modality": dicom.modality,
            "photometric_interpretation": dicom.photometric,
            "diffusion_b_value": dicom.diffusion_b_value,
            "frames": dicom.frames,
            "frame_used": dicom.frame_used,
        },
    }


def _model(model: ModelInfo) -> dict[str, Any]:
    return {
        "name": model.name,
        "version": model.version,
        "bundle_sha256": model.bundle_sha256,
        "variant": model.variant,
        "weights_precision": model.weights_precision,
        "precision": model.precision,
    }


def build_report(result: ScanResult, top_k: int, now: float | None = None) -> dict[str, Any]:
    """The report of one finished scan as a JSON-ready mapping.

    ``now`` is a ``time.monotonic()`` reading used for ``timing.total_ms`` (defaults to now).
    """
    finished = time.monotonic() if now is None else now
    prediction = None
    if result.prediction is not None:
        p = result.prediction
        prediction = {
            "label": p.label,
            "index": p.index,
            "probability": round(p.probability, 6),
            "top_k": [{"label": lb, "probability": round(pr, 6)} for lb, pr in p.top(top_k)],
            "probabilities": {
                lb: round(pr, 6) for lb, pr in zip(p.labels, p.probabilities, strict=True)
            },
        }
    failure = result.failure
    model = result.model
    return {
        "schema_version": SCHEMA_VERSION,
        "id": result.scan_id,
        "status": "ok" if result.ok else "error",
        "source": _source(result.source),
        "model": _model(model),
        "device": {"requested": model.device_requested, "used": model.device_used},
        "prediction": prediction,
        "error": None if failure is None else {"code": failure.code, "message": failure.message},
        "timing": {
            "received_at": _iso(result.claim.received_at),
            "reported_at": _iso(dt.datetime.now(dt.UTC)),
            "decode_ms": _ms(result.decode_ms),
            "infer_ms": _ms(result.infer_ms),
            "total_ms": _ms((finished - result.claim.received_monotonic) * 1000.0),
        },
        "generator": {"name": GENERATOR, "version": VERSION},
        "disclaimer": DISCLAIMER,
    }


def report_path(folder: Path, result: ScanResult) -> Path:
    """Where the report of ``result`` goes."""
    return folder / f"{result.scan_id}.json"


def encode_report(result: ScanResult, top_k: int) -> tuple[dict[str, Any], bytes]:
    """The report of ``result`` and its file content (indented UTF-8 JSON, newline at the end)."""
    report = build_report(result, top_k)
    data = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return report, data + b"\n"
