"""The TID 1500 Measurement Report (Comprehensive 3D SR) of one series' lesion findings.

`lesion_report` takes the series' source DICOM datasets, its series report and the SEG that
`daemon.outbox.seg.lesion_segmentation` made of it (None when the series has no lesion, or when
no SEG is sent) and returns a highdicom ``Comprehensive3DSR`` whose content follows TID 1500:

* observation context: a device observer, ``infarctwatch`` (manufacturer ``infarctwatch``, model
  the model's ``name version``);
* procedure reported: "Imaging procedure"; an image library (TID 1600) of every source slice,
  in one group stating their modality and frame of reference (`image_library`);
* imaging measurements:

  - one TID 1501 group, the **series finding**: the qualitative evaluation "Infarct" with
    Present / Absent / Undetermined (CID 240) from the report's ``finding`` (``acute_infarct``,
    ``no_acute_infarct``, anything else), and the series' total lesion volume in mL (UCUM
    ``ml``) when the report has one;
  - with a SEG, one TID 1411 group, the **lesion map**: a volumetric ROI referencing the SEG's
    segment (and the source slices it has frames for), with the total volume;
  - one TID 1501 group per **lesion**: its volume in mL, its median ADC (DCM 113041 "Apparent
    Diffusion Coefficient", derivation SNOMED CT "Median", UCUM ``um2/s``, i.e. 1e-6 mm²/s) and
    the ADC check as a qualitative evaluation of the same concept, SNOMED CT "Decreased"
    (restricted: ``adc.restricted``) or "Normal" (a look-alike), when the study's ADC series was
    read for it (the series report's ``adc``), its finding
    sites (SNOMED CT, with laterality, `daemon.outbox.lesion_codes`), finding type "Infarct",
    the source slices it lies on, and its tracking identifier ``Lesion <n>: <label>``, so the
    location label's text is always there. Not a TID 1411 referencing the SEG: the SEG has one
    segment for every lesion, and a reference to some of its frames may not name a segment as
    well (PS3.3 C.10.4: Referenced Segment Number only without Referenced Frame Number;
    dciodvfy refuses both), so a per-lesion ROI reference would point at every lesion;

  every group names the algorithm (``infarctwatch``, version the model's ``name
  version``, family "Artificial Intelligence", manufacturer ``infarctwatch``, parameters the
  bundle's sha256 and the infarctwatch version);
* TID 1500's "Qualitative Evaluations" of the whole report: the research-use disclaimer as a
  TEXT item ("Comment"); ``SeriesDescription`` says it too;
* flags: COMPLETE, UNVERIFIED (no person checked it), PRELIMINARY;
* the evidence: the source series and the SEG (same study); the patient and study modules copied
  by highdicom from the first source, trimmed as the SEG's are (`keep_identity_minimal`);
* a new series (number: the source's + `SERIES_NUMBER_OFFSET`) and an instance whose UIDs derive
  from the source series, the model's sha256 and the reported content (finding, lesions, the SEG
  instance, the source instances): the same report written again is the same object.

Importing this module does not import highdicom (the function does).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, TypeGuard

from daemon import DISCLAIMER, GENERATOR
from daemon.outbox import lesion_codes
from daemon.outbox.seg import (
    SEGMENT_NUMBER,
    LesionResultError,
    check_sources,
    keep_identity_minimal,
    model_identity,
    source_frames,
    with_study_attributes,
)
from daemon.scan.report import VERSION

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pydicom
    from highdicom.sr import (
        AlgorithmIdentification,
        Comprehensive3DSR,
        Measurement,
        MeasurementsAndQualitativeEvaluations,
        QualitativeEvaluation,
        VolumetricROIMeasurementsAndQualitativeEvaluations,
    )

    from daemon.outbox.seg import ModelIdentity

SERIES_NUMBER_OFFSET = 3000
"""The SR's series number is the source's plus this (captures: +1000, the SEG: +2000)."""
SERIES_DESCRIPTION = "infarctwatch lesion report - RESEARCH USE ONLY"
SERIES_GROUP = "Acute infarct: series finding"
"""The tracking identifier of the series finding's group."""
SEGMENT_GROUP = "Acute infarct: lesion map"
"""The tracking identifier of the group of the SEG's segment."""


