"""Write a study's series as DICOM: classic MR Image Storage files or one Enhanced MR file each.

Geometry is that of `render`: axial slices, row 0 anterior, column 0 the patient's right, so in
DICOM's LPS frame ImageOrientationPatient is ``[1, 0, 0, 0, 1, 0]`` and the first pixel's centre
lies at ``(-half, -half, z)`` with ``half`` = (matrix - 1) x spacing / 2; the slice normal is +z
(LPS and the scanner frame share z), so a slice's position along the normal is its z.

UIDs are ``2.25.`` + a name-based UUID of the seed, the case and what the object is (`uid`):
the same seed makes the same UIDs, never a device's. Nothing identifies a person: PatientName
``SYNTHETIC^C000123``, PatientID ``SYNTH-C000123``, empty birth date, PatientIdentityRemoved YES.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    EnhancedMRImageStorage,
    MRImageStorage,
)

from trainer.synth.writers import add_b_value_tags, new_dataset, uid

if TYPE_CHECKING:
    from pathlib import Path

DIFFUSION_BVALUE_TAG = 0x00189087
"""DiffusionBValue, the dimension the enhanced DWI file is indexed by (with the position)."""
MR_DIFFUSION_SEQUENCE_TAG = 0x00189117
IN_STACK_POSITION_TAG = 0x00209057
FRAME_CONTENT_SEQUENCE_TAG = 0x00209111


@dataclass(frozen=True)
class StudyInfo:
    """What every object of one synthetic study shares."""

    seed: int
    case_id: str
    site: str
    study_date: str
    """``YYYYMMDD``."""
    study_time: str
    """``HHMMSS``."""

    @property
    def study_uid(self) -> UID:
        """StudyInstanceUID."""
        return uid(self.seed, self.case_id, "study-series")

    @property
    def frame_uid(self) -> UID:
        """FrameOfReferenceUID: every series of the study is acquired in one frame."""
        return uid(self.seed, self.case_id, "frame-series")


@dataclass(frozen=True)
class SeriesInfo:
    """One series of the study: what it is and its geometry."""

    kind: str
    """``dwi``, ``adc``, ``t1`` or ``flair`` (keys the UIDs)."""
    number: int
    description: str
    image_type: tuple[str, ...]
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    sequence_name: str
    pixel_mm: float
    thickness_mm: float
    spacing_mm: float
    """SpacingBetweenSlices: centre to centre (thickness + gap)."""
    timing: tuple[tuple[str, str], ...] = ()
    """Extra MR attributes as (keyword, value): RepetitionTime, EchoTime, InversionTime."""

    def series_uid(self, study: StudyInfo) -> UID:
        """SeriesInstanceUID."""
        return uid(study.seed, study.case_id, "series", self.kind)


@dataclass(frozen=True)
class Frame:
    """One image of a series: pixels, where it is, its b-value and its instance number."""

    pixels: npt.NDArray[np.uint16]
    z_mm: float
    instance: int
    """InstanceNumber (classic) or 1-based frame number (enhanced)."""
    window: tuple[float, float]
    """(centre, width) in stored values."""
    b_value: float | None = None
    b_tags: tuple[str, ...] = ()
    """Where a classic file carries the b-value (`writers.add_b_value_tags`)."""
    image_type: tuple[str, ...] = ()
    """Overrides the series' ImageType for this image ('' = the series')."""


def sop_uid(study: StudyInfo, series: SeriesInfo, instance: int) -> UID:
    """SOPInstanceUID of a classic image (instance >= 1) or of an enhanced file (0)."""
    return uid(study.seed, study.case_id, "instance", series.kind, instance)


def _base(study: StudyInfo, series: SeriesInfo, sop_class: UID, sop: UID) -> Dataset:
    ds = new_dataset(sop_class, sop)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = study.study_time
    ds.Modality = "MR"
    ds.Manufacturer = "infarctwatch synth"
    ds.InstitutionName = study.site
    ds.StudyDescription = "SYNTHETIC BRAIN MRI (research use only)"
    ds.SeriesDescription = series.description
    ds.PatientName = f"SYNTHETIC^{study.case_id.upper()}"
    ds.PatientID = f"SYNTH-{study.case_id.upper()}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "BRAIN"
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid(study)
    ds.FrameOfReferenceUID = study.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.StudyID = "1"
    ds.SeriesNumber = series.number
    ds.MagneticFieldStrength = "1.5"
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = "synthetic image made by infarctwatch synth; research use only"
    return ds


def _pixel_module(ds: Dataset, rows: int, cols: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0


def _position(series: SeriesInfo, rows: int, z_mm: float) -> list[str]:
    half = (rows - 1) * series.pixel_mm / 2.0
    # LPS: column 0 is the patient's right (x_L = -half), row 0 anterior (y_P = -half)
    return [f"{-half:.3f}", f"{-half:.3f}", f"{z_mm:.3f}"]


ORIENTATION = ["1", "0", "0", "0", "1", "0"]


def write_classic(
    path: Path, study: StudyInfo, series: SeriesInfo, frame: Frame, *, images: int
) -> UID:
    """One MR Image Storage file of the series; returns its SOPInstanceUID.

    ``images`` is the number of images in the series (ImagesInAcquisition).
    """
    sop = sop_uid(study, series, frame.instance)
    ds = _base(study, series, MRImageStorage, sop)
    ds.ImageType = list(frame.image_type or series.image_type)
    ds.ScanningSequence = list(series.scanning_sequence)
    ds.SequenceVariant = list(series.sequence_variant)
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = series.sequence_name
    for keyword, value in series.timing:
        setattr(ds, keyword, value)
    ds.SliceThickness = f"{series.thickness_mm:.1f}"
    ds.SpacingBetweenSlices = f"{series.spacing_mm:.2f}"
    if frame.b_value is not None:
        add_b_value_tags(ds, frame.b_value, frame.b_tags)
    ds.InstanceNumber = frame.instance
    ds.ImagesInAcquisition = images
    rows, cols = frame.pixels.shape
    ds.ImagePositionPatient = _position(series, rows, frame.z_mm)
    ds.ImageOrientationPatient = ORIENTATION
    ds.SliceLocation = f"{frame.z_mm:.3f}"
    _pixel_module(ds, rows, cols)
    ds.PixelSpacing = [f"{series.pixel_mm:.6f}", f"{series.pixel_mm:.6f}"]
    ds.WindowCenter = f"{frame.window[0]:.0f}"
    ds.WindowWidth = f"{max(1.0, frame.window[1]):.0f}"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.PixelData = frame.pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return sop


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _frame_type(image_type: tuple[str, ...]) -> list[str]:
    """FrameType / enhanced ImageType: value 1 ORIGINAL or DERIVED, 2 PRIMARY, 3-4 as given."""
    values = list(image_type[:4])
    return values + ["NONE"] * (4 - len(values))


def write_enhanced(  # noqa: PLR0915 (one DICOM attribute per line reads best)
    path: Path, study: StudyInfo, series: SeriesInfo, frames: list[Frame]
) -> UID:
    """One Enhanced MR Image Storage file holding every frame of the series; returns its UID.

    Per-frame functional groups: FrameContent (stack 1, in-stack position = the slice's rank
    from the feet up, dimension index values), PlanePosition (ImagePositionPatient), FrameVOILUT
    and, for frames with a b-value, MRDiffusion (DiffusionBValue, DiffusionDirectionality NONE
    for b = 0, ISOTROPIC for the trace image). Shared: PixelMeasures, PlaneOrientation,
    PixelValueTransformation; MRImageFrameType per frame (b0 ORIGINAL, trace DERIVED), so the
    file's ImageType says MIXED where its frames differ. The dimensions are the b-value (DWI)
    and the in-stack position.
    """
    sop = sop_uid(study, series, 0)
    ds = _base(study, series, EnhancedMRImageStorage, sop)
    frame_types = [_frame_type(f.image_type or series.image_type) for f in frames]
    image_type = [
        values.pop() if len(values) == 1 else "MIXED"
        for values in ({t[i] for t in frame_types} for i in range(4))
    ]
    ds.ImageType = image_type
    ds.InstanceNumber = 1
    ds.AcquisitionDateTime = f"{study.study_date}{study.study_time}"
    ds.ContentQualification = "RESEARCH"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "DIFFUSION" if series.kind in ("dwi", "adc") else "UNKNOWN"
    ds.MRAcquisitionType = "2D"
    ds.PulseSequenceName = series.sequence_name
    ds.EchoPulseSequence = "SPIN"
    ds.MultipleSpinEcho = "NO"
    ds.PhaseContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "YES" if "EP" in series.scanning_sequence else "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.NumberOfKSpaceTrajectories = 1
    ds.CoverageOfKSpace = "FULL"
    ds.ResonantNucleus = "1H"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.ImagesInAcquisition = len(frames)
    for keyword, value in series.timing:
        if keyword == "InversionTime":
            ds.InversionTimes = [float(value)]
    diffusion = any(f.b_value is not None for f in frames)
    positions = sorted({round(f.z_mm, 3) for f in frames})
    b_values = sorted({f.b_value for f in frames if f.b_value is not None})
    organisation = uid(study.seed, study.case_id, "dimensions", series.kind)
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=organisation)])
    dimensions = []
    if diffusion:
        dimensions.append(
            _item(
                DimensionOrganizationUID=organisation,
                DimensionIndexPointer=DIFFUSION_BVALUE_TAG,
                FunctionalGroupPointer=MR_DIFFUSION_SEQUENCE_TAG,
                DimensionDescriptionLabel="b-value",
            )
        )
    dimensions.append(
        _item(
            DimensionOrganizationUID=organisation,
            DimensionIndexPointer=IN_STACK_POSITION_TAG,
            FunctionalGroupPointer=FRAME_CONTENT_SEQUENCE_TAG,
            DimensionDescriptionLabel="In-stack position",
        )
    )
    ds.DimensionIndexSequence = Sequence(dimensions)
    shared = _item(
        PixelMeasuresSequence=Sequence(
            [
                _item(
                    PixelSpacing=[f"{series.pixel_mm:.6f}", f"{series.pixel_mm:.6f}"],
                    SliceThickness=f"{series.thickness_mm:.1f}",
                    SpacingBetweenSlices=f"{series.spacing_mm:.2f}",
                )
            ]
        ),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=ORIENTATION)]),
        PixelValueTransformationSequence=Sequence(
            [_item(RescaleIntercept="0", RescaleSlope="1", RescaleType="US")]
        ),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    rows, cols = frames[0].pixels.shape
    per_frame = []
    for frame, frame_type in zip(frames, frame_types, strict=True):
        in_stack = positions.index(round(frame.z_mm, 3)) + 1
        index_values = [in_stack]
        if frame.b_value is not None:
            index_values.insert(0, b_values.index(frame.b_value) + 1)
        item = _item(
            FrameContentSequence=Sequence(
                [
                    _item(
                        StackID="1",
                        InStackPositionNumber=in_stack,
                        DimensionIndexValues=index_values,
                        FrameAcquisitionNumber=frame.instance,
                    )
                ]
            ),
            PlanePositionSequence=Sequence(
                [_item(ImagePositionPatient=_position(series, rows, frame.z_mm))]
            ),
            FrameVOILUTSequence=Sequence(
                [
                    _item(
                        WindowCenter=f"{frame.window[0]:.0f}",
                        WindowWidth=f"{max(1.0, frame.window[1]):.0f}",
                    )
                ]
            ),
            MRImageFrameTypeSequence=Sequence(
                [
                    _item(
                        FrameType=frame_type,
                        PixelPresentation="MONOCHROME",
                        VolumetricProperties="VOLUME",
                        VolumeBasedCalculationTechnique="NONE",
                        ComplexImageComponent="MAGNITUDE",
                        AcquisitionContrast=ds.AcquisitionContrast,
                    )
                ]
            ),
        )
        if frame.b_value is not None:
            item.MRDiffusionSequence = Sequence(
                [
                    _item(
                        DiffusionBValue=float(frame.b_value),
                        DiffusionDirectionality="NONE" if frame.b_value == 0 else "ISOTROPIC",
                    )
                ]
            )
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = len(frames)
    _pixel_module(ds, rows, cols)
    ds.PixelData = np.stack([f.pixels for f in frames]).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return sop
