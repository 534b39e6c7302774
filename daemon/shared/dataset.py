"""Read a labelled dataset folder: find the DWI slices, map folder names to classes, name cases.

What ``infarctwatch train`` and ``infarctwatch evaluate`` both read, in one place (TensorFlow-free).

Layout: ``DATA/<class folder>/**/<file>``. A class folder's name is mapped through the label map
(`daemon.shared.labels.LabelMap.canonical`); a folder holding images whose name the map does not
know stops the run with every such folder named. Files whose name matches the layout's ``exclude``
(ADC maps and other non-DWI series) are skipped, as are dotfiles and files with other extensions.

Each file belongs to a case (one patient): the ``case_id`` column of ``DATA/manifest.csv`` when the
file is listed there, else the ``case`` group of ``case_pattern`` matched on the file name.

An out-of-scope set (``infarctwatch synth DIR --out-of-scope N``) is ``DATA/<kind>/<file>`` with
``manifest.csv`` columns ``file``, ``kind``, ``image_id`` and ``expected_code`` (the refusal the
daemon should give): `out_of_scope_images`.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

import structlog

from daemon.errors import DatasetError, LabelMapError

if TYPE_CHECKING:
    from daemon.shared.labels import LabelMap

log = structlog.get_logger("infarctwatch.dataset")
_LIST_AT_MOST = 10
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
"""The file extensions read as images (case-insensitive); DICOM files must end in ``.dcm``."""


class Layout(Protocol):
    """How a dataset folder is read: `DatasetLayout`, or the trainer's ``data`` settings."""

    @property
    def extensions(self) -> tuple[str, ...]:
        """File extensions read as slices (case-insensitive)."""

    @property
    def exclude(self) -> str:
        """Regex searched in each file name; a match means the file is not a DWI slice."""

    @property
    def case_pattern(self) -> str:
        """Regex with a named group ``case`` giving the case id from a file name."""

    @property
    def manifest(self) -> str | None:
        """CSV in the dataset root with ``file`` and ``case_id`` columns; wins over the pattern."""


@dataclass(frozen=True)
class DatasetLayout:
    """The default layout (``data`` in ``config/train.yaml`` documents each field)."""

    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    exclude: str = r"(?i)_(adc|eadc|exp|t1|t2|flair|mask)\.[a-z0-9]+$"
    case_pattern: str = r"^(?P<case>[^_]+)_"
    manifest: str | None = "manifest.csv"


@dataclass(frozen=True)
class Sample:
    """One DWI slice of the dataset."""

    rel: str
    """Path relative to the dataset root, with '/' separators."""
    raw_label: str
    """The class folder's name as found."""
    label: str
    """The canonical class."""
    case_id: str


@dataclass(frozen=True)
class Dataset:
    """Every usable slice of a dataset folder."""

    root: Path
    samples: tuple[Sample, ...]
    excluded: int
    """Files skipped by the layout's ``exclude``."""
    case_ids_from: str
    """"manifest", "pattern" or "manifest+pattern"."""

    def path(self, sample: Sample) -> Path:
        """Absolute path of a sample."""
        return self.root / sample.rel


