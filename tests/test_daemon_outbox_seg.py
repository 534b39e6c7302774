"""The DICOM SEG of a series' lesion masks: written, read back with pydicom and highdicom.

Everything is real: a small MR series written as files by pydicom (`lesion_series`), the masks
as arrays and as the mask PNGs the daemon writes, the SEG encoded, saved into a temp folder and
read back with ``pydicom.dcmread`` and ``highdicom.seg.segread``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
import pydicom
import pytest
from daemon_support import BIRTH_DATE, PATIENT_ID, PATIENT_NAME
from lesion_series import (
    EXTRA_PATIENT,
    MODEL,
    SERIES_NUMBER,
    Series,
    series_report,
    write_mask_pngs,
    write_series,
)
from pydicom.uid import SegmentationStorage

from daemon.outbox import lesion_codes
from daemon.outbox.seg import (
    SERIES_NUMBER_OFFSET,
    LesionResultError,
    lesion_segmentation,
    source_frames,
)

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def series(tmp_path: Path) -> Series:
    return write_series(tmp_path / "incoming")


def _written(seg: pydicom.Dataset, folder: Path) -> hd.seg.Segmentation:
    """``seg`` saved as a file and read back with highdicom."""
    path = folder / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    return hd.seg.segread(path)


class TestSegmentation:
    def test_pixel_data_equals_the_masks_on_the_referenced_frames(
        self, series: Series, tmp_path: Path
    ) -> None:
        """Each frame is its source slice's mask; a frame for every slice with a lesion, none
        for the others (empty frames omitted)."""
        seg = lesion_segmentation(series.sources, series.masks, series_report(series))
        assert seg is not None
        back = _written(seg, tmp_path)
        frames = source_frames(back)
        by_uid = {
            str(s.SOPInstanceUID): m for s, m in zip(series.sources, series.masks, strict=True)
        }
        lesion_uids = {uid for uid, mask in by_uid.items() if mask.any()}
        assert set(frames) == lesion_uids
        assert back.NumberOfFrames == len(lesion_uids) == 4
        pixels = pydicom.dcmread(tmp_path / "seg.dcm").pixel_array
        for uid, (number,) in frames.items():
            np.testing.assert_array_equal(pixels[number - 1].astype(bool), by_uid[uid])
        for source, mask in zip(series.sources, series.masks, strict=True):
            if mask.any():
                by_source = back.get_pixels_by_source_instance(
                    source_sop_instance_uids=[str(source.SOPInstanceUID)],
                    segment_numbers=[1],
                )
                np.testing.assert_array_equal(by_source[0, :, :, 0].astype(bool), mask)

    def test_every_source_is_referenced_in_the_same_study_and_frame_of_reference(
        self, series: Series, tmp_path: Path
    ) -> None:
        """All slices (with a lesion or not) are named; the study and frame of reference are
        the source's, the series and instance new."""
        seg = lesion_segmentation(series.sources, series.masks, series_report(series))
        assert seg is not None
        back = _written(seg, tmp_path)
        first = series.sources[0]
        assert back.SOPClassUID == SegmentationStorage
        assert back.Modality == "SEG"
        assert back.StudyInstanceUID == first.StudyInstanceUID
        assert back.FrameOfReferenceUID == first.FrameOfReferenceUID
        assert back.SeriesInstanceUID != first.SeriesInstanceUID
        assert back.SeriesNumber == SERIES_NUMBER + SERIES_NUMBER_OFFSET
        (referenced,) = back.ReferencedSeriesSequence
        assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
        named = {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence}
        assert named == {source.SOPInstanceUID for source in series.sources}
        positions = {
            tuple(float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
            for item in back.PerFrameFunctionalGroupsSequence
        }
        expected = {
            tuple(float(v) for v in source.ImagePositionPatient)
            for source, mask in zip(series.sources, series.masks, strict=True)
            if mask.any()
        }
        assert positions == expected

    def test_one_coded_segment_made_by_the_identified_algorithm(
        self, series: Series, tmp_path: Path
    ) -> None:
        """Segment 1 "Acute infarct": SNOMED CT morphologically abnormal structure / infarct in
        the brain, AUTOMATIC, by infarctwatch with the model's name and version, AI family."""
        seg = lesion_segmentation(series.sources, series.masks, series_report(series))
        assert seg is not None
        back = _written(seg, tmp_path)
        assert back.SegmentationType == "BINARY"
        assert back.get_segment_numbers() == [1]
        segment = back.get_segment_description(1)
        assert segment.segment_label == "Acute infarct"
        assert segment.segmented_property_category.value == "49755003"
        assert segment.segmented_property_category.scheme_designator == "SCT"
        assert segment.segmented_property_type.value == "55641003"
        assert segment.segmented_property_type.meaning == "Infarct"
        assert segment.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm = segment.algorithm_identification
        assert algorithm is not None
        (item,) = algorithm
        assert item.AlgorithmName == "infarctwatch"
        assert item.AlgorithmVersion == f"{MODEL['name']} {MODEL['version']}"
        assert item.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
        assert MODEL["sha256"] in item.AlgorithmParameters
        assert [region.value for region in segment.anatomic_regions] == [lesion_codes.BRAIN.value]
        assert back.Manufacturer == "infarctwatch"
        assert back.ManufacturerModelName == MODEL["name"]

    def test_says_research_use_only(self, series: Series, tmp_path: Path) -> None:
        """The series description and the content description carry the disclaimer."""
        seg = lesion_segmentation(series.sources, series.masks, series_report(series))
        assert seg is not None
        back = _written(seg, tmp_path)
        assert "RESEARCH USE ONLY" in back.SeriesDescription
        assert back.ContentDescription.startswith("Research use only")

    def test_patient_identity_is_the_minimum_the_pacs_files_it_by(
        self, series: Series, tmp_path: Path
    ) -> None:
        """Name, ID, birth date and sex as in the source (same patient, same study); the
        source's age, weight, comments, other IDs, address and admitting diagnoses are not
        copied."""
        seg = lesion_segmentation(series.sources, series.masks, series_report(series))
        assert seg is not None
        _written(seg, tmp_path)
        back = pydicom.dcmread(tmp_path / "seg.dcm")
        assert str(back.PatientName) == PATIENT_NAME
        assert back.PatientID == PATIENT_ID
        assert back.PatientBirthDate == BIRTH_DATE
        assert back.PatientSex == "F"
        for keyword in EXTRA_PATIENT:
            assert keyword not in back
        raw = (tmp_path / "seg.dcm").read_bytes()
        for value in EXTRA_PATIENT.values():
            if not value.isdigit():  # a bare number may occur in any UID
                assert value.encode() not in raw

    def test_mask_pngs_give_the_same_object_as_arrays(self, series: Series, tmp_path: Path) -> None:
        """The daemon's 0/255 mask PNGs and the bool arrays make the same SEG (same UIDs, same
        pixels); sources read without their pixels will do."""
        report = series_report(series)
        from_arrays = lesion_segmentation(series.sources, series.masks, report)
        pngs = write_mask_pngs(series, tmp_path / "reports" / "lesions")
        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in series.files]
        from_pngs = lesion_segmentation(headers, pngs, report)
        assert from_arrays is not None
        assert from_pngs is not None
        assert from_pngs.SOPInstanceUID == from_arrays.SOPInstanceUID
        assert from_pngs.SeriesInstanceUID == from_arrays.SeriesInstanceUID
        assert from_pngs.PixelData == from_arrays.PixelData

    def test_same_result_same_uids_another_result_another_instance(self, series: Series) -> None:
        """UIDs derive from the source series, the model and the masks: written again, the SEG
        is the same object; with one more lesion pixel it is another instance of the same
        series; another model makes another series."""
        report = series_report(series)
        first = lesion_segmentation(series.sources, series.masks, report)
        again = lesion_segmentation(series.sources, series.masks, report)
        changed = [mask.copy() for mask in series.masks]
        changed[0][0, 0] = True
        other_mask = lesion_segmentation(series.sources, changed, report)
        other_model = lesion_segmentation(
            series.sources, series.masks, {**report, "model": {**MODEL, "sha256": "cd" * 32}}
        )
        assert first is not None
        assert again is not None
        assert other_mask is not None
        assert other_model is not None
        assert again.SOPInstanceUID == first.SOPInstanceUID
        assert other_mask.SOPInstanceUID != first.SOPInstanceUID
        assert other_mask.SeriesInstanceUID == first.SeriesInstanceUID
        assert other_model.SeriesInstanceUID != first.SeriesInstanceUID

    def test_a_series_without_lesions_gives_none(self, tmp_path: Path) -> None:
        """No lesion pixel anywhere: no SEG (a SEG needs a segment), and no exception."""
        empty = write_series(tmp_path / "incoming", masks=[np.zeros((64, 64), bool)] * 8)
        report = series_report(empty, finding="no_acute_infarct")
        assert lesion_segmentation(empty.sources, empty.masks, report) is None
        pngs = write_mask_pngs(empty, tmp_path / "lesions")
        assert lesion_segmentation(empty.sources, pngs, report) is None


