"""Restricted diffusion: a series' lesions checked against its study's ADC, and the finding.

The numbers on masks and ADC values made by hand (`daemon.series.adc`, `daemon.series.lesions`),
the values files written and read back (`daemon.lesionmaps.files`), the ADC's unit told from its
values (`daemon.scan.read.adc_values`). Whole studies through the real daemon are in
test_default_model_lesions.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import pydicom
import pytest
from daemon_support import REPO, load_script
from slice_records import slice_record

from daemon.lesionmaps.files import adc_name, encode_adc, read_adc
from daemon.scan.read import adc_values
from daemon.series.adc import RESTRICTED_ADC, adc_by_slice, checked_finding, lesion_adc
from daemon.series.lesions import lesions_3d, restricted_volume
from daemon.shared.decode import DecodeLimits, open_dicom

if TYPE_CHECKING:
    from daemon.scan.slices import SliceRecord


def _adc_image(index: int, z: float) -> SliceRecord:
    return slice_record(
        index,
        z,
        series_id="adc",
        scan_id=f"{0xADC0 + index:016x}-00000000",
        name=f"adc{index}",
        status="not_analysed",
        sop_uid=f"1.3.{index}",
        instance_number=None,
        segmented=False,
        image_type=("DERIVED", "PRIMARY", "DIFFUSION", "ADC"),
        reason_code="NOT_DWI",
    )


def test_adc_values_files_round_trip_in_1e6_mm2_s(tmp_path) -> None:
    values = np.array([[0.0, 480.4], [819.6, 70000.0]], np.float32)
    path = tmp_path / "a.png"
    path.write_bytes(encode_adc(values))
    assert read_adc(path).tolist() == [[0.0, 480.0], [820.0, 65535.0]]
    assert read_adc(tmp_path / "gone.png") is None


@pytest.mark.parametrize(("slope", "expected"), [(1.0, 1.0), (0.001, 1e3), (1e-6, 1e6)])
def test_the_adc_unit_is_told_from_the_values(slope: float, expected: float) -> None:
    """Scanners write 1e-6 mm²/s, some 1e-3 mm²/s or mm²/s through the rescale slope."""
    ds = pydicom.dcmread(REPO / "samples" / "05-right-basal-ganglia.dcm")
    ds.ImageType = ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]
    ds.RescaleSlope, ds.RescaleIntercept = slope, 0
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    opened = open_dicom(buffer.getvalue())
    values = adc_values(opened, DecodeLimits())
    raw = ds.pixel_array.astype(np.float32)
    assert values is not None
    assert values == pytest.approx(raw * slope * expected, rel=1e-4)


def test_only_an_adc_map_gives_adc_values() -> None:
    data = (REPO / "samples" / "05-right-basal-ganglia.dcm").read_bytes()
    assert adc_values(open_dicom(data), DecodeLimits()) is None  # a b1000 image


class TestLesions:
    """Two lesions on three slices: one restricted (an infarct), one not (a look-alike)."""

    @pytest.fixture
    def series(self, tmp_path):
        slices = [
            slice_record(i, z, pixel_spacing=(1.0, 1.0)) for i, z in enumerate((0.0, 5.0, 10.0))
        ]
        masks = [np.zeros((16, 16), bool) for _ in slices]
        for mask in masks[:2]:
            mask[2:6, 2:6] = True  # lesion 1: 32 voxels on slices 0 and 1
        masks[2][10:14, 10:14] = True  # lesion 2: 16 voxels on slice 2
        adc = np.full((16, 16), 800.0, np.float32)
        adc[2:5, 2:6] = 450.0  # 3 of the 4 rows of lesion 1: 75 % restricted
        images = [_adc_image(i, z) for i, z in enumerate((0.0, 5.0, 10.0))]
        (tmp_path / "lesions").mkdir()
        for image in images:
            (tmp_path / adc_name(image.scan_id)).write_bytes(encode_adc(adc))
        return tmp_path, slices, masks, images

    def test_each_lesion_gets_its_adc(self, series) -> None:
        reports, slices, masks, images = series
        adc = adc_by_slice(reports, slices, images)
        first, second = lesions_3d(slices, masks, adc)
        assert first["adc"] == {
            "median": 450.0,
            "restricted_ml": pytest.approx(24 * 1.0 * 1.0 * 5.0 / 1000),
            "restricted_share": 0.75,
            "reference_share": 0.0,
            "restricted": True,
        }
        assert second["adc"]["restricted"] is False
        assert second["adc"]["median"] == 800.0

    def test_slices_without_their_adc_image_count_as_unknown(self, series) -> None:
        reports, slices, masks, images = series
        adc = adc_by_slice(reports, slices, images[:1])  # only the ADC at position 0
        assert [a is not None for a in adc] == [True, False, False]
        first, second = lesions_3d(slices, masks, adc)
        assert first["adc"]["restricted_share"] == 0.75  # slice 0 alone: 12 of 16 voxels
        assert second["adc"] is None
        (reports / adc_name(images[1].scan_id)).unlink()  # a values file gone: unknown too
        assert adc_by_slice(reports, slices, images)[1] is None

    def test_an_adc_of_another_matrix_is_not_used(self, series) -> None:
        _, slices, masks, _ = series
        adc = [np.zeros((8, 8), np.float32)] * 3
        assert all(lesion["adc"] is None for lesion in lesions_3d(slices, masks, adc))

    def test_without_an_adc_series_lesions_have_no_adc_field(self, series) -> None:
        _, slices, masks, _ = series
        assert all("adc" not in lesion for lesion in lesions_3d(slices, masks))


def _fields(restricted: list[bool], adc_slices: int = 3) -> dict:
    lesions = [
        {"slices": [{"index": i}], "adc": {"restricted": flag}} for i, flag in enumerate(restricted)
    ]
    return {"lesions": lesions, "adc_slices": adc_slices}


@pytest.mark.parametrize(
    ("finding", "slice_findings", "fields", "expected"),
    [
        # No ADC read: the classifier's finding stands.
        ("acute_infarct", ["acute_infarct"] * 3, None, "acute_infarct"),
        ("acute_infarct", ["acute_infarct"] * 3, _fields([False], adc_slices=0), "acute_infarct"),
        # A restricted lesion confirms, and settles an indeterminate series.
        ("acute_infarct", ["acute_infarct"] * 3, _fields([True]), "acute_infarct"),
        ("indeterminate", ["indeterminate", "no_acute_infarct"], _fields([True]), "acute_infarct"),
        # ... even when the classifier called every slice of it normal (it missed the lesion).
        ("no_acute_infarct", ["no_acute_infarct"] * 2, _fields([True, False]), "acute_infarct"),
        # Bright without restriction: not confirmed when every slice had its ADC.
        ("acute_infarct", ["acute_infarct"] * 3, _fields([False, False]), "indeterminate"),
        ("acute_infarct", ["acute_infarct"] * 3, {"lesions": [], "adc_slices": 3}, "indeterminate"),
        ("acute_infarct", ["acute_infarct"] * 3, _fields([False], adc_slices=2), "acute_infarct"),
        # Nothing to confirm: negative and indeterminate series stay as they are.
        ("no_acute_infarct", ["no_acute_infarct"] * 3, _fields([False]), "no_acute_infarct"),
        ("indeterminate", ["indeterminate"] * 3, _fields([False]), "indeterminate"),
    ],
)
def test_the_finding_checked_against_the_adc(finding, slice_findings, fields, expected) -> None:
    assert checked_finding(finding, slice_findings, fields) == expected


def test_restricted_means_more_below_620_than_the_tissue_around_at_the_same_noise() -> None:
    """Noise puts normal tissue below 620 too: a look-alike is measured against its slices."""
    rng = np.random.default_rng(5)
    noisy_tissue = rng.normal(800.0, 200.0, 5000).astype(np.float32)  # about 22 % below 620
    look_alike = rng.normal(820.0, 200.0, 400).astype(np.float32)
    infarct_wide = np.concatenate([rng.normal(480.0, 30.0, 120), rng.normal(800.0, 30.0, 280)])
    clean_tissue = rng.normal(800.0, 30.0, 5000).astype(np.float32)
    said = lesion_adc(look_alike, noisy_tissue, None)
    assert said is not None and said["restricted_share"] > 0.15 and not said["restricted"]
    said = lesion_adc(infarct_wide.astype(np.float32), clean_tissue, 0.001)
    assert said is not None and said["restricted"] and said["reference_share"] == 0.0
    assert said["restricted_share"] == pytest.approx(0.3)
    assert said["restricted_ml"] == pytest.approx(0.12)
    assert lesion_adc(np.array([], np.float32), clean_tissue, 0.001) is None
    # Without any tissue around (a lesion filling its slices' tissue): the share alone decides.
    assert lesion_adc(np.full(10, 600.0, np.float32), np.array([], np.float32), None)["restricted"]
    # The threshold itself: just below it restricts, at it does not.
    below = np.full(10, RESTRICTED_ADC - 1, np.float32)
    assert lesion_adc(below, clean_tissue, None)["restricted_share"] == 1.0
    at = np.full(10, RESTRICTED_ADC, np.float32)
    assert lesion_adc(at, clean_tissue, None)["restricted"] is False


def test_adc_outside_maps_counts_restricted_tissue_not_the_head_s_edge() -> None:
    """`scripts/adc_outside_maps.py`: the share of tissue below 620 and its largest 3-D cluster;
    the partial-volume rim at the head's edge and CSF are not tissue."""
    restricted = load_script("adc_outside_maps").restricted
    head = np.zeros((3, 32, 32), np.float32)
    head[:, 4:28, 4:28] = 800.0
    head[:, 4, 4:28] = 300.0  # the edge: partial volume with the background
    head[:, 14:18, 14:18] = 3000.0  # CSF
    clean_share, clean_largest = restricted(list(head))
    assert (clean_share, clean_largest) == (0.0, 0)
    head[1:3, 8:11, 8:11] = 450.0  # an infarct: 3 x 3 pixels on two slices
    head[0, 22, 22] = 500.0  # a noise voxel
    share, largest = restricted(list(head))
    assert largest == 18
    tissue = 3 * (20 * 20 - 16)  # inside the 2-pixel edge, without the CSF
    assert share == pytest.approx(19 / tissue)


