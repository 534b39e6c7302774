r"""``--series``: per case a DWI study as a scanner sends it, and its truth.

A case is designed as for single slices (`cases.design_case`, one slice: the position that shows
every lesion clearly), then a stack of axial slabs is laid through the head on a regular grid
that contains that position: thickness from the profile (3-7 mm in ``train``), a gap of 0, 10,
20 or 30 % of it (SpacingBetweenSlices = thickness + gap), as many positions as cover the brain
(every level where its axial area is >= 5 % of the largest) or, with ``SeriesSpec.slices`` = N,
N consecutive positions holding that slice, centred as near as it allows on the lesions'
middle (`window_positions`). Every position is rendered once; its b0, b1000 and
ADC images and its lesion mask come from that one rendering, so a lesion shows on exactly the
slices it spans in 3-D.

Series of a study (one StudyInstanceUID and FrameOfReferenceUID; `dicom_series`):

* DWI (SeriesNumber 5): b0 and b1000 images of every position in one series. Instance order
  (drawn per study): ``by_b`` (all b0 images, then all b1000) or ``by_slice`` (b0 and b1000 of
  one position, then the next), positions from the feet up or from the head down. b1000 images
  ImageType ``DERIVED\PRIMARY\DIFFUSION\TRACEW``, b0 ``ORIGINAL\PRIMARY\DIFFUSION\NONE``; the
  b-value in DiffusionBValue and/or a vendor's private tag (`writers.random_b_tags`); one
  pixel scaling for the whole series (b0 and b1000 comparable, as ADC needs).
* ADC (SeriesNumber 6): the ADC map of every position, 1e-6 mm2/s, ImageType
  ``DERIVED\PRIMARY\DIFFUSION\ADC``, same geometry.
* optionally T1 spin echo (2) or FLAIR (3) at the same positions (`contrasts`): the lesion is
  not drawn on them (an acute infarct of a few hours barely shows there).

Classic files are ``dwi/s01_b0.dcm``, ``dwi/s01_b1000.dcm``, ``adc/s01_adc.dcm``,
``t1/s01_t1.dcm`` (``s01`` = the lowest position); with ``multiframe``, one Enhanced MR file
per series (``dwi/dwi.dcm``, frames in instance order). The lesion mask of each position is
``dwi/s01_mask.png`` (`writers.lesion_labels`), beside its images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from trainer.synth import contrasts, render, signal
from trainer.synth.cases import (
    NORMAL_AREA_FRACTION,
    CaseResult,
    case_rng,
    design_case,
    study_stamp,
)
from trainer.synth.dicom_series import (
    Frame,
    SeriesInfo,
    StudyInfo,
    sop_uid,
    write_classic,
    write_enhanced,
)
from trainer.synth.display import Display, random_display, resize, window
from trainer.synth.geometry import BRAIN_CENTRE_MNI
from trainer.synth.manifest import ManifestRow
from trainer.synth.writers import adc_uint16, lesion_labels, random_b_tags, write_png

if TYPE_CHECKING:
    from trainer.synth.anatomy import Anatomy
    from trainer.synth.cases import CaseDesign, Job
    from trainer.synth.geometry import CaseGeometry
    from trainer.synth.lesions import Lesion
    from trainer.synth.options import SeriesSpec

GAP_SHARES = (0.0, 0.1, 0.2, 0.3)
"""Gap between slabs as a share of the thickness (drawn per study)."""
INSTANCE_ORDERS = ("by_b", "by_slice")
DWI_NUMBER, ADC_NUMBER = 5, 6
STRUCTURAL_NUMBER = {"t1": 2, "flair": 3}
STRUCTURAL_KINDS = ("t1", "flair")
B0_IMAGE_TYPE = ("ORIGINAL", "PRIMARY", "DIFFUSION", "NONE")
_STREAM_WRITER = 2
"""The single-slice case's writer stream: the same date, site, display and b-value tags."""
_STREAM_LAYOUT, _STREAM_STRUCTURAL, _STREAM_SLAB_NOISE, _STREAM_STRUCTURAL_NOISE = 5, 6, 11, 12
_VOLUME_STEP_MM = 1.0


