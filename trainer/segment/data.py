"""The segmenter's data: DWI slices, ADC maps and lesion masks on the classifier's input square.

Which slices, classes and cases: `daemon.shared.dataset.scan`, as for the classifier (so the case
split of `trainer.split` applies unchanged: no case on both sides). The dataset's ``manifest.csv``
(written by ``infarctwatch synth``) adds per file its lesion mask (``mask_file``, required), its
ADC map (``adc_file``, optional) and the geometry (``display_pixel_mm``, ``slice_thickness_mm``).

Each DWI slice is preprocessed with `daemon.shared.preprocess.preprocess_placed` and the
classifier bundle's spec (the tensor the daemon already makes for the classifier); its ADC map
goes through `Placement.place` (cropped, resized and normalised exactly like the slice) and its
mask through ``Placement.place(mask, mask=True)`` (0/1 on the input square). An ADC map of another
matrix than its slice (a JPEG screenshot's ADC is the scanner's image, not the screenshot) cannot
be placed: the slice then has no ADC channel (zeros), as in service.

Pixel size: one input pixel covers ``source pixel x Placement.source_per_input`` mm on a side. The
source pixel is the manifest's ``display_pixel_mm`` (the written image's spacing, which is what a
resampled export shows); a JPEG screenshot rescales the image into its canvas, so its pixel comes
from the slice's own truth, ``sqrt(lesion_area_mm2 / mask pixels)``, or, on a slice without a
lesion, from the field of view over the canvas width (an estimate: it only scales false-positive
volumes).
"""

from __future__ import annotations

import csv
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog

from daemon.errors import DatasetError, ScanError
from daemon.shared.dataset import Sample, scan
from daemon.shared.decode import decode
from daemon.shared.preprocess import PreprocessSpec, preprocess_placed
from trainer.dataset import Skipped

if TYPE_CHECKING:
    from pathlib import Path

    from daemon.shared.dataset import Dataset, Layout
    from daemon.shared.labels import LabelMap

log = structlog.get_logger("trainer.segment.data")
_LIST_AT_MOST = 5


@dataclass(frozen=True)
class SegSample:
    """One DWI slice with what the segmenter needs beside it."""

    sample: Sample
    mask_file: str
    adc_file: str | None
    pixel_mm: float
    """Source pixel side, mm (0: derive it from the slice, see the module docstring)."""
    fov_mm: float
    thickness_mm: float
    slice_index: int
    lesion_area_mm2: float
    screenshot: bool


@dataclass(frozen=True)
class SegTensors:
    """Input planes, masks and geometry of some slices, in the samples' order."""

    samples: tuple[SegSample, ...]
    images: npt.NDArray[np.floating]
    """``(n, size, size, 2)``: DWI and ADC (zeros where there is none)."""
    masks: npt.NDArray[np.uint8]
    """``(n, size, size)`` 0/1 on the input square."""
    has_adc: npt.NDArray[np.bool_]
    voxel_ml: npt.NDArray[np.float64]
    """Volume of one input pixel x the slice thickness, mL."""
    skipped: tuple[Skipped, ...]

    def take(self, indices: npt.NDArray[np.integer] | list[int]) -> SegTensors:
        """The slices at ``indices``."""
        idx = np.asarray(indices, np.int64)
        return SegTensors(
            tuple(self.samples[i] for i in idx),
            self.images[idx],
            self.masks[idx],
            self.has_adc[idx],
            self.voxel_ml[idx],
            self.skipped,
        )

    def without_adc(self) -> SegTensors:
        """The same slices with the ADC channel zeroed (a lone DWI image)."""
        images = self.images.copy()
        images[..., 1] = 0
        return SegTensors(
            self.samples,
            images,
            self.masks,
            np.zeros_like(self.has_adc),
            self.voxel_ml,
            self.skipped,
        )

    def cases(self) -> dict[str, list[int]]:
        """Slice indices per case, in slice order (the order a case's slices are stacked in)."""
        out: dict[str, list[int]] = {}
        for i, s in enumerate(self.samples):
            out.setdefault(s.sample.case_id, []).append(i)
        for indices in out.values():
            indices.sort(key=lambda i: (self.samples[i].slice_index, self.samples[i].sample.rel))
        return dict(sorted(out.items()))


def _number(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key) or 0.0)
    except ValueError:
        return 0.0


