"""``--init-from BUNDLE``: the shipped model a site fine-tunes, and what the child records of it.

The parent must be a verified bundle (`daemon.shared.bundle.load_bundle`) carrying ``keras_model``
(the Keras model, listed and hashed like every file) and labels equal, in order, to the classes of
the run's label map: the output layer is reused as it is, so a class cannot be added, dropped or
moved. When they differ the run stops before anything is made, naming the differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from daemon.errors import BundleError
from daemon.shared.bundle import designated_bundle, load_bundle
from trainer.errors import DatasetError


@dataclass(frozen=True)
class Parent:
    """The bundle a run starts from."""

    model: keras.Model
    info: dict[str, str]
    """name, version, sha256 (of its manifest: the bundle sha256 the daemon reports)."""
    architecture: str
    width: float
    """``model.width`` of ``compact`` (1 for the other networks and bundles that predate it)."""
    has_scope_head: bool


def load_parent(path: Path, classes: tuple[str, ...]) -> Parent:
    """Load a bundle's Keras model for fine-tuning and check its labels against ``classes``.

    Raises:
        DatasetError: not a verified bundle, no Keras model in it, or other labels.
    """
    try:
        bundle = load_bundle(designated_bundle(Path(path)))
    except BundleError as exc:
        raise DatasetError(f"--init-from: {exc}") from exc
    keras_file = bundle.manifest.get("keras_model")
    if not keras_file:
        raise DatasetError(
            f"--init-from: bundle {bundle.name} {bundle.version} carries no Keras model "
            "(keras_model): bundles exported before fine-tuning support cannot be fine-tuned; "
            "re-export its run with 'infarctwatch export RUN' or train from scratch"
        )
    if bundle.labels != classes:
        missing = [c for c in bundle.labels if c not in classes]
        extra = [c for c in classes if c not in bundle.labels]
        detail = []
        if missing:
            detail.append(f"only in the bundle: {', '.join(missing)}")
        if extra:
            detail.append(f"only in the label map: {', '.join(extra)}")
        if not detail:
            detail.append("same classes in another order")
        raise DatasetError(
            f"--init-from: the label map's classes differ from the bundle's labels.json "
            f"({'; '.join(detail)}). Fine-tuning keeps the bundle's output layer: give a label "
            "map (data.labels) whose classes are the bundle's labels.json in that order, mapping "
            "the site's folder names to them under 'merge'; a site with other classes trains a "
            "new model from scratch."
        )
    model = keras.models.load_model(bundle.path / keras_file)
    manifest: dict[str, Any] = bundle.manifest
    return Parent(
        model=model,
        info={"name": bundle.name, "version": bundle.version, "sha256": bundle.sha256},
        architecture=str(manifest.get("architecture", "seed")),
        width=float(manifest.get("width", 1.0)),
        has_scope_head=len(model.outputs) == 2,
    )
