"""synth acquisition profiles: every documented range is really drawn, the shifted profile lies
outside the training one, look-alikes land in the negative class, the manifest records it all."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from daemon.shared.decode import decode
from daemon.shared.labels import load_label_map
from trainer.synth import anatomy as anatomy_module
from trainer.synth import display, generate, render
from trainer.synth.cases import Job, case_counts, design_case, plan_cases
from trainer.synth.geometry import random_geometry
from trainer.synth.manifest import ManifestRow, read_manifest
from trainer.synth.options import SynthOptions
from trainer.synth.profiles import SHIFTED, TRAIN, Profile, Spans, within

if TYPE_CHECKING:
    from pathlib import Path

    from trainer.synth.anatomy import Anatomy

DRAWS = 2000
NEW_COLUMNS = (
    "profile",
    "display_matrix",
    "display_pixel_mm",
    "fov_mm",
    "b_value",
    "b_value_tags",
    "window",
    "gamma",
    "rotation_deg",
    "tilt_deg",
    "roll_deg",
    "head_scale",
    "bias_strength",
    "ventricle_mm",
    "sulcal_atrophy",
    "findings",
)
HARD_NEGATIVES = ("susceptibility", "shine_through", "choroid_plexus", "flow")


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One anatomy cache for the whole session (shared with the other synth tests)."""
    return tmp_path_factory.getbasetemp() / "synth-anatomy-cache"


@pytest.fixture(scope="session")
def anatomy(synth_cache: Path) -> Anatomy:
    loaded, _ = anatomy_module.load_anatomy(synth_cache)
    return loaded


def _scans(profile: Profile, seed: int = 0) -> list[render.Scan]:
    rng = np.random.default_rng(seed)
    return [render.random_scan(rng, None, profile) for _ in range(DRAWS)]


def _spans(values: list[float], spans: Spans, *, edge: float) -> None:
    """Every value inside ``spans``, and the draws reach within ``edge`` of each outer end."""
    assert all(within(v, spans, tolerance=1e-6) for v in values), (min(values), max(values))
    assert min(values) <= spans[0][0] + edge, (min(values), spans)
    assert max(values) >= spans[-1][1] - edge, (max(values), spans)


def _outside(value: float, spans: Spans) -> bool:
    return all(not (low < value < high) for low, high in spans)


class TestTrainingRanges:
    def test_acquisition_spans_the_documented_ranges(self) -> None:
        """Matrix 96-256 (shown up to 512), pixel 0.8-2.4 mm with a head-sized FOV, slab 3-7 mm,
        SNR 5-60 log-uniform, b 800-1500, bias mild to strong; ghosts and motion in a few %."""
        scans = _scans(TRAIN)
        _spans([s.matrix for s in scans], TRAIN.matrix, edge=6)
        _spans([s.pixel_mm for s in scans], TRAIN.pixel_mm, edge=0.1)
        assert all(200 - 1e-6 <= s.fov_mm <= 260 + 1e-6 for s in scans)
        _spans([s.thickness_mm for s in scans], TRAIN.slab_mm, edge=0.01)
        snr = [s.snr for s in scans]
        _spans(snr, TRAIN.snr, edge=1.0)
        # log-uniform: the median sits near the geometric mean (17.3), not the middle (32.5)
        assert 14 < float(np.median(snr)) < 21
        _spans([s.b_value for s in scans], TRAIN.b_value, edge=1)
        shown = [s.shown_matrix for s in scans]
        assert max(shown) == TRAIN.display_max
        assert 0.35 < np.mean([s.shown_matrix > s.matrix for s in scans]) < 0.65
        assert all(s.shown_matrix >= s.matrix for s in scans)
        _spans([s.bias_strength for s in scans], TRAIN.bias_strength, edge=0.05)
        assert 0.02 < np.mean([s.ghost > 0 for s in scans]) < 0.07
        assert 0.01 < np.mean([s.motion_px > 0 for s in scans]) < 0.06
        atrophic = [s for s in scans if s.ventricle_enlargement_mm > 0]
        assert 0.4 < len(atrophic) / len(scans) < 0.6
        _spans([s.ventricle_enlargement_mm for s in atrophic], TRAIN.ventricle_mm, edge=0.2)
        _spans([s.sulcal for s in atrophic], TRAIN.sulcal, edge=0.05)

    def test_heads_rotate_tilt_and_vary_in_size(self) -> None:
        """In-plane rotation up to +-20 deg (most heads within 7), through-plane tilt up to 8
        (nodding) and 5 (roll), head size 0.88-1.12 x MNI152."""
        rng = np.random.default_rng(1)
        heads = [random_geometry(rng, TRAIN) for _ in range(DRAWS)]
        yaw = np.array([h.yaw_deg for h in heads])
        assert np.abs(yaw).max() <= 20
        assert yaw.min() < -18
        assert yaw.max() > 18
        assert 0.65 < np.mean(np.abs(yaw) <= 7) < 0.85
        assert 7 < np.abs([h.pitch_deg for h in heads]).max() <= 8
        assert 4.5 < np.abs([h.roll_deg for h in heads]).max() <= 5
        _spans([h.size for h in heads], TRAIN.head_scale, edge=0.01)
        # a bigger head maps fewer MNI mm onto each scanner mm
        big = max(heads, key=lambda h: h.size)
        assert big.scale.mean() < 0.95

    def test_display_uses_every_window_and_gamma(self) -> None:
        """Auto, fixed, percentile and gain windows all occur; gamma 0.8-1.25 on about half."""
        rng = np.random.default_rng(2)
        shows = [display.random_display(rng, TRAIN, matrix=128, nearest=False) for _ in range(800)]
        assert {d.method for d in shows} == set(TRAIN.windows)
        gammas = [d.gamma for d in shows if d.gamma != 1.0]
        assert 0.4 < len(gammas) / len(shows) < 0.6
        _spans(gammas, TRAIN.gamma, edge=0.02)