def _read_manifest(root: Path, name: str | None) -> dict[str, str]:
    if not name:
        return {}
    path = root / name
    if not path.is_file():
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or ())
            if not {"file", "case_id"} <= columns:
                has = ", ".join(sorted(columns))
                raise DatasetError(f"{path} needs the columns 'file' and 'case_id' (has: {has})")
            return {row["file"].replace("\\", "/"): row["case_id"] for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def _candidates(folder: Path, extensions: set[str]) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() in extensions
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _case_id(
    rel: str, manifest: dict[str, str], pattern: re.Pattern[str]
) -> tuple[str | None, str]:
    """The case id of a file and where it came from ("manifest" or "pattern")."""
    if manifest.get(rel):
        return manifest[rel], "manifest"
    match = pattern.search(PurePosixPath(rel).name)
    return (match.group("case") or None if match else None), "pattern"


def _refuse(root: Path, cfg: Layout, unknown: list[str], unnamed: list[str]) -> None:
    if unknown:
        names = "\n".join(f"  - {name}" for name in unknown)
        raise LabelMapError(
            f"{len(unknown)} folder(s) in {root} are not known class names:\n{names}\n"
            "Map each to a class under 'merge' in the label map (train: data.labels, evaluate: "
            "--labels), or move it out."
        )
    if unnamed:
        shown = "\n".join(f"  - {rel}" for rel in unnamed[:_LIST_AT_MOST])
        extra = len(unnamed) - _LIST_AT_MOST
        more = f"\n  ... and {extra} more" if extra > 0 else ""
        raise DatasetError(
            f"{len(unnamed)} file(s) have no case id: not in {cfg.manifest or 'a manifest'} and "
            f"no match for the case pattern {cfg.case_pattern!r}:\n{shown}{more}"
        )


def scan(root: Path, cfg: Layout, labels: LabelMap) -> Dataset:
    """List the DWI slices of a folder-per-class dataset.

    Raises:
        DatasetError: the folder is missing or empty, or a file name yields no case id.
        LabelMapError: one or more folders hold images under a name the label map cannot map.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    extensions = {e.lower() for e in cfg.extensions}
    exclude = re.compile(cfg.exclude)
    pattern = re.compile(cfg.case_pattern)
    manifest = _read_manifest(root, cfg.manifest)
    samples: list[Sample] = []
    unknown: list[str] = []
    unnamed: list[str] = []
    excluded = 0
    sources: set[str] = set()
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _candidates(folder, extensions)
        kept = [p for p in files if not exclude.search(p.name)]
        excluded += len(files) - len(kept)
        if not kept:
            log.info("folder_without_slices", folder=folder.name)
            continue
        try:
            label = labels.canonical(folder.name)
        except LabelMapError:
            unknown.append(folder.name)
            continue
        for path in kept:
            rel = path.relative_to(root).as_posix()
            case_id, source = _case_id(rel, manifest, pattern)
            if case_id is None:
                unnamed.append(rel)
                continue
            sources.add(source)
            samples.append(Sample(rel=rel, raw_label=folder.name, label=label, case_id=case_id))
    _refuse(root, cfg, unknown, unnamed)
    if not samples:
        raise DatasetError(
            f"no DWI slices found in {root} (extensions: {', '.join(sorted(extensions))})"
        )
    return Dataset(
        root=root,
        samples=tuple(samples),
        excluded=excluded,
        case_ids_from="+".join(sorted(sources)),
    )


def class_counts(samples: tuple[Sample, ...] | list[Sample]) -> dict[str, int]:
    """Slices per canonical class."""
    return dict(sorted(Counter(s.label for s in samples).items()))


def _scope_manifest(root: Path) -> list[tuple[str, str, str, str]] | None:
    path = root / "manifest.csv"
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not {"file", "kind", "image_id"} <= set(reader.fieldnames or ()):
                return None
            return [
                (r["file"], r["kind"], r["image_id"], r.get("expected_code") or "") for r in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def _scope_folders(root: Path) -> list[tuple[str, str, str, str]]:
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (
            path.is_file()
            and path.suffix.lower() in IMAGE_EXTENSIONS
            and len(rel.parts) >= 2
            and not any(p.startswith(".") for p in rel.parts)
        ):
            found.append((rel.as_posix(), rel.parts[0], path.name.split("_")[0], ""))
    return found


def out_of_scope_images(root: Path) -> list[tuple[str, str, str, str]]:
    """``(file, kind, image_id, expected_code)`` of every image of an out-of-scope set.

    From ``manifest.csv`` when it has the columns ``file``, ``kind`` and ``image_id``; else every
    image under ``root/<kind>/``, its image id the file name up to the first ``_`` and no
    expected code (``''``).

    Raises:
        DatasetError: the manifest cannot be read.
    """
    return _scope_manifest(root) or _scope_folders(root)


def is_out_of_scope_set(root: Path) -> bool:
    """True when ``root/manifest.csv`` has the ``kind`` and ``expected_code`` columns."""
    path = root / "manifest.csv"
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            columns = set(next(csv.reader(fh), []))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return {"file", "kind", "expected_code"} <= columns


def file_format(rel: str) -> str:
    """The file format named by a file's extension: png, jpeg, dicom, or the extension itself."""
    suffix = PurePosixPath(rel).suffix.lower()
    return {".jpg": "jpeg", ".jpeg": "jpeg", ".dcm": "dicom", ".tif": "tiff"}.get(
        suffix, suffix.lstrip(".") or "none"
    )
