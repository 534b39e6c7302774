"""scripts/independent_phantom.py (package scripts/phantom): the phantom written apart from the
project's generator.

Tiny runs only: two slice cases and one short study, checked for what the measurements rely on
(files decode, the layout is the dataset layout, truth and pixels agree, vendor headers).
"""

from __future__ import annotations

import csv
import importlib
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from daemon_support import load_script
from PIL import Image

from daemon.shared.dataset import DatasetLayout, scan
from daemon.shared.dicom_scope import b_value_of
from daemon.shared.labels import load_label_map

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
MODULES = (
    "acquisition",
    "anatomy",
    "contrasts",
    "dicom",
    "lesions",
    "placement",
    "slices",
    "studies",
    "subject",
)


@pytest.fixture(scope="module")
def phantom():
    """The package scripts/phantom with the modules used here (imported here: they need scipy)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))  # as when the command line runs from scripts/
    for name in MODULES:
        importlib.import_module(f"phantom.{name}")
    return sys.modules["phantom"]


@pytest.fixture(scope="module")
def slice_set(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "slices"
    rows = phantom.slices.make_slices(out, n_cases=2, seed=5)
    return out, rows


@pytest.fixture(scope="module")
def study(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "studies"
    rng = np.random.default_rng(11)
    rows = phantom.studies.make_study(
        out, 1, "Left thalamus", rng, n_slices=3, with_ct=True, masks=out.parent / "masks"
    )
    return out / "study001", rows


def read(path: Path) -> np.ndarray:
    if path.suffix == ".dcm":
        return pydicom.dcmread(path).pixel_array
    with Image.open(path) as img:
        return np.asarray(img)


def test_every_placed_class_is_a_canonical_class(phantom):
    classes = set(load_label_map().classes)
    assert set(phantom.placement.PLACEMENT) <= classes
    assert phantom.placement.NORMAL in classes


def test_slice_set_is_a_dataset_the_daemon_reads(slice_set):
    out, rows = slice_set
    dataset = scan(out, DatasetLayout(), load_label_map())
    assert len(dataset.samples) == len(rows) == 4
    assert {s.case_id for s in dataset.samples} == {r["case_id"] for r in rows}
    assert dataset.case_ids_from == "manifest"
    labels = {s.label for s in dataset.samples}
    assert "No acute infarct" in labels
    assert len(labels) == 2
    for sample in dataset.samples:
        pixels = read(dataset.path(sample))
        assert pixels.ndim == 2
        assert min(pixels.shape) >= 96
        assert pixels.std() > 0


def test_infarct_slices_cut_the_lesion(slice_set):
    _, rows = slice_set
    infarct = [r for r in rows if r["finding"] == "acute_infarct"]
    normal = [r for r in rows if r["finding"] == "no_acute_infarct"]
    assert len(infarct) == len(normal) == 2
    assert all(float(r["lesion_volume_ml"]) > 0.2 for r in infarct)
    assert all(float(r["lesion_area_mm2"]) > 0 for r in infarct)
    assert all(float(r["lesion_volume_ml"]) == 0 for r in normal)


def test_study_truth_and_series(study):
    folder, rows = study
    kinds = {r["kind"]: r for r in rows}
    assert {"dwi", "adc", "ct"} <= set(kinds)
    assert any(k.startswith("t1") for k in kinds)
    assert any(k.startswith("flair") for k in kinds)
    with (folder / "truth.csv").open(encoding="utf-8") as fh:
        written = list(csv.DictReader(fh))
    assert {r["series_uid"] for r in written} == {r["series_uid"] for r in rows}
    dwi = kinds["dwi"]
    assert dwi["finding"] == "acute_infarct"
    assert dwi["label"] == "Left thalamus"
    assert float(dwi["lesion_volume_ml"]) > 0
    assert dwi["lesion_slices"]
    series = {}
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    assert set(series) == {r["series_uid"] for r in rows}
    for row in rows:
        assert len(series[row["series_uid"]]) == int(row["images"])
    assert all(ds.Modality == "CT" for ds in series[kinds["ct"]["series_uid"]])
    adc = series[kinds["adc"]["series_uid"]]
    assert all("ADC" in ds.ImageType for ds in adc)


def test_study_masks_mark_the_lesion_slices_and_series_maps_finds_them(study):
    """``--masks``: one mask per DWI slice, outside the study folder, the DWI matrix, non-empty on
    ``lesion_slices`` only, as large as ``lesion_volume_ml_on_slices``; `scripts/series_maps.py`
    finds each b1000 image's mask by its slice position."""
    folder, rows = study
    dwi = next(r for r in rows if r["kind"] == "dwi")
    masks = folder.parent.parent / "masks"
    files = sorted((masks / folder.name).iterdir())
    assert [f.name for f in files] == ["s001.png", "s002.png", "s003.png"]
    shapes = {}  # b0 and b1000 images: the same positions, the same matrix
    for path in (folder / "DWI").iterdir():
        ds = pydicom.dcmread(path)
        shapes[float(ds.ImagePositionPatient[2])] = ds.pixel_array.shape
    marked = [k for k, f in enumerate(files) if read(f).any()]
    assert marked == [int(k) for k in dwi["lesion_slices"].split()]
    assert {read(f).shape for f in files} == set(shapes.values())
    pixel, slab = dwi["geometry"].split()[1:3]
    voxel_ml = float(pixel.removesuffix("mm")) ** 2 * sum(map(float, slab[:-2].split("+"))) / 1000
    voxels = sum(int((read(f) > 0).sum()) for f in files)
    assert voxels * voxel_ml == pytest.approx(float(dwi["lesion_volume_ml_on_slices"]), abs=0.02)

    (truth,) = load_script("series_maps").phantom_truth(folder, masks)  # the study's truth.csv
    assert truth.series_uid == dwi["series_uid"]
    for k, z in enumerate(sorted(shapes)):
        assert truth.mask_at({"slice_position": z + 0.3}) == files[k]
    with pytest.raises(ValueError, match="no phantom slice"):
        truth.mask_at({"slice_position": max(shapes) + 40.0})


