"""Cases: plan them (cheap, in the parent) and make them (render + write, in a worker).

Determinism: every random choice of a case comes from generators seeded with
``(seed, class index, case index within the class, stream)``, one stream per purpose (anatomy and
lesions, slice positions, noise per slice, file writing). So a case's images do not depend on the
number of workers, on scheduling, or on which other classes are generated; the file format of a
case does not change its pixels (except through the format's own encoding).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from trainer.errors import SynthError
from trainer.synth import render
from trainer.synth.artefacts import SUSCEPTIBILITY_SOURCES, Artefacts, random_artefacts
from trainer.synth.display import random_display, resize, resize_mask
from trainer.synth.geometry import BRAIN_CENTRE_MNI, CaseGeometry, random_geometry
from trainer.synth.lesions import NEAR_Z_MM, Lesion, grow_lesion, shared_levels
from trainer.synth.manifest import ManifestRow
from trainer.synth.mimics import AGE_KINDS, grow_mimics
from trainer.synth.montage import Tile
from trainer.synth.profiles import STREAM_SALT, TRAIN, Profile
from trainer.synth.regions import CLASS_REGIONS
from trainer.synth.screenshot import SITES
from trainer.synth.writers import SliceMeta, random_b_tags, write_slice

if TYPE_CHECKING:
    from pathlib import Path

    from daemon.shared.labels import LabelMap
    from trainer.synth.anatomy import Anatomy
    from trainer.synth.options import SeriesSpec, SynthOptions

MIN_LESION_AREA_MM2 = 40.0
"""Every lesion of a case shows at least this area on each of its slices..."""
MIN_LESION_CONTRAST = 1.3
"""...at least this much brighter (b1000, before noise) than the tissue around it..."""
MAX_LESION_ADC_RATIO = 0.8
"""...and its mean ADC at most this share of that tissue's (partial volume with CSF can hide it)."""
NORMAL_AREA_FRACTION = 0.05
"""'No acute infarct' slices lie where the brain's axial area is >= this share of its largest:
every level from the skull base (temporal poles, cerebellum) to the vertex."""
NEGATIVE_LABEL = "No acute infarct"
AGE_ANCHOR_SHARE = 0.5
"""Share of 'No acute infarct' cases whose slices also go to their signs of age (WMH, chronic
infarcts)."""
SKULL_BASE_SHARE = 0.35
"""Share of 'No acute infarct' cases whose first slice is put at the skull base (air-bone
interfaces: where susceptibility artefacts show)."""
TILES_PER_CLASS = 8
_CASE_TRIES = 30
_SLICE_TRIES = 8
_UNSAFE_FOLDER_CHARS = frozenset('/\\:*?"<>|\0')
_STREAM_ANATOMY, _STREAM_SLICES, _STREAM_WRITER, _STREAM_COUNT, _STREAM_NOISE = 0, 1, 2, 3, 10
_STREAM_MIMICS = 4


@dataclass(frozen=True)
class CasePlan:
    """What the parent decides about a case before any pixel exists."""

    number: int
    case_id: str
    label: str
    raw_label: str
    class_index: int
    """Index of ``label`` in the label map (keys the case's random streams)."""
    index_in_class: int
    slices: int
    format: str


@dataclass(frozen=True)
class Job:
    """A case plus the run-wide settings a worker needs."""

    plan: CasePlan
    seed: int
    out_dir: Path
    matrix: int | None
    """Fixed acquired and displayed matrix, or None: drawn from the profile."""
    adc: bool
    want_tile: bool
    profile: Profile = TRAIN
    series: SeriesSpec | None = None
    """A whole DWI study per case (`trainer.synth.series`) instead of separate slices."""


@dataclass(frozen=True)
class CaseResult:
    """What a worker hands back: the manifest rows and, for montages, one tile."""

    rows: tuple[ManifestRow, ...]
    tile: Tile | None
    study: dict[str, Any] | None = None
    """Series mode: the study's entry of the truth file (`trainer.synth.series`)."""


