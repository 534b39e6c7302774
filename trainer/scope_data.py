"""The out-of-scope dataset (``infarctwatch synth --out-of-scope N``) and the shifted test set.

Out of scope: `daemon.shared.dataset.out_of_scope_images` lists the images. Each image is its
own case; the images are split by case into train / validation / test like the DWI data (same
shares, stratified by kind, the run seed), so no image is in two splits.

Shifted test: a folder-per-class dataset scanned with the run's label map and data settings;
every slice is test data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import structlog

from daemon.shared.dataset import Dataset, Sample, out_of_scope_images, scan
from trainer.dataset import Tensors, load_tensors
from trainer.errors import DatasetError
from trainer.split import SPLITS, SplitRow, assign_cases, leaked_cases, split_rows

if TYPE_CHECKING:
    from daemon.shared.labels import LabelMap
    from daemon.shared.preprocess import PreprocessSpec
    from trainer.config import DataConfig, SplitConfig

log = structlog.get_logger("trainer.scope_data")


@dataclass(frozen=True)
class ScopeSplit:
    """Out-of-scope images split by image, loaded per split."""

    root: Path
    rows: list[SplitRow]
    """``label`` and ``raw_label`` hold the kind."""
    expected_code: dict[str, str]
    """file -> the refusal code the synthetic manifest expects ('' when unknown)."""
    tensors: dict[str, Tensors]


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
    entries = out_of_scope_images(root)
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