def test_the_restricted_volume_sums_the_restricted_lesions_only() -> None:
    """Look-alikes leave it; an unchecked lesion or an unknown volume makes it unknown."""

    def lesion(volume: float | None, restricted: bool | None) -> dict:
        check = None if restricted is None else {"restricted": restricted}
        return {"volume_ml": volume, "adc": check}

    assert restricted_volume([]) == 0.0
    assert restricted_volume([lesion(1.25, True), lesion(0.5, False), lesion(2.0, True)]) == 3.25
    assert restricted_volume([lesion(0.5, False)]) == 0.0
    assert restricted_volume([lesion(1.0, True), lesion(0.5, None)]) is None
    assert restricted_volume([lesion(None, True)]) is None
    assert restricted_volume([lesion(None, False)]) == 0.0


def test_series_maps_completes_a_restricted_lesion_through_restricted_tissue_only() -> None:
    """`scripts/series_maps.py --complete N`: N steps out, in-plane, through ADC below 620 only;
    not through normal tissue, not onto another slice, not where the ADC is unknown."""
    completed = load_script("series_maps").completed
    values = np.full((3, 24, 24), 800.0, np.float32)  # normal tissue
    lesion = np.zeros((3, 24, 24), np.bool_)
    lesion[1, 10:14, 10:14] = True  # the map drew the infarct's middle only
    values[1, 8:16, 8:16] = 500.0  # the infarct
    values[1, 3:20, 12] = 500.0  # a restricted streak through it, 5 to 7 pixels beyond the map
    values[1, 20:23, 20:23] = 450.0  # restricted noise apart from the lesion
    values[0, 10:14, 10:14] = 500.0  # restricted on the slice below
    values[2] = np.nan  # no ADC on the slice above
    expected = lesion.copy()
    expected[1, 8:16, 8:16] = True  # two steps out
    expected[1, 7, 12] = expected[1, 16, 12] = True  # the third, along the streak only
    assert (completed(lesion, values, 3) == expected).all()
    assert (completed(lesion, values, 0) == lesion).all()