class TestShiftedProfile:
    def test_profile_ranges_do_not_overlap_training(self) -> None:
        """Each shifted range lies outside the training one (b-value and FOV excepted, as
        documented: the daemon refuses far b-values; the FOV follows matrix x pixel)."""
        for name in (
            "matrix",
            "pixel_mm",
            "slab_mm",
            "snr",
            "blur_px",
            "bias_strength",
            "ghost_amplitude",
            "motion_px",
            "yaw_deg",
            "pitch_deg",
            "roll_deg",
            "head_scale",
            "ventricle_mm",
            "sulcal",
            "gamma",
            "viewport",
            "dicom_level",
        ):
            train, shifted = getattr(TRAIN, name), getattr(SHIFTED, name)
            for low, high in shifted:
                for t_low, t_high in train:
                    assert high <= t_low or low >= t_high, name
        assert not set(TRAIN.windows) & set(SHIFTED.windows)
        assert not set(TRAIN.screenshot_canvas) & set(SHIFTED.screenshot_canvas)
        assert SHIFTED.jpeg_quality[1] < TRAIN.jpeg_quality[0]
        assert SHIFTED.b_value == TRAIN.b_value

    def test_shifted_draws_fall_outside_training(self) -> None:
        """Drawn shifted scans and heads have matrix, pixel, slab, SNR, rotation, tilt, size and
        bias outside the training ranges, reaching both sides where two intervals are given."""
        scans = _scans(SHIFTED, seed=3)
        for scan in scans:
            assert _outside(scan.matrix, TRAIN.matrix)
            assert _outside(scan.pixel_mm, TRAIN.pixel_mm)
            assert _outside(scan.thickness_mm, TRAIN.slab_mm)
            assert _outside(scan.snr, TRAIN.snr)
            assert scan.bias_strength >= TRAIN.bias_strength[0][1]
        snr = [s.snr for s in scans]
        assert min(snr) < TRAIN.snr[0][0]
        assert max(snr) > TRAIN.snr[0][1]
        matrices = [s.matrix for s in scans]
        assert min(matrices) < TRAIN.matrix[0][0]
        assert max(matrices) > TRAIN.matrix[0][1]
        rng = np.random.default_rng(4)
        for head in (random_geometry(rng, SHIFTED) for _ in range(500)):
            assert 20 <= abs(head.yaw_deg) <= 30
            assert abs(head.pitch_deg) >= 8
            assert _outside(head.size, TRAIN.head_scale)