def window_positions(
    *, anchor: float, spacing: float, count: int, centre: float | None = None
) -> list[float]:
    """``count`` grid positions (``anchor`` + k x ``spacing``) holding ``anchor``.

    Their middle is as near ``centre`` as that allows; without ``centre`` they lie around
    ``anchor``, one more below than above when ``count`` is even.
    """
    if centre is None:
        first = -((count - 1) // 2) - (1 - count % 2)
    else:
        first = min(
            range(-(count - 1), 1),
            key=lambda f: (abs(anchor + (f + (count - 1) / 2) * spacing - centre), -f),
        )
    return [anchor + (first + k) * spacing for k in range(count)]


def slice_grid(
    anatomy: Anatomy,
    geometry: CaseGeometry,
    *,
    anchor: float,
    spacing: float,
    count: int,
    centre: float | None = None,
) -> list[float]:
    """Slab centres (scanner z, ascending) every ``spacing`` mm through ``anchor``.

    ``count`` 0: every position within half a spacing of the brain's axial extent (levels whose
    brain area is >= `NORMAL_AREA_FRACTION` of the largest), ``anchor`` always among them; else
    the ``count`` consecutive positions holding ``anchor`` whose middle is nearest ``centre``
    (the lesions' middle; None: around ``anchor``, one more below than above when ``count`` is
    even).
    """
    if count:
        return window_positions(anchor=anchor, spacing=spacing, count=count, centre=centre)
    area = (anatomy.gm.astype(np.float32) + anatomy.wm).sum(axis=(0, 1))
    levels = np.flatnonzero(area >= NORMAL_AREA_FRACTION * area.max()) + anatomy.affine[2, 3]
    x, y, _ = BRAIN_CENTRE_MNI
    ends = np.array([[x, y, float(levels.min())], [x, y, float(levels.max())]])
    low, high = sorted(float(z) for z in geometry.to_scanner(ends)[:, 2])
    below = max(0, math.floor((anchor - low) / spacing + 0.5))
    above = max(0, math.floor((high - anchor) / spacing + 0.5))
    return [anchor + k * spacing for k in range(-below, above + 1)]


def physical_volume_ml(anatomy: Anatomy, geometry: CaseGeometry, lesion: Lesion) -> float:
    """The lesion's volume in the patient (scanner mm), integrated on a 1 mm scanner grid.

    The lesion is grown in MNI mm; the head's size and elastic warp change its volume in the
    patient, so the fraction is sampled through the case's mapping.
    """
    voxels = np.argwhere(lesion.fraction > 0) + lesion.origin
    points = geometry.to_scanner(anatomy.voxel_to_world(voxels))
    low = np.floor(points.min(axis=0)) - 2.0
    high = np.ceil(points.max(axis=0)) + 2.0
    axes = [
        np.arange(a, b + _VOLUME_STEP_MM, _VOLUME_STEP_MM) for a, b in zip(low, high, strict=True)
    ]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    mapped = anatomy.world_to_voxel(geometry.to_mni(grid))
    fraction = render.sample_lesions((lesion,), mapped)[0]
    return float(fraction.sum()) * _VOLUME_STEP_MM**3 / 1000.0


def _instances(count: int, order: str, *, descending: bool) -> dict[str, list[int]]:
    """InstanceNumber of the b0, b1000 and ADC image of every position (ascending z)."""
    ranks = list(range(count))[::-1] if descending else list(range(count))
    at = {position: rank for rank, position in enumerate(ranks)}
    if order == "by_b":
        b0 = [at[p] + 1 for p in range(count)]
        b1000 = [count + at[p] + 1 for p in range(count)]
    else:
        b0 = [2 * at[p] + 1 for p in range(count)]
        b1000 = [2 * at[p] + 2 for p in range(count)]
    return {"b0": b0, "b1000": b1000, "adc": [at[p] + 1 for p in range(count)]}


def _to_u16(image: npt.NDArray[np.float32], scale: float) -> npt.NDArray[np.uint16]:
    return np.asarray(np.clip(np.rint(image * scale), 0, 65535), dtype=np.uint16)


def _brain_median(
    images: list[npt.NDArray[np.float32]], masks: list[npt.NDArray[np.bool_]]
) -> float:
    values = np.concatenate([image[mask] for image, mask in zip(images, masks, strict=True)])
    return float(np.median(values)) if values.size else 1.0


def _structural(
    anatomy: Anatomy,
    job: Job,
    design: CaseDesign,
    positions: list[float],
    kind: str,
) -> tuple[list[npt.NDArray[np.float32]], contrasts.Sequence]:
    """T1 or FLAIR images of every position (float, noise at the case's SNR)."""
    rng = case_rng(job, _STREAM_STRUCTURAL)
    sequence = contrasts.random_sequence(rng, kind)
    head_seed = int(rng.integers(2**32))
    scan = design.scan
    clean = []
    for z in positions:
        gm, wm, csf = render.slab_fractions(anatomy, design.geometry, scan, z)
        maps = contrasts.head_maps(gm, wm, csf, scan.pixel_mm, np.random.default_rng(head_seed))
        image = contrasts.mr_image(maps, sequence)
        clean.append(signal.blur(image * signal.bias_field(image.shape, scan.bias), scan.blur_px))
    head = np.concatenate([image[image > 0.05 * float(image.max() or 1.0)] for image in clean])
    sigma = (float(np.mean(head)) if head.size else 1.0) / scan.snr
    images = [
        signal.rician(image, sigma, case_rng(job, _STREAM_STRUCTURAL_NOISE, index))
        for index, image in enumerate(clean, start=1)
    ]
    return images, sequence


@dataclass(frozen=True)
class _Study:
    """A designed and rendered study: everything the writers, the truth and the manifest need."""

    job: Job
    spec: SeriesSpec
    design: CaseDesign
    info: StudyInfo
    display: Display
    b_tags: tuple[str, ...]
    order: str
    descending: bool
    structural: str
    spacing: float
    positions: list[float]
    slabs: list[render.RenderedSlice]
    scale: float
    """Stored value per unit of b-image signal (one scaling for b0 and b1000)."""
    layout: np.random.Generator

    @property
    def count(self) -> int:
        """Slice positions."""
        return len(self.positions)

    @property
    def pixel_mm(self) -> float:
        """PixelSpacing of the written images (display matrix)."""
        return self.design.scan.fov_mm / self.display.matrix

    @property
    def b(self) -> int:
        """The study's b-value (s/mm2)."""
        return round(self.design.scan.b_value)

    @property
    def numbers(self) -> dict[str, list[int]]:
        """InstanceNumber of the b0, b1000 and ADC image of every position."""
        return _instances(self.count, self.order, descending=self.descending)

    def dwi_info(self) -> SeriesInfo:
        """The DWI series (b0 and b1000 images)."""
        return SeriesInfo(
            kind="dwi",
            number=DWI_NUMBER,
            description=f"ep2d_diff_b0_{self.b}_trace (synthetic)",
            image_type=("DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"),
            scanning_sequence=("EP",),
            sequence_variant=("SK",),
            sequence_name=f"*ep_b0_{self.b}t",
            pixel_mm=self.pixel_mm,
            thickness_mm=self.design.scan.thickness_mm,
            spacing_mm=self.spacing,
        )

    def adc_info(self) -> SeriesInfo:
        """The ADC series."""
        return replace(
            self.dwi_info(),
            kind="adc",
            number=ADC_NUMBER,
            description=f"ep2d_diff_b0_{self.b}_ADC (synthetic)",
            image_type=("DERIVED", "PRIMARY", "DIFFUSION", "ADC"),
            sequence_name=f"*ep_b0_{self.b}",
        )

    def shown(self, image: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``image`` at the display matrix."""
        return resize(image, self.display.matrix, nearest=self.display.nearest)

    def mask_name(self, index: int) -> str:
        """The mask of position ``index`` (0-based), relative to the dataset folder."""
        return f"{self.job.plan.case_id}/dwi/s{index + 1:02d}_mask.png"


def _design(anatomy: Anatomy, job: Job, spec: SeriesSpec) -> _Study:
    """Draw the study (head, acquisition, lesions, layout), place and render every slab."""
    plan = job.plan
    design = design_case(anatomy, replace(job, plan=replace(plan, slices=1)))
    scan = design.scan
    writer_rng = case_rng(job, _STREAM_WRITER)
    site, study_date, study_time = study_stamp(writer_rng)
    info = StudyInfo(
        seed=job.seed,
        case_id=plan.case_id,
        site=site,
        study_date=study_date,
        study_time=study_time,
    )
    display = random_display(
        writer_rng, job.profile, matrix=scan.shown_matrix, nearest=scan.display_nearest
    )
    b_tags = random_b_tags(writer_rng)
    layout = case_rng(job, _STREAM_LAYOUT)
    gap = GAP_SHARES[int(layout.integers(len(GAP_SHARES)))]
    order = INSTANCE_ORDERS[int(layout.integers(len(INSTANCE_ORDERS)))]
    descending = bool(layout.random() < 0.5)
    level_span = job.profile.dicom_level[int(layout.integers(len(job.profile.dicom_level)))]
    dicom_level = float(layout.uniform(*level_span))
    structural = spec.structural
    if structural == "mixed":
        structural = STRUCTURAL_KINDS[int(layout.integers(len(STRUCTURAL_KINDS)))]
    spacing = round(scan.thickness_mm * (1.0 + gap), 2)
    ranges = [_z_range(anatomy, design.geometry, lesion) for lesion in design.lesions]
    centre = (min(r[0] for r in ranges) + max(r[1] for r in ranges)) / 2 if ranges else None
    positions = slice_grid(
        anatomy,
        design.geometry,
        anchor=design.positions[0],
        spacing=spacing,
        count=spec.slices,
        centre=centre,
    )
    slabs = [
        render.render_slice(
            anatomy,
            design.geometry,
            scan,
            design.lesions,
            z=z,
            rng=case_rng(job, _STREAM_SLAB_NOISE, index),
            mimics=design.mimics,
            artefacts=design.artefacts,
        )
        for index, z in enumerate(positions, start=1)
    ]
    level = _brain_median([s.b1000 for s in slabs], [s.brain for s in slabs])
    return _Study(
        job=job,
        spec=spec,
        design=design,
        info=info,
        display=display,
        b_tags=b_tags,
        order=order,
        descending=descending,
        structural=structural,
        spacing=spacing,
        positions=positions,
        slabs=slabs,
        scale=dicom_level / level,
        layout=layout,
    )


def _diffusion_frames(study: _Study) -> tuple[list[Frame], list[Frame]]:
    """The DWI series' frames (b0 and b1000 of every position) and the ADC series', by instance."""
    numbers = study.numbers
    slabs = study.slabs
    b0_images = [s.b0 if s.b0 is not None else s.b1000 for s in slabs]
    b0_level = _brain_median(b0_images, [s.brain for s in slabs])
    anchor = slabs[study.positions.index(study.design.positions[0])]
    black, white = window(anchor, study.display)
    scale = study.scale
    dwi: list[Frame] = []
    adc: list[Frame] = []
    for index, (slab, b0) in enumerate(zip(slabs, b0_images, strict=True)):
        z = study.positions[index]
        dwi.append(
            Frame(
                pixels=_to_u16(study.shown(b0), scale),
                z_mm=z,
                instance=numbers["b0"][index],
                window=(b0_level * scale, 2.0 * b0_level * scale),
                b_value=0.0,
                b_tags=study.b_tags,
                image_type=B0_IMAGE_TYPE,
            )
        )
        dwi.append(
            Frame(
                pixels=_to_u16(study.shown(slab.b1000), scale),
                z_mm=z,
                instance=numbers["b1000"][index],
                window=((black + white) / 2 * scale, (white - black) * scale),
                b_value=float(study.design.scan.b_value),
                b_tags=study.b_tags,
            )
        )
        adc.append(
            Frame(
                pixels=adc_uint16(study.shown(slab.adc)),
                z_mm=z,
                instance=numbers["adc"][index],
                window=(1500.0, 3000.0),
            )
        )
    return sorted(dwi, key=lambda f: f.instance), sorted(adc, key=lambda f: f.instance)


class _SeriesWriter:
    """Writes the series of one study and remembers each image's file and SOPInstanceUID."""

    def __init__(self, study: _Study) -> None:
        self._study = study
        self.files: dict[str, dict[int, str]] = {}
        """Per series kind: InstanceNumber (frame number) -> file relative to the dataset."""
        self.sops: dict[str, dict[int, str]] = {}

    def write(self, series: SeriesInfo, frames: list[Frame]) -> None:
        """One file per frame (``s01_b0.dcm`` ...) or, multiframe, one ``<kind>.dcm``."""
        study = self._study
        out = study.job.out_dir
        case_id = study.job.plan.case_id
        (out / case_id / series.kind).mkdir(parents=True, exist_ok=True)
        self.files[series.kind], self.sops[series.kind] = {}, {}
        if study.spec.multiframe:
            name = f"{case_id}/{series.kind}/{series.kind}.dcm"
            sop = write_enhanced(out / name, study.info, series, frames)
            for frame in frames:
                self.files[series.kind][frame.instance] = name
                self.sops[series.kind][frame.instance] = str(sop)
            return
        for frame in frames:
            position = study.positions.index(frame.z_mm) + 1
            if series.kind == "dwi":
                suffix = "b0" if frame.b_value == 0 else f"b{study.b}"
            else:
                suffix = series.kind
            name = f"{case_id}/{series.kind}/s{position:02d}_{suffix}.dcm"
            sop = write_classic(out / name, study.info, series, frame, images=len(frames))
            self.files[series.kind][frame.instance] = name
            self.sops[series.kind][frame.instance] = str(sop)


def _structural_series(anatomy: Anatomy, study: _Study) -> tuple[SeriesInfo, list[Frame]]:
    """The T1 or FLAIR series of the study (same positions and geometry)."""
    kind = study.structural
    images, sequence = _structural(anatomy, study.job, study.design, study.positions, kind)
    head = np.concatenate([image[image > 0.05 * float(image.max() or 1.0)] for image in images])
    top = max(float(np.percentile(head, 99.5)), 1e-6)
    scale = float(study.layout.uniform(300.0, 3000.0)) / top
    timing = [("RepetitionTime", f"{sequence.tr:.0f}"), ("EchoTime", f"{sequence.te:.0f}")]
    scanning: tuple[str, ...]
    variant: tuple[str, ...]
    if kind == "t1":
        text, scanning, variant, name = "T1 SE AX", ("SE",), ("SP",), "*se2d1"
    else:
        text, scanning, variant, name = (
            "T2 FLAIR AX",
            ("SE", "IR"),
            ("SK", "SP", "MP"),
            "*tir2d1_16",
        )
        timing.append(("InversionTime", f"{sequence.ti:.0f}"))
    info = SeriesInfo(
        kind=kind,
        number=STRUCTURAL_NUMBER[kind],
        description=f"{text} (synthetic)",
        image_type=("ORIGINAL", "PRIMARY", "M", "ND"),
        scanning_sequence=scanning,
        sequence_variant=variant,
        sequence_name=name,
        pixel_mm=study.pixel_mm,
        thickness_mm=study.design.scan.thickness_mm,
        spacing_mm=study.spacing,
        timing=tuple(timing),
    )
    numbers = study.numbers["adc"]
    frames = [
        Frame(
            _to_u16(study.shown(image), scale),
            study.positions[index],
            numbers[index],
            (top * scale / 2.0, top * scale),
        )
        for index, image in enumerate(images)
    ]
    return info, sorted(frames, key=lambda f: f.instance)


def make_study(anatomy: Anatomy, job: Job) -> CaseResult:
    """Design, render and write one case's study; return its manifest rows and truth entry.

    Raises:
        SynthError: no lesion layout visible on a slice was found.
    """
    if job.series is None:
        raise ValueError("make_study needs a job with a series spec")
    study = _design(anatomy, job, job.series)
    (job.out_dir / job.plan.case_id / "dwi").mkdir(parents=True, exist_ok=True)
    for index, slab in enumerate(study.slabs):
        write_png(job.out_dir / study.mask_name(index), lesion_labels(slab, study.display.matrix))
    writer = _SeriesWriter(study)
    dwi_frames, adc_frames = _diffusion_frames(study)
    writer.write(study.dwi_info(), dwi_frames)
    if job.adc:
        writer.write(study.adc_info(), adc_frames)
    structural: SeriesInfo | None = None
    if study.structural != "none":
        structural, frames = _structural_series(anatomy, study)
        writer.write(structural, frames)
    truth = study_truth(anatomy, study, structural)
    return CaseResult(rows=tuple(_rows(study, writer)), tile=None, study=truth)


def _z_range(anatomy: Anatomy, geometry: CaseGeometry, lesion: Lesion) -> list[float]:
    """Lowest and highest scanner z (mm) of the lesion's core (fraction >= 0.5)."""
    voxels = np.argwhere(lesion.fraction >= 0.5) + lesion.origin
    z = geometry.to_scanner(anatomy.voxel_to_world(voxels))[:, 2]
    return [round(float(z.min()), 2), round(float(z.max()), 2)]


def _lesion_truth(anatomy: Anatomy, study: _Study) -> list[dict[str, Any]]:
    """Per lesion: region, volumes (patient, MNI, from the masks) and the slices showing it."""
    area_px = study.design.scan.pixel_mm**2
    out = []
    for k, lesion in enumerate(study.design.lesions):
        slices = [i + 1 for i, slab in enumerate(study.slabs) if slab.lesions[k].any()]
        area = sum(float(slab.lesions[k].sum()) for slab in study.slabs) * area_px
        out.append(
            {
                "number": k + 1,
                "region": lesion.region,
                "volume_ml": round(physical_volume_ml(anatomy, study.design.geometry, lesion), 3),
                "mni_volume_ml": round(lesion.volume_ml, 3),
                "mask_volume_ml": round(area * study.spacing / 1000.0, 3),
                "z_range_mm": _z_range(anatomy, study.design.geometry, lesion),
                "slices": slices,
            }
        )
    return out


def _lesion_slices(study: _Study) -> list[dict[str, Any]]:
    """Every position whose mask is not empty, with its images' instance numbers."""
    numbers = study.numbers
    area_px = study.design.scan.pixel_mm**2
    dwi = study.dwi_info()
    out = []
    for index, slab in enumerate(study.slabs):
        shown = [k for k, mask in enumerate(slab.lesions) if mask.any()]
        if not shown:
            continue
        instance = numbers["b1000"][index]
        sop = sop_uid(study.info, dwi, 0 if study.spec.multiframe else instance)
        out.append(
            {
                "slice": index + 1,
                "position_mm": round(study.positions[index], 3),
                "b1000_instance": instance,
                "b0_instance": numbers["b0"][index],
                "adc_instance": numbers["adc"][index],
                "b1000_sop_instance_uid": str(sop),
                "lesions": [k + 1 for k in shown],
                "area_mm2": round(sum(float(slab.lesions[k].sum()) for k in shown) * area_px, 1),
                "mask_file": study.mask_name(index),
            }
        )
    return out


def study_truth(anatomy: Anatomy, study: _Study, structural: SeriesInfo | None) -> dict[str, Any]:
    """The study's entry of ``series.json`` (see docs/synth.md, *Series*)."""
    plan = study.job.plan
    dwi = study.dwi_info()
    geometry = {
        "slices": study.count,
        "positions_mm": [round(z, 3) for z in study.positions],
        "thickness_mm": study.design.scan.thickness_mm,
        "spacing_mm": study.spacing,
        "pixel_mm": round(study.pixel_mm, 6),
        "matrix": study.display.matrix,
        "orientation": [1, 0, 0, 0, 1, 0],
        "multiframe": study.spec.multiframe,
    }
    lesions = _lesion_truth(anatomy, study)
    lesion_slices = _lesion_slices(study)
    series: list[dict[str, Any]] = [
        {
            "kind": "dwi",
            "series_instance_uid": str(dwi.series_uid(study.info)),
            "series_number": dwi.number,
            "folder": f"{plan.case_id}/dwi",
            "images": 2 * study.count,
            "b_values": [0, study.b],
            "b_value_tags": list(study.b_tags),
            "instance_order": study.order,
            "descending": study.descending,
            **geometry,
            "label": plan.label,
            "lesion_slices": lesion_slices,
            "lesions": lesions,
            "lesion_volume_ml": round(sum(item["volume_ml"] for item in lesions), 3),
            "mask_volume_ml": round(sum(item["mask_volume_ml"] for item in lesions), 3),
        }
    ]
    others: list[tuple[SeriesInfo, str | None]] = (
        [(study.adc_info(), plan.label)] if study.job.adc else []
    )
    if structural is not None:
        others.append((structural, None))
    for info, label in others:
        series.append(
            {
                "kind": info.kind,
                "series_instance_uid": str(info.series_uid(study.info)),
                "series_number": info.number,
                "folder": f"{plan.case_id}/{info.kind}",
                "images": study.count,
                **geometry,
                "dwi_series_instance_uid": str(dwi.series_uid(study.info)),
                "label": label,
                "lesion_slices": [
                    {key: item[key] for key in ("slice", "position_mm", "adc_instance", "lesions")}
                    for item in (lesion_slices if info.kind == "adc" else [])
                ],
            }
        )
    return {
        "case_id": plan.case_id,
        "label": plan.label,
        "raw_label": plan.raw_label,
        "study_instance_uid": str(study.info.study_uid),
        "frame_of_reference_uid": str(study.info.frame_uid),
        "patient_name": f"SYNTHETIC^{plan.case_id.upper()}",
        "series": series,
    }


def _rows(study: _Study, writer: _SeriesWriter) -> list[ManifestRow]:
    """One manifest row per position: its b1000 image, b0, ADC and mask."""
    plan = study.job.plan
    scan, geometry, lesions = study.design.scan, study.design.geometry, study.design.lesions
    numbers = study.numbers
    volume = round(sum(lesion.volume_ml for lesion in lesions), 3)
    regions = ";".join(lesion.region for lesion in lesions)
    adc_files = writer.files.get("adc", {})
    rows = []
    for index, slab in enumerate(study.slabs):
        area = sum(int(mask.sum()) for mask in slab.lesions) * scan.pixel_mm**2
        adc_instance = numbers["adc"][index] if study.job.adc else 0
        rows.append(
            ManifestRow(
                file=writer.files["dwi"][numbers["b1000"][index]],
                adc_file=adc_files.get(adc_instance, ""),
                raw_label=plan.raw_label,
                label=plan.label,
                case_id=plan.case_id,
                slice_index=index + 1,
                slice_mm=round(slab.z_mni, 2),
                slice_location_mm=round(slab.z_scanner, 2),
                slice_thickness_mm=slab.thickness_mm,
                pixel_mm=round(slab.pixel_mm, 4),
                matrix=scan.matrix,
                format="dicom",
                lesion_count=len(lesions),
                lesion_volume_ml=volume,
                lesion_area_mm2=round(area, 1),
                lesion_regions=regions,
                snr=round(scan.snr, 1),
                profile=study.job.profile.name,
                display_matrix=study.display.matrix,
                display_pixel_mm=round(study.pixel_mm, 4),
                fov_mm=round(scan.fov_mm, 1),
                b_value=study.b,
                b_value_tags=";".join(study.b_tags),
                window=study.display.method,
                gamma=round(study.display.gamma, 3),
                rotation_deg=round(geometry.yaw_deg, 2),
                tilt_deg=round(geometry.pitch_deg, 2),
                roll_deg=round(geometry.roll_deg, 2),
                head_scale=round(geometry.size, 3),
                bias_strength=round(scan.bias_strength, 3),
                ventricle_mm=round(scan.ventricle_enlargement_mm, 2),
                sulcal_atrophy=round(scan.sulcal, 3),
                findings=";".join(slab.findings),
                mask_file=study.mask_name(index),
                b0_file=writer.files["dwi"][numbers["b0"][index]],
                instance_number=numbers["b1000"][index],
                b0_instance_number=numbers["b0"][index],
                adc_instance_number=adc_instance,
            )
        )
    return rows