def folder_variants(label_map: LabelMap, label: str) -> tuple[str, ...]:
    """The label's raw variants that are safe folder names on every OS (canonical first)."""
    return tuple(
        name
        for name in label_map.raw_variants[label]
        if name.strip() == name
        and name not in (".", "..")
        and not _UNSAFE_FOLDER_CHARS.intersection(name)
    )


def allocate_formats(formats: tuple[tuple[str, float], ...], total: int, seed: int) -> list[str]:
    """Exactly proportional format quotas (largest remainder), in a seeded random order."""
    quotas = [(name, share * total) for name, share in formats]
    counts = {name: int(q) for name, q in quotas}
    leftover = total - sum(counts.values())
    by_remainder = sorted(quotas, key=lambda item: item[1] - int(item[1]), reverse=True)
    for name, _ in by_remainder[:leftover]:
        counts[name] += 1
    order = [name for name, _ in formats for _ in range(counts[name])]
    rng = np.random.default_rng([seed, 7_000_001])
    return [order[i] for i in rng.permutation(len(order))]


def case_counts(options: SynthOptions, classes: tuple[str, ...]) -> dict[str, int]:
    """Cases per class: ``cases_per_class`` each, 'No acute infarct' set by the negative share.

    With share ``f`` (of all cases) and ``k`` infarct classes, 'No acute infarct' gets
    ``round(f / (1 - f) * k * cases_per_class)`` cases, at least ``cases_per_class``; with no
    share (None) or without infarct classes it gets ``cases_per_class`` like every class.
    """
    counts = dict.fromkeys(classes, options.cases_per_class)
    infarct_classes = sum(1 for label in classes if label != NEGATIVE_LABEL)
    share = options.negative_share
    if NEGATIVE_LABEL in counts and share is not None and infarct_classes:
        wanted = round(share / (1.0 - share) * infarct_classes * options.cases_per_class)
        counts[NEGATIVE_LABEL] = max(options.cases_per_class, wanted)
    return counts


def plan_cases(options: SynthOptions, label_map: LabelMap) -> list[CasePlan]:
    """Every case of the run, numbered in label-map class order."""
    classes = options.classes or label_map.classes
    counts = case_counts(options, tuple(classes))
    formats = allocate_formats(options.formats, sum(counts.values()), options.seed)
    plans: list[CasePlan] = []
    low, high = options.slices_per_case
    salt = STREAM_SALT[options.profile]
    for label in classes:
        class_index = label_map.index(label)
        variants = folder_variants(label_map, label)
        for k in range(counts[label]):
            number = len(plans)
            count_rng = np.random.default_rng([*salt, options.seed, class_index, k, _STREAM_COUNT])
            plans.append(
                CasePlan(
                    number=number,
                    case_id=f"c{number:06d}",
                    label=label,
                    raw_label=variants[k % len(variants)],
                    class_index=class_index,
                    index_in_class=k,
                    slices=int(count_rng.integers(low, high + 1)),
                    format=formats[number],
                )
            )
    return plans


def case_rng(job: Job, stream: int, *extra: int) -> np.random.Generator:
    """The case's random generator for ``stream`` (and ``extra`` keys, e.g. a slice number)."""
    plan = job.plan
    salt = STREAM_SALT[job.profile.name]
    return np.random.default_rng(
        [*salt, job.seed, plan.class_index, plan.index_in_class, stream, *extra]
    )