class TestWindows:
    def test_methods_place_brain_and_lesion_as_documented(self) -> None:
        """Auto keeps brain mid-grey and a lesion below white; gain saturates the lesion; dark
        keeps the lesion dark grey; minmax maps the brightest pixel to white."""
        image = np.full((64, 64), 0.5, dtype=np.float32)
        image[20:30, 20:30] = 1.0  # a lesion twice as bright as brain
        rendered = render.RenderedSlice(
            b1000=image,
            adc=np.zeros_like(image),
            lesions=(),
            brain=np.ones(image.shape, dtype=bool),
            z_scanner=0.0,
            z_mni=0.0,
            pixel_mm=1.0,
            thickness_mm=5.0,
        )

        def show(method: str, factor: float) -> np.ndarray:
            spec = display.Display(method, factor, 1.0, 99.5, 1.0, 64, nearest=False)
            return display.export8(rendered, spec)[0]

        auto = show("auto", 2.0)
        assert 100 < auto[0, 0] < 150
        assert auto[25, 25] == 255  # exactly at white
        gain = show("gain", 1.4)
        assert gain[25, 25] == 255
        assert gain[0, 0] < 255
        assert show("dark", 4.0)[25, 25] < 140
        assert show("minmax", 1.0)[25, 25] == 255
        assert show("fixed", 4.0)[25, 25] < 70  # a fixed window ignores the image's level


class TestNegativeShare:
    def test_negatives_match_all_infarct_classes_by_default(self, tmp_path: Path) -> None:
        """Default share 0.5: 'No acute infarct' gets as many cases as all infarct classes
        together; 'balanced' gives it cases_per_class; infarct classes keep their count."""
        classes = tuple(load_label_map().classes)
        options = SynthOptions(out_dir=tmp_path, cases_per_class=3)
        counts = case_counts(options, classes)
        assert counts["No acute infarct"] == 3 * (len(classes) - 1)
        assert {c for label, c in counts.items() if label != "No acute infarct"} == {3}
        balanced = SynthOptions(out_dir=tmp_path, cases_per_class=3, negative_share=None)
        assert set(case_counts(balanced, classes).values()) == {3}
        quarter = SynthOptions(out_dir=tmp_path, cases_per_class=3, negative_share=0.25)
        assert case_counts(quarter, classes)["No acute infarct"] == len(classes) - 1
        assert case_counts(options, ("No acute infarct",)) == {"No acute infarct": 3}


