"""The label map: canonical classes, merging raw folder names, laterality."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from daemon.errors import LabelMapError
from daemon.shared.labels import load_label_map, mirror_name

if TYPE_CHECKING:
    from pathlib import Path


def test_repository_map_has_the_27_canonical_classes() -> None:
    """config/labels.yaml holds exactly the 27 classes, every raw name maps onto one of them."""
    labels = load_label_map()
    assert len(labels.classes) == 27
    assert labels.classes[0] == "No acute infarct"
    assert set(labels.merge.values()) == set(labels.classes)


def test_raw_names_merge_case_and_separator_insensitively() -> None:
    """'pontine_infarct on-the right' maps like 'Pontine infarct on the right'."""
    labels = load_label_map()
    assert labels.canonical("pontine_infarct on-the right") == "Right pons"
    assert labels.canonical("LEFT CENTRUM SEMI OVALE") == "Left centrum semiovale"


def test_unknown_folder_is_refused_with_a_hint() -> None:
    """An unmapped folder name says where to add it."""
    with pytest.raises(LabelMapError, match="add it under 'merge'"):
        load_label_map().canonical("Right big toe")


def test_mirror_swaps_sides_and_keeps_midline() -> None:
    """A flip turns Left into Right; midline classes stay; unmatched two-lesion mirrors are None."""
    labels = load_label_map()
    assert labels.mirror("Left thalamus") == "Right thalamus"
    assert labels.mirror("Splenium of the corpus callosum") == "Splenium of the corpus callosum"
    assert labels.mirror("Right frontal and parietal lobes") is None
    assert mirror_name("Left centrum semiovale and right parietal lobe") == (
        "Right centrum semiovale and left parietal lobe"
    )


def test_bad_map_reports_every_problem(tmp_path: Path) -> None:
    """A merge target that is not a class and an unknown key are both reported."""
    path = tmp_path / "labels.yaml"
    path.write_text("classes: [A, B]\nmerge: {x: C}\nextra: 1\n")
    with pytest.raises(LabelMapError) as info:
        load_label_map(path)
    assert "unknown keys: extra" in str(info.value)
    assert "'C' is not one of 'classes'" in str(info.value)
