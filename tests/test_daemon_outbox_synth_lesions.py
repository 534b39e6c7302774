"""SEG and SR of a DWI series as `infarctwatch synth --series` writes it, checked by validators.

The series is the synthetic generator's (real MR files with its geometry, UIDs and per-slice
lesion mask PNGs, 8-bit 0/255 as the daemon writes its own); the series report is built from its
truth file (`series.json`). The SEG takes the mask PNGs as they are; both objects are written,
read back with highdicom and, where David Clunie's ``dciodvfy`` (Debian ``dicom3tools``) is
installed, checked against the IODs of the DICOM standard.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from daemon.outbox.seg import lesion_segmentation, source_frames
from daemon.outbox.sr import lesion_report
from trainer.synth import SeriesSpec, generate

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.train  # trainer.synth writes the series

LABEL = "Right frontal and parietal lobes"
MODEL = {"name": "seed", "version": "1.0.0", "sha256": "ef" * 32}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One study with two lesions on 5 slice positions (64 x 64), and its DWI truth."""
    out = tmp_path_factory.mktemp("synth-lesions") / "data"
    generate(
        out,
        cases_per_class=1,
        classes=(LABEL,),
        negative_share="balanced",
        seed=11,
        workers=1,
        matrix=64,
        cache_dir=tmp_path_factory.getbasetemp() / "synth-anatomy-cache",
        series=SeriesSpec(slices=5),
    )
    (truth,) = json.loads((out / "series.json").read_text("utf-8"))["studies"]
    dwi = next(series for series in truth["series"] if series["kind"] == "dwi")
    return out, dwi


def _inputs(
    root: Path, dwi: dict[str, Any]
) -> tuple[list[pydicom.Dataset], list[Path], dict[str, Any]]:
    """The b1000 slices, their mask PNGs and the series report the daemon would write."""
    folder = root / dwi["folder"]
    files = sorted(folder.glob("s*_b[1-9]*.dcm"))
    sources = [pydicom.dcmread(path) for path in files]
    masks = [folder / f"{path.stem.split('_')[0]}_mask.png" for path in files]
    by_slice = {item["slice"]: item for item in dwi["lesion_slices"]}
    lesions = [
        {
            "volume_ml": lesion["mask_volume_ml"],
            "label": lesion["region"],
            "slices": [
                {
                    "sop_instance_uid": by_slice[number]["b1000_sop_instance_uid"],
                    "instance_number": by_slice[number]["b1000_instance"],
                }
                for number in lesion["slices"]
            ],
            "centroid_patient_mm": None,
        }
        for lesion in dwi["lesions"]
    ]
    lesions[0]["adc"] = {  # the study's ADC read for the first lesion (daemon.series.adc)
        "median": 480.0,
        "restricted_ml": 0.9,
        "restricted_share": 0.82,
        "reference_share": 0.01,
        "restricted": True,
    }
    report = {
        "finding": "acute_infarct",
        "lesions": lesions,
        "lesion_volume_ml": dwi["mask_volume_ml"],
        "model": MODEL,
        "study_instance_uid": str(sources[0].StudyInstanceUID),
        "series_instance_uid": dwi["series_instance_uid"],
    }
    return sources, masks, report


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


class TestSynthSeries:
    def test_seg_of_the_synth_masks_reads_back_equal(
        self, study: tuple[Path, dict[str, Any]], tmp_path: Path
    ) -> None:
        """The SEG made from the synth's mask PNGs holds exactly those masks, frame by frame,
        on the slices its truth lists as showing a lesion."""
        root, dwi = study
        sources, masks, report = _inputs(root, dwi)
        seg = lesion_segmentation(sources, masks, report)
        assert seg is not None
        seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
        back = hd.seg.segread(tmp_path / "seg.dcm")
        frames = source_frames(back)
        assert set(frames) == {item["b1000_sop_instance_uid"] for item in dwi["lesion_slices"]}
        pixels = pydicom.dcmread(tmp_path / "seg.dcm").pixel_array
        for source, mask in zip(sources, masks, strict=True):
            uid = str(source.SOPInstanceUID)
            if uid in frames:
                (number,) = frames[uid]
                expected = np.asarray(Image.open(mask)) > 0  # label map: 0, then 1, 2...
                np.testing.assert_array_equal(pixels[number - 1].astype(bool), expected)

    def test_sr_codes_both_lesions_on_the_right(
        self, study: tuple[Path, dict[str, Any]], tmp_path: Path
    ) -> None:
        """The right frontal and the right parietal lesion get their volumes and their SNOMED CT
        lobes with laterality Right; the first, whose ADC was read, its median ADC too."""
        root, dwi = study
        sources, masks, report = _inputs(root, dwi)
        seg = lesion_segmentation(sources, masks, report)
        lesion_report(sources, report, seg).save_as(tmp_path / "sr.dcm", enforce_file_format=True)
        document = hd.sr.srread(tmp_path / "sr.dcm")
        groups = [
            group
            for group in document.content.get_image_measurement_groups()
            if group.tracking_identifier.startswith("Lesion ")
        ]
        lobes = {"Right frontal lobe": "83251001", "Right parietal lobe": "16630005"}
        assert len(groups) == len(dwi["lesions"]) == 2
        for group, lesion in zip(groups, dwi["lesions"], strict=True):
            (site,) = group.finding_sites
            assert site.value.value == lobes[lesion["region"]]
            assert site.laterality.meaning == "Right"
            assert group.get_measurements()[0].value == pytest.approx(lesion["mask_volume_ml"])
        assert [m.value for m in groups[0].get_measurements()[1:]] == [480.0]
        assert len(groups[1].get_measurements()) == 1

    @pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
    def test_dciodvfy_finds_no_error_of_their_own_in_seg_and_sr(
        self, study: tuple[Path, dict[str, Any]], tmp_path: Path
    ) -> None:
        """Both objects pass the DICOM standard's IOD checks but for what they inherit from the
        source's patient module (the synth's files say PatientIdentityRemoved YES without a
        DeidentificationMethod); warnings (newer defined terms) aside."""
        root, dwi = study
        sources, masks, report = _inputs(root, dwi)
        seg = lesion_segmentation(sources, masks, report)
        assert seg is not None
        seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
        lesion_report(sources, report, seg).save_as(tmp_path / "sr.dcm", enforce_file_format=True)
        lesion_report(sources, report, None).save_as(tmp_path / "sr-alone.dcm")
        inherited = set(_dciodvfy_errors(min((root / dwi["folder"]).glob("s*_b[1-9]*.dcm"))))
        assert inherited  # the check runs and reads the source's faults
        for name in ("seg.dcm", "sr.dcm", "sr-alone.dcm"):
            errors = _dciodvfy_errors(tmp_path / name)
            assert set(errors) <= inherited, name
            assert not [e for e in errors if "Module=<Patient>" not in e], name