@pytest.fixture(scope="session")
def negatives(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    """Twenty 'No acute infarct' cases of two slices, DICOM, drawn matrices."""
    out = tmp_path_factory.mktemp("negatives") / "data"
    generate(
        out,
        cases_per_class=20,
        slices_per_case=2,
        classes="No acute infarct",
        formats="dicom=0.5,png=0.25,jpeg=0.25",
        seed=7,
        workers=2,
        cache_dir=synth_cache,
        adc=False,
    )
    return out


class TestDataset:
    def test_manifest_records_the_acquisition_of_every_image(self, negatives: Path) -> None:
        """The new columns exist and hold values inside the training ranges; DICOM files carry
        the drawn b-value and spacing in the tags the manifest names."""
        rows = read_manifest(negatives / "manifest.csv")
        assert list(rows[0]) == ManifestRow.columns()
        for column in NEW_COLUMNS:
            assert column in rows[0]
        for row in rows:
            assert row["profile"] == "train"
            assert 96 <= int(row["matrix"]) <= 256
            assert int(row["matrix"]) <= int(row["display_matrix"]) <= 512
            assert 5 <= float(row["snr"]) <= 60
            assert 800 <= int(row["b_value"]) <= 1500
            assert abs(float(row["rotation_deg"])) <= 20
            if row["format"] != "dicom":
                assert row["window"] in TRAIN.windows
                continue
            ds = pydicom.dcmread(negatives / row["file"])
            assert ds.Rows == int(row["display_matrix"])
            assert float(ds.PixelSpacing[0]) == pytest.approx(float(row["display_pixel_mm"]), 1e-3)
            tags = row["b_value_tags"].split(";")
            if "standard" in tags:
                assert float(ds.DiffusionBValue) == float(row["b_value"])
            else:
                assert "DiffusionBValue" not in ds
            if "siemens" in tags:
                assert int(ds[0x0019, 0x100C].value) == int(row["b_value"])
            if "philips" in tags:
                assert float(ds[0x2001, 0x1003].value) == float(row["b_value"])
            if "ge" in tags or "ge1e9" in tags:
                assert int(ds[0x0043, 0x1039].value[0]) % 1_000_000_000 == int(row["b_value"])
            pixels = decode((negatives / row["file"]).read_bytes(), row["file"]).pixels
            assert pixels.shape == (int(row["display_matrix"]),) * 2

    def test_hard_negatives_are_in_the_negative_class(self, negatives: Path) -> None:
        """'No acute infarct' slices show susceptibility, T2 shine-through, choroid plexus and
        flow artefacts (and age: WMH, chronic infarcts), never an acute lesion."""
        rows = read_manifest(negatives / "manifest.csv")
        found = {f for row in rows for f in row["findings"].split(";") if f}
        assert set(HARD_NEGATIVES) <= found, found
        assert {"wmh", "chronic_infarct"} & found
        assert all(int(row["lesion_count"]) == 0 for row in rows)
        levels = [float(row["slice_mm"]) for row in rows]
        assert min(levels) < -25  # skull base: cerebellum, temporal lobes
        assert max(levels) > 50  # towards the vertex

    def test_shifted_profile_is_recorded_and_draws_other_cases(
        self, tmp_path: Path, synth_cache: Path
    ) -> None:
        """--profile shifted writes profile 'shifted' in the manifest and synth.json (with its
        ranges), values outside the training ranges, and other pixels than train's same seed."""
        common = {
            "cases_per_class": 2,
            "slices_per_case": 1,
            "classes": "Left insula",
            "seed": 4,
            "workers": 1,
            "cache_dir": synth_cache,
            "adc": False,
        }
        generate(tmp_path / "s", profile="shifted", **common)  # type: ignore[arg-type]
        generate(tmp_path / "t", **common)  # type: ignore[arg-type]
        rows = read_manifest(tmp_path / "s" / "manifest.csv")
        for row in rows:
            assert row["profile"] == "shifted"
            assert _outside(float(row["snr"]), TRAIN.snr)
            assert _outside(int(row["matrix"]), TRAIN.matrix)
            assert abs(float(row["rotation_deg"])) >= 20
            assert row["window"] in SHIFTED.windows
        data = json.loads((tmp_path / "s" / "synth.json").read_text(encoding="utf-8"))
        assert data["options"]["profile"] == "shifted"
        assert data["profile"]["name"] == "shifted"
        assert data["profile"]["snr"] == [list(span) for span in SHIFTED.snr]
        first = (tmp_path / "s" / rows[0]["file"]).read_bytes()
        other = read_manifest(tmp_path / "t" / "manifest.csv")[0]
        assert first != (tmp_path / "t" / other["file"]).read_bytes()


class TestLookAlikes:
    def test_look_alikes_have_their_documented_contrast(
        self, anatomy: Anatomy, tmp_path: Path
    ) -> None:
        """Against the tissue around it: T2 shine-through is bright on b1000 with an ADC that is
        not low; a chronic infarct is dark with a high ADC; WMH have a high ADC; the choroid
        plexus is brighter than the CSF around it."""
        options = SynthOptions(out_dir=tmp_path, cases_per_class=30, slices_per_case=(1, 1), seed=5)
        plans = [p for p in plan_cases(options, load_label_map()) if p.label == "No acute infarct"]
        seen: set[str] = set()
        for plan in plans[:30]:
            job = Job(plan=plan, seed=5, out_dir=tmp_path, matrix=128, adc=True, want_tile=False)
            design = design_case(anatomy, job)
            rendered = design.render(anatomy, job, 1)
            for blob, mask in zip(design.mimics, rendered.mimic_masks, strict=True):
                ring = ndimage.binary_dilation(mask, iterations=4) & ~ndimage.binary_dilation(
                    mask, iterations=2
                )
                if blob.kind == "choroid_plexus":  # a few pixels inside the ventricle
                    fluid = ring & (rendered.adc > 2.0)
                    if mask.sum() < 3 or fluid.sum() < 4:
                        continue
                    assert rendered.b1000[mask].mean() > 1.5 * rendered.b1000[fluid].mean()
                    seen.add(blob.kind)
                    continue
                core = ndimage.binary_erosion(mask)
                tissue = ring & (rendered.adc > 0.3) & (rendered.adc < 1.5)
                if core.sum() < 4 or tissue.sum() < 4:
                    continue
                b_ratio = rendered.b1000[core].mean() / rendered.b1000[tissue].mean()
                adc_ratio = rendered.adc[core].mean() / rendered.adc[tissue].mean()
                if blob.kind == "shine_through":
                    assert b_ratio > 1.2
                    assert adc_ratio > 0.85  # an acute infarct's is at most 0.8
                elif blob.kind == "chronic_infarct":
                    assert b_ratio < 0.8
                    assert adc_ratio > 1.5
                elif blob.kind == "wmh":
                    assert adc_ratio > 1.0  # small patches: partial volume with the ring
                seen.add(blob.kind)
        assert {"shine_through", "chronic_infarct", "wmh", "choroid_plexus"} <= seen, seen