def test_dwi_lesion_is_bright_on_b1000_and_dark_on_adc(phantom):
    from scipy import ndimage  # noqa: PLC0415 - the [train] extra, as the phantom needs

    anat = phantom.anatomy.load_anatomy()
    rng = np.random.default_rng(3)
    subject = phantom.subject.make_subject(rng)
    subject.atrophy_mm = 0.0
    subject.lesions, centre = phantom.lesions.place_lesions(anat, "Right basal ganglia", rng)
    geom = phantom.acquisition.make_geometry(rng, matrix=192, fov=230.0)
    proto = phantom.acquisition.DiffusionProtocol.random(rng)
    proto.snr = 30.0
    z = subject.patient_z(centre)
    img = phantom.contrasts.render_diffusion(anat, subject, geom, proto, z, rng=rng)
    lesion = img["lesion"] >= 0.7
    around = (
        ndimage.binary_dilation(lesion, iterations=6)
        & ~ndimage.binary_dilation(lesion, iterations=2)
        & (img["brain"] > 0.8)
    )
    assert lesion.sum() > 5
    assert img["b1000"][lesion].mean() > 1.3 * img["b1000"][around].mean()
    assert np.median(img["adc"][lesion]) < 650 < np.median(img["adc"][around])


def test_vendor_b_value_conventions(study):
    folder, rows = study
    dwi_uid = next(r["series_uid"] for r in rows if r["kind"] == "dwi")
    b_values = set()
    for path in (folder / "DWI").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.SeriesInstanceUID == dwi_uid
        assert ds.PatientName.family_name == "PHANTOM"
        b, tag = b_value_of(ds)
        b_values.add(b)
        vendor = next(r["vendor"] for r in rows if r["kind"] == "dwi")
        expected = {
            "standard": "DiffusionBValue (0018,9087)",
            "siemens": "Siemens (0019,100C)",
            "ge": "GE (0043,1039)",
            "philips": "Philips (2001,1003)",
        }[vendor]
        assert tag == expected
        if vendor != "standard":
            assert "DiffusionBValue" not in ds
    assert b_values == {0.0, 1000.0}


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips", "standard"])
def test_each_vendor_header_reads_back(phantom, tmp_path, vendor):
    rng = np.random.default_rng(1)
    header = phantom.dicom.diffusion_header(vendor, 1000.0, "1.2.3.4", {"te": 80, "tr": 5000}, rng)
    header.implicit = vendor == "ge"
    ids = phantom.dicom.StudyIds(1, "1.2.3.5", "1.2.3.6", "F", 70)
    geom = phantom.acquisition.make_geometry(rng, matrix=128)
    pixels = np.arange(geom.rows * geom.cols, dtype=np.uint16).reshape(geom.rows, geom.cols)
    ds = phantom.dicom.dicom_dataset(ids, header, pixels % 1000, geom, 10.0, instance=1)
    path = tmp_path / f"{vendor}.dcm"
    phantom.dicom.save_dicom(ds, path)
    back = pydicom.dcmread(path)
    assert b_value_of(back)[0] == 1000.0
    assert back.Modality == "MR"
    assert list(back.ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
    if vendor == "siemens":
        assert back.SequenceName == "*ep_b1000t"
