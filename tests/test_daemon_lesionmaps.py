"""Lesion maps: a format 2 bundle's segmenter in the real daemon, its files and the series' lesions.

Real daemons (`run --once` in-process, real scan worker processes), real OpenVINO with a format 2
bundle from `tests.segmenter_bundles` (the committed classifier plus a segmenter that marks every
input pixel whose DWI value is above ``level``). The images are drawn so that the truth is known:
an ellipse of tissue at 1000, a 20 x 20 pixel blob at 3000 (the lesion), and a grid of 2 x 2 pixel
bright dots over the tissue. The dots make the 99.5th percentile of every slice the same whether
it has a blob or not (so the tissue maps to about 0.35 and the blob to 1.0 on every slice); each
dot is far smaller than ``min_lesion_px`` on the input square, so the segmenter's dots are
dropped: what is left is the blob.
"""

from __future__ import annotations

import io
import json
import time
from typing import TYPE_CHECKING, Any

import jsonschema
import numpy as np
import pytest
from daemon_support import (
    REPO,
    VALIDATOR,
    drop,
    files_under,
    make_config,
    new_dataset,
    reports,
    run_once,
    running,
    wait_for,
)
from PIL import Image
from pydicom.uid import MRImageStorage, generate_uid
from segmenter_bundles import classifier_only, default_with_segmenter
from slice_records import slice_record
from structlog.testing import capture_logs

from daemon.clock import utc_now
from daemon.config import InferenceConfig, ThresholdsConfig
from daemon.fs import TMP_SUFFIX
from daemon.lesionmaps.overlay import OUTLINE, enlargement, render_overlay
from daemon.lesionmaps.slice import keep_large_parts, source_lesions
from daemon.records import Claim, series_id
from daemon.scan.decision import resolve
from daemon.scan.inference import Engine
from daemon.scan.read import decode_claim
from daemon.scan.report import build_report
from daemon.scan.worker import scan_claims
from daemon.series.lesions import lesions_3d, slice_spacing
from daemon.shared.bundle import DEFAULT_BUNDLE, MANIFEST, load_bundle, write_manifest
from daemon.shared.decode import DecodeLimits
from deploy.install import install_bundle

if TYPE_CHECKING:
    from pathlib import Path

