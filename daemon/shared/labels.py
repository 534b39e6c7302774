"""The label map: canonical classes, raw folder-name variants and laterality.

Loaded from ``labels.yaml`` (see the comments there; shipped beside this module, and linked as
``config/labels.yaml`` in the repository). Used by ``synth`` to name folders, and by ``train`` and
``evaluate`` to map any folder-per-class dataset onto the canonical classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from daemon.errors import LabelMapError

DEFAULT_LABELS = Path(__file__).resolve().parent / "labels.yaml"
"""The label map shipped with infarctwatch (package data, so the edge install has it too)."""
_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s_\-]+")


def normalise_name(name: str) -> str:
    """Folder-name key: lower case, runs of spaces, '_' and '-' folded to one space."""
    return _SEPARATORS.sub(" ", name).strip().lower()


def mirror_name(label: str) -> str:
    """Swap 'Left' and 'Right' in a label, keeping the case of each word."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        return other.capitalize() if word[0].isupper() else other

    return _SIDE.sub(swap, label)


@dataclass(frozen=True)
class LabelMap:
    """Canonical classes in output order plus the raw-name merge map."""

    classes: tuple[str, ...]
    merge: dict[str, str]
    """Normalised raw name -> canonical class (canonical names included)."""
    raw_variants: dict[str, tuple[str, ...]]
    """Canonical class -> raw folder names that map to it (the canonical name first)."""

    def canonical(self, raw: str) -> str:
        """Map a raw folder name to its canonical class.

        Raises:
            LabelMapError: the name is not in the map.
        """
        try:
            return self.merge[normalise_name(raw)]
        except KeyError:
            raise LabelMapError(
                f"folder {raw!r} is not a known class name; add it under 'merge' in labels.yaml"
            ) from None

    def mirror(self, label: str) -> str | None:
        """The class a left-right flip turns ``label`` into, or None if that is not a class."""
        mirrored = mirror_name(label)
        return mirrored if mirrored in self.classes else None

    def index(self, label: str) -> int:
        """Output index of a canonical class."""
        return self.classes.index(label)


def _merge_map(
    classes: list[str], raw_map: dict[str, str], problems: list[str]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    merge: dict[str, str] = {normalise_name(c): c for c in classes}
    variants: dict[str, list[str]] = {c: [c] for c in classes}
    for raw, target in raw_map.items():
        key = normalise_name(str(raw))
        if target not in variants:
            problems.append(f"At 'merge.{raw}': {target!r} is not one of 'classes'")
        elif key in merge and merge[key] != target:
            problems.append(f"At 'merge.{raw}': already maps to {merge[key]!r}")
        else:
            merge[key] = target
            if str(raw) not in variants[target]:
                variants[target].append(str(raw))
    return merge, variants


def load_label_map(path: Path = DEFAULT_LABELS) -> LabelMap:
    """Read and check a labels.yaml.

    Raises:
        LabelMapError: the file is missing or malformed, listing every problem.
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise LabelMapError(f"cannot read label map {path}: {exc}") from exc
    problems: list[str] = []
    if not isinstance(data, dict):
        raise LabelMapError(f"{path}: expected a mapping with 'classes' and 'merge'")
    unknown = sorted(set(data) - {"classes", "merge"})
    if unknown:
        problems.append(f"unknown keys: {', '.join(unknown)}")
    classes = data.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise LabelMapError(f"{path}: 'classes' must be a list of names")
    if len(set(classes)) != len(classes):
        problems.append("'classes' has duplicates")
    merge, variants = _merge_map(classes, data.get("merge") or {}, problems)
    if problems:
        raise LabelMapError(f"{path}: " + "; ".join(problems))
    return LabelMap(
        classes=tuple(classes),
        merge=merge,
        raw_variants={c: tuple(v) for c, v in variants.items()},
    )
