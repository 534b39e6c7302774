"""``infarctwatch synth``: a synthetic DWI (b1000) dataset from real anatomy (MNI152 + AAL3).

Call `generate` from Python (samples, benchmarks, tests) or run ``infarctwatch synth OUT``.
See ``docs/synth.md`` for the model, the region rules, the layout and the credits.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trainer.labels import REPO_LABELS, load_label_map
from trainer.synth.manifest import ManifestRow
from trainer.synth.options import (
    SynthOptions,
    default_workers,
    parse_classes,
    parse_formats,
    parse_slices,
)
from trainer.synth.pipeline import run

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ManifestRow", "SynthOptions", "generate"]


def generate(
    out_dir: str | Path,
    *,
    cases_per_class: int = 10,
    slices_per_case: int | str | tuple[int, int] = (1, 3),
    formats: str = "png",
    seed: int = 0,
    workers: int | None = None,
    classes: str | Sequence[str] | None = None,
    matrix: int = 256,
    adc: bool = True,
    labels: str | Path = REPO_LABELS,
    montage_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    progress: bool | None = False,
) -> list[ManifestRow]:
    """Generate a dataset in ``out_dir`` and return its manifest rows (one per DWI file).

    ``formats`` is a spec like ``"png=0.5,jpeg=0.3,dicom=0.2"``; ``slices_per_case`` a count or
    ``"2-4"``; ``classes`` canonical names or raw variants (default: every class of the label
    map). Same arguments, same files.

    Raises:
        SynthError: bad options, an output folder that may not be replaced, missing anatomy.
        LabelMapError: the label map cannot be read.
    """
    label_map = load_label_map(Path(labels))
    options = SynthOptions(
        out_dir=Path(out_dir),
        cases_per_class=cases_per_class,
        slices_per_case=parse_slices(slices_per_case),
        formats=parse_formats(formats),
        seed=seed,
        classes=parse_classes(classes, label_map) if classes else (),
        matrix=matrix,
        adc=adc,
        labels_path=Path(labels),
        workers=workers if workers is not None else default_workers(),
        montage_dir=Path(montage_dir) if montage_dir is not None else None,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        force=force,
        progress=progress,
    )
    return run(options)