SIZE = 256
BLOB = (140, 100, 20)
"""x0, y0 and side of the blob, in source pixels."""
PIXEL_MM = 0.5
SLICE_MM = 4.0
LEVEL = 0.67
"""Between the tissue (~0.35 after preprocessing) and the blob (1.0)."""
MIN_LESION_PX = 8
"""More than a dot's input pixels (at most 4), far less than the blob's (~170)."""
INPUT_PX = 194 / 128
"""Source pixels per input pixel: the brain crop of these slices is 194 pixels wide, the input
square 128. The map is made on the input square, so each edge of a lesion mapped back onto the
source lies within about one input pixel of the drawn one: the tolerances below follow."""
AREA_REL = (BLOB[2] + INPUT_PX) ** 2 / BLOB[2] ** 2 - 1
"""The relative error of an area (or a volume) when every edge is off by one input pixel."""
SERIES_SCHEMA = json.loads(
    (REPO / "schemas" / "series-report.schema.json").read_text(encoding="utf-8")
)
SERIES_VALIDATOR = jsonschema.Draft202012Validator(
    SERIES_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
ORIGIN = (-64.0, -64.0)
"""ImagePositionPatient x and y of every slice of the test series."""


def slice_pixels(*, blob: bool = True, at: tuple[int, int] | None = None) -> np.ndarray:
    """A 256 x 256 DWI-like slice: tissue, dots, and (``blob``) the blob at ``at`` (x0, y0)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.zeros((SIZE, SIZE), np.uint16)
    inside = ((yy - 128) / 90.0) ** 2 + ((xx - 128) / 75.0) ** 2 < 1
    image[inside] = 1000
    x0, y0 = at or BLOB[:2]
    side = BLOB[2]
    near = (abs(yy - (y0 + side / 2)) < side) & (abs(xx - (x0 + side / 2)) < side)
    image[inside & (yy % 8 < 2) & (xx % 8 < 2) & ~near] = 3000
    if blob:
        image[y0 : y0 + side, x0 : x0 + side] = 3000
    return image


def blob_mask(at: tuple[int, int] | None = None) -> np.ndarray:
    x0, y0 = at or BLOB[:2]
    mask = np.zeros((SIZE, SIZE), bool)
    mask[y0 : y0 + BLOB[2], x0 : x0 + BLOB[2]] = True
    return mask


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def dicom(
    pixels: np.ndarray,
    *,
    study: str,
    series: str,
    number: int,
    z: float,
    spacing: float | None = PIXEL_MM,
) -> bytes:
    """A DWI b1000 MR slice of a series, ``PIXEL_MM`` pixels, axial at ``z`` mm."""
    ds = new_dataset(MRImageStorage)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[series, "frame of reference"])
    ds.Modality = "MR"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"]
    ds.SeriesDescription = "ep2d_diff_tra_TRACEW"
    ds.DiffusionBValue = 1000
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [*ORIGIN, z]
    ds.ImageOrientationPatient = list(AXIAL)
    if spacing is not None:
        ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = SLICE_MM
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed classifier with a threshold segmenter at `LEVEL`."""
    folder = tmp_path_factory.mktemp("segmenter") / "bundle"
    return default_with_segmenter(folder, level=LEVEL, min_lesion_px=MIN_LESION_PX)


@pytest.fixture(scope="module")
def own_spec_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As `bundle`, but the segmenter crops with its own, wider margin (its own preprocess.json)."""
    folder = default_with_segmenter(
        tmp_path_factory.mktemp("own-spec") / "bundle", level=LEVEL, min_lesion_px=MIN_LESION_PX
    )
    spec_file = folder / "segmenter" / "preprocess.json"
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    spec["margin"] = 0.25
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    written = ("format_version", "name", "version", "created_at", "default_variant", "variants")
    written += ("input", "labels", "preprocess", "metrics_summary", "files")
    write_manifest(
        folder,
        name=manifest["name"],
        version=manifest["version"],
        variants=manifest["variants"],
        input_spec=manifest["input"],
        metrics_summary=manifest["metrics_summary"],
        default_variant=manifest["default_variant"],
        extra={k: v for k, v in manifest.items() if k not in written},
    )
    return folder


def config_for(tmp_path: Path, bundle: Path, **sections: Any) -> Any:
    config = make_config(tmp_path, model={"path": str(bundle)}, **sections)
    config.incoming.mkdir(parents=True)
    return config


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image)


def series_reports(folder: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((folder / "series").glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        SERIES_VALIDATOR.validate(document)
        found[document["id"]] = document
    return found


class TestSliceMaps:
    """One image: its lesions, mask file and overlay, against the blob drawn into it."""

    def test_a_blob_of_known_size_is_measured_in_pixels_and_mm(self, tmp_path, bundle) -> None:
        """area_mm2, bbox and centroid match the 20 x 20 blob; the mask file is the blob."""
        config = config_for(tmp_path, bundle)
        study, series = generate_uid(), generate_uid()
        data = dicom(slice_pixels(), study=study, series=series, number=1, z=0.0)
        (config.incoming / "blob.dcm").write_bytes(data)

        with capture_logs() as logs:
            assert run_once(config) == 0

        (report,) = reports(config.reports).values()
        started = next(e for e in logs if e["event"] == "started")
        assert started["segmenter"] == "fp16"
        (scan,) = [e for e in logs if e["event"] == "scan"]
        assert scan["lesions"] == 1
        assert report["schema_version"] == "1.3"
        assert report["status"] == "ok"
        assert report["model"]["segmenter"]["threshold"] == 0.5
        assert report["model"]["segmenter"]["min_lesion_px"] == MIN_LESION_PX
        assert report["source"]["dicom"]["pixel_spacing"] == [PIXEL_MM, PIXEL_MM]
        (lesion,) = report["lesions"]
        x0, y0, side = BLOB
        assert lesion["area_px"] == pytest.approx(side * side, rel=AREA_REL)
        assert lesion["area_mm2"] == pytest.approx(lesion["area_px"] * PIXEL_MM**2)
        assert lesion["area_mm2"] == pytest.approx(side * side * PIXEL_MM**2, rel=AREA_REL)
        box = [x0, y0, x0 + side - 1, y0 + side - 1]
        assert lesion["bbox"] == pytest.approx(box, abs=INPUT_PX)
        assert lesion["centroid"] == pytest.approx(
            [x0 + (side - 1) / 2, y0 + (side - 1) / 2], abs=INPUT_PX / 2
        )
        assert report["lesion_mask"] == f"lesions/{report['id']}_mask.png"
        mask = read_png(config.reports / report["lesion_mask"])
        assert mask.shape == (SIZE, SIZE)
        assert set(np.unique(mask).tolist()) == {0, 255}
        truth = blob_mask()
        found = mask == 255
        assert (found & truth).sum() / (found | truth).sum() > 1 - AREA_REL  # IoU with the blob
        assert report["overlay"] == f"overlays/{report['id']}_overlay.png"
        with Image.open(config.reports / report["overlay"]) as overlay:
            assert overlay.format == "PNG"
            assert overlay.width >= 512
            assert overlay.height > overlay.width  # the band with label and disclaimer below
            picture = np.asarray(overlay.convert("RGB"))
        assert (picture == (255, 230, 0)).all(axis=2).any()  # the outline is drawn
        finding = report["prediction"]["finding"]
        assert report["map_disagrees"] is (finding != "acute_infarct")
        assert report["lesion_error"] is None
        assert report["timing"]["segment_ms"] >= 0

    def test_a_segmenter_with_its_own_preprocessing_maps_back_onto_the_same_pixels(
        self, tmp_path, own_spec_bundle
    ) -> None:
        """Its own crop (a wider margin than the classifier's): the blob is found where it is."""
        config = config_for(tmp_path, own_spec_bundle)
        (config.incoming / "blob.png").write_bytes(png(slice_pixels()))

        assert run_once(config) == 0

        (report,) = reports(config.reports).values()
        (lesion,) = report["lesions"]
        x0, y0, side = BLOB
        coarser = INPUT_PX * 1.25 / 1.04  # its margin 0.25 of the box's side, not 0.04
        area_rel = (side + coarser) ** 2 / side**2 - 1
        assert lesion["area_px"] == pytest.approx(side * side, rel=area_rel)
        box = [x0, y0, x0 + side - 1, y0 + side - 1]
        assert lesion["bbox"] == pytest.approx(box, abs=coarser)

    def test_the_schema_holds_lesions_to_their_form(self, tmp_path, bundle) -> None:
        """A report with a three-number bbox or a mask outside lesions/ is not a valid report."""
        config = config_for(tmp_path, bundle)
        (config.incoming / "blob.png").write_bytes(png(slice_pixels()))
        assert run_once(config) == 0
        (report,) = reports(config.reports).values()
        bad_box = json.loads(json.dumps(report))
        bad_box["lesions"][0]["bbox"] = [1, 2, 3]
        bad_path = {**report, "lesion_mask": "../elsewhere.png"}
        for document in (bad_box, bad_path):
            with pytest.raises(jsonschema.ValidationError):
                VALIDATOR.validate(document)

    def test_a_slice_without_a_blob_has_an_empty_mask_and_no_overlay(
        self, tmp_path, bundle
    ) -> None:
        """No lesion: an all-zero mask file at the source matrix, no overlay, no disagreement."""
        config = config_for(tmp_path, bundle)
        (config.incoming / "clear.png").write_bytes(png(slice_pixels(blob=False)))

        assert run_once(config) == 0

        (report,) = reports(config.reports).values()
        assert report["lesions"] == []
        assert report["overlay"] is None
        assert report["map_disagrees"] is False
        mask = read_png(config.reports / report["lesion_mask"])
        assert mask.shape == (SIZE, SIZE)
        assert not mask.any()
        assert files_under(config.reports / "overlays") == []

    def test_a_png_has_no_area_in_mm(self, tmp_path, bundle) -> None:
        """Without PixelSpacing the area is in pixels only (area_mm2 null)."""
        config = config_for(tmp_path, bundle)
        (config.incoming / "blob.png").write_bytes(png(slice_pixels()))

        assert run_once(config) == 0

        (report,) = reports(config.reports).values()
        (lesion,) = report["lesions"]
        assert lesion["area_mm2"] is None
        assert lesion["area_px"] == pytest.approx(BLOB[2] ** 2, rel=AREA_REL)

    def test_a_rescan_replaces_the_files_and_leaves_no_duplicate(self, tmp_path, bundle) -> None:
        """The same file scanned twice: one report, one mask, one overlay, no temporaries."""
        config = config_for(tmp_path, bundle)
        data = png(slice_pixels())
        (config.incoming / "blob.png").write_bytes(data)
        assert run_once(config) == 0
        first = files_under(config.reports)
        masks = {p: (config.reports / p).read_bytes() for p in first if p.endswith(".png")}
        (config.incoming / "blob.png").write_bytes(data)

        assert run_once(config) == 0

        assert files_under(config.reports) == first
        assert len([p for p in first if p.startswith("lesions/")]) == 1
        assert len([p for p in first if p.startswith("overlays/")]) == 1
        assert not [p for p in first if p.endswith(TMP_SUFFIX)]
        for path, content in masks.items():  # deterministic: the same bytes again
            assert (config.reports / path).read_bytes() == content

    @pytest.mark.parametrize("how", ["format 1 bundle", "inference.lesion_maps false"])
    def test_a_bundle_without_a_segmenter_reports_as_before(self, tmp_path, how) -> None:
        """A format 1 bundle (the committed classifier alone), or the committed format 2 bundle
        with ``inference.lesion_maps: false``: no lesion field, no lesion or overlay folder."""
        if how == "format 1 bundle":
            plain = classifier_only(DEFAULT_BUNDLE, tmp_path / "plain")
            config = make_config(tmp_path, model={"path": str(plain)})
        else:
            assert load_bundle(DEFAULT_BUNDLE).segmenter is not None
            config = make_config(tmp_path, inference={"device": "CPU", "lesion_maps": False})
        config.incoming.mkdir(parents=True)
        (config.incoming / "blob.png").write_bytes(png(slice_pixels()))

        with capture_logs() as logs:
            assert run_once(config) == 0

        (report,) = reports(config.reports).values()
        (scan,) = [e for e in logs if e["event"] == "scan"]
        assert "lesions" not in scan
        assert next(e for e in logs if e["event"] == "started")["segmenter"] is None
        for field in ("lesions", "lesion_mask", "overlay", "map_disagrees", "lesion_error"):
            assert field not in report
        assert "segmenter" not in report["model"]
        assert "segment_ms" not in report["timing"]
        assert not (config.reports / "lesions").exists()
        assert not (config.reports / "overlays").exists()


class _Faulty:
    """A segmenter that answers every image with ``plane`` or ``error`` (a fault injected)."""

    def __init__(self, network: Any, plane: np.ndarray | None, error: str | None) -> None:
        self.network, self._plane, self._error = network, plane, error

    def submit(self, dwi: np.ndarray, job: Any, done: Any) -> None:
        done(job, self._plane, 0.0, self._error)

    def wait(self) -> None:
        pass


class TestSegmenterFaults:
    """A segmenter that fails costs the image its map, never its prediction."""

    @pytest.mark.parametrize(
        ("plane", "error", "said"),
        [
            (None, "OpenVINO could not start segmenting: injected", "injected"),
            (np.full((128, 128), np.nan, np.float32), None, "not numbers"),
        ],
    )
    def test_the_report_keeps_its_prediction_and_says_why(
        self, tmp_path, bundle, plane, error, said
    ) -> None:
        """The real worker code (`scan_claims`, `build_report`) around a failing segmenter."""
        engine = Engine.compile(load_bundle(bundle), InferenceConfig(device="CPU"))
        assert engine.segmenter is not None
        engine.segmenter = _Faulty(engine.segmenter.network, plane, error)  # type: ignore[assignment]
        rule = resolve(engine.bundle, ThresholdsConfig(in_scope=0))
        path = tmp_path / "blob.png"
        path.write_bytes(png(slice_pixels()))
        claim = Claim("c1", path, "blob.png", utc_now(), time.monotonic())
        spec = engine.bundle.preprocess

        def decode(claim: Claim) -> Any:
            return decode_claim(claim, spec, DecodeLimits(), 1 << 26, None)

        (result,), later = scan_claims([claim], engine, rule, decode)
        engine.close()

        assert later == []
        report = build_report(result, 3)
        VALIDATOR.validate(report)
        assert report["status"] == "ok"
        assert report["prediction"] is not None
        assert report["lesions"] is None
        assert report["lesion_mask"] is None
        assert report["map_disagrees"] is None
        assert said in report["lesion_error"]


class TestHotReload:
    """A hot reload switches lesion maps on and off with the bundle, between batches."""

    def test_a_reload_to_a_bundle_with_a_segmenter_and_back(self, tmp_path) -> None:
        """v1 (no segmenter): no map; v2 (a segmenter): maps; v3 (none again): no map."""
        models = tmp_path / "models"
        install_bundle(
            classifier_only(DEFAULT_BUNDLE, tmp_path / "src-v1", version="1.0.0-maps"), models
        )
        config = make_config(tmp_path, model={"path": str(models)})
        config.incoming.mkdir(parents=True)

        def scanned(name: str) -> dict[str, Any]:
            drop(config.incoming, name, png(slice_pixels(at=(140, 100 + len(name)))))
            wait_for(lambda: name in reports(config.reports), 60, name)
            return reports(config.reports)[name]

        with running(config) as service:
            reloader = service.service.reloader
            assert reloader is not None
            first = scanned("v1.png")
            segmenting = default_with_segmenter(
                tmp_path / "src-v2", level=LEVEL, min_lesion_px=MIN_LESION_PX, version="2.0.0-maps"
            )
            install_bundle(segmenting, models)
            wait_for(lambda: reloader.snapshot().reloads == 1, 60, "v2 in service")
            second = scanned("v2-with-maps.png")
            install_bundle(
                classifier_only(DEFAULT_BUNDLE, tmp_path / "src-v3", version="3.0.0-maps"), models
            )
            wait_for(lambda: reloader.snapshot().reloads == 2, 60, "v3 in service")
            third = scanned("v3-without.png")

        assert "lesions" not in first
        assert second["model"]["version"] == "2.0.0-maps"
        assert len(second["lesions"]) == 1
        assert (config.reports / second["lesion_mask"]).is_file()
        assert third["model"]["version"] == "3.0.0-maps"
        assert "lesions" not in third
        assert "segmenter" not in third["model"]


def write_series(
    incoming: Path, blobs: list[tuple[int, int] | None], *, spacing: float | None = PIXEL_MM
) -> tuple[str, list[bytes]]:
    """A DICOM series, one slice per entry of ``blobs`` (the blob's x0, y0, or None), `SLICE_MM`
    apart; returns the SeriesInstanceUID and the files."""
    study, series = generate_uid(), generate_uid()
    files = []
    for index, at in enumerate(blobs):
        pixels = slice_pixels(blob=at is not None, at=at)
        data = dicom(
            pixels,
            study=study,
            series=series,
            number=index + 1,
            z=index * SLICE_MM,
            spacing=spacing,
        )
        (incoming / f"s{index}.dcm").write_bytes(data)
        files.append(data)
    return series, files


class TestSeriesLesions:
    """A series' masks stacked along the normal: 3-D lesions with their volume in mL."""

    def test_a_blob_through_three_slices_is_one_lesion_of_known_volume(
        self, tmp_path, bundle
    ) -> None:
        """Volume, slices, label and patient centroid of a 20 x 20 x 3 slab; a second lesion."""
        config = config_for(tmp_path, bundle, series={"stable_s": 600})
        other = (60, 150)
        uid, _ = write_series(config.incoming, [other, None, BLOB[:2], BLOB[:2], BLOB[:2], None])

        assert run_once(config) == 0

        images = reports(config.reports)
        by_id = {r["id"]: r for r in images.values()}
        document = series_reports(config.reports)[series_id(uid, "x")]
        assert document["schema_version"] == "1.2"
        assert document["lesion_maps_missing"] == 0
        assert [len(lesion["slices"]) for lesion in document["lesions"]] == [1, 3]
        small, slab = document["lesions"]
        assert [s["instance_number"] for s in slab["slices"]] == [3, 4, 5]
        assert [s["index"] for s in slab["slices"]] == [2, 3, 4]
        sops = [document["slices"][i]["sop_instance_uid"] for i in (2, 3, 4)]
        assert [s["sop_instance_uid"] for s in slab["slices"]] == sops
        expected_ml = 3 * BLOB[2] ** 2 * PIXEL_MM**2 * SLICE_MM / 1000  # 1.2 mL
        assert slab["volume_ml"] == pytest.approx(expected_ml, rel=AREA_REL)
        voxel_ml = PIXEL_MM**2 * SLICE_MM / 1000
        assert slab["volume_ml"] == pytest.approx(slab["voxels"] * voxel_ml, abs=1e-4)
        masks = [
            read_png(config.reports / by_id[s["report_id"]]["lesion_mask"]) > 0
            for s in document["slices"]
        ]
        assert slab["voxels"] == sum(int(m[:, 120:].sum()) for m in masks)
        assert document["lesion_volume_ml"] == pytest.approx(
            small["volume_ml"] + slab["volume_ml"], abs=1e-3
        )
        assert document["restricted_volume_ml"] is None  # no ADC series: nothing is known
        centre = BLOB[0] + (BLOB[2] - 1) / 2, BLOB[1] + (BLOB[2] - 1) / 2
        assert slab["centroid_patient_mm"] == pytest.approx(
            [ORIGIN[0] + centre[0] * PIXEL_MM, ORIGIN[1] + centre[1] * PIXEL_MM, 3 * SLICE_MM],
            abs=INPUT_PX / 2 * PIXEL_MM,
        )
        labels = json.loads((bundle / "labels.json").read_text(encoding="utf-8"))
        assert slab["label"] in labels
        assert slab["label"] != "No acute infarct"
        assert all(s["lesion_mask"] for s in document["slices"])
        assert document["summary_image"] == f"overlays/{document['id']}_summary.png"
        with Image.open(config.reports / document["summary_image"]) as summary:
            assert summary.format == "PNG"
            assert summary.width >= 4 * 256  # four slices with a lesion, side by side

    def test_a_png_series_has_lesions_without_volume_or_patient_position(
        self, tmp_path, bundle
    ) -> None:
        """A folder of PNGs: the lesions in voxels, volume and centroid null."""
        config = config_for(tmp_path, bundle, series={"stable_s": 600})
        folder = config.incoming / "case"
        folder.mkdir()
        for index, blob in enumerate((False, True, True)):
            (folder / f"img{index}.png").write_bytes(png(slice_pixels(blob=blob)))

        assert run_once(config) == 0

        (document,) = series_reports(config.reports).values()
        (lesion,) = document["lesions"]
        assert [s["index"] for s in lesion["slices"]] == [1, 2]
        assert lesion["volume_ml"] is None
        assert lesion["centroid_patient_mm"] is None
        assert document["lesion_volume_ml"] is None
        assert lesion["voxels"] == pytest.approx(2 * BLOB[2] ** 2, rel=AREA_REL)

    def test_a_series_left_open_by_a_stop_gets_its_lesions_after_the_restart(
        self, tmp_path, bundle
    ) -> None:
        """Stopped before the series completes; the next run rebuilds it from the image reports
        and their mask files, with the same lesions."""
        config = config_for(tmp_path, bundle, series={"stable_s": 600})
        uid, files = write_series(config.incoming, [None, BLOB[:2], BLOB[:2]])
        with running(config):
            wait_for(lambda: len(list(config.reports.glob("*.json"))) == len(files), 60)
        assert not series_reports(config.reports)

        assert run_once(config) == 0  # nothing new: the series comes back from its reports

        document = series_reports(config.reports)[series_id(uid, "x")]
        (lesion,) = document["lesions"]
        assert [s["instance_number"] for s in lesion["slices"]] == [2, 3]
        assert lesion["volume_ml"] == pytest.approx(
            2 * BLOB[2] ** 2 * PIXEL_MM**2 * SLICE_MM / 1000, rel=AREA_REL
        )

    def test_a_series_with_a_mask_file_gone_says_so(self, tmp_path, bundle) -> None:
        """A slice whose mask file is missing: lesions and volume null, one map missing."""
        config = config_for(tmp_path, bundle, series={"stable_s": 600})
        uid, files = write_series(config.incoming, [BLOB[:2], BLOB[:2]])
        with running(config):
            wait_for(lambda: len(list(config.reports.glob("*.json"))) == len(files), 60)
        next((config.reports / "lesions").glob("*_mask.png")).unlink()

        assert run_once(config) == 0

        document = series_reports(config.reports)[series_id(uid, "x")]
        assert document["lesions"] is None
        assert document["lesion_volume_ml"] is None
        assert document["restricted_volume_ml"] is None
        assert document["lesion_maps_missing"] == 1

    def test_a_series_scanned_without_a_segmenter_has_no_lesion_fields(self, tmp_path) -> None:
        """A format 1 bundle: the series report as before, no lesion field."""
        plain = classifier_only(DEFAULT_BUNDLE, tmp_path / "plain")
        config = make_config(tmp_path, model={"path": str(plain)}, series={"stable_s": 600})
        config.incoming.mkdir(parents=True)
        write_series(config.incoming, [BLOB[:2], BLOB[:2]])

        assert run_once(config) == 0

        (document,) = series_reports(config.reports).values()
        for field in (
            "lesions",
            "lesion_volume_ml",
            "restricted_volume_ml",
            "summary_image",
            "lesion_maps_missing",
        ):
            assert field not in document
        assert all("lesion_mask" not in s for s in document["slices"])


class TestRules:
    """The numbers behind the fields, on masks made by hand."""

    def test_small_parts_are_dropped_on_the_input_square(self) -> None:
        """Parts below min_lesion_px go, larger ones stay whole."""
        above = np.zeros((16, 16), bool)
        above[1:3, 1:3] = True  # 4 pixels
        above[8:12, 8:12] = True  # 16 pixels
        kept = keep_large_parts(above, 5)
        assert kept.sum() == 16
        assert kept[8:12, 8:12].all()

    def test_lesions_of_a_slice_count_pixels_box_and_centre(self) -> None:
        """Two parts: raster order, inclusive boxes, mean pixel position, mm² from the spacing."""
        mask = np.zeros((10, 12), bool)
        mask[1:3, 2:6] = True
        mask[7, 9] = True
        first, second = source_lesions(mask, (0.5, 0.25))
        assert (first.area_px, first.bbox, first.centroid) == (8, (2, 1, 5, 2), (3.5, 1.5))
        assert first.area_mm2 == pytest.approx(8 * 0.125)
        assert (second.area_px, second.bbox, second.centroid) == (1, (9, 7, 9, 7), (9.0, 7.0))

    def test_volume_and_patient_centroid_of_a_slab(self) -> None:
        """Voxels x PixelSpacing x the median step of the positions; the centroid in mm."""
        orientation = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # a sagittal plane: rows along y, down z
        slices = [
            slice_record(
                i,
                z,
                image_position=(z, -10.0, 20.0),
                orientation=orientation,
                pixel_spacing=(2.0, 1.0),
                probabilities=(
                    ("No acute infarct", 0.9),
                    ("Left pons", 0.06),
                    ("Right pons", 0.04),
                ),
            )
            for i, z in enumerate((0.0, 3.0, 6.0))
        ]
        masks = [np.zeros((8, 8), bool) for _ in slices]
        masks[1][2:4, 4:6] = True  # 4 pixels on slices 1 and 2
        masks[2][2:4, 4:6] = True
        assert slice_spacing(slices) == 3.0
        (lesion,) = lesions_3d(slices, masks)
        assert lesion["voxels"] == 8
        assert lesion["volume_ml"] == pytest.approx(8 * 2.0 * 1.0 * 3.0 / 1000)
        assert [s["index"] for s in lesion["slices"]] == [1, 2]
        assert lesion["label"] == "Left pons"
        # column 4.5 x 1 mm along +y, row 2.5 x 2 mm along -z, x the mean slice origin (4.5)
        assert lesion["centroid_patient_mm"] == pytest.approx([4.5, -10.0 + 4.5, 20.0 - 5.0])

    def test_an_overlay_keeps_the_slice_s_grey_order_and_rings_the_lesion(self) -> None:
        """A ramp with a square lesion: a palette PNG, greys in the ramp's order, the ring drawn."""
        ramp = np.tile(np.arange(64, dtype=np.float32), (64, 1))
        mask = np.zeros((64, 64), bool)
        mask[20:30, 40:50] = True
        data = render_overlay(
            ramp,
            mask,
            label="Right parietal lobe",
            finding="acute_infarct",
            map_disagrees=False,
            model="test 1.0",
        )
        with Image.open(io.BytesIO(data)) as overlay:
            assert overlay.mode == "P"
            rgb = np.asarray(overlay.convert("RGB")).astype(int)
        factor = enlargement(mask.shape)
        picture = rgb[: 64 * factor : factor, : 64 * factor : factor]  # one pixel per source pixel
        row = picture[5, :, 0]  # far from the lesion: the ramp
        assert (np.diff(row) >= 0).all() and row[0] == 0 and row[-1] == 255
        assert (picture[5] == picture[5, :, :1]).all()  # grey: R = G = B
        assert tuple(picture[18, 45]) == OUTLINE  # two pixels above the lesion: the bright ring
        assert tuple(picture[19, 45]) == (0, 0, 0)  # one pixel above: the dark ring
        assert tuple(picture[25, 45]) != OUTLINE  # the lesion's own pixels untouched
        assert len(rgb) > 64 * factor  # the band below
