"""The out-of-scope dataset (``infarctwatch synth --out-of-scope N``) and the shifted test set.

Out of scope: ``DATA/<kind>/<file>`` with ``manifest.csv`` columns ``file``, ``kind`` and
``image_id`` (``expected_code``, ``format`` and the rest are kept for reporting). Without a manifest
the folder name is the kind and the file name up to the first ``_`` the image id. Each image is its
own case; the images are split by case into train / validation / test like the DWI data (same
shares, stratified by kind, the run seed), so no image is in two splits.

Shifted test: a folder-per-class dataset scanned with the run's label map and data settings;
every slice is test data.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import structlog

from trainer.dataset import Dataset, Sample, Tensors, load_tensors, scan
from trainer.errors import DatasetError
from trainer.split import SPLITS, SplitRow, assign_cases, leaked_cases, split_rows

if TYPE_CHECKING:
    from daemon.shared.preprocess import PreprocessSpec
    from trainer.config import DataConfig, SplitConfig
    from trainer.labels import LabelMap

log = structlog.get_logger("trainer.scope_data")
_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"})


@dataclass(frozen=True)
class ScopeSplit:
    """Out-of-scope images split by image, loaded per split."""

    root: Path
    rows: list[SplitRow]
    """``label`` and ``raw_label`` hold the kind."""
    expected_code: dict[str, str]
    """file -> the refusal code the synthetic manifest expects ('' when unknown)."""
    tensors: dict[str, Tensors]


def _from_manifest(root: Path) -> list[tuple[str, str, str, str]] | None:
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


def _from_folders(root: Path) -> list[tuple[str, str, str, str]]:
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (
            path.is_file()
            and path.suffix.lower() in _EXTENSIONS
            and len(rel.parts) >= 2
            and not any(p.startswith(".") for p in rel.parts)
        ):
            found.append((rel.as_posix(), rel.parts[0], path.name.split("_")[0], ""))
    return found


def load_out_of_scope(
    root: Path, split: SplitConfig, spec: PreprocessSpec, *, seed: int, workers: int
) -> ScopeSplit:
    """Scan, split by image and preprocess an out-of-scope dataset.

    Images the daemon's preprocessing refuses are skipped and listed (``Tensors.skipped``): the
    daemon would report them as errors, never with a location.

    Raises:
        DatasetError: the folder is missing or holds no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"out-of-scope dataset {root} does not exist")
    entries = _from_manifest(root) or _from_folders(root)
    if not entries:
        raise DatasetError(f"no out-of-scope images found in {root}")
    samples = tuple(
        Sample(rel=PurePosixPath(f).as_posix(), raw_label=kind, label=kind, case_id=image)
        for f, kind, image, _ in entries
    )
    assignment = assign_cases(samples, validation=split.validation, test=split.test, seed=seed)
    rows = split_rows(samples, assignment)
    if leaked_cases(rows):  # one image per case: cannot happen, checked like the DWI split
        raise DatasetError("out-of-scope images in more than one split")
    tensors = {
        name: load_tensors(
            root, tuple(s for s in samples if assignment[s.case_id] == name), spec, workers=workers
        )
        for name in SPLITS
    }
    log.info(
        "out_of_scope",
        root=str(root),
        **{name: len(t.samples) for name, t in tensors.items()},
        skipped=sum(len(t.skipped) for t in tensors.values()),
    )
    return ScopeSplit(root, rows, {f: code for f, _, _, code in entries}, tensors)


def load_shifted(
    root: Path, data: DataConfig, labels: LabelMap, spec: PreprocessSpec
) -> tuple[Dataset, Tensors]:
    """Scan and preprocess a shifted-acquisition test set (every slice is test data).

    Raises:
        DatasetError, LabelMapError: as `trainer.dataset.scan`.
    """
    dataset = scan(Path(root), data, labels)
    tensors = load_tensors(dataset.root, dataset.samples, spec, workers=data.workers)
    log.info("shifted_test", root=str(root), slices=len(tensors.samples))
    return dataset, tensors


def file_format(rel: str) -> str:
    """The file format named by a file's extension: png, jpeg, dicom, or the extension itself."""
    suffix = PurePosixPath(rel).suffix.lower()
    return {".jpg": "jpeg", ".jpeg": "jpeg", ".dcm": "dicom", ".tif": "tiff"}.get(
        suffix, suffix.lstrip(".") or "none"
    )
