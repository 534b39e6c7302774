"""The TID 1500 SR of a series' finding and lesions: written, read back with pydicom and highdicom.

Everything is real: a small MR series written by pydicom (`lesion_series`), its SEG made by
`lesion_segmentation`, the SR encoded, saved into a temp folder and read back with
``pydicom.dcmread`` and ``highdicom.sr.srread``; the location codes are checked against every
location class of the label map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
import yaml
from daemon_support import BIRTH_DATE, PATIENT_ID, PATIENT_NAME, REPO
from lesion_series import EXTRA_PATIENT, MODEL, SERIES_NUMBER, Series, series_report, write_series
from pydicom.sr._snomed_dict import mapping as snomed_in_dicom
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from daemon import DISCLAIMER
from daemon.outbox import lesion_codes
from daemon.outbox.seg import LesionResultError, lesion_segmentation, source_frames
from daemon.outbox.sr import SERIES_NUMBER_OFFSET, lesion_report

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def series(tmp_path: Path) -> Series:
    return write_series(tmp_path / "incoming")


def _written(document: pydicom.Dataset, path: Path) -> hd.sr.Comprehensive3DSR:
    document.save_as(path, enforce_file_format=True)
    read = hd.sr.srread(path)
    assert isinstance(read, hd.sr.Comprehensive3DSR)
    return read


def _with_seg(series: Series, folder: Path, **report: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The series' SEG and SR, both written to ``folder`` and read back."""
    content = {**series_report(series), **report}
    seg = lesion_segmentation(series.sources, series.masks, content)
    assert seg is not None
    seg.save_as(folder / "seg.dcm", enforce_file_format=True)
    seg_back = hd.seg.segread(folder / "seg.dcm")
    document = _written(lesion_report(series.sources, content, seg_back), folder / "sr.dcm")
    return seg_back, document, content


def _items(sequence: Any) -> Iterator[Any]:
    for item in sequence:
        yield item
        yield from _items(item.get("ContentSequence", []))


def _named(document: pydicom.Dataset, meaning: str) -> list[Any]:
    return [
        item
        for item in _items(document.ContentSequence)
        if item.ConceptNameCodeSequence[0].CodeMeaning == meaning
    ]


def _lesion_groups(document: hd.sr.Comprehensive3DSR) -> list[Any]:
    return [
        group
        for group in document.content.get_image_measurement_groups()
        if group.tracking_identifier.startswith("Lesion ")
    ]


def _evaluations(group: Any) -> dict[str, str]:
    return {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}


