"""Out-of-scope images: everything the service must refuse, as it is not a DWI b1000 brain slice.

Written by ``infarctwatch synth OUT --out-of-scope N`` as a dataset of its own, one folder per
kind (N images each). Kinds, their DICOM headers and the refusal a reader should give (DICOM
headers first; PNG and JPEG only from the pixels, ``OUT_OF_SCOPE_IMAGE``):

* ``t1``: T1 spin echo of the same anatomy; MR, ScanningSequence SE, 'T1 SE AX'; NOT_DWI;
* ``t2``: T2 turbo spin echo; MR, SE, 'T2 TSE AX'; NOT_DWI;
* ``flair``: T2 FLAIR; MR, SE + IR, InversionTime, 'T2 FLAIR AX'; NOT_DWI;
* ``adc``: the ADC map of a DWI series; MR, ImageType DERIVED/PRIMARY/DIFFUSION/ADC; NOT_DWI;
* ``b0``: the b0 image of a DWI series; MR, b-value 0 in the standard and/or a vendor's private
  tag; NOT_B1000;
* ``ct_brain``, ``ct_bone``: head CT, brain and bone windows; CT Image Storage, Modality CT;
  NOT_MR;
* ``photo``, ``document``, ``noise``, ``blank``, ``ruler`` (`trainer.synth.pictures`):
  Secondary Capture, Modality OT; NOT_MR;
* ``ct_body``: a CT slice of the trunk (`trainer.synth.body`), soft-tissue or bone window; NOT_MR.

T1 images are skull-stripped in `STRIPPED_SHARE` of the images (the brain alone on black, as
research pipelines and atlases show it), and half of them are a 3-D gradient-echo T1 (MPRAGE-like:
strong white-grey contrast) rather than a spin echo (`trainer.synth.contrasts`). T2 and FLAIR keep
their head: a skull-stripped FLAIR (dark CSF, grey matter a little above white) looks like a
normal DWI b1000 slice (docs/synth.md).

The anatomy, head, acquisition ranges (matrix, pixel size, slab, SNR, bias, rotation) and
formats follow the run's profile and ``--formats``, exactly as for DWI cases; the contrasts come
from `trainer.synth.contrasts`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from pydicom.uid import (
    UID,
    CTImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)

from trainer.synth import body, contrasts, pictures, render, signal
from trainer.synth.cases import allocate_formats
from trainer.synth.display import resize, to_uint8
from trainer.synth.geometry import BRAIN_CENTRE_MNI, random_geometry
from trainer.synth.profiles import STREAM_SALT, TRAIN, Profile
from trainer.synth.screenshot import SITES, Annotation, write_screenshot
from trainer.synth.writers import EXTENSIONS, add_b_value_tags, new_dataset, uid, write_png

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image
    from pydicom.dataset import Dataset

    from trainer.synth.anatomy import Anatomy
    from trainer.synth.geometry import CaseGeometry

KINDS = {
    "t1": "mr",
    "t2": "mr",
    "flair": "mr",
    "adc": "mr",
    "b0": "mr",
    "ct_brain": "ct",
    "ct_bone": "ct",
    **dict.fromkeys(pictures.PICTURE_KINDS, "picture"),
    "ct_body": "ct",
}
"""Every out-of-scope kind and its group (mr, ct or picture)."""
DICOM_CODE = {"mr": "NOT_DWI", "ct": "NOT_MR", "picture": "NOT_MR"}
RASTER_CODE = "OUT_OF_SCOPE_IMAGE"
SEQUENCE_TEXT = {
    "t1": "T1 SE AX",
    "t2": "T2 TSE AX",
    "flair": "T2 FLAIR AX",
    "adc": "ADC",
    "b0": "DWI b0",
    "ct_brain": "CT HEAD brain",
    "ct_bone": "CT HEAD bone",
    "ct_body": "CT ABDOMEN",
}
STRIPPED_SHARE = 0.5
"""Share of the T1 images shown skull-stripped."""
_STREAM = 20


@dataclass(frozen=True)
class OutOfScopeRow:
    """One out-of-scope file."""

    file: str
    kind: str
    group: str
    """mr, ct or picture."""
    format: str
    expected_code: str
    """The refusal a reader of this file should give (issue 11: NOT_MR, NOT_DWI, NOT_B1000 from
    DICOM headers, OUT_OF_SCOPE_IMAGE from the pixels)."""
    image_id: str
    modality: str
    """DICOM Modality ('' for PNG and JPEG)."""
    b_value: str
    """DICOM b-value written ('' when none)."""
    b_value_tags: str
    matrix: int
    pixel_mm: float
    slice_mm: float
    snr: float
    profile: str

    @classmethod
    def columns(cls) -> list[str]:
        """CSV header, in field order."""
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class OutOfScopeJob:
    """One out-of-scope image to make."""

    kind: str
    index: int
    """Index within the kind (keys its random stream)."""
    number: int
    format: str
    seed: int
    out_dir: Path
    matrix: int | None
    profile: Profile = TRAIN

    @property
    def image_id(self) -> str:
        """``o`` + six digits, unique over the dataset."""
        return f"o{self.number:06d}"


def plan_out_of_scope(
    count: int,
    formats: tuple[tuple[str, float], ...],
    seed: int,
    out_dir: Path,
    *,
    matrix: int | None,
    profile: Profile,
) -> list[OutOfScopeJob]:
    """``count`` images of every kind, each kind with exact format quotas (see `--formats`)."""
    jobs = []
    for kind_index, kind in enumerate(KINDS):
        shares = allocate_formats(formats, count, seed * 1000 + kind_index)
        for index in range(count):
            number = kind_index * count + index
            jobs.append(
                OutOfScopeJob(kind, index, number, shares[index], seed, out_dir, matrix, profile)
            )
    return jobs


def _rng(job: OutOfScopeJob) -> np.random.Generator:
    kind_index = list(KINDS).index(job.kind)
    return np.random.default_rng(
        [*STREAM_SALT[job.profile.name], job.seed, _STREAM, kind_index, job.index]
    )


@dataclass(frozen=True)
class _Image:
    """A float image with what the writers need to know."""

    pixels: npt.NDArray[np.float32]
    """MR: signal; CT: HU; ADC: 1e-3 mm2/s."""
    black: float
    white: float
    pixel_mm: float
    thickness_mm: float
    z_scanner: float
    z_mni: float
    snr: float
    extra: dict[str, float]
    """Sequence timing (ms) for MR kinds."""


def _level(rng: np.random.Generator, anatomy: Anatomy, geometry: CaseGeometry) -> float:
    area = (anatomy.gm.astype(np.float32) + anatomy.wm).sum(axis=(0, 1))
    levels = np.flatnonzero(area >= 0.05 * area.max()) + anatomy.affine[2, 3]
    x, y, _ = BRAIN_CENTRE_MNI
    point = np.array([x, y, float(rng.uniform(levels.min(), levels.max()))])
    return float(geometry.to_scanner(point)[2])


def _anatomical(anatomy: Anatomy, job: OutOfScopeJob, rng: np.random.Generator) -> _Image:
    """T1, T2, FLAIR, CT, ADC or b0 of one slice of a random head."""
    geometry = random_geometry(rng, job.profile)
    scan = render.random_scan(rng, job.matrix, job.profile)
    z = _level(rng, anatomy, geometry)
    z_mni = float(geometry.to_mni(np.array([0.0, 0.0, z]))[2])
    common = {
        "pixel_mm": scan.pixel_mm,
        "thickness_mm": scan.thickness_mm,
        "z_scanner": z,
        "z_mni": z_mni,
        "snr": scan.snr,
    }
    if job.kind == "ct_body":
        hu, pixel_mm = body.trunk_ct(rng, scan.matrix)
        hu = signal.blur(hu, scan.blur_px)
        if rng.random() < 0.8:
            width, centre = float(rng.uniform(350, 450)), float(rng.uniform(30, 60))
        else:
            width, centre = float(rng.uniform(1500, 2500)), float(rng.uniform(300, 600))
        common["pixel_mm"] = pixel_mm
        return _Image(hu, centre - width / 2, centre + width / 2, extra={"kvp": 120.0}, **common)
    if job.kind in ("adc", "b0"):
        rendered = render.render_slice(anatomy, geometry, scan, (), z=z, rng=rng)
        if job.kind == "adc":
            white = float(rng.uniform(3.0, 4.0))
            return _Image(rendered.adc, 0.0, white, extra={}, **common)
        b0 = rendered.b0 if rendered.b0 is not None else rendered.b1000
        brain = b0[rendered.brain]
        level = float(np.median(brain)) if brain.size else 1.0
        return _Image(b0, 0.0, level * float(rng.uniform(1.5, 2.2)), extra={}, **common)
    gm, wm, csf = render.slab_fractions(anatomy, geometry, scan, z)
    head = job.kind != "t1" or rng.random() >= STRIPPED_SHARE
    maps = contrasts.head_maps(gm, wm, csf, scan.pixel_mm, rng, head=head)
    shape = gm.shape
    if job.kind.startswith("ct"):
        hu = contrasts.ct_image(maps, rng)
        hu = signal.blur(hu, scan.blur_px)
        hu = hu + rng.normal(0.0, rng.uniform(3.0, 8.0), shape).astype(np.float32)
        if job.kind == "ct_brain":
            width, centre = float(rng.uniform(70, 100)), float(rng.uniform(30, 45))
        else:
            width, centre = float(rng.uniform(1500, 2500)), float(rng.uniform(300, 600))
        return _Image(hu, centre - width / 2, centre + width / 2, extra={"kvp": 120.0}, **common)
    sequence = contrasts.random_sequence(rng, job.kind, contrasts.GRADIENT_ECHO_T1_SHARE)
    image = contrasts.mr_image(maps, sequence)
    image = signal.blur(image * signal.bias_field(shape, scan.bias), scan.blur_px)
    shown = image[image > 0.05 * float(image.max() or 1.0)]
    level = float(np.mean(shown)) if shown.size else 1.0
    image = signal.rician(image, level / scan.snr, rng)
    white = float(np.percentile(image, 99.5)) * float(rng.uniform(0.9, 1.2))
    timing = {"tr": sequence.tr, "te": sequence.te, "ti": sequence.ti}
    return _Image(image, 0.0, max(white, 1e-6), extra=timing, **common)


def _base_dataset(job: OutOfScopeJob, sop_class: UID, modality: str) -> Dataset:
    ds = new_dataset(sop_class, uid(job.seed, job.image_id, "oos-image"))
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20200101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.Modality = modality
    ds.Manufacturer = "infarctwatch synth"
    ds.StudyDescription = "SYNTHETIC (research use only)"
    ds.PatientName = f"SYNTHETIC^{job.image_id.upper()}"
    ds.PatientID = f"SYNTH-{job.image_id.upper()}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.StudyInstanceUID = uid(job.seed, job.image_id, "oos-study")
    ds.SeriesInstanceUID = uid(job.seed, job.image_id, "oos-series")
    ds.StudyID = "1"
    ds.SeriesNumber = 7
    ds.InstanceNumber = 1
    ds.ImageComments = "synthetic out-of-scope image made by infarctwatch synth; research use only"
    return ds


def _geometry_attributes(ds: Dataset, image: _Image, rows: int) -> None:
    spacing = image.pixel_mm
    half = (rows - 1) * spacing / 2.0
    ds.FrameOfReferenceUID = uid(ds.StudyInstanceUID, "frame")
    ds.ImagePositionPatient = [f"{-half:.3f}", f"{-half:.3f}", f"{image.z_scanner:.3f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{image.z_scanner:.3f}"
    ds.SliceThickness = f"{image.thickness_mm:.1f}"
    ds.PixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
    ds.BodyPartExamined = "HEAD"


def _pixels16(ds: Dataset, pixels: npt.NDArray[np.uint16]) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()


def _mr_attributes(ds: Dataset, job: OutOfScopeJob, image: _Image, rng: np.random.Generator) -> str:
    """Sequence attributes of an MR kind; returns the b-value tags written (';'-joined)."""
    ds.MRAcquisitionType = "2D"
    ds.MagneticFieldStrength = "1.5"
    kind = job.kind
    if kind == "t1" and image.extra.get("ti"):
        ds.MRAcquisitionType = "3D"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant = ["GR", "IR"], ["SP", "MP"]
        ds.SequenceName = "*tfl3d1"
        ds.InversionTime = f"{image.extra['ti']:.0f}"
        ds.SeriesDescription = "T1 MPRAGE AX (synthetic)"
    elif kind == "t1":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant, ds.SequenceName = "SE", "SP", "*se2d1"
        ds.SeriesDescription = "T1 SE AX (synthetic)"
    elif kind == "t2":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant = "SE", ["SK", "SP"]
        ds.SequenceName = "*tse2d1_15"
        ds.EchoTrainLength = 15
        ds.SeriesDescription = "T2 TSE AX (synthetic)"
    elif kind == "flair":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant = ["SE", "IR"], ["SK", "SP", "MP"]
        ds.SequenceName = "*tir2d1_16"
        ds.InversionTime = f"{image.extra['ti']:.0f}"
        ds.SeriesDescription = "T2 FLAIR AX (synthetic)"
    elif kind == "adc":
        ds.ImageType = ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]
        ds.ScanningSequence, ds.SequenceVariant, ds.SequenceName = "EP", "SK", "*ep_b0_1000"
        ds.SeriesDescription = "ep2d_diff_ADC (synthetic)"
    else:  # b0
        ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]
        ds.ScanningSequence, ds.SequenceVariant, ds.SequenceName = "EP", "SK", "*ep_b0"
        ds.SeriesDescription = "ep2d_diff_trace (synthetic)"
        roll = rng.random()
        vendor = ("siemens", "ge", "ge1e9", "philips")[int(rng.integers(4))]
        tags = ("standard",) if roll < 0.4 else ("standard", vendor) if roll < 0.7 else (vendor,)
        add_b_value_tags(ds, 0.0, tags)
        return ";".join(tags)
    if "tr" in image.extra:
        ds.RepetitionTime = f"{image.extra['tr']:.0f}"
        ds.EchoTime = f"{image.extra['te']:.0f}"
    return ""


def _write_dicom(  # noqa: PLR0915 (one DICOM attribute per line reads best)
    path: Path,
    job: OutOfScopeJob,
    image: _Image | None,
    picture: Image.Image | None,
    rng: np.random.Generator,
) -> tuple[str, str, str]:
    """Write the DICOM file; returns (Modality, b-value, b-value tags)."""
    group = KINDS[job.kind]
    if picture is not None:
        ds = _base_dataset(job, SecondaryCaptureImageStorage, "OT")
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ConversionType = "WSD"
        ds.SeriesDescription = f"{job.kind} (synthetic)"
        pixels = np.asarray(picture)
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        if pixels.ndim == 3:
            ds.SamplesPerPixel = 3
            ds.PhotometricInterpretation = "RGB"
            ds.PlanarConfiguration = 0
        else:
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
        ds.save_as(path, enforce_file_format=True)
        return "OT", "", ""
    assert image is not None  # noqa: S101 (the caller passes one of the two)
    rows = image.pixels.shape[0]
    b_value, tags = "", ""
    if group == "ct":
        ds = _base_dataset(job, CTImageStorage, "CT")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesDescription = f"{SEQUENCE_TEXT[job.kind]} (synthetic)"
        ds.KVP = "120"
        ds.ConvolutionKernel = "H70h" if job.kind == "ct_bone" else "H30s"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        stored = np.clip(np.rint(image.pixels + 1024.0), 0, 65535).astype(np.uint16)
        ds.WindowCenter = f"{(image.black + image.white) / 2:.0f}"
        ds.WindowWidth = f"{image.white - image.black:.0f}"
        modality = "CT"
    else:
        ds = _base_dataset(job, MRImageStorage, "MR")
        tags = _mr_attributes(ds, job, image, rng)
        if job.kind == "b0":
            b_value = "0"
        if job.kind == "adc":  # 1e-6 mm2/s, the scanners' convention
            scale = 1000.0
        else:
            scale = float(rng.uniform(300.0, 3000.0)) / max(image.white, 1e-6)
        stored = np.clip(np.rint(image.pixels * scale), 0, 65535).astype(np.uint16)
        ds.WindowCenter = f"{(image.black + image.white) / 2 * scale:.0f}"
        ds.WindowWidth = f"{max(1.0, (image.white - image.black) * scale):.0f}"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        modality = "MR"
    _geometry_attributes(ds, image, rows)
    ds.BurnedInAnnotation = "NO"
    _pixels16(ds, stored)
    ds.save_as(path, enforce_file_format=True)
    return modality, b_value, tags


def make_out_of_scope(anatomy: Anatomy, job: OutOfScopeJob) -> OutOfScopeRow:
    """Render and write one out-of-scope image."""
    rng = _rng(job)
    group = KINDS[job.kind]
    folder = job.out_dir / job.kind
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{job.image_id}_{job.kind}.{EXTENSIONS[job.format]}"
    path = folder / name
    image: _Image | None = None
    picture: Image.Image | None = None
    if group == "picture":
        picture = pictures.picture(job.kind, rng, int(rng.integers(128, 641)))
        matrix, pixel_mm, slice_mm, snr = picture.size[0], 0.0, 0.0, 0.0
    else:
        image = _anatomical(anatomy, job, rng)
        matrix = image.pixels.shape[0]
        pixel_mm, slice_mm, snr = image.pixel_mm, image.z_mni, image.snr
        if job.kind == "ct_body":  # a trunk: no head level, no MR noise
            slice_mm, snr = 0.0, 0.0
    modality, b_value, tags = "", "", ""
    if job.format == "dicom":
        modality, b_value, tags = _write_dicom(path, job, image, picture, rng)
        code = "NOT_B1000" if job.kind == "b0" else DICOM_CODE[group]
    else:
        code = RASTER_CODE
        if picture is None:
            assert image is not None  # noqa: S101 (one of the two is set)
            display = job.profile
            shown = resize(image.pixels, _display_matrix(rng, display, matrix))
            eight = to_uint8(shown, image.black, image.white)
            if job.format == "jpeg":
                note = Annotation(
                    site=SITES[int(rng.integers(len(SITES)))],
                    case_id=job.image_id,
                    study_date="2020-01-01",
                    study_time="12:00",
                    series=7,
                    image=1,
                    images=1,
                    slice_location_mm=image.z_scanner,
                    thickness_mm=image.thickness_mm,
                    window=(
                        round((image.black + image.white) / 2),
                        round(image.white - image.black),
                    ),
                    sequence=SEQUENCE_TEXT[job.kind],
                )
                write_screenshot(path, eight, note, rng, profile=job.profile)
            else:
                write_png(path, eight)
        elif job.format == "jpeg":
            picture.convert("RGB").save(path, format="JPEG", quality=int(rng.integers(60, 96)))
        else:
            picture.save(path, format="PNG", compress_level=1)
    return OutOfScopeRow(
        file=f"{job.kind}/{name}",
        kind=job.kind,
        group=group,
        format=job.format,
        expected_code=code,
        image_id=job.image_id,
        modality=modality,
        b_value=b_value,
        b_value_tags=tags,
        matrix=matrix,
        pixel_mm=round(pixel_mm, 4),
        slice_mm=round(slice_mm, 2),
        snr=round(snr, 1),
        profile=job.profile.name,
    )


def _display_matrix(rng: np.random.Generator, profile: Profile, matrix: int) -> int:
    if rng.random() >= profile.interpolate_share:
        return matrix
    return min(profile.display_max, 2 * matrix)