def read_mask_manifest(root: Path) -> dict[str, dict[str, str]]:
    """The rows of ``root/manifest.csv`` by file.

    Raises:
        DatasetError: no manifest, or one without the ``file`` and ``mask_file`` columns.
    """
    path = root / "manifest.csv"
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or ())
            if not {"file", "mask_file"} <= columns:
                raise DatasetError(
                    f"{path} needs the columns 'file' and 'mask_file' (lesion masks: "
                    "'infarctwatch synth' writes them)"
                )
            return {row["file"].replace("\\", "/"): row for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def list_slices(root: Path, layout: Layout, labels: LabelMap) -> tuple[Dataset, list[SegSample]]:
    """The dataset's DWI slices with their masks, ADC maps and geometry.

    Raises:
        DatasetError: a slice the manifest does not list or lists without a mask.
    """
    dataset = scan(root, layout, labels)
    rows = read_mask_manifest(dataset.root)
    out, missing = [], []
    for sample in dataset.samples:
        row = rows.get(sample.rel)
        if row is None or not row.get("mask_file"):
            missing.append(sample.rel)
            continue
        out.append(
            SegSample(
                sample=sample,
                mask_file=row["mask_file"],
                adc_file=row.get("adc_file") or None,
                pixel_mm=_number(row, "display_pixel_mm") or _number(row, "pixel_mm"),
                fov_mm=_number(row, "fov_mm"),
                thickness_mm=_number(row, "slice_thickness_mm"),
                slice_index=int(_number(row, "slice_index")),
                lesion_area_mm2=_number(row, "lesion_area_mm2"),
                screenshot=row.get("format") == "jpeg",
            )
        )
    if missing:
        shown = ", ".join(missing[:_LIST_AT_MOST])
        raise DatasetError(
            f"{len(missing)} slice(s) of {dataset.root} have no lesion mask in manifest.csv "
            f"(mask_file), e.g. {shown}"
        )
    return dataset, out


def _read_grey(path: Path) -> npt.NDArray[np.float32]:
    return decode(path.read_bytes(), path.name).pixels


def _source_pixel_mm(s: SegSample, mask: npt.NDArray[np.bool_]) -> float:
    if not s.screenshot:
        return s.pixel_mm
    count = int(mask.sum())
    if count and s.lesion_area_mm2 > 0:
        return math.sqrt(s.lesion_area_mm2 / count)
    return s.fov_mm / mask.shape[1] if s.fov_mm else s.pixel_mm


Loaded = tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8], bool, float]


def load_slice(root: Path, s: SegSample, spec: PreprocessSpec) -> Loaded | Skipped:
    """One slice's ``[dwi, adc]`` planes, 0/1 mask, whether the ADC was placed, voxel mL."""
    rel = s.sample.rel
    try:
        grey = _read_grey(root / rel)
        mask_source = _read_grey(root / s.mask_file) > 0
    except OSError as exc:
        return Skipped(rel, "READ_ERROR", str(exc))
    except ScanError as exc:
        return Skipped(rel, exc.code, exc.message)
    try:
        tensor, placement = preprocess_placed(grey, spec)
        mask = placement.place(mask_source.astype(np.float32), mask=True)
    except ScanError as exc:
        return Skipped(rel, exc.code, exc.message)
    size = spec.input_size
    planes = np.zeros((size, size, 2), np.float32)
    planes[..., 0] = tensor[:, :, 0]
    has_adc = False
    if s.adc_file:
        try:
            planes[..., 1] = placement.place(_read_grey(root / s.adc_file))
            has_adc = True
        except (OSError, ScanError):
            has_adc = False
    side_mm = _source_pixel_mm(s, mask_source) * placement.source_per_input
    voxel_ml = side_mm * side_mm * s.thickness_mm / 1000.0
    return planes, mask.astype(np.uint8), has_adc, voxel_ml


def load_slices(
    root: Path,
    samples: list[SegSample] | tuple[SegSample, ...],
    spec: PreprocessSpec,
    *,
    workers: int,
    dtype: type[np.floating] = np.float32,
) -> SegTensors:
    """Load every slice once; unreadable ones are skipped and listed."""
    size = spec.input_size
    kept: list[SegSample] = []
    images: list[npt.NDArray[Any]] = []
    masks: list[npt.NDArray[np.uint8]] = []
    adc: list[bool] = []
    voxels: list[float] = []
    skipped: list[Skipped] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segment-load") as pool:
        for s, result in zip(
            samples, pool.map(lambda s: load_slice(root, s, spec), samples), strict=True
        ):
            if isinstance(result, Skipped):
                skipped.append(result)
                log.warning("slice_skipped", file=result.rel, code=result.code)
                continue
            kept.append(s)
            images.append(result[0].astype(dtype))
            masks.append(result[1])
            adc.append(result[2])
            voxels.append(result[3])
    log.info("slices_loaded", slices=len(kept), skipped=len(skipped), with_adc=sum(adc))
    return SegTensors(
        samples=tuple(kept),
        images=np.stack(images) if images else np.zeros((0, size, size, 2), dtype),
        masks=np.stack(masks) if masks else np.zeros((0, size, size), np.uint8),
        has_adc=np.array(adc, np.bool_),
        voxel_ml=np.array(voxels, np.float64),
        skipped=tuple(skipped),
    )