class TestRefusals:
    def test_masks_that_do_not_fit_their_sources(self, series: Series) -> None:
        """Another count or another matrix than the sources' is refused by name."""
        report = series_report(series)
        with pytest.raises(LesionResultError, match="7 masks for 8"):
            lesion_segmentation(series.sources, series.masks[:7], report)
        wrong = [*series.masks[:-1], np.zeros((32, 64), bool)]
        with pytest.raises(LesionResultError, match="mask 7 is"):
            lesion_segmentation(series.sources, wrong, report)

    def test_sources_of_two_series_or_without_geometry(
        self, series: Series, tmp_path: Path
    ) -> None:
        """A slice of another series, or without a frame of reference, is refused; the message
        names the slice's index and the attribute, never a patient attribute."""
        report = series_report(series)
        other = pydicom.dcmread(series.files[-1])
        other.SeriesInstanceUID = pydicom.uid.generate_uid()  # the same study's next series
        with pytest.raises(
            LesionResultError, match="source 7 has another SeriesInstanceUID"
        ) as mixed:
            lesion_segmentation([*series.sources[:-1], other], series.masks, report)
        bare = pydicom.dcmread(series.files[3])
        del bare.FrameOfReferenceUID
        sources = [*series.sources[:3], bare, *series.sources[4:]]
        with pytest.raises(LesionResultError, match="source 3 has no FrameOfReferenceUID"):
            lesion_segmentation(sources, series.masks, report)
        assert PATIENT_NAME not in str(mixed.value)

    def test_a_report_without_a_model(self, series: Series) -> None:
        """The algorithm version comes from the report's model: without one, no SEG."""
        report = {**series_report(series), "model": None}
        with pytest.raises(LesionResultError, match="no model"):
            lesion_segmentation(series.sources, series.masks, report)

    def test_a_mask_png_that_is_not_8_bit_grey(self, series: Series, tmp_path: Path) -> None:
        """A colour PNG is not a mask the daemon writes: refused, not guessed."""
        from PIL import Image  # noqa: PLC0415

        pngs = write_mask_pngs(series, tmp_path / "lesions")
        Image.new("RGB", (64, 64)).save(pngs[0])
        with pytest.raises(LesionResultError, match="8-bit grey"):
            lesion_segmentation(series.sources, pngs, series_report(series))
