"""Read a folder-per-class dataset: find the DWI slices, map folder names to classes, name cases.

Layout: ``DATA/<class folder>/**/<file>``. A class folder's name is mapped through the label map
(`trainer.labels.LabelMap.canonical`); a folder holding images whose name the map does not know
stops the run with every such folder named. Files whose name matches ``data.exclude`` (ADC maps and
other non-DWI series) are skipped, as are dotfiles and files with other extensions.

Each file belongs to a case (one patient): the ``case_id`` column of ``DATA/manifest.csv`` when the
file is listed there, else the ``case`` group of ``data.case_pattern`` matched on the file name.

Images are read with `daemon.shared.decode.decode` and turned into tensors with
`daemon.shared.preprocess.preprocess`: the very code the daemon serves with. Each image is
preprocessed once; the grey plane is cached (the channels the model sees are copies of it): as
float16 for the training split, which only feeds augmentation, and as float32 for evaluation, so
held-out figures are computed on exactly the tensors the daemon would serve.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import structlog

from daemon.errors import ScanError
from daemon.shared.decode import decode
from daemon.shared.preprocess import PreprocessSpec, preprocess
from trainer.errors import DatasetError, LabelMapError

if TYPE_CHECKING:
    from trainer.config import DataConfig
    from trainer.labels import LabelMap

log = structlog.get_logger("trainer.dataset")
_LIST_AT_MOST = 10


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
    """Files skipped by ``data.exclude``."""
    case_ids_from: str
    """"manifest", "pattern" or "manifest+pattern"."""

    def path(self, sample: Sample) -> Path:
        """Absolute path of a sample."""
        return self.root / sample.rel


@dataclass(frozen=True)
class Skipped:
    """A file that could not be read or preprocessed."""

    rel: str
    code: str
    message: str


@dataclass(frozen=True)
class Tensors:
    """Preprocessed grey planes of some samples, in the samples' order."""

    samples: tuple[Sample, ...]
    grey: npt.NDArray[np.floating]
    """``(n, size, size)``, float16 or float32."""
    skipped: tuple[Skipped, ...]


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


def _refuse(root: Path, cfg: DataConfig, unknown: list[str], unnamed: list[str]) -> None:
    if unknown:
        names = "\n".join(f"  - {name}" for name in unknown)
        raise LabelMapError(
            f"{len(unknown)} folder(s) in {root} are not known class names:\n{names}\n"
            "Map each to a class under 'merge' in the label map (data.labels), or move it out."
        )
    if unnamed:
        shown = "\n".join(f"  - {rel}" for rel in unnamed[:_LIST_AT_MOST])
        extra = len(unnamed) - _LIST_AT_MOST
        more = f"\n  ... and {extra} more" if extra > 0 else ""
        raise DatasetError(
            f"{len(unnamed)} file(s) have no case id: not in {cfg.manifest or 'a manifest'} and "
            f"no match for data.case_pattern {cfg.case_pattern!r}:\n{shown}{more}"
        )


def scan(root: Path, cfg: DataConfig, labels: LabelMap) -> Dataset:
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


def _load_one(
    root: Path, sample: Sample, spec: PreprocessSpec, dtype: type[np.floating]
) -> npt.NDArray[np.floating] | Skipped:
    path = root / sample.rel
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Skipped(sample.rel, "READ_ERROR", str(exc))
    try:
        tensor = preprocess(decode(data, path.name).pixels, spec)
    except ScanError as exc:
        return Skipped(sample.rel, exc.code, exc.message)
    return tensor[:, :, 0].astype(dtype)


def load_tensors(
    root: Path,
    samples: tuple[Sample, ...] | list[Sample],
    spec: PreprocessSpec,
    *,
    workers: int,
    dtype: type[np.floating] = np.float32,
) -> Tensors:
    """Decode and preprocess every sample once; unreadable files are skipped and listed."""
    size = spec.input_size
    kept: list[Sample] = []
    planes: list[npt.NDArray[np.floating]] = []
    skipped: list[Skipped] = []
    step = max(500, len(samples) // 10)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preprocess") as pool:
        results = pool.map(lambda s: _load_one(root, s, spec, dtype), samples)
        for i, (sample, result) in enumerate(zip(samples, results, strict=True), start=1):
            if isinstance(result, Skipped):
                skipped.append(result)
                log.warning(
                    "slice_skipped", file=result.rel, code=result.code, reason=result.message
                )
            else:
                kept.append(sample)
                planes.append(result)
            if i % step == 0 or i == len(samples):
                log.info("preprocessing", done=i, total=len(samples), skipped=len(skipped))
    grey = np.stack(planes) if planes else np.zeros((0, size, size), dtype)
    return Tensors(samples=tuple(kept), grey=grey, skipped=tuple(skipped))