def _content_digest(
    sources: Sequence[pydicom.Dataset], report: dict[str, Any], seg: pydicom.Dataset | None
) -> str:
    content = {
        "finding": report.get("finding"),
        "lesions": report.get("lesions") or [],
        "lesion_volume_ml": report.get("lesion_volume_ml"),
        "seg": None if seg is None else str(seg.SOPInstanceUID),
        "sources": sorted(str(source.SOPInstanceUID) for source in sources),
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _algorithm(model: ModelIdentity) -> AlgorithmIdentification:
    from highdicom.sr import AlgorithmIdentification  # noqa: PLC0415

    return AlgorithmIdentification(
        name=GENERATOR,
        version=model.algorithm_version[:64],
        parameters=[f"bundle_sha256={model.sha256}", f"infarctwatch={VERSION}"],
        family=lesion_codes.ARTIFICIAL_INTELLIGENCE,
        manufacturer=GENERATOR,
    )


def _series_group(
    report: dict[str, Any], algorithm: AlgorithmIdentification, uid: str
) -> MeasurementsAndQualitativeEvaluations:
    from highdicom import sr  # noqa: PLC0415

    presence = lesion_codes.PRESENCE.get(
        str(report.get("finding")), lesion_codes.PRESENCE["indeterminate"]
    )
    total = report.get("lesion_volume_ml")
    return sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=sr.TrackingIdentifier(uid=uid, identifier=SERIES_GROUP),
        finding_type=lesion_codes.INFARCT,
        algorithm_id=algorithm,
        qualitative_evaluations=[sr.QualitativeEvaluation(lesion_codes.INFARCT, presence)],
        measurements=[_volume(total)] if _is_number(total) else None,
    )


def _volume(value: Any) -> Measurement:
    """A volume in mL (the group names the algorithm that measured it)."""
    from highdicom import sr  # noqa: PLC0415

    return sr.Measurement(
        name=lesion_codes.VOLUME, value=float(value), unit=lesion_codes.MILLILITER
    )


def _median_adc(lesion: dict[str, Any]) -> list[Measurement]:
    """The lesion's median ADC as a measurement, when its ADC was read (else nothing)."""
    from highdicom import sr  # noqa: PLC0415

    median = (lesion.get("adc") or {}).get("median")
    if not _is_number(median):
        return []
    return [
        sr.Measurement(
            name=lesion_codes.ADC,
            value=float(median),
            unit=lesion_codes.MICROMETER2_PER_SECOND,
            derivation=lesion_codes.MEDIAN,
        )
    ]


