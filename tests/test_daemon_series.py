"""Series: DICOM images grouped by Study/Series UID, folders of PNGs, one report per series.

Real daemons (in-process `Service` threads and ``python -m daemon run`` processes), real worker
processes, the committed bundle, DICOM series built with pydicom from the committed DWI sample by
setting UIDs, InstanceNumbers, positions and b-values (`daemon.series` has the rules).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import random
import signal
import time
from typing import TYPE_CHECKING, Any

import jsonschema
import pydicom
import pytest
from daemon_support import (
    PATIENT_ID,
    PATIENT_NAME,
    REPO,
    drop,
    enhanced_mr,
    log_events,
    make_config,
    reports,
    run_once,
    running,
    small_png,
    spawn,
    wait_for,
    write_config,
)
from pydicom.uid import generate_uid
from slice_records import slice_record
from structlog.testing import capture_logs

from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.records import series_id
from daemon.series import tracker as tracker_module
from daemon.series.assemble import (
    build_series_report,
    missing_positions,
    natural_key,
    series_finding,
)
from daemon.series.tracker import SeriesTracker
from daemon.service.status import describe

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator
    from pathlib import Path

    from daemon.scan.slices import SliceRecord

DWI_SAMPLE = REPO / "samples" / "05-right-basal-ganglia.dcm"
SERIES_SCHEMA = json.loads(
    (REPO / "schemas" / "series-report.schema.json").read_text(encoding="utf-8")
)
SERIES_VALIDATOR = jsonschema.Draft202012Validator(
    SERIES_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def instance(
    study: str,
    series: str,
    number: int,
    *,
    z: float | None,
    b: float | None = 1000,
    description: str = "ep2d_diff_tra_TRACEW",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"),
    modality: str = "MR",
    expected: int | None = None,
    sop: str | None = None,
) -> bytes:
    """The DWI sample as one image of a series (pixels untouched)."""
    ds = pydicom.dcmread(DWI_SAMPLE)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = sop or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = number
    ds.SeriesNumber = 5
    ds.SeriesDescription = description
    ds.ImageType = list(image_type)
    ds.Modality = modality
    ds.Manufacturer = "SIEMENS"
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    if z is not None:
        ds.ImagePositionPatient = [-120.0, -120.0, z]
        ds.ImageOrientationPatient = AXIAL
    if b is None:
        if "DiffusionBValue" in ds:
            del ds.DiffusionBValue
    else:
        ds.DiffusionBValue = b
    if expected is not None:
        ds.ImagesInAcquisition = expected
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def series_reports(folder: Path) -> dict[str, dict[str, Any]]:
    """Every series report by id, each validated against the published schema."""
    found = {}
    for path in sorted((folder / "series").glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        SERIES_VALIDATOR.validate(document)
        assert path.stem == document["id"]
        assert PATIENT_NAME.split("^")[0] not in path.read_text(encoding="utf-8")
        found[document["id"]] = document
    return found


def uid_id(uid: str) -> str:
    found = series_id(uid, "x")
    assert found is not None
    return found


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemons started by a test; any still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


class TestOneStudyOnce:
    """One ``run --once`` over a whole study dropped in shuffled order: every kind of series."""

    def test_a_study_gives_one_report_per_series(self, tmp_path) -> None:  # noqa: PLR0915 - one story
        study = generate_uid()
        dwi, gappy, t1, ct, adc = (generate_uid() for _ in range(5))
        files: dict[str, bytes] = {}
        # DWI: b0 and b1000 images in one series, 4 positions, InstanceNumbers 1..8.
        for i, z in enumerate((0.0, 5.0, 10.0, 15.0)):
            files[f"dwi-b0-{i}.dcm"] = instance(study, dwi, 2 * i + 1, z=z, b=0)
            files[f"dwi-b1000-{i}.dcm"] = instance(study, dwi, 2 * i + 2, z=z)
        # the same image (SOPInstanceUID) sent again under another name
        duplicate_sop = pydicom.dcmread(io.BytesIO(files["dwi-b1000-1.dcm"])).SOPInstanceUID
        files["dwi-again.dcm"] = instance(study, dwi, 4, z=5.0, sop=duplicate_sop)
        # A series with slice 3 of 5 missing (InstanceNumber and position).
        for n, z in ((1, 0.0), (2, 4.0), (4, 12.0), (5, 16.0)):
            files[f"gap-{n}.dcm"] = instance(study, gappy, n, z=z)
        # T1 and CT series of the same study; an ADC series with the DWI geometry.
        for n in (1, 2):
            files[f"t1-{n}.dcm"] = instance(
                study, t1, n, z=5.0 * n, b=None, description="t1_se_tra", image_type=("ORIGINAL",)
            )
            files[f"ct-{n}.dcm"] = instance(study, ct, n, z=5.0 * n, b=None, modality="CT")
        for i, z in enumerate((0.0, 5.0, 10.0, 15.0)):
            files[f"adc-{i}.dcm"] = instance(
                study,
                adc,
                i + 1,
                z=z,
                b=None,
                description="ep2d_diff_tra_ADC",
                image_type=("DERIVED", "PRIMARY", "DIFFUSION", "ADC"),
            )
        config = make_config(tmp_path, series={"stable_s": 600})
        config.incoming.mkdir(parents=True)
        names = list(files)
        random.Random(12).shuffle(names)  # noqa: S311 - a fixed order, no secret
        for name in names:
            (config.incoming / name).write_bytes(files[name])

        assert run_once(config) == 0

        images = reports(config.reports)
        assert len(images) == len(files)
        for name, report in images.items():
            assert report["kind"] == "image"
            uid = pydicom.dcmread(io.BytesIO(files[name])).SeriesInstanceUID
            assert report["series_id"] == uid_id(uid), name
        found = series_reports(config.reports)
        assert set(found) == {uid_id(u) for u in (dwi, gappy, t1, ct, adc)}
        for document in found.values():
            assert document["timing"]["completed_by"] == "once"
            assert document["study_instance_uid"] == study

        one = found[uid_id(dwi)]
        by_id = {r["id"]: n for n, r in images.items()}
        assert one["status"] == "ok", one["missing"]
        assert one["images"] == 8
        assert one["duplicates"] == 1
        (again,) = one["duplicate_images"]
        assert again["sop_instance_uid"] == duplicate_sop
        assert {by_id[again["report_id"]], by_id[one["slices"][1]["report_id"]]} == {
            "dwi-b1000-1.dcm",
            "dwi-again.dcm",
        }
        assert [s["slice_position"] for s in one["slices"]] == [0.0, 5.0, 10.0, 15.0]
        assert [s["instance_number"] for s in one["slices"]] == [2, 4, 6, 8]
        assert [b["instance_number"] for b in one["b0_images"]] == [1, 3, 5, 7]
        assert all(b["b_value"] == 0 for b in one["b0_images"])
        names = [by_id[s["report_id"]] for s in one["slices"]]
        assert names[0] == "dwi-b1000-0.dcm"
        assert names[1] in ("dwi-b1000-1.dcm", "dwi-again.dcm")  # whichever came first
        assert names[2:] == ["dwi-b1000-2.dcm", "dwi-b1000-3.dcm"]
        assert one["finding"] in ("acute_infarct", "no_acute_infarct", "indeterminate")
        assert one["adc_series"] == [
            {"id": uid_id(adc), "series_instance_uid": adc, "series_number": 5}
        ]
        assert one["series_description"] == "ep2d_diff_tra_TRACEW"
        assert one["manufacturer"] == "SIEMENS"

        gap = found[uid_id(gappy)]
        assert gap["status"] == "incomplete"
        assert gap["missing"] == {"instance_numbers": [3], "positions": [8.0]}
        assert len(gap["slices"]) == 4

        for uid, code in ((t1, "NOT_DWI"), (ct, "NOT_MR"), (adc, "NOT_DWI")):
            document = found[uid_id(uid)]
            assert document["status"] == "not_analysed"
            assert document["reason"]["code"] == code
            assert document["finding"] is None
            assert document["locations"] == []
            assert document["slices"] == []
        assert found[uid_id(adc)]["dwi_series"]["id"] == uid_id(dwi)
        assert len(found[uid_id(adc)]["adc_images"]) == 4

        status = json.loads(config.status_path.read_text(encoding="utf-8"))
        text, _ = describe(status, config.status_path, dt.datetime.now(dt.UTC))
        assert "series       5 reported (1 ok, 1 incomplete, 3 not analysed), 0 open" in text
        assert status["series"]["reported"] == 5
        assert status["series"]["ok"] == 1
        assert status["series"]["incomplete"] == 1
        assert status["series"]["not_analysed"] == 3
        assert status["series"]["open"] == 0


class TestLive:
    def test_interleaved_series_complete_by_count_and_by_quiet_time(self, tmp_path) -> None:
        """Two series sent interleaved and out of order into a running daemon.

        The one whose headers say how many images it holds is reported as soon as the last
        arrives; the other once no image of it has come for series.stable_s.
        """
        stable_s = 2.0
        config = make_config(tmp_path, series={"stable_s": stable_s})
        config.incoming.mkdir(parents=True)
        study, counted, quiet = generate_uid(), generate_uid(), generate_uid()
        items = [
            (f"c{n}.dcm", instance(study, counted, n, z=6.0 * n, expected=5))
            for n in (1, 2, 3, 4, 5)
        ]
        items += [(f"q{n}.dcm", instance(study, quiet, n, z=6.0 * n)) for n in (1, 2, 3, 4)]
        random.Random(3).shuffle(items)  # noqa: S311 - a fixed order, no secret
        with running(config):
            for name, data in items:
                drop(config.incoming, name, data)
            dropped = time.monotonic()
            wait_for(lambda: len(series_reports(config.reports)) == 2, 60, "two series reports")
            took = time.monotonic() - dropped
            found = series_reports(config.reports)
            first, second = found[uid_id(counted)], found[uid_id(quiet)]
            assert first["timing"]["completed_by"] == "count"
            assert second["timing"]["completed_by"] == "quiet"
            assert first["images"] == 5
            assert second["images"] == 4
            assert [s["instance_number"] for s in first["slices"]] == [1, 2, 3, 4, 5]
            assert took >= stable_s
            # A late image reopens its series: the same report file is written again with it.
            drop(config.incoming, "q5.dcm", instance(study, quiet, 5, z=30.0))
            late = time.monotonic()
            target = config.reports / "series" / f"{uid_id(quiet)}.json"
            wait_for(
                lambda: json.loads(target.read_text(encoding="utf-8"))["images"] == 5,
                60,
                "the rewritten report",
            )
            print(f"late image: series report rewritten {time.monotonic() - late:.2f} s after it")
            wait_for(lambda: json.loads(config.status_path.read_text())["series"]["reported"] == 2)
        found = series_reports(config.reports)
        assert len(found) == 2
        assert [s["instance_number"] for s in found[uid_id(quiet)]["slices"]] == [1, 2, 3, 4, 5]


class TestRestarts:
    def test_kill_9_mid_series_then_restart_gives_exactly_one_report(
        self, tmp_path, processes
    ) -> None:
        """Half a series, kill -9, the other half, restart: one report with every image.

        Another kill -9 and restart after the report was written leave it as it is (a duplicate
        image among them included: the report lists it, so it does not reopen the series).
        """
        path = write_config(tmp_path, series={"stable_s": 1.5})
        config = load_config(path)
        config.incoming.mkdir(parents=True)
        study, uid = generate_uid(), generate_uid()
        data = {n: instance(study, uid, n, z=5.0 * n) for n in range(1, 7)}

        def start(run: int) -> subprocess.Popen[bytes]:
            log = tmp_path / f"run-{run}.log"
            daemon = spawn("run", "--config", str(path), log=log)
            processes.append(daemon)
            started = lambda: any(e["event"] == "started" for e in log_events(log))  # noqa: E731
            wait_for(started, 60, "the daemon to start")
            return daemon

        def kill(daemon: subprocess.Popen[bytes]) -> None:
            daemon.send_signal(signal.SIGKILL)
            assert daemon.wait(10) == -signal.SIGKILL

        daemon = start(1)
        for n in (1, 2, 3):
            drop(config.incoming, f"s{n}.dcm", data[n])
        wait_for(lambda: len(reports(config.reports)) == 3, 60, "three image reports")
        kill(daemon)
        assert not (config.reports / "series").exists()
        for n in (4, 5, 6):
            drop(config.incoming, f"s{n}.dcm", data[n])
        drop(config.incoming, "s3-again.dcm", data[3])  # a duplicate: listed, never reopens it
        daemon = start(2)
        restarted = time.monotonic()
        target = config.reports / "series" / f"{uid_id(uid)}.json"
        wait_for(target.exists, 60, "the series report")
        print(f"kill -9 mid-series: series report {time.monotonic() - restarted:.2f} s after start")
        found = series_reports(config.reports)
        assert list(found) == [uid_id(uid)]
        document = found[uid_id(uid)]
        assert document["status"] == "ok"
        assert [s["instance_number"] for s in document["slices"]] == [1, 2, 3, 4, 5, 6]
        assert document["duplicates"] == 1
        resumed = [e for e in log_events(tmp_path / "run-2.log") if e["event"] == "series_resumed"]
        assert resumed, "the open series was rebuilt at start"
        assert resumed[0]["images"] == 3
        logged = (tmp_path / "run-2.log").read_text(encoding="utf-8")
        assert uid not in logged
        assert study not in logged
        assert PATIENT_ID not in logged
        written = target.stat().st_mtime_ns
        kill(daemon)
        daemon = start(3)
        time.sleep(3.0)  # twice series.stable_s: nothing to complete
        assert list(series_reports(config.reports)) == [uid_id(uid)]
        assert target.stat().st_mtime_ns == written
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0


class TestFolderSeries:
    def test_a_sub_folder_of_pngs_is_one_series_in_natural_order(self, tmp_path) -> None:
        config = make_config(tmp_path, watch={"recursive": True}, series={"stable_s": 600})
        folder = config.incoming / "case 7" / "dwi"
        folder.mkdir(parents=True)
        for seed, name in enumerate(("img10.png", "img2.png", "img1.png")):
            (folder / name).write_bytes(small_png(seed))
        (config.incoming / "loose.png").write_bytes(small_png(9))

        assert run_once(config) == 0

        images = reports(config.reports)
        assert images["loose.png"]["series_id"] is None
        ids = {
            images[f"case 7/dwi/{n}"]["series_id"] for n in ("img1.png", "img2.png", "img10.png")
        }
        assert len(ids) == 1
        (only,) = series_reports(config.reports).values()
        assert only["id"] == ids.pop()
        assert only["folder"] == "case 7/dwi"
        assert only["series_instance_uid"] is None
        by_id = {r["id"]: n for n, r in images.items()}
        assert [by_id[s["report_id"]] for s in only["slices"]] == [
            "case 7/dwi/img1.png",
            "case 7/dwi/img2.png",
            "case 7/dwi/img10.png",
        ]
        assert only["status"] == "ok"


def _record(index: int, label: str, probability: float, position: float) -> SliceRecord:
    return slice_record(
        index,
        position,
        series_id="0" * 20,
        name=f"s{index}.dcm",
        received_at="2026-12-07T00:00:00.000Z",
        segmented=False,
        label=label,
        probability=probability,
    )


class TestRules:
    """The documented series rules (docs/daemon.md, "Series") on hand-made slices."""

    def _report(
        self, slices: list[SliceRecord], lesions: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return build_series_report(
            "0" * 20,
            slices,
            folder=None,
            duplicates=[],
            timing={},
            links={},
            generator={"name": "infarctwatch", "version": "test"},
            disclaimer="Research use only.",
            lesions=lesions,
        )

    def test_a_confident_slice_makes_an_infarct_and_adjacent_slices_one_location(self) -> None:
        slices = [
            _record(0, "No acute infarct", 0.9, 0.0),
            _record(1, "Left thalamus", 0.7, 5.0),
            _record(2, "Left thalamus", 0.8, 10.0),
            _record(3, "Right pons", 0.4, 15.0),  # not confident: no location
        ]
        report = self._report(list(reversed(slices)))
        assert report["finding"] == "acute_infarct"
        assert report["locations"] == [
            {
                "label": "Left thalamus",
                "slices": [1, 2],
                "probability": 0.8,
                "basis": "confident_slices",
            }
        ]
        assert [s["finding"] for s in report["slices"]] == [
            "no_acute_infarct",
            "acute_infarct",
            "acute_infarct",
            "indeterminate",
        ]

    def test_the_image_reports_finding_wins_over_the_fallback_rule(self) -> None:
        """A slice's finding is its report's calibrated ``prediction.finding`` when it has one."""
        confident = dataclasses.replace(_record(0, "Left thalamus", 0.9, 0.0), finding=None)
        held_back = dataclasses.replace(confident, finding="indeterminate")
        assert series_finding([confident]) == "acute_infarct"
        assert series_finding([held_back]) == "indeterminate"
        # The model's thresholds can call an infarct while 'No acute infarct' is still the single
        # most probable label (p_neg below 1 - threshold, the rest spread): no location for it.
        spread = dataclasses.replace(
            _record(1, "No acute infarct", 0.4, 5.0), finding="acute_infarct"
        )
        report = self._report([spread])
        assert report["finding"] == "acute_infarct"
        assert report["locations"] == []

    def test_no_infarct_needs_every_slice_confidently_negative(self) -> None:
        negative = [_record(i, "No acute infarct", 0.8, 5.0 * i) for i in range(3)]
        assert series_finding(negative) == "no_acute_infarct"
        doubtful = [*negative, _record(3, "No acute infarct", 0.3, 15.0)]
        assert series_finding(doubtful) == "indeterminate"
        assert self._report(doubtful)["locations"] == []

    def test_gaps_are_found_from_the_median_spacing(self) -> None:
        slices = [_record(i, "No acute infarct", 0.9, z) for i, z in enumerate((0, 3, 6, 15, 18))]
        assert missing_positions(slices) == [9.0, 12.0]

    def test_a_series_made_acute_by_its_adc_names_the_restricted_lesion_s_place(self) -> None:
        """No slice is confident; the ADC confirms a lesion labelled Left thalamus on slices 1-2
        and refutes a look-alike: the series is acute and its one location is the lesion's, after
        any confident slice's and without repeating one."""
        slices = [
            dataclasses.replace(
                _record(i, "No acute infarct", 0.45, 5.0 * i),
                finding="indeterminate",
                probabilities=(("Left thalamus", p), ("No acute infarct", 0.45)),
            )
            for i, p in enumerate((0.1, 0.35, 0.4))
        ]

        def lesion(label: str, indices: list[int], restricted: bool) -> dict[str, Any]:
            parts = [{"index": i} for i in indices]
            return {"label": label, "slices": parts, "adc": {"restricted": restricted}}

        fields = {
            "lesions": [
                lesion("Left thalamus", [1, 2], restricted=True),
                lesion("Right frontal lobe", [0], restricted=False),
            ],
            "adc_slices": 3,
        }
        report = self._report(slices, lesions=fields)
        assert report["finding"] == "acute_infarct"
        assert report["locations"] == [
            {
                "label": "Left thalamus",
                "slices": [1, 2],
                "probability": 0.4,
                "basis": "restricted_lesion",
            }
        ]
        confident = [*slices[:2], _record(2, "Left thalamus", 0.9, 10.0)]
        report = self._report(confident, lesions=fields)
        assert report["locations"] == [
            {
                "label": "Left thalamus",
                "slices": [2],
                "probability": 0.9,
                "basis": "confident_slices",
            }
        ]

    def test_a_slice_that_arrived_and_was_refused_is_not_missing(self) -> None:
        """The image check refused the slice at 9 mm: it is an other image, the series is ok; a
        b0 image at 9 mm does not stand in for a b1000 slice that never came."""
        analysed = [_record(i, "No acute infarct", 0.9, z) for i, z in enumerate((0, 3, 6, 12, 15))]
        refused = dataclasses.replace(
            _record(5, "No acute infarct", 0.9, 9.0),
            status="not_analysed",
            reason_code="OUT_OF_SCOPE_IMAGE",
            label=None,
            probability=None,
        )
        report = self._report([*analysed, refused])
        assert report["status"] == "ok"
        assert report["missing"] is None
        assert [image["code"] for image in report["other_images"]] == ["OUT_OF_SCOPE_IMAGE"]
        b0 = dataclasses.replace(refused, reason_code="NOT_B1000", b_value=0.0)
        report = self._report([*analysed, b0])
        assert report["status"] == "incomplete"
        assert report["missing"]["positions"] == [9.0]
        assert len(report["b0_images"]) == 1

    def test_natural_order(self) -> None:
        names = ["img10.png", "img2.png", "IMG1.png"]
        assert sorted(names, key=natural_key) == ["IMG1.png", "img2.png", "img10.png"]


