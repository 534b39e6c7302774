"""``infarctwatch synth``: a synthetic DWI (b1000) dataset from real anatomy (MNI152 + AAL3).

Call `generate` from Python (samples, benchmarks, tests) or run ``infarctwatch synth OUT``.
See ``docs/synth.md`` for the model, the region rules, the layout and the credits.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.shared.labels import DEFAULT_LABELS, load_label_map
from trainer.synth.manifest import ManifestRow
from trainer.synth.options import (
    NEGATIVE_SHARE,
    SeriesSpec,
    SynthOptions,
    default_workers,
    parse_classes,
    parse_formats,
    parse_negative_share,
    parse_slices,
)
from trainer.synth.outofscope import OutOfScopeRow
from trainer.synth.pipeline import run

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ManifestRow", "OutOfScopeRow", "SeriesSpec", "SynthOptions", "generate"]


def generate(
    out_dir: str | Path,
    *,
    cases_per_class: int = 10,
    slices_per_case: int | str | tuple[int, int] = (1, 3),
    formats: str = "png",
    seed: int = 0,
    workers: int | None = None,
    classes: str | Sequence[str] | None = None,
    matrix: int | None = None,
    adc: bool = True,
    labels: str | Path = DEFAULT_LABELS,
    montage_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    progress: bool | None = False,
    profile: str = "train",
    negative_share: float | str | None = NEGATIVE_SHARE,
    out_of_scope: int = 0,
    series: SeriesSpec | bool = False,
) -> list[Any]:
    """Generate a dataset in ``out_dir`` and return its manifest rows (one per DWI file).

    ``formats`` is a spec like ``"png=0.5,jpeg=0.3,dicom=0.2"``; ``slices_per_case`` a count or
    ``"2-4"``; ``classes`` canonical names or raw variants (default: every class of the label
    map). ``matrix`` fixes the acquired and displayed matrix (default: drawn from the profile).
    ``profile`` is ``train`` or ``shifted`` (ranges outside train's, other random streams);
    ``negative_share`` the share of all cases that are 'No acute infarct' (``"balanced"`` or
    None: ``cases_per_class`` like any class). ``out_of_scope`` > 0 writes an out-of-scope
    dataset instead (that many images of every kind, see docs/synth.md); its rows are then
    `OutOfScopeRow`. ``series`` (True or a `SeriesSpec`) writes a DWI study per case instead
    of separate slices, with ``series.json`` (the truth); its rows are one per slice position.
    Same arguments, same files.

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
        profile=profile,
        negative_share=parse_negative_share(negative_share),
        out_of_scope=out_of_scope,
        series=(SeriesSpec() if series is True else series or None),
    )
    return run(options)
