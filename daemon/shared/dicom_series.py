"""Where a DICOM image sits in its series, read from the header the decoder already parsed.

A series report (`daemon.series`) groups the images of one SeriesInstanceUID and orders its slices
along the slice normal. What it needs of each image is read here, in the scan worker, and carried
into the image's report (``source.dicom``), so that a series can also be rebuilt from the reports
alone after a restart. Nothing here identifies a patient.

The slice position is the distance of the image's origin along the normal of its plane: the
normal is the cross product of the row and column directions of ImageOrientationPatient
(0020,0037), the position ImagePositionPatient (0020,0032), so ``position = origin · normal`` (mm).
Without both, SliceLocation (0020,1041) stands in; without it, the position is unknown (null).

Shared (daemon and trainer): needs nothing but a pydicom ``Dataset``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast


@dataclass(frozen=True)
class FrameTags:
    """One frame of an enhanced (multi-frame) object: where it lies and its b-value."""

    index: int
    image_position: tuple[float, float, float] | None = None
    slice_position: float | None = None
    b_value: float | None = None


@dataclass(frozen=True)
class SeriesTags:
    """An image's place in its series (never a patient attribute)."""

    instance_number: int | None = None
    image_position: tuple[float, float, float] | None = None
    image_orientation: tuple[float, float, float, float, float, float] | None = None
    slice_position: float | None = None
    """mm along the slice normal (see the module docstring); None when unknown."""
    image_type: tuple[str, ...] = ()
    series_number: int | None = None
    series_description: str | None = None
    manufacturer: str | None = None
    images_in_acquisition: int | None = None
    """ImagesInAcquisition (0020,1002): how many images the series is expected to hold."""
    pixel_spacing: tuple[float, float] | None = None
    """PixelSpacing (0028,0030), mm: between rows, between columns (an enhanced object's
    PixelMeasuresSequence when the top level has none); None when missing or not positive."""
    slice_thickness: float | None = None
    """SliceThickness (0018,0050), mm."""
    spacing_between_slices: float | None = None
    """SpacingBetweenSlices (0018,0088), mm."""
    frames: tuple[FrameTags, ...] = ()
    """Each frame of an enhanced (multi-frame) object, from its per-frame functional groups;
    empty for a single-frame image or a multi-frame object without them."""


def read_series_tags(ds: Any) -> SeriesTags:
    """The `SeriesTags` of a pydicom ``Dataset`` (missing or malformed values are None)."""
    position = _floats(ds.get("ImagePositionPatient"), 3)
    orientation = image_orientation(ds)
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    return SeriesTags(
        instance_number=_integer(ds.get("InstanceNumber")),
        image_position=cast("tuple[float, float, float] | None", position),
        image_orientation=orientation,
        slice_position=slice_position(position, orientation, _number(ds.get("SliceLocation"))),
        image_type=tuple(_texts(ds.get("ImageType"))),
        series_number=_integer(ds.get("SeriesNumber")),
        series_description=_text(ds.get("SeriesDescription")),
        manufacturer=_text(ds.get("Manufacturer")),
        images_in_acquisition=_integer(ds.get("ImagesInAcquisition")),
        pixel_spacing=_pixel_spacing(ds, shared),
        slice_thickness=_positive(ds.get("SliceThickness")),
        spacing_between_slices=_positive(ds.get("SpacingBetweenSlices")),
        frames=read_frame_tags(ds),
    )


def image_orientation(ds: Any) -> tuple[float, float, float, float, float, float] | None:
    """ImageOrientationPatient, else an enhanced object's shared PlaneOrientationSequence."""
    orientation = _floats(ds.get("ImageOrientationPatient"), 6)
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    if orientation is None and shared is not None:
        orientation = _plane_orientation(shared)
    return cast("tuple[float, float, float, float, float, float] | None", orientation)


def _pixel_spacing(ds: Any, shared: Any) -> tuple[float, float] | None:
    spacing = _floats(ds.get("PixelSpacing"), 2)
    if spacing is None and shared is not None:
        spacing = _floats(_item_value(shared, "PixelMeasuresSequence", "PixelSpacing"), 2)
    if spacing is None or min(spacing) <= 0:
        return None
    return spacing[0], spacing[1]


def _positive(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def read_frame_tags(ds: Any) -> tuple[FrameTags, ...]:
    """Each frame's position and b-value from an enhanced object's functional groups.

    Per frame (PerFrameFunctionalGroupsSequence), else shared (SharedFunctionalGroupsSequence):
    PlanePositionSequence > ImagePositionPatient, PlaneOrientationSequence >
    ImageOrientationPatient, MRDiffusionSequence > DiffusionBValue. Empty unless there is one
    per-frame item for each of NumberOfFrames (> 1) frames.
    """
    frames = _integer(ds.get("NumberOfFrames")) or 1
    groups = ds.get("PerFrameFunctionalGroupsSequence")
    if frames < 2 or not groups or len(groups) != frames:
        return ()
    shared = _first_item(ds.get("SharedFunctionalGroupsSequence"))
    shared_orientation = _plane_orientation(shared) if shared is not None else None
    shared_b = _diffusion_b(shared) if shared is not None else None
    tags = []
    for index, item in enumerate(groups):
        position = _floats(_item_value(item, "PlanePositionSequence", "ImagePositionPatient"), 3)
        orientation = _plane_orientation(item) or shared_orientation
        b_value = _diffusion_b(item)
        tags.append(
            FrameTags(
                index,
                cast("tuple[float, float, float] | None", position),
                slice_position(position, orientation),
                shared_b if b_value is None else b_value,
            )
        )
    return tuple(tags)


def _first_item(sequence: Any) -> Any:
    try:
        return sequence[0] if sequence else None
    except (TypeError, IndexError, KeyError):
        return None


def _item_value(item: Any, sequence: str, keyword: str) -> Any:
    inner = _first_item(item.get(sequence)) if item is not None else None
    return inner.get(keyword) if inner is not None else None


def _plane_orientation(item: Any) -> tuple[float, ...] | None:
    return _floats(_item_value(item, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)


def _diffusion_b(item: Any) -> float | None:
    return _number(_item_value(item, "MRDiffusionSequence", "DiffusionBValue"))


def slice_normal(orientation: tuple[float, ...]) -> tuple[float, float, float] | None:
    """The unit normal of an ImageOrientationPatient (row x column), or None when degenerate."""
    rx, ry, rz, cx, cy, cz = orientation
    nx, ny, nz = ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx
    length = math.sqrt(nx * nx + ny * ny + nz * nz)
    if length < 1e-6:
        return None
    return nx / length, ny / length, nz / length


def slice_position(
    position: tuple[float, ...] | None,
    orientation: tuple[float, ...] | None,
    slice_location: float | None = None,
) -> float | None:
    """Mm along the slice normal; SliceLocation when position or orientation is missing."""
    normal = slice_normal(orientation) if orientation is not None else None
    if position is None or normal is None:
        return slice_location
    return round(sum(p * n for p, n in zip(position, normal, strict=True)), 4)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return None if number is None or number != int(number) else int(number)


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(n) for n in numbers):
        return None
    return numbers


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str | bytes) else list(value)
    return [str(item).strip() for item in items if item and str(item).strip()]


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None
