"""A series' SEG and TID 1500 SR, made in the outbox by the real daemon when its report is written.

The bundle is the committed classifier with the threshold segmenter of `segmenter_bundles` (a
bright blob is a lesion); the series is made of real DICOM files (`test_daemon_lesionmaps`).
Both objects are read back with highdicom.
"""

from __future__ import annotations

import io
import json
import os
from typing import TYPE_CHECKING, Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from daemon_support import make_config, run_once
from pydicom.uid import generate_uid
from segmenter_bundles import classifier_only, default_with_segmenter
from test_daemon_lesionmaps import BLOB, LEVEL, MIN_LESION_PX, SLICE_MM, dicom, slice_pixels

from daemon.outbox.series_results import SOURCES, SOURCES_KEEP_S, prune_sources
from daemon.records import series_id
from daemon.shared.bundle import DEFAULT_BUNDLE

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("segmenter") / "bundle"
    return default_with_segmenter(folder, level=LEVEL, min_lesion_px=MIN_LESION_PX)


def _run(tmp_path: Path, bundle: Path | None, blobs: list[bool]) -> tuple[str, Path, list[bytes]]:
    """Drop a DICOM series (a blob on the slices marked True), run --once; the series id."""
    outbox = tmp_path / "outbox"
    config = make_config(
        tmp_path,
        model={"path": str(bundle) if bundle else None},
        outputs={"dicom": {"outbox": str(outbox)}},
        series={"stable_s": 600},
    )
    config.incoming.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    files = []
    for index, blob in enumerate(blobs):
        data = dicom(
            slice_pixels(blob=blob),
            study=study,
            series=series,
            number=index + 1,
            z=index * SLICE_MM,
        )
        (config.incoming / f"s{index}.dcm").write_bytes(data)
        files.append(data)
    assert run_once(config) == 0
    return series_id(series, "x"), outbox, files


def _items(dataset: Any) -> list[tuple[str, Any]]:
    """Every content item of an SR, depth first: (concept name, value or coded meaning)."""
    found = []
    for item in getattr(dataset, "ContentSequence", []):
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "NUM":
            value: Any = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "CODE":
            value = item.ConceptCodeSequence[0].CodeMeaning
        else:
            value = getattr(item, "TextValue", None)
        found.append((name, value))
        found.extend(_items(item))
    return found


def test_a_series_with_a_lesion_gets_a_seg_and_an_sr(tmp_path, bundle) -> None:
    """SEG frames on the lesion slices only, SR with one lesion and its volume, same study."""
    sid, outbox, files = _run(tmp_path, bundle, [False, True, True, False])
    report = json.loads((tmp_path / "reports" / "series" / f"{sid}.json").read_text("utf-8"))
    assert len(report["lesions"]) == 1
    seg = hd.seg.segread(outbox / f"{sid}-seg.dcm")
    sources = [pydicom.dcmread(io.BytesIO(f)) for f in files]
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    referenced = {
        ref.ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
        for item in frame.DerivationImageSequence
        for ref in item.SourceImageSequence
    }
    assert referenced == {str(s.SOPInstanceUID) for s in sources[1:3]}
    assert int(seg.NumberOfFrames) == 2
    assert np.asarray(seg.pixel_array).sum() > 0.5 * 2 * BLOB[2] ** 2
    sr = hd.sr.srread(outbox / f"{sid}-sr.dcm")
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID
    items = _items(sr)
    presence = {"acute_infarct": "Present", "no_acute_infarct": "Absent"}
    assert ("Infarct", presence.get(report["finding"], "Undetermined")) in items
    assert ("Tracking Identifier", f"Lesion 1: {report['lesions'][0]['label']}") in items
    assert any(name == "Comment" and "Research use only" in str(v) for name, v in items)
    volumes = [v for name, v in items if name == "Volume"]
    assert report["lesions"][0]["volume_ml"] == pytest.approx(max(volumes), rel=1e-3)
    kept = list((outbox / SOURCES / sid).glob("*.dcm"))
    assert len(kept) == 4
    assert all("PixelData" not in pydicom.dcmread(p) for p in kept)
    names = sorted(p.name for p in outbox.glob("*.dcm"))
    assert f"{sid}-seg.dcm" in names
    assert len(names) == 4 + 2  # a capture of each slice, the SEG, the SR


def test_a_series_without_a_lesion_gets_an_sr_saying_absent_and_no_seg(tmp_path, bundle) -> None:
    """No lesion: no SEG (it would have no segment); an SR whose finding is not 'Present'."""
    sid, outbox, _ = _run(tmp_path, bundle, [False, False, False])
    assert not (outbox / f"{sid}-seg.dcm").exists()
    items = _items(hd.sr.srread(outbox / f"{sid}-sr.dcm"))
    assert ("Infarct", "Present") not in items
    assert not any(name == "Tracking Identifier" and "Lesion" in str(v) for name, v in items)


def test_without_a_segmenter_the_sr_gives_the_finding_alone(tmp_path) -> None:
    """A classifier-only (format 1) bundle: an SR with the series' finding, no lesion, no SEG."""
    plain = classifier_only(DEFAULT_BUNDLE, tmp_path / "plain")
    sid, outbox, _ = _run(tmp_path, plain, [True, True, False])
    report = json.loads((tmp_path / "reports" / "series" / f"{sid}.json").read_text("utf-8"))
    assert "lesions" not in report
    assert not (outbox / f"{sid}-seg.dcm").exists()
    items = _items(hd.sr.srread(outbox / f"{sid}-sr.dcm"))
    presence = {"acute_infarct": "Present", "no_acute_infarct": "Absent"}
    assert ("Infarct", presence.get(report["finding"], "Undetermined")) in items
    assert not any(name == "Tracking Identifier" and "Lesion" in str(v) for name, v in items)


def test_kept_headers_are_pruned_after_a_day(tmp_path) -> None:
    """A series' kept headers outlive its report by `SOURCES_KEEP_S`, then go."""
    old = tmp_path / SOURCES / "a"
    old.mkdir(parents=True)
    fresh = tmp_path / SOURCES / "b"
    fresh.mkdir()
    now = old.stat().st_mtime + SOURCES_KEEP_S + 1
    os.utime(fresh, (now, now))
    assert prune_sources(tmp_path, now=now) == 1
    assert not old.exists()
    assert fresh.exists()