def test_series_stable_s_is_bounded(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"At 'series.stable_s': must be greater than 0"):
        make_config(tmp_path, series={"stable_s": 0})
    assert make_config(tmp_path).series.stable_s == 10.0


class TestTrackerFaults:
    def test_a_bug_building_one_series_report_spares_the_others_and_the_thread(
        self, tmp_path, monkeypatch
    ) -> None:
        """A report-building bug (injected) is logged; the tracker lives on, other series report."""
        real = tracker_module.build_series_report

        def broken(series: str, records: list[SliceRecord], **kwargs: Any) -> dict[str, Any]:
            if series == "b" * 20:
                raise ZeroDivisionError("injected")
            return real(series, records, **kwargs)

        monkeypatch.setattr(tracker_module, "build_series_report", broken)
        tracker = SeriesTracker(tmp_path, stable_s=0.2)
        with capture_logs() as logs, tracker:
            assert tracker.rebuilt.wait(10)
            for series in ("a" * 20, "b" * 20):
                for index in range(3):
                    record = _record(index, "No acute infarct", 0.9, 5.0 * index)
                    tracker.add(dataclasses.replace(record, series_id=series))
            wait_for(lambda: tracker.snapshot().reported == 1, 10, "the good series' report")
            time.sleep(0.5)
            assert tracker.alive
            assert tracker.snapshot().open == 0
        assert [p.name for p in (tmp_path / "series").iterdir()] == ["a" * 20 + ".json"]
        failed = [e for e in logs if e["event"] == "series_report_failed"]
        assert [e["series"] for e in failed] == ["b" * 20]


