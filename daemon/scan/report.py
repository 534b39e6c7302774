"""The JSON report, one per input, in the format ``schemas/report.schema.json`` publishes.

Built by the scan worker that ran the scan (`daemon.scan.worker`), and by the daemon for a claim
no worker could finish (a crash, a hang, a file found truncated).

A report is written atomically (temporary file in the reports folder, made durable, renamed into
place, folder fsynced; the pipeline does this for a whole group of reports at once, see
`daemon.fs.write_atomic_group`), so a downstream reader never sees half of one. Its file
name is ``<scan id>.json`` (`daemon.records.scan_id`): the same file under the same name always
lands on the same report, which makes re-processing after a crash idempotent.

What a report never holds: DICOM patient attributes (name, ID, birth date...). It does hold the
file name the sender chose (``source.name``), as the site's own reference to the scan.

``schema_version`` is ``MAJOR.MINOR``: a reader written for 1.x reads any 1.y (fields are only
ever added within a major version).

**File names are bytes.** A POSIX name is any sequence of bytes but ``/`` and NUL; Python holds the
bytes that are not UTF-8 as lone surrogates (``surrogateescape``), which JSON cannot carry.
``source.name`` is the name as UTF-8 text with each undecodable byte written ``%XX`` (upper-case
hex), and ``source.name_base64`` then holds the exact raw bytes (base64); it is ``null`` when the
name is valid UTF-8 (``name`` is then the name itself, a ``%`` included). Every other string in a
report (an error message quoting a path, say) gets the same escape.

**A report is always written.** A bug while building one (`build_report` raising) becomes that
scan's ``INTERNAL_ERROR`` report, built by `internal_error_report` from the claim alone, so one
file can never take the worker or the writer down.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
import re
import time
import traceback
from importlib import metadata
from json.encoder import encode_basestring as _quote  # the C function where there is one
from typing import TYPE_CHECKING, Any

from daemon import DISCLAIMER, GENERATOR
from daemon.errors import InternalError
from daemon.lesionmaps.files import mask_name, overlay_name
from daemon.records import series_id

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from daemon.records import ModelInfo, ScanResult, Source
    from daemon.shared.dicom_series import SeriesTags

SCHEMA_VERSION = "1.3"


def _version() -> str:
    try:
        return metadata.version(GENERATOR)
    except metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()


_UNDECODABLE = re.compile("[\udc80-\udcff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def raw_name(name: str) -> bytes:
    """The bytes of a file name as the file system holds them (`os.fsencode`)."""
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:  # a surrogate no file system produced: keep what can be kept
        return name.encode("utf-8", "surrogatepass")


def text_of(value: str) -> str:
    """``value`` as valid Unicode.

    Each undecodable byte (a ``surrogateescape`` surrogate) becomes ``%XX``, any other lone
    surrogate U+FFFD.
    """
    if not _SURROGATE.search(value):
        return value
    value = _UNDECODABLE.sub(lambda m: f"%{ord(m[0]) - 0xDC00:02X}", value)
    return _SURROGATE.sub("\ufffd", value)


def name_fields(name: str) -> tuple[str, str | None]:
    """``source.name`` and ``source.name_base64`` (``None`` when the name is valid UTF-8)."""
    raw = raw_name(name)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return text_of(raw.decode("utf-8", "surrogateescape")), base64.b64encode(raw).decode()


def _clean(value: Any) -> Any:
    """``value`` with every string made valid Unicode (`text_of`), recursively."""
    if isinstance(value, str):
        return text_of(value)
    if isinstance(value, dict):
        return {text_of(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _source(source: Source) -> dict[str, Any]:
    dicom = source.dicom
    name, name_base64 = name_fields(source.name)
    return {
        "name": name,
        "name_base64": name_base64,
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
            **_series_tags(dicom.series),
        },
    }


def _series_tags(tags: SeriesTags) -> dict[str, Any]:
    """What a series report needs of a DICOM image (since 1.2; `daemon.shared.dicom_series`)."""
    return {
        "instance_number": tags.instance_number,
        "slice_position": tags.slice_position,
        "image_position_patient": None
        if tags.image_position is None
        else list(tags.image_position),
        "image_orientation_patient": None
        if tags.image_orientation is None
        else list(tags.image_orientation),
        "image_type": list(tags.image_type),
        "series_number": tags.series_number,
        "series_description": tags.series_description,
        "manufacturer": tags.manufacturer,
        "images_in_acquisition": tags.images_in_acquisition,
        "pixel_spacing": None if tags.pixel_spacing is None else list(tags.pixel_spacing),
        "slice_thickness": tags.slice_thickness,
        "spacing_between_slices": tags.spacing_between_slices,
    }


def _model(model: ModelInfo) -> dict[str, Any]:
    described: dict[str, Any] = {
        "name": model.name,
        "version": model.version,
        "bundle_sha256": model.bundle_sha256,
        "variant": model.variant,
        "weights_precision": model.weights_precision,
        "precision": model.precision,
    }
    segmenter = model.segmenter
    if segmenter is not None:  # since 1.3, a bundle with a lesion segmenter only
        described["segmenter"] = {
            "variant": segmenter.variant,
            "weights_precision": segmenter.weights_precision,
            "precision": segmenter.precision,
            "threshold": segmenter.threshold,
            "min_lesion_px": segmenter.min_lesion_px,
            "channels": list(segmenter.channels),
        }
    return described


def _lesion_fields(result: ScanResult) -> dict[str, Any]:
    """Since 1.3: the lesion map of an analysed image (a bundle with a segmenter), else nothing.

    ``lesions`` one entry per connected lesion; ``lesion_mask`` and ``overlay`` the files, relative
    to the reports folder (`daemon.lesionmaps.files`); ``map_disagrees`` true when the finding is
    not ``acute_infarct`` but the map marks a lesion; ``lesion_error`` why there is no map.
    """
    found, prediction = result.lesion_map, result.prediction
    if found is None or prediction is None:
        return {}
    if found.mask_png is None:
        return {
            "lesions": None,
            "lesion_mask": None,
            "overlay": None,
            "map_disagrees": None,
            "lesion_error": found.error or "no lesion map",
        }
    return {
        "lesions": [lesion.to_report() for lesion in found.lesions],
        "lesion_mask": mask_name(result.scan_id),
        "overlay": overlay_name(result.scan_id) if found.overlay_png is not None else None,
        "map_disagrees": found.disagrees_with(prediction.finding),
        "lesion_error": None,
    }


def _frames(result: ScanResult) -> list[dict[str, Any]] | None:
    """Since 1.2: each frame of an enhanced object whose functional groups place it, else None.

    A frame with a b-value in range (or none given) is analysed as a slice of its own: its most
    probable label, probability and finding; the others (b0 frames) are listed, ``analysed:
    false``.
    """
    dicom = result.source.dicom
    if dicom is None or not dicom.series.frames:
        return None
    predicted = {frame.index: frame for frame in result.frames}
    listed = []
    for tag in dicom.series.frames:
        frame = predicted.get(tag.index)
        p = frame.prediction if frame is not None else None
        listed.append(
            {
                "index": tag.index,
                "slice_position": tag.slice_position,
                "image_position_patient": None
                if tag.image_position is None
                else list(tag.image_position),
                "b_value": tag.b_value,
                "analysed": p is not None,
                "label": None if p is None else p.label,
                "probability": None if p is None else round(p.probability, 6),
                "finding": None if p is None else p.finding,
                "error": None if frame is None else frame.error,
            }
        )
    return listed


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
            "finding": p.finding,
            "calibrated": p.calibrated,
            "top_k": [{"label": lb, "probability": round(pr, 6)} for lb, pr in p.top(top_k)],
            "probabilities": {
                lb: round(pr, 6) for lb, pr in zip(p.labels, p.probabilities, strict=True)
            },
        }
    failure, reason = result.failure, result.reason
    model = result.model
    dicom = result.source.dicom
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "image",
        "id": result.scan_id,
        "series_id": series_id(
            None if dicom is None else dicom.series_instance_uid, result.claim.name
        ),
        "status": result.status,
        "source": _source(result.source),
        "model": _model(model),
        "device": {"requested": model.device_requested, "used": model.device_used},
        "prediction": prediction,
        "frames": _frames(result),
        **_lesion_fields(result),
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
    if result.lesion_map is not None and "lesions" in report:
        report["timing"]["segment_ms"] = _ms(result.lesion_map.segment_ms)
    if reason is None:  # ok and error reports carry no ``reason`` at all
        return report
    items = list(report.items())
    after_error = [key for key, _ in items].index("error") + 1
    why = {"code": reason.code, "message": reason.message}
    return dict([*items[:after_error], ("reason", why), *items[after_error:]])


def report_path(folder: Path, result: ScanResult) -> Path:
    """Where the report of ``result`` goes."""
    return folder / f"{result.scan_id}.json"


def internal_error_report(result: ScanResult, message: str) -> dict[str, Any]:
    """An ``INTERNAL_ERROR`` report of ``result`` that needs nothing but the claim and the model.

    What `encode_report` writes when building the real report failed: the scan still gets its
    report (under the same id), the bug its message.
    """
    model, claim = result.model, result.claim
    name, name_base64 = name_fields(claim.name)
    sha256 = result.source.sha256
    report: dict[str, Any] = _clean(
        {
            "schema_version": SCHEMA_VERSION,
            "kind": "image",
            "id": result.scan_id,
            "series_id": series_id(None, claim.name),
            "status": "error",
            "source": {
                "name": name,
                "name_base64": name_base64,
                "sha256": sha256 if isinstance(sha256, str) else None,
                "bytes": result.source.bytes if isinstance(result.source.bytes, int) else None,
                "format": None,
                "width": None,
                "height": None,
                "bits": None,
                "dicom": None,
            },
            "model": _model(model),
            "device": {"requested": model.device_requested, "used": model.device_used},
            "prediction": None,
            "frames": None,
            "error": {"code": InternalError.code, "message": message},
            "timing": {
                "received_at": _iso(claim.received_at),
                "reported_at": _iso(dt.datetime.now(dt.UTC)),
                "decode_ms": None,
                "infer_ms": None,
                "total_ms": _ms(max(0.0, time.monotonic() - claim.received_monotonic) * 1000.0),
            },
            "generator": {"name": GENERATOR, "version": VERSION},
            "disclaimer": DISCLAIMER,
        }
    )
    return report


def _dumps(report: dict[str, Any]) -> bytes:
    """``json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False)``, UTF-8, newline.

    `_encode` writes exactly that text for what reports hold (dicts with text keys, lists, text,
    ints, finite floats, booleans, None) at a third less CPU: the standard encoder runs in pure
    Python as soon as it indents. Anything else (a NaN, a foreign type) goes to ``json.dumps``,
    which then raises just as it always did.
    """
    parts: list[str] = []
    try:
        _encode(report, 0, parts.append)
        text = "".join(parts)
    except (TypeError, ValueError, IndexError, RecursionError):
        text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False)
    return text.encode() + b"\n"


_NEWLINES = tuple("\n" + "  " * depth for depth in range(24))
"""The line break and indent before an item at each depth (``IndexError`` deeper: `_dumps`)."""
_INFINITIES = (math.inf, -math.inf)


def _number(value: float) -> str:
    if value != value or value in _INFINITIES:  # noqa: PLR0124 - NaN is the value unequal to itself
        raise ValueError(value)
    return float.__repr__(value)


def _encode(value: Any, depth: int, out: Callable[[str], None]) -> None:  # noqa: C901, PLR0912
    """Append ``value`` as ``json.dumps`` with ``indent=2`` writes it at ``depth`` to ``out``.

    Only the exact types of `_dumps`'s list (no subclasses); anything else raises ``TypeError``.
    """
    kind = type(value)
    if kind is str:
        out(_quote(value))
    elif value is None:
        out("null")
    elif value is True:
        out("true")
    elif value is False:
        out("false")
    elif kind is int:
        out(int.__repr__(value))
    elif kind is float:
        out(_number(value))
    elif kind is dict:
        if not value:
            out("{}")
            return
        inner, lead = _NEWLINES[depth + 1], "{"
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(key)
            head = lead + inner + _quote(key) + ": "
            lead = ","
            kind = type(item)
            if kind is str:
                out(head + _quote(item))
            elif kind is float:
                out(head + _number(item))
            elif item is None:
                out(head + "null")
            elif kind is int:
                out(head + int.__repr__(item))
            else:
                out(head)
                _encode(item, depth + 1, out)
        out(_NEWLINES[depth] + "}")
    elif kind is list or kind is tuple:
        if not value:
            out("[]")
            return
        inner, lead = _NEWLINES[depth + 1], "["
        for item in value:
            out(lead + inner)
            lead = ","
            _encode(item, depth + 1, out)
        out(_NEWLINES[depth] + "]")
    else:
        raise TypeError(kind)


def encode_report(result: ScanResult, top_k: int) -> tuple[dict[str, Any], bytes]:
    """The report of ``result`` and its file content (indented UTF-8 JSON, newline at the end).

    Never raises for one scan's sake: a report that cannot be built or encoded becomes the
    scan's `internal_error_report`.
    """
    try:
        report = build_report(result, top_k)
        try:
            return report, _dumps(report)
        except UnicodeEncodeError:  # a lone surrogate in some text (a path in a message): escape
            report = _clean(report)
            return report, _dumps(report)
    except Exception as exc:  # noqa: BLE001 - one scan's bug is that scan's error report
        message = f"unexpected {type(exc).__name__} while building the report: {exc}"
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            last = frames[-1]
            message += f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"  # noqa: PTH119
        report = internal_error_report(result, message)
        return report, _dumps(report)
