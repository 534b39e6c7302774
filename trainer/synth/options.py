"""What to generate: `SynthOptions` and the parsers for its command-line spellings."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from daemon.shared.labels import DEFAULT_LABELS, LabelMap
from trainer.errors import LabelMapError, SynthError
from trainer.synth.profiles import PROFILES
from trainer.synth.regions import CLASS_REGIONS
from trainer.synth.writers import FORMATS

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

FORMAT_ALIASES = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "dicom": "dicom", "dcm": "dicom"}
MATRIX_RANGE = (64, 512)
NEGATIVE_SHARE = 0.5
"""Default share of all cases that are 'No acute infarct' (as many as all infarct classes
together); per-class balance among the infarct classes is unchanged."""
MAX_NEGATIVE_SHARE = 0.95
MAX_OUT_OF_SCOPE = 10_000
MAX_SLICES_PER_CASE = 32
STRUCTURAL = ("none", "t1", "flair", "mixed")
"""``--structural``: no other series, a T1, a FLAIR, or either (drawn per study)."""
MAX_SERIES_SLICES = 64


@dataclass(frozen=True)
class SeriesSpec:
    """How ``--series`` writes a study (see `trainer.synth.series`)."""

    multiframe: bool = False
    """One Enhanced MR Image Storage file per series instead of one file per image."""
    structural: str = "none"
    """A T1 or FLAIR series beside the DWI and ADC series: `STRUCTURAL`."""
    slices: int = 0
    """Slice positions of the DWI series: 0 = as many as cover the brain; N = N contiguous
    positions holding the slice that shows the lesion clearly, centred on the lesion as near
    as that allows (a small series for samples, tests)."""


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class SynthOptions:
    """One generator run. Only the fields marked *content* change the files written."""

    out_dir: Path
    cases_per_class: int = 10
    """Content: cases per class."""
    slices_per_case: tuple[int, int] = (1, 3)
    """Content: inclusive range; each case draws its count from it."""
    formats: tuple[tuple[str, float], ...] = (("png", 1.0),)
    """Content: (format, proportion) pairs; proportions sum to 1."""
    seed: int = 0
    """Content."""
    classes: tuple[str, ...] = ()
    """Content: canonical classes to generate, in label-map order; empty = all."""
    matrix: int | None = None
    """Content: fixed scanner matrix (acquired = displayed), or None: drawn from the profile."""
    adc: bool = True
    """Content: also write the ADC map of every slice."""
    labels_path: Path = DEFAULT_LABELS
    workers: int = field(default_factory=default_workers)
    montage_dir: Path | None = None
    cache_dir: Path | None = None
    force: bool = False
    progress: bool | None = False
    """True: always show a progress bar; None: only on a terminal; False: never."""
    profile: str = "train"
    """Content: acquisition profile (`trainer.synth.profiles`): ``train`` or ``shifted``."""
    negative_share: float | None = NEGATIVE_SHARE
    """Content: share of all cases that are 'No acute infarct'; None = cases_per_class like any
    class."""
    out_of_scope: int = 0
    """Content: > 0 makes an out-of-scope dataset instead: this many images of every kind."""
    series: SeriesSpec | None = None
    """Content: write a DWI study per case (``--series``) instead of separate slices."""

    def content(self) -> dict[str, Any]:
        """The options that determine the output, for ``synth.json``."""
        return {
            "cases_per_class": self.cases_per_class,
            "slices_per_case": list(self.slices_per_case),
            "formats": dict(self.formats),
            "seed": self.seed,
            "classes": list(self.classes),
            "matrix": self.matrix,
            "adc": self.adc,
            "profile": self.profile,
            "negative_share": self.negative_share,
            "out_of_scope": self.out_of_scope,
            "series": asdict(self.series) if self.series is not None else None,
        }


def parse_formats(spec: str) -> tuple[tuple[str, float], ...]:
    """``"png=0.5,jpeg=0.3,dicom=0.2"``, ``"png,jpeg"`` (equal shares) or ``"dicom"``.

    Raises:
        SynthError: an unknown format, a bad or non-positive share, or a repeated format.
    """
    shares: dict[str, float] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, value = item.partition("=")
        canonical = FORMAT_ALIASES.get(name.strip().lower())
        if canonical is None:
            raise SynthError(f"unknown format {name.strip()!r}; use {', '.join(FORMATS)}")
        try:
            share = float(value) if value.strip() else 1.0
        except ValueError:
            raise SynthError(f"format share {value!r} is not a number") from None
        if not share > 0:
            raise SynthError(f"format share for {canonical} must be positive, got {value!r}")
        if canonical in shares:
            raise SynthError(f"format {canonical} is given twice")
        shares[canonical] = share
    if not shares:
        raise SynthError("no format given")
    total = sum(shares.values())
    return tuple((name, shares[name] / total) for name in FORMATS if name in shares)


def parse_slices(spec: str | int | tuple[int, int]) -> tuple[int, int]:
    """``3`` or ``"3"`` (exactly 3) or ``"2-4"`` (2 to 4 per case).

    Raises:
        SynthError: not a count or range within 1..MAX_SLICES_PER_CASE.
    """
    if isinstance(spec, tuple):
        low, high = spec
    elif isinstance(spec, int):
        low = high = spec
    else:
        match = _RANGE.match(spec)
        if not match:
            raise SynthError(f"slices per case {spec!r} is not a count (3) or a range (2-4)")
        low = int(match.group(1))
        high = int(match.group(2) or low)
    if not 1 <= low <= high <= MAX_SLICES_PER_CASE:
        raise SynthError(
            f"slices per case must be 1..{MAX_SLICES_PER_CASE} with low <= high, got {spec!r}"
        )
    return low, high


def parse_negative_share(spec: str | float | None) -> float | None:
    """``0.5`` (share of all cases) or ``balanced`` (None: cases_per_class like every class).

    Raises:
        SynthError: neither a number nor ``balanced``.
    """
    if spec is None or isinstance(spec, float | int):
        return None if spec is None else float(spec)
    if spec.strip().lower() == "balanced":
        return None
    try:
        return float(spec)
    except ValueError:
        raise SynthError(f"negative share {spec!r} is not a number or 'balanced'") from None


def parse_classes(spec: str | Sequence[str], label_map: LabelMap) -> tuple[str, ...]:
    """Comma-separated class names (canonical or any raw variant) -> canonical, label-map order.

    Raises:
        SynthError: a name the label map does not know, listing all of them.
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: set[str] = set()
    unknown: list[str] = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        try:
            chosen.add(label_map.canonical(name))
        except LabelMapError:
            unknown.append(name)
    if unknown:
        raise SynthError(f"unknown class(es): {', '.join(repr(u) for u in unknown)}")
    return tuple(c for c in label_map.classes if c in chosen)