class TestLesionReport:
    def test_read_back_it_is_a_tid_1500_report_of_the_same_study(
        self, series: Series, tmp_path: Path
    ) -> None:
        """Comprehensive 3D SR, template 1500, the source's study, a new series; complete,
        unverified, preliminary; the source slices and the SEG are its evidence."""
        seg, document, _ = _with_seg(series, tmp_path)
        first = series.sources[0]
        raw = pydicom.dcmread(tmp_path / "sr.dcm")
        assert raw.SOPClassUID == Comprehensive3DSRStorage
        assert raw.Modality == "SR"
        assert raw.ContentTemplateSequence[0].TemplateIdentifier == "1500"
        assert raw.StudyInstanceUID == first.StudyInstanceUID
        assert raw.SeriesInstanceUID not in {first.SeriesInstanceUID, seg.SeriesInstanceUID}
        assert raw.SeriesNumber == SERIES_NUMBER + SERIES_NUMBER_OFFSET
        assert (raw.CompletionFlag, raw.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
        assert raw.PreliminaryFlag == "PRELIMINARY"
        (study,) = raw.CurrentRequestedProcedureEvidenceSequence
        evidence = {
            item.ReferencedSOPInstanceUID
            for series_item in study.ReferencedSeriesSequence
            for item in series_item.ReferencedSOPSequence
        }
        assert evidence == {s.SOPInstanceUID for s in series.sources} | {seg.SOPInstanceUID}
        library = _named(raw, "Image Library")
        assert len(library) == 1
        images = {
            item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for item in _items(library[0].ContentSequence)
            if item.ValueType == "IMAGE"
        }
        assert images == {s.SOPInstanceUID for s in series.sources}
        (group,) = library[0].ContentSequence
        shared = {
            item.ConceptNameCodeSequence[0].CodeMeaning: item
            for item in group.ContentSequence
            if item.RelationshipType == "HAS ACQ CONTEXT"
        }
        assert shared["Modality"].ConceptCodeSequence[0].CodeValue == "MR"
        assert first.FrameOfReferenceUID == shared["Frame of Reference UID"].UID
        assert isinstance(document.content, hd.sr.MeasurementReport)

    def test_each_lesion_has_its_volume_location_codes_label_and_slices(
        self, series: Series, tmp_path: Path
    ) -> None:
        """Per lesion: its volume in ml (UCUM), SNOMED CT finding sites with laterality, the
        label text in the tracking identifier, finding type Infarct, the slices it lies on."""
        _, document, report = _with_seg(series, tmp_path)
        groups = _lesion_groups(document)
        assert len(groups) == len(report["lesions"]) == 2
        expected_sites = [("16630005", "7771000"), ("113305005", "24028007")]
        for group, lesion, site in zip(groups, report["lesions"], expected_sites, strict=True):
            assert lesion["label"] in group.tracking_identifier
            (volume,) = group.get_measurements()
            assert volume.name.value == lesion_codes.VOLUME.value
            assert volume.value == pytest.approx(lesion["volume_ml"])
            assert (volume.unit.value, volume.unit.scheme_designator) == ("ml", "UCUM")
            (finding_site,) = group.finding_sites
            assert finding_site.value.scheme_designator == "SCT"
            assert (finding_site.value.value, finding_site.laterality.value) == site
            assert group.finding_type.value == lesion_codes.INFARCT.value
            slices = {image.referenced_sop_instance_uid for image in group.source_images}
            assert slices == {item["sop_instance_uid"] for item in lesion["slices"]}

    def test_a_lesion_whose_adc_was_read_carries_its_median_adc(
        self, series: Series, tmp_path: Path
    ) -> None:
        """With the study's ADC read, a lesion group gains its median ADC (DCM 113041, derivation
        Median, UCUM um2/s) after its volume; a lesion without ADC keeps its volume alone."""
        lesions = series_report(series)["lesions"]
        lesions[0]["adc"] = {
            "median": 512.0,
            "restricted_ml": 0.4,
            "restricted_share": 0.8,
            "reference_share": 0.02,
            "restricted": True,
        }
        lesions[1]["adc"] = None  # a lesion none of whose voxels had an ADC value
        _, document, _ = _with_seg(series, tmp_path, lesions=lesions)
        with_adc, without = _lesion_groups(document)
        volume, adc = with_adc.get_measurements()
        assert volume.name.value == lesion_codes.VOLUME.value
        assert (adc.name.value, adc.name.scheme_designator) == ("113041", "DCM")
        assert adc.value == pytest.approx(512.0)
        assert (adc.unit.value, adc.unit.scheme_designator) == ("um2/s", "UCUM")
        assert adc.derivation is not None
        assert adc.derivation.value == lesion_codes.MEDIAN.value
        assert [m.name.value for m in without.get_measurements()] == [lesion_codes.VOLUME.value]
        assert _evaluations(with_adc)["Apparent Diffusion Coefficient"] == "Decreased"
        assert "Apparent Diffusion Coefficient" not in _evaluations(without)

    def test_a_look_alike_s_adc_is_normal_and_only_a_restricted_lesion_s_decreased(
        self, series: Series, tmp_path: Path
    ) -> None:
        """The ADC check per lesion, coded: "Apparent Diffusion Coefficient" (DCM 113041) is
        Decreased (SNOMED CT 1250004) for a restricted lesion, Normal (17621005) for one whose
        ADC is not restricted, so a PACS can tell the acute lesions from the look-alikes."""
        lesions = series_report(series)["lesions"]
        for lesion, restricted in zip(lesions, (False, True), strict=True):
            lesion["adc"] = {
                "median": 480.0 if restricted else 890.0,
                "restricted_ml": 0.3 if restricted else 0.0,
                "restricted_share": 0.7 if restricted else 0.05,
                "reference_share": 0.03,
                "restricted": restricted,
            }
        _, document, _ = _with_seg(series, tmp_path, lesions=lesions)
        look_alike, infarct = _lesion_groups(document)
        for group, code in ((look_alike, "17621005"), (infarct, "1250004")):
            (evaluation,) = [
                e for e in group.get_qualitative_evaluations() if e.name.value == "113041"
            ]
            assert (evaluation.name.value, evaluation.name.scheme_designator) == ("113041", "DCM")
            assert (evaluation.value.value, evaluation.value.scheme_designator) == (code, "SCT")

    def test_the_lesion_map_group_references_the_seg_segment(
        self, series: Series, tmp_path: Path
    ) -> None:
        """One volumetric ROI group references segment 1 of the SEG and the source slices the
        SEG has frames for, with the series' total volume."""
        seg, document, report = _with_seg(series, tmp_path)
        (group,) = document.content.get_volumetric_roi_measurement_groups()
        segment = group.referenced_segment
        assert segment.referenced_sop_class_uid == SegmentationStorage
        assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert segment.referenced_segment_numbers == [1]
        sources = {
            image.referenced_sop_instance_uid for image in segment.source_images_for_segmentation
        }
        assert sources == set(source_frames(seg))
        (volume,) = group.get_measurements()
        assert volume.value == pytest.approx(report["lesion_volume_ml"])

    @pytest.mark.parametrize(
        ("finding", "value"),
        [
            ("acute_infarct", "Present"),
            ("no_acute_infarct", "Absent"),
            ("indeterminate", "Undetermined"),
            (None, "Undetermined"),
        ],
    )
    def test_the_series_finding_is_a_qualitative_evaluation(
        self, series: Series, tmp_path: Path, finding: str | None, value: str
    ) -> None:
        """The report's finding as "Infarct": Present / Absent / Undetermined (CID 240), and
        the total lesion volume in ml."""
        _, document, report = _with_seg(series, tmp_path, finding=finding)
        (group,) = [
            g
            for g in document.content.get_image_measurement_groups()
            if g.tracking_identifier == "Acute infarct: series finding"
        ]
        assert _evaluations(group)["Infarct"] == value
        (volume,) = group.get_measurements()
        assert volume.value == pytest.approx(report["lesion_volume_ml"])

    def test_algorithm_and_disclaimer(self, series: Series, tmp_path: Path) -> None:
        """Every group names infarctwatch, the model's name and version, its manufacturer and
        the bundle's sha256; the observer is the infarctwatch device; the disclaimer is a
        report-level comment and in the series description."""
        _, document, _ = _with_seg(series, tmp_path)
        raw = pydicom.dcmread(tmp_path / "sr.dcm")
        groups = _named(raw, "Measurement Group")
        assert len(groups) == 4  # series finding, lesion map, two lesions
        for group in groups:
            texts = {
                item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
                for item in group.ContentSequence
                if item.ValueType == "TEXT"
            }
            assert texts["Algorithm Name"] == "infarctwatch"
            assert texts["Algorithm Version"] == f"{MODEL['name']} {MODEL['version']}"
            assert texts["Algorithm Manufacturer"] == "infarctwatch"
        parameters = [item.TextValue for item in _named(raw, "Algorithm Parameters")]
        assert f"bundle_sha256={MODEL['sha256']}" in parameters
        (observer,) = document.content.get_observer_contexts()
        assert observer.observer_type.meaning == "Device"
        assert [item.TextValue for item in _named(raw, "Device Observer Name")] == ["infarctwatch"]
        (evaluations,) = _named(raw, "Qualitative Evaluations")
        assert evaluations in raw.ContentSequence  # TID 1500 row 12: about the whole report
        (comment,) = evaluations.ContentSequence
        assert comment.TextValue == DISCLAIMER
        assert "RESEARCH USE ONLY" in raw.SeriesDescription

    def test_a_series_without_lesions_says_no_acute_infarct(self, tmp_path: Path) -> None:
        """No lesion: no SEG, and an SR whose one group says "Infarct: Absent" with 0 ml."""
        empty = write_series(tmp_path / "incoming", masks=[np.zeros((64, 64), bool)] * 8)
        report = series_report(empty, finding="no_acute_infarct")
        seg = lesion_segmentation(empty.sources, empty.masks, report)
        assert seg is None
        document = _written(lesion_report(empty.sources, report, seg), tmp_path / "sr.dcm")
        (group,) = document.content.get_image_measurement_groups()
        assert _evaluations(group)["Infarct"] == "Absent"
        (volume,) = group.get_measurements()
        assert volume.value == 0
        assert document.content.get_volumetric_roi_measurement_groups() == []

    def test_without_a_seg_the_lesions_still_name_their_slices(
        self, series: Series, tmp_path: Path
    ) -> None:
        """With no SEG (not sent), each lesion group keeps its volume, sites and slices; there
        is no lesion map group and the SEG is not evidence."""
        report = series_report(series)
        document = _written(lesion_report(series.sources, report, None), tmp_path / "sr.dcm")
        assert document.content.get_volumetric_roi_measurement_groups() == []
        groups = _lesion_groups(document)
        assert [g.get_measurements()[0].value for g in groups] == pytest.approx(
            [lesion["volume_ml"] for lesion in report["lesions"]]
        )
        raw = pydicom.dcmread(tmp_path / "sr.dcm")
        (study,) = raw.CurrentRequestedProcedureEvidenceSequence
        assert len(study.ReferencedSeriesSequence) == 1

    def test_patient_identity_is_the_minimum_the_pacs_files_it_by(
        self, series: Series, tmp_path: Path
    ) -> None:
        """Name, ID, birth date and sex as the source's; its other patient attributes are not
        copied."""
        _with_seg(series, tmp_path)
        raw = pydicom.dcmread(tmp_path / "sr.dcm")
        assert (str(raw.PatientName), raw.PatientID) == (PATIENT_NAME, PATIENT_ID)
        assert (raw.PatientBirthDate, raw.PatientSex) == (BIRTH_DATE, "F")
        for keyword in EXTRA_PATIENT:
            assert keyword not in raw

    def test_same_report_same_object_another_report_another_instance(self, series: Series) -> None:
        """UIDs derive from the source series, the model and the content: the same report gives
        the same object, a changed volume another instance of the same series."""
        report = series_report(series)
        first = lesion_report(series.sources, report, None)
        again = lesion_report(series.sources, report, None)
        lesions = [{**report["lesions"][0], "volume_ml": 9.0}, report["lesions"][1]]
        changed = lesion_report(series.sources, {**report, "lesions": lesions}, None)
        assert again.SOPInstanceUID == first.SOPInstanceUID
        assert changed.SOPInstanceUID != first.SOPInstanceUID
        assert changed.SeriesInstanceUID == first.SeriesInstanceUID

    def test_refuses_a_seg_of_another_study_and_a_lesion_without_volume(
        self, series: Series, tmp_path: Path
    ) -> None:
        """A SEG made from another study is not this series' map; a lesion without a volume
        cannot be reported."""
        other = write_series(tmp_path / "other")
        other_seg = lesion_segmentation(other.sources, other.masks, series_report(other))
        report = series_report(series)
        with pytest.raises(LesionResultError, match="another StudyInstanceUID"):
            lesion_report(series.sources, report, other_seg)
        broken = {**report, "lesions": [{**report["lesions"][0], "volume_ml": None}]}
        with pytest.raises(LesionResultError, match=r"lesion 1 .* no volume_ml"):
            lesion_report(series.sources, broken, None)

    def test_sources_without_accession_number_or_study_id(
        self, series: Series, tmp_path: Path
    ) -> None:
        """A series whose files lack the type 2 AccessionNumber and StudyID (common) still gets
        its SEG and SR, with those attributes empty; the caller's datasets are left as they
        were."""
        for source in series.sources:
            del source.AccessionNumber
            del source.StudyID
        report = series_report(series)
        seg = lesion_segmentation(series.sources, series.masks, report)
        assert seg is not None
        document = _written(lesion_report(series.sources, report, seg), tmp_path / "sr.dcm")
        assert document.AccessionNumber == ""
        assert seg.AccessionNumber in {None, ""}
        assert "AccessionNumber" not in series.sources[0]


class TestLocations:
    def _locations(self) -> list[str]:
        labels = yaml.safe_load((REPO / "daemon/shared/labels.yaml").read_text("utf-8"))
        return [label for label in labels["classes"] if label != "No acute infarct"]

    def test_every_location_class_has_coded_sites(self) -> None:
        """Each location class of the label map maps to one or two SNOMED CT sites that the
        DICOM standard uses; a side for each but the corpus callosum's."""
        for label in self._locations():
            sites = lesion_codes.finding_sites(label)
            assert 1 <= len(sites) <= 2, label
            for site in sites:
                assert site.anatomy.scheme_designator == "SCT"
                assert site.anatomy.value in snomed_in_dicom["SCT"], label
                if "corpus callosum" in label:
                    assert site.laterality is None
                else:
                    assert site.laterality in {lesion_codes.LEFT, lesion_codes.RIGHT}, label

    @pytest.mark.parametrize(
        ("label", "expected"),
        [
            ("Left parietal lobe", [("parietal lobe", "Left", True)]),
            ("Right basal ganglia", [("basal ganglia", "Right", False)]),
            ("Genu of the corpus callosum", [("genu of the corpus callosum", None, True)]),
            (
                "Left centrum semiovale and right parietal lobe",
                [("centrum semiovale", "Left", False), ("parietal lobe", "Right", True)],
            ),
            (
                "Right frontal and parietal lobes",
                [("frontal lobe", "Right", True), ("parietal lobe", "Right", True)],
            ),
            ("Left hippocampus", []),
        ],
    )
    def test_labels_are_read_region_by_region(
        self, label: str, expected: list[tuple[str, str | None, bool]]
    ) -> None:
        """Sides carry over "and"; plural lobes split; an unknown region gives no code at all
        (the label text stays in the report)."""
        sites = lesion_codes.finding_sites(label)
        got = [(s.region, s.laterality.meaning if s.laterality else None, s.exact) for s in sites]
        assert got == expected