def _adc_verdict(lesion: dict[str, Any]) -> list[QualitativeEvaluation] | None:
    """The lesion's ADC check as "Apparent Diffusion Coefficient": Decreased / Normal.

    None when the study's ADC series was not read for it.
    """
    from highdicom import sr  # noqa: PLC0415

    restricted = (lesion.get("adc") or {}).get("restricted")
    if not isinstance(restricted, bool):
        return None
    return [sr.QualitativeEvaluation(lesion_codes.ADC, lesion_codes.ADC_VERDICT[restricted])]


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _segment_group(
    report: dict[str, Any],
    seg: pydicom.Dataset,
    sources: dict[str, pydicom.Dataset],
    algorithm: AlgorithmIdentification,
    uid: str,
) -> VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411 of the SEG's segment (every lesion): the segment's volume, its source slices."""
    from highdicom import sr  # noqa: PLC0415

    slices = [sources[uid] for uid in source_frames(seg) if uid in sources]
    segment = sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        segment_number=SEGMENT_NUMBER,
        source_images=[
            sr.SourceImageForSegmentation(str(s.SOPClassUID), str(s.SOPInstanceUID)) for s in slices
        ]
        or None,
        source_series=None
        if slices
        else sr.SourceSeriesForSegmentation(str(seg.SeriesInstanceUID)),
    )
    total = report.get("lesion_volume_ml")
    return sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=sr.TrackingIdentifier(uid=uid, identifier=SEGMENT_GROUP),
        referenced_segment=segment,
        finding_type=lesion_codes.INFARCT,
        algorithm_id=algorithm,
        measurements=[_volume(total)] if _is_number(total) else None,
    )


def _lesion_group(
    number: int,
    lesion: dict[str, Any],
    sources: dict[str, pydicom.Dataset],
    algorithm: AlgorithmIdentification,
    uid: str,
) -> MeasurementsAndQualitativeEvaluations:
    """TID 1501 of one lesion: its volume (and median ADC), finding sites, label, source slices."""
    from highdicom import sr  # noqa: PLC0415

    label = str(lesion.get("label") or "")
    volume = lesion.get("volume_ml")
    if not _is_number(volume):
        raise LesionResultError(f"lesion {number} of the series report has no volume_ml")
    sites = [
        sr.FindingSite(site.anatomy, laterality=site.laterality)
        for site in lesion_codes.finding_sites(label)
    ]
    uids = [str(item.get("sop_instance_uid")) for item in lesion.get("slices") or []]
    images = [
        sr.SourceImageForMeasurementGroup(str(source.SOPClassUID), str(source.SOPInstanceUID))
        for source in (sources[uid] for uid in uids if uid in sources)
    ]
    return sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=sr.TrackingIdentifier(
            uid=uid, identifier=f"Lesion {number}: {label}" if label else f"Lesion {number}"
        ),
        finding_type=lesion_codes.INFARCT,
        algorithm_id=algorithm,
        finding_sites=sites or None,
        measurements=[_volume(volume), *_median_adc(lesion)],
        qualitative_evaluations=_adc_verdict(lesion),
        source_images=images or None,
    )


def _modality(source: pydicom.Dataset) -> Any:
    """The source's modality as a CID 29 code."""
    from highdicom.sr import CodedConcept  # noqa: PLC0415
    from pydicom.sr.codedict import codes  # noqa: PLC0415

    value = str(source.get("Modality") or "OT")
    for keyword in dir(codes.cid29):
        code = getattr(codes.cid29, keyword)
        if getattr(code, "value", None) == value and keyword[0].isupper():
            return code
    return CodedConcept(value, "DCM", value)


def image_library(sources: Sequence[pydicom.Dataset]) -> Any:
    """TID 1600: one group (the series' modality and frame of reference) of every source slice.

    highdicom's ``ImageLibrary`` adds 17 descriptors to each image (TID 1602, all optional),
    which costs about 25 ms of CPU and 4 kB per slice; the slices of one series share their
    modality and frame of reference, which the group states once.
    """
    from highdicom import sr  # noqa: PLC0415
    from pydicom.sr.codedict import codes  # noqa: PLC0415

    contains = sr.RelationshipTypeValues.CONTAINS
    group = sr.ContainerContentItem(name=codes.DCM.ImageLibraryGroup, relationship_type=contains)
    group.ContentSequence = sr.ContentSequence(
        [
            sr.CodeContentItem(
                name=codes.DCM.Modality,
                value=_modality(sources[0]),
                relationship_type=sr.RelationshipTypeValues.HAS_ACQ_CONTEXT,
            ),
            sr.UIDRefContentItem(
                name=codes.DCM.FrameOfReferenceUID,
                value=str(sources[0].FrameOfReferenceUID),
                relationship_type=sr.RelationshipTypeValues.HAS_ACQ_CONTEXT,
            ),
        ]
    )
    for source in sources:
        group.ContentSequence.append(
            sr.ImageContentItem(
                name=sr.CodedConcept("260753009", "SCT", "Source"),
                referenced_sop_class_uid=str(source.SOPClassUID),
                referenced_sop_instance_uid=str(source.SOPInstanceUID),
                relationship_type=contains,
            )
        )
    library = sr.ContainerContentItem(name=codes.DCM.ImageLibrary, relationship_type=contains)
    library.ContentSequence = sr.ContentSequence([group])
    return library


