"""What an evaluation scores: every file of a labelled dataset, or of an out-of-scope set.

A labelled dataset is read exactly as ``infarctwatch train`` reads one
(`daemon.shared.dataset.scan`: class folders through the label map, ``manifest.csv`` case ids, the
case pattern, the exclude pattern). A folder whose ``manifest.csv`` has the columns ``kind`` and
``expected_code`` (``infarctwatch synth DIR --out-of-scope N``) is an out-of-scope set: every image
should be refused, and its kind is its truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from daemon.errors import DatasetError, LabelMapError
from daemon.shared.dataset import is_out_of_scope_set, out_of_scope_images, scan

if TYPE_CHECKING:
    from daemon.shared.dataset import Layout
    from daemon.shared.labels import LabelMap

Kind = Literal["labelled", "out_of_scope"]


@dataclass(frozen=True)
class Item:
    """One file to score."""

    rel: str
    """Path relative to the dataset root, with '/' separators."""
    case: str
    truth: str
    """The canonical class (labelled), or the out-of-scope kind."""
    expected_code: str = ""
    """Out-of-scope sets: the refusal code the manifest expects ('' when unknown)."""


@dataclass(frozen=True)
class Inputs:
    """The files of one evaluation and what kind of set they form."""

    root: Path
    kind: Kind
    items: tuple[Item, ...]
    excluded: int = 0
    """Files skipped by the layout's exclude pattern (labelled sets)."""
    case_ids_from: str = ""


def list_inputs(root: Path, layout: Layout, labels: LabelMap, classes: tuple[str, ...]) -> Inputs:
    """The files under ``root`` to score.

    Raises:
        DatasetError: the folder is missing or holds nothing to score, or a file has no case id.
        LabelMapError: a class folder's name is not in the label map, or maps to a class the model
            does not have (every such folder named).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if is_out_of_scope_set(root):
        entries = out_of_scope_images(root)
        if not entries:
            raise DatasetError(f"no out-of-scope images found in {root}")
        items = tuple(
            Item(PurePosixPath(file).as_posix(), image, kind, code)
            for file, kind, image, code in entries
        )
        return Inputs(root, "out_of_scope", items, case_ids_from="manifest")
    dataset = scan(root, layout, labels)
    unknown = sorted({s.raw_label for s in dataset.samples if s.label not in classes})
    if unknown:
        names = "\n".join(f"  - {name}" for name in unknown)
        raise LabelMapError(
            f"{len(unknown)} folder(s) in {root} map to classes the model does not have:\n{names}"
        )
    items = tuple(Item(s.rel, s.case_id, s.label) for s in dataset.samples)
    return Inputs(root, "labelled", items, dataset.excluded, dataset.case_ids_from)