def _series_problems(options: SynthOptions) -> list[str]:
    series = options.series
    if series is None:
        return []
    problems = []
    if series.structural not in STRUCTURAL:
        problems.append(
            f"unknown structural series {series.structural!r}; use {', '.join(STRUCTURAL)}"
        )
    if not 0 <= series.slices <= MAX_SERIES_SLICES:
        problems.append(
            f"series slices must be 0 (cover the brain) .. {MAX_SERIES_SLICES}, got {series.slices}"
        )
    if options.out_of_scope:
        problems.append("--series and --out-of-scope cannot be combined")
    return problems


def check(options: SynthOptions, label_map: LabelMap) -> None:
    """Reject options that cannot work, listing every problem at once.

    Raises:
        SynthError: one or more problems.
    """
    problems: list[str] = []
    if options.cases_per_class < 1:
        problems.append(f"cases per class must be at least 1, got {options.cases_per_class}")
    if options.workers < 1:
        problems.append(f"workers must be at least 1, got {options.workers}")
    low, high = MATRIX_RANGE
    if options.matrix is not None and not low <= options.matrix <= high:
        problems.append(f"matrix must be {low}..{high} pixels, got {options.matrix}")
    if options.profile not in PROFILES:
        problems.append(f"unknown profile {options.profile!r}; use {', '.join(PROFILES)}")
    share = options.negative_share
    if share is not None and not 0.0 <= share <= MAX_NEGATIVE_SHARE:
        problems.append(f"negative share must be 0..{MAX_NEGATIVE_SHARE}, got {share}")
    if not 0 <= options.out_of_scope <= MAX_OUT_OF_SCOPE:
        problems.append(
            f"out-of-scope images per kind must be 0..{MAX_OUT_OF_SCOPE}, "
            f"got {options.out_of_scope}"
        )
    unsupported = [c for c in (options.classes or label_map.classes) if c not in CLASS_REGIONS]
    if unsupported:
        problems.append(
            "the generator has no anatomy rule for class(es) "
            + ", ".join(repr(c) for c in unsupported)
        )
    problems += _series_problems(options)
    if options.seed < 0:
        problems.append(f"seed must be >= 0, got {options.seed}")
    if problems:
        raise SynthError("; ".join(problems))