def _check_seg(sources: Sequence[pydicom.Dataset], seg: pydicom.Dataset | None) -> None:
    if seg is None:
        return
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID"):
        if seg.get(keyword) != sources[0].get(keyword):
            raise LesionResultError(f"the SEG has another {keyword} than the sources")


def lesion_report(
    sources: Sequence[pydicom.Dataset],
    report: dict[str, Any],
    seg: pydicom.Dataset | None,
) -> Comprehensive3DSR:
    """The TID 1500 SR of a series report's finding and lesions (see the module docstring).

    ``seg`` is the series' SEG (as made, or as read back), or None: then the lesions, if any,
    name their source slices instead of a segment.

    Raises:
        LesionResultError: sources that are not one series with its geometry, a SEG of another
            study or frame of reference, a report without a model or a lesion without a volume.
    """
    from highdicom import sr  # noqa: PLC0415
    from pydicom.sr.codedict import codes  # noqa: PLC0415
    from pydicom.uid import generate_uid  # noqa: PLC0415

    check_sources(sources)
    _check_seg(sources, seg)
    model = model_identity(report)
    source_series = str(sources[0].SeriesInstanceUID)
    series_uid = generate_uid(entropy_srcs=[source_series, model.sha256, "infarctwatch-sr-series"])
    sop_uid = generate_uid(
        entropy_srcs=[source_series, model.sha256, _content_digest(sources, report, seg), "sr"]
    )
    algorithm = _algorithm(model)
    by_uid = {str(source.SOPInstanceUID): source for source in sources}
    groups: list[Any] = [
        _series_group(report, algorithm, generate_uid(entropy_srcs=[str(sop_uid), "series"]))
    ]
    if seg is not None:
        uid = generate_uid(entropy_srcs=[str(sop_uid), "segment"])
        groups.append(_segment_group(report, seg, by_uid, algorithm, uid))
    for number, lesion in enumerate(report.get("lesions") or [], start=1):
        uid = generate_uid(entropy_srcs=[str(sop_uid), str(number), "lesion"])
        groups.append(_lesion_group(number, lesion, by_uid, algorithm, uid))
    device = sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[model.sha256, "infarctwatch-device"]),
        name=GENERATOR,
        manufacturer_name=GENERATOR,
        model_name=model.algorithm_version[:64],
    )
    observation = sr.ObservationContext(
        observer_device_context=sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    content = sr.MeasurementReport(
        observation_context=observation,
        procedure_reported=lesion_codes.IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    disclaimer = sr.ContainerContentItem(
        name=lesion_codes.QUALITATIVE_EVALUATIONS,
        relationship_type=sr.RelationshipTypeValues.CONTAINS,
    )
    disclaimer.ContentSequence = sr.ContentSequence(
        [
            sr.TextContentItem(
                name=lesion_codes.COMMENT,
                value=DISCLAIMER,
                relationship_type=sr.RelationshipTypeValues.CONTAINS,
            )
        ]
    )
    items = content[0].ContentSequence
    measurements = next(
        index
        for index, item in enumerate(items)
        if item.ConceptNameCodeSequence[0].CodeValue == codes.DCM.ImagingMeasurements.value
    )
    items.insert(measurements, image_library(sources))  # TID 1500 row 5, before row 6
    items.append(disclaimer)
    evidence = [with_study_attributes(sources[0]), *sources[1:], *([seg] if seg else [])]
    document = sr.Comprehensive3DSR(
        evidence=evidence,
        content=content[0],
        series_instance_uid=series_uid,
        series_number=int(sources[0].get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=GENERATOR,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SERIES_DESCRIPTION,
    )
    document.ManufacturerModelName = model.name[:64]
    document.SoftwareVersions = VERSION
    keep_identity_minimal(document)
    return document