class TestEnhancedMultiFrame:
    def test_every_frame_of_an_enhanced_object_is_a_slice(self, tmp_path) -> None:
        """b0 and b1000 frames in one file: the b1000 frames are slices, in position order."""
        study, uid = generate_uid(), generate_uid()
        frames = [(10.0, 0), (10.0, 1000), (0.0, 0), (0.0, 1000), (5.0, 0), (5.0, 1000)]
        config = make_config(tmp_path, series={"stable_s": 600})
        config.incoming.mkdir(parents=True)
        (config.incoming / "enhanced.dcm").write_bytes(enhanced_mr(study, uid, frames))

        assert run_once(config) == 0

        (image,) = reports(config.reports).values()
        assert image["status"] == "ok"
        assert image["source"]["dicom"]["frames"] == 6
        assert [f["analysed"] for f in image["frames"]] == [False, True] * 3
        assert [f["slice_position"] for f in image["frames"]] == [10.0, 10.0, 0.0, 0.0, 5.0, 5.0]
        assert all(f["label"] for f in image["frames"] if f["analysed"])
        (series,) = series_reports(config.reports).values()
        assert series["id"] == uid_id(uid)
        assert series["status"] == "ok"
        assert [(s["frame"], s["slice_position"]) for s in series["slices"]] == [
            (3, 0.0),
            (5, 5.0),
            (1, 10.0),
        ]
        assert [(b["frame"], b["b_value"]) for b in series["b0_images"]] == [
            (2, 0.0),
            (4, 0.0),
            (0, 0.0),
        ]
        assert {s["report_id"] for s in series["slices"]} == {image["id"]}
        assert series["images"] == 6

    def test_an_enhanced_object_of_b0_frames_only_is_not_b1000(self, tmp_path) -> None:
        """Every frame b = 0: NOT_B1000 (not a refusal of its pixels), and the series lists the
        frames as b0 images, with no slice."""
        study, uid = generate_uid(), generate_uid()
        config = make_config(tmp_path, series={"stable_s": 600})
        config.incoming.mkdir(parents=True)
        frames: list[tuple[float, float | None]] = [(0.0, 0.0), (5.0, 0.0), (10.0, 0.0)]
        (config.incoming / "b0.dcm").write_bytes(enhanced_mr(study, uid, frames))

        assert run_once(config) == 0

        (image,) = reports(config.reports).values()
        assert image["status"] == "not_analysed"
        assert image["reason"]["code"] == "NOT_B1000"
        assert "every frame's b-value (0 s/mm²)" in image["reason"]["message"]
        (series,) = series_reports(config.reports).values()
        assert series["status"] == "not_analysed"
        assert series["reason"]["code"] == "NOT_B1000"
        assert series["slices"] == []
        assert [(b["frame"], b["b_value"]) for b in series["b0_images"]] == [
            (0, 0.0),
            (1, 0.0),
            (2, 0.0),
        ]

    def test_a_series_report_that_cannot_be_written_is_tried_again(self, tmp_path) -> None:
        """reports/series blocked by a file: logged, retried, written once the way is free."""
        blocker = tmp_path / "series"
        blocker.write_text("not a folder", encoding="utf-8")
        tracker = SeriesTracker(tmp_path, stable_s=0.2)
        with capture_logs() as logs, tracker:
            for index in range(3):
                tracker.add(_record(index, "No acute infarct", 0.9, 5.0 * index))
            wait_for(
                lambda: any(e["event"] == "series_report_write_failed" for e in logs),
                10,
                "the failed write",
            )
            assert tracker.snapshot().open == 1
            blocker.unlink()
            freed = time.monotonic()
            wait_for(lambda: tracker.snapshot().reported == 1, 15, "the report")
            print(f"series report written {time.monotonic() - freed:.2f} s after the way was free")
        assert [p.name for p in (tmp_path / "series").iterdir()] == ["0" * 20 + ".json"]