def _scanner_z(
    geometry: CaseGeometry, points_mni: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    return geometry.to_scanner(points_mni)[..., 2]


def _lesion_slices(
    rng: np.random.Generator,
    anatomy: Anatomy,
    *,
    geometry: CaseGeometry,
    scan: render.Scan,
    lesions: tuple[Lesion, ...],
    count: int,
    mimics: tuple[Lesion, ...] = (),
) -> list[float] | None:
    """``count`` slab positions that show every lesion clearly, or None.

    Clearly: over at least ``MIN_LESION_AREA_MM2``, ``MIN_LESION_CONTRAST`` times brighter than
    the tissue around it on b1000 and at most ``MAX_LESION_ADC_RATIO`` of its ADC (noise-free, so
    the check does not depend on the noise draw).
    """
    lows, highs, points = [], [], []
    for lesion in lesions:
        voxels = np.argwhere(lesion.fraction >= 0.5) + lesion.origin
        scanner = geometry.to_scanner(anatomy.voxel_to_world(voxels))
        points.append(scanner)
        lows.append(float(scanner[:, 2].min()))
        highs.append(float(scanner[:, 2].max()))
    window = render.lesion_window(scan, np.concatenate(points))
    low, high = max(lows), min(highs)
    if low > high:
        return None
    positions: list[float] = []
    for index in range(count):
        for attempt in range(_SLICE_TRIES):
            share = (index + rng.random()) / count if attempt == 0 else rng.random()
            z = low + (high - low) * share
            views = render.lesion_views(
                anatomy, geometry, scan, lesions, z, window=window, mimics=mimics
            )
            if all(
                v.area_mm2 >= MIN_LESION_AREA_MM2
                and v.contrast >= MIN_LESION_CONTRAST
                and v.adc_ratio <= MAX_LESION_ADC_RATIO
                for v in views
            ):
                positions.append(z)
                break
        else:
            return None
    return positions


def _normal_slices(
    rng: np.random.Generator,
    anatomy: Anatomy,
    geometry: CaseGeometry,
    count: int,
    anchors: list[float],
) -> list[float]:
    """Slab positions spread over the brain's whole axial range, the first ones at ``anchors``.

    Anchors are scanner z levels of look-alikes or of the skull base: the case shows them.
    """
    area = (anatomy.gm.astype(np.float32) + anatomy.wm).sum(axis=(0, 1))
    levels = np.flatnonzero(area >= NORMAL_AREA_FRACTION * area.max()) + anatomy.affine[2, 3]
    x, y, _ = BRAIN_CENTRE_MNI
    ends = np.array([[x, y, float(levels.min())], [x, y, float(levels.max())]])
    low, high = sorted(_scanner_z(geometry, ends))
    spread = [float(low + (high - low) * (i + rng.random()) / count) for i in range(count)]
    chosen = [float(np.clip(z + rng.uniform(-1.5, 1.5), low, high)) for z in anchors[:count]]
    return chosen + spread[len(chosen) :]


def _anchors(
    rng: np.random.Generator, geometry: CaseGeometry, mimics: tuple[Lesion, ...]
) -> list[float]:
    """Scanner z levels a normal case's first slices go to.

    One per kind of hard negative, one per sign of age in ``AGE_ANCHOR_SHARE`` of cases (so that
    they show about as often as on infarct cases' slices), and the skull base in
    ``SKULL_BASE_SHARE`` of cases.
    """
    anchors: list[float] = []
    seen: set[str] = set()
    age = rng.random() < AGE_ANCHOR_SHARE
    for blob in mimics:
        if blob.kind not in seen and (age or blob.kind not in AGE_KINDS):
            seen.add(blob.kind)
            anchors.append(float(_scanner_z(geometry, blob.centre_mni)))
    if rng.random() < SKULL_BASE_SHARE:
        names = tuple(SUSCEPTIBILITY_SOURCES)
        point, _ = SUSCEPTIBILITY_SOURCES[names[int(rng.integers(len(names)))]]
        anchors.insert(
            0, float(_scanner_z(geometry, np.asarray(point) + np.array([0.0, 0.0, 8.0])))
        )
    order = rng.permutation(len(anchors))
    return [anchors[i] for i in order]


def _grow(
    rng: np.random.Generator, anatomy: Anatomy, label: str, enlargement_mm: float
) -> tuple[Lesion, ...]:
    regions = CLASS_REGIONS[label]
    lesions: list[Lesion] = []
    for region in regions:
        if lesions:
            z = float(lesions[0].centre_mni[2])
            window: tuple[float, float] | None = (z - NEAR_Z_MM, z + NEAR_Z_MM)
        else:
            window = shared_levels(anatomy, regions) if len(regions) > 1 else None
        lesions.append(
            grow_lesion(rng, anatomy, region, enlargement_mm=enlargement_mm, z_window=window)
        )
    return tuple(lesions)


@dataclass(frozen=True)
class CaseDesign:
    """A case before rendering: head, acquisition, lesions and slab positions (scanner z)."""

    geometry: CaseGeometry
    scan: render.Scan
    lesions: tuple[Lesion, ...]
    positions: tuple[float, ...]
    mimics: tuple[Lesion, ...] = ()
    """Look-alikes and signs of age (`trainer.synth.mimics`)."""
    artefacts: Artefacts | None = None

    def render(self, anatomy: Anatomy, job: Job, index: int) -> render.RenderedSlice:
        """Render slice ``index`` (1-based) with its own noise stream."""
        return render.render_slice(
            anatomy,
            self.geometry,
            self.scan,
            self.lesions,
            z=self.positions[index - 1],
            rng=case_rng(job, _STREAM_NOISE, index),
            mimics=self.mimics,
            artefacts=self.artefacts,
        )


def design_case(anatomy: Anatomy, job: Job) -> CaseDesign:
    """Draw a case's head, scan and lesions and place its slices.

    Lesion cases: every slice shows every lesion over at least ``MIN_LESION_AREA_MM2``; when no
    such placement exists the case is drawn again (up to ``_CASE_TRIES`` times).

    Raises:
        SynthError: no lesion layout visible on the requested slices was found.
    """
    plan = job.plan
    rng = case_rng(job, _STREAM_ANATOMY)
    slice_rng = case_rng(job, _STREAM_SLICES)
    negative = not CLASS_REGIONS[plan.label]
    mimic_rng = case_rng(job, _STREAM_MIMICS)
    for _ in range(_CASE_TRIES):
        geometry = random_geometry(rng, job.profile)
        scan = render.random_scan(rng, job.matrix, job.profile)
        lesions = _grow(rng, anatomy, plan.label, scan.ventricle_enlargement_mm)
        mimics = grow_mimics(
            mimic_rng,
            anatomy,
            negative=negative,
            enlargement_mm=scan.ventricle_enlargement_mm,
            near_z=float(lesions[0].centre_mni[2]) if lesions else None,
        )
        artefacts = random_artefacts(mimic_rng, negative=negative)
        if lesions:
            positions = _lesion_slices(
                slice_rng,
                anatomy,
                geometry=geometry,
                scan=scan,
                lesions=lesions,
                count=plan.slices,
                mimics=mimics,
            )
        else:
            anchors = _anchors(slice_rng, geometry, mimics)
            positions = _normal_slices(slice_rng, anatomy, geometry, plan.slices, anchors)
        if positions is not None:
            break
    else:
        raise SynthError(f"case {plan.case_id} ({plan.label}): no visible lesion layout found")
    return CaseDesign(geometry, scan, lesions, tuple(positions), mimics, artefacts)


def make_case(anatomy: Anatomy, job: Job) -> CaseResult:
    """Design, render and write every slice of one case.

    Raises:
        SynthError: no lesion layout visible on the requested slices was found.
    """
    plan = job.plan
    design = design_case(anatomy, job)
    lesions = design.lesions
    writer_rng = case_rng(job, _STREAM_WRITER)
    site, study_date, study_time = study_stamp(writer_rng)
    series = SliceMeta(
        case_id=plan.case_id,
        seed=job.seed,
        index=0,
        count=len(design.positions),
        site=site,
        study_date=study_date,
        study_time=study_time,
    )
    scan = design.scan
    display = random_display(
        writer_rng, job.profile, matrix=scan.shown_matrix, nearest=scan.display_nearest
    )
    b_tags = random_b_tags(writer_rng) if plan.format == "dicom" else ()
    folder = job.out_dir / plan.raw_label
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[ManifestRow] = []
    tile = None
    volume = round(sum(lesion.volume_ml for lesion in lesions), 3)
    regions = ";".join(lesion.region for lesion in lesions)
    geometry = design.geometry
    for index in range(1, len(design.positions) + 1):
        rendered = design.render(anatomy, job, index)
        stem = f"{plan.case_id}_{index:02d}"
        meta = replace(series, index=index)
        written = write_slice(
            folder / stem,
            plan.format,
            rendered,
            meta=meta,
            rng=writer_rng,
            adc=job.adc,
            display=display,
            profile=job.profile,
            b_tags=b_tags,
        )
        area = sum(int(mask.sum()) for mask in rendered.lesions) * rendered.pixel_mm**2
        dwi8 = written.dwi8
        rows.append(
            ManifestRow(
                file=f"{plan.raw_label}/{written.name}",
                adc_file=f"{plan.raw_label}/{written.adc_name}" if written.adc_name else "",
                raw_label=plan.raw_label,
                label=plan.label,
                case_id=plan.case_id,
                slice_index=index,
                slice_mm=round(rendered.z_mni, 2),
                slice_location_mm=round(rendered.z_scanner, 2),
                slice_thickness_mm=rendered.thickness_mm,
                pixel_mm=round(rendered.pixel_mm, 4),
                matrix=scan.matrix,
                format=plan.format,
                lesion_count=len(lesions),
                lesion_volume_ml=volume,
                lesion_area_mm2=round(area, 1),
                lesion_regions=regions,
                snr=round(scan.snr, 1),
                profile=job.profile.name,
                display_matrix=display.matrix,
                display_pixel_mm=round(scan.fov_mm / display.matrix, 4),
                fov_mm=round(scan.fov_mm, 1),
                b_value=round(scan.b_value),
                b_value_tags=";".join(b_tags),
                window=display.method,
                gamma=round(display.gamma, 3),
                rotation_deg=round(geometry.yaw_deg, 2),
                tilt_deg=round(geometry.pitch_deg, 2),
                roll_deg=round(geometry.roll_deg, 2),
                head_scale=round(geometry.size, 3),
                bias_strength=round(scan.bias_strength, 3),
                ventricle_mm=round(scan.ventricle_enlargement_mm, 2),
                sulcal_atrophy=round(scan.sulcal, 3),
                findings=";".join(rendered.findings),
                mask_file=f"{plan.raw_label}/{written.mask_name}",
            )
        )
        if job.want_tile and tile is None:
            lesion_mask = np.zeros(dwi8.shape, dtype=bool)
            for mask in rendered.lesions:
                lesion_mask |= resize_mask(mask, dwi8.shape[0])
            adc_shown = resize(rendered.adc, dwi8.shape[0], nearest=display.nearest)
            adc8 = np.asarray(np.clip(adc_shown * (255.0 / 3.5), 0, 255), dtype=np.uint8)
            caption = f"{plan.case_id} z={rendered.z_mni:+.0f} {plan.format}"
            tile = Tile(dwi=dwi8, adc=adc8, lesion=lesion_mask, caption=caption)
    return CaseResult(rows=tuple(rows), tile=tile)


def study_stamp(rng: np.random.Generator) -> tuple[str, str, str]:
    """A case's site, StudyDate (YYYYMMDD, 2015-2024) and StudyTime (07:00-21:59), from ``rng``."""
    year, day = int(rng.integers(2015, 2025)), int(rng.integers(0, 365))
    date = np.datetime64(f"{year}-01-01") + np.timedelta64(day, "D")
    minutes = int(rng.integers(7 * 60, 22 * 60))
    site = SITES[int(rng.integers(len(SITES)))]
    return site, str(date).replace("-", ""), f"{minutes // 60:02d}{minutes % 60:02d}00"
