"""The DICOM Segmentation (SEG) of one series' lesion maps: one binary segment, "Acute infarct".

`lesion_segmentation` takes the series' source DICOM datasets (single-frame MR images of one
series, one frame of reference), the lesion mask of each (a bool array at the source's matrix,
or the ``<reports>/lesions/<stem>_mask.png`` file the daemon writes: 8-bit, 0/255; any
non-zero pixel is lesion, so the synthetic generator's label maps read too) and the series
report, and returns a highdicom ``Segmentation``, or None when no mask has a lesion pixel (a SEG
must hold at least one segment, and a segment without a pixel says nothing):

* one segment, labelled "Acute infarct": category SNOMED CT "Morphologically abnormal structure",
  type "Infarct", anatomic region "Brain", algorithm type AUTOMATIC, the algorithm identified
  (name ``infarctwatch``, version the model's ``name version``, family "Artificial
  Intelligence", parameters the bundle's sha256 and the infarctwatch version);
* **empty frames are omitted** (highdicom's default): a frame for every source slice with at
  least one lesion pixel, each naming its source instance (per-frame Derivation Image Sequence)
  and its plane position; the Referenced Series Sequence still names every source instance of
  the series, so a viewer knows which slices were examined and found empty. Kept, the empty
  frames would only add bytes (a 20-slice series with lesions on 3 gets 3 frames, not 20);
* the same Study Instance UID and frame of reference as the source, so the PACS files it with
  the study and a viewer overlays it on the series. highdicom copies the patient and study
  modules of the first source; of the patient attributes only name, ID (and its issuer and
  type), birth date and sex are kept (what a PACS matches a result to its patient with), the
  rest of group 0x0010 (age, size, weight, comments, other IDs, address...) and the admitting
  diagnoses are removed; a first source without the type 2 patient and study attributes
  highdicom reads (an accession number, a study ID...) lends a copy of itself with them empty;
* a new series (number: the source's + `SERIES_NUMBER_OFFSET`) whose UID derives from the source
  series and the model's sha256, and an instance UID that also derives from the masks and the
  source instances: the same result written again is the same object (a PACS keeps one copy),
  a changed one (a late slice, another model) is another object;
* ``SeriesDescription`` and ``ContentDescription`` say research use only; Explicit VR Little
  Endian.

Importing this module does not import highdicom (the functions do): import it where DICOM
results are configured and nothing is paid elsewhere.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from daemon import GENERATOR
from daemon.outbox import lesion_codes
from daemon.scan.report import VERSION

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import numpy.typing as npt
    import pydicom
    from highdicom.seg import Segmentation

SERIES_NUMBER_OFFSET = 2000
"""The SEG's series number is the source's plus this (captures: +1000, the SR: +3000)."""
SERIES_DESCRIPTION = "infarctwatch lesion map - RESEARCH USE ONLY"
CONTENT_DESCRIPTION = "Research use only. Not for diagnostic use."
CONTENT_LABEL = "INFARCT"
SEGMENT_LABEL = "Acute infarct"
SEGMENT_NUMBER = 1

_KEPT_PATIENT_TAGS = frozenset(
    {
        0x00100010,  # PatientName
        0x00100020,  # PatientID
        0x00100021,  # IssuerOfPatientID
        0x00100022,  # TypeOfPatientID
        0x00100024,  # IssuerOfPatientIDQualifiersSequence
        0x00100030,  # PatientBirthDate
        0x00100040,  # PatientSex
    }
)
_ADMITTING_DIAGNOSES = (0x00081080, 0x00081084)
_STUDY_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)
"""Type 2 patient and study attributes highdicom reads from the first source (and must find)."""


class LesionResultError(ValueError):
    """The sources, masks or report cannot make a DICOM lesion result (see the message)."""


@dataclass(frozen=True)
class ModelIdentity:
    """The model that made the maps, as the series report names it."""

    name: str
    version: str
    sha256: str

    @property
    def algorithm_version(self) -> str:
        """``name version``: the algorithm version of the SEG and SR."""
        return f"{self.name} {self.version}"


def model_identity(report: dict[str, Any]) -> ModelIdentity:
    """The model a series report names.

    ``model``: ``name``, ``version`` and ``sha256`` (``bundle_sha256`` in image reports).

    Raises:
        LesionResultError: the report names no model.
    """
    model = report.get("model")
    if not isinstance(model, dict):
        raise LesionResultError("the series report names no model")
    name, version = model.get("name"), model.get("version")
    sha = model.get("sha256") or model.get("bundle_sha256")
    if not (isinstance(name, str) and isinstance(version, str) and isinstance(sha, str)):
        raise LesionResultError("the series report's model lacks a name, version or sha256")
    return ModelIdentity(name, version, sha)


def check_sources(sources: Sequence[pydicom.Dataset]) -> None:
    """Refuse sources that cannot carry a lesion map.

    None at all, a multi-frame image, another series, study or frame of reference than the
    first's, a SOP Instance UID twice, no plane geometry.

    Raises:
        LesionResultError: naming the first problem (never a patient attribute).
    """
    if not sources:
        raise LesionResultError("no source images")
    first = sources[0]
    seen: set[str] = set()
    for index, source in enumerate(sources):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            value = source.get(keyword)
            if not value:
                raise LesionResultError(f"source {index} has no {keyword}")
            if value != first.get(keyword):
                raise LesionResultError(f"source {index} has another {keyword} than source 0")
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if source.get(keyword) is None:
                raise LesionResultError(f"source {index} has no {keyword}")
        if int(source.get("NumberOfFrames") or 1) != 1:
            raise LesionResultError(f"source {index} is a multi-frame image")
        uid = str(source.get("SOPInstanceUID") or "")
        if not uid or uid in seen:
            raise LesionResultError(f"source {index} has no SOPInstanceUID, or a repeated one")
        seen.add(uid)


def read_mask(path: Path) -> npt.NDArray[np.bool_]:
    """A lesion mask PNG (8-bit grey) as a bool array: True where not 0.

    The daemon's masks are 0/255; the synthetic generator's are label maps (0, then the lesion's
    number): both read the same.

    Raises:
        LesionResultError: not an 8-bit grey image.
    """
    with Image.open(path) as image:
        if image.mode != "L":
            raise LesionResultError(f"{path.name}: a mask is 8-bit grey, not {image.mode}")
        pixels = np.asarray(image)
    mask: npt.NDArray[np.bool_] = pixels > 0
    return mask


def stack_masks(
    sources: Sequence[pydicom.Dataset], masks: Sequence[npt.NDArray[Any] | Path]
) -> npt.NDArray[np.bool_]:
    """The masks, arrays or PNG files, as one (slices, rows, columns) bool array.

    Raises:
        LesionResultError: not one mask per source, or a mask at another matrix than its source.
    """
    if len(masks) != len(sources):
        raise LesionResultError(f"{len(masks)} masks for {len(sources)} source images")
    planes = []
    for index, (source, mask) in enumerate(zip(sources, masks, strict=True)):
        plane = mask.astype(np.bool_) if isinstance(mask, np.ndarray) else read_mask(mask)
        matrix = (int(source.Rows), int(source.Columns))
        if plane.shape != matrix:
            raise LesionResultError(f"mask {index} is {plane.shape}, its source {matrix}")
        planes.append(plane)
    stacked: npt.NDArray[np.bool_] = np.stack(planes)
    return stacked


def with_study_attributes(source: pydicom.Dataset) -> pydicom.Dataset:
    """``source``, or a copy with empty values for the type 2 patient and study attributes it lacks.

    highdicom reads them from the first source; files without an accession number or study ID
    are common.
    """
    missing = [keyword for keyword in _STUDY_TYPE_2 if keyword not in source]
    if not missing:
        return source
    head = copy.deepcopy(source)
    for keyword in missing:
        setattr(head, keyword, None)
    return head


def keep_identity_minimal(dataset: pydicom.Dataset) -> None:
    """Remove the patient attributes a result does not need to be filed with its patient.

    Kept: name, ID, its issuer and type, birth date, sex. Removed: the rest of group 0x0010
    (age, size, weight, comments, other IDs, address, ethnic group...) and the admitting
    diagnoses.
    """
    for element in list(dataset):
        tag = int(element.tag)
        if (tag >> 16 == 0x0010 and tag not in _KEPT_PATIENT_TAGS) or tag in _ADMITTING_DIAGNOSES:
            del dataset[element.tag]


def _instance_entropy(sources: Sequence[pydicom.Dataset], planes: npt.NDArray[np.bool_]) -> str:
    digest = hashlib.sha256()
    for uid in sorted(str(source.SOPInstanceUID) for source in sources):
        digest.update(uid.encode("ascii") + b"\0")
    digest.update(np.packbits(planes).tobytes())
    return digest.hexdigest()


def lesion_segmentation(
    sources: Sequence[pydicom.Dataset],
    masks: Sequence[npt.NDArray[Any] | Path],
    report: dict[str, Any],
) -> Segmentation | None:
    """The binary SEG of the lesion masks of one series; None when no mask has a lesion.

    ``masks[i]`` is the mask of ``sources[i]``: a bool array at its matrix, or the path of its
    mask PNG. ``report`` is the series report (its ``model`` is read).

    Raises:
        LesionResultError: sources that cannot carry a map, masks that do not fit them, or a
            report without a model.
    """
    import highdicom as hd  # noqa: PLC0415 - heavy, and needed only with DICOM results
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: PLC0415

    check_sources(sources)
    planes = stack_masks(sources, masks)
    model = model_identity(report)
    if not planes.any():
        return None
    first = sources[0]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=GENERATOR,
        family=lesion_codes.ARTIFICIAL_INTELLIGENCE,
        version=model.algorithm_version[:64],
        source=GENERATOR,
        parameters={"bundle_sha256": model.sha256, "infarctwatch": VERSION},
    )
    segment = hd.seg.SegmentDescription(
        segment_number=SEGMENT_NUMBER,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=lesion_codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=lesion_codes.INFARCT,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[lesion_codes.BRAIN],
    )
    source_series = str(first.SeriesInstanceUID)
    series_uid = generate_uid(entropy_srcs=[source_series, model.sha256, "infarctwatch-seg-series"])
    sop_uid = generate_uid(
        entropy_srcs=[source_series, model.sha256, _instance_entropy(sources, planes), "seg"]
    )
    segmentation = hd.seg.Segmentation(
        source_images=[with_study_attributes(first), *sources[1:]],
        pixel_array=planes,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=series_uid,
        series_number=int(first.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=GENERATOR,
        manufacturer_model_name=model.name[:64],
        software_versions=VERSION,
        device_serial_number=model.sha256[:64],
        content_description=CONTENT_DESCRIPTION,
        content_label=CONTENT_LABEL,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        omit_empty_frames=True,
        series_description=SERIES_DESCRIPTION,
    )
    keep_identity_minimal(segmentation)
    return segmentation


def source_frames(segmentation: pydicom.Dataset) -> dict[str, list[int]]:
    """For each source SOP Instance UID, the SEG frames (1-based) derived from it."""
    frames: dict[str, list[int]] = {}
    for number, item in enumerate(segmentation.PerFrameFunctionalGroupsSequence, start=1):
        for derivation in item.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                frames.setdefault(str(source.ReferencedSOPInstanceUID), []).append(number)
    return frames
