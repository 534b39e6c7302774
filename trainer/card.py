"""The model card: what the model is, what it was trained and tested on, and what it is not for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.config import TrainConfig

_LIMITS = """\
## Intended use and limits
- Intended use: research on automated infarct localisation, software testing and demonstrations.
  Research use only; not for diagnosis.
- One slice at a time: the model does not see neighbouring slices, the ADC map or clinical
  information, and it names one location class per slice.
- Metrics hold for data like the test split only. Data from another scanner, protocol or
  population, or synthetic data standing in for patients, can behave very differently.
"""


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f} %"


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}g}"


def _model(cfg: TrainConfig, metrics: dict[str, Any]) -> list[str]:
    size, channels = cfg.preprocess.input_size, cfg.preprocess.channels
    parameters = metrics.get("training", {}).get("parameters", "n/a")
    classes = len(metrics.get("classes", []))
    return [
        "## Model",
        (
            f"- Architecture: `{cfg.model.architecture}` ({parameters} parameters), "
            f"input {size}x{size}x{channels}, {classes} classes (softmax)."
        ),
        (
            "- Input: one DWI slice (PNG, JPEG, BMP, TIFF or DICOM) preprocessed by "
            "`daemon.shared.preprocess` (brain crop, resize, robust normalisation): the code the "
            "daemon serves with."
        ),
        "- Output: the infarct location class (`labels.json`), or 'No acute infarct'.",
        "",
    ]


def _data(cfg: TrainConfig, metrics: dict[str, Any]) -> list[str]:
    data, fit, aug = metrics.get("data", {}), metrics.get("training", {}), cfg.augment
    parts = ", ".join(
        f"{name} {part.get('cases', 0)} cases / {part.get('slices', 0)} slices"
        for name, part in metrics.get("split", {}).items()
    )
    return [
        "## Data",
        (
            f"- Dataset: `{data.get('root', 'n/a')}`: {data.get('slices', 'n/a')} slices of "
            f"{data.get('cases', 'n/a')} cases; case ids from {data.get('case_ids_from', 'n/a')}."
        ),
        (
            f"- Skipped unreadable files: {len(data.get('skipped', []))}; "
            f"excluded non-DWI files: {data.get('excluded', 'n/a')}."
        ),
        (
            "- Split by case (all slices of a patient in one split), stratified by class, before "
            f"any augmentation (seed {cfg.seed}): {parts}."
        ),
        (
            f"- Training: {fit.get('epochs_run', 'n/a')} epochs, weights of epoch "
            f"{fit.get('best_epoch', 'n/a')} kept (best {cfg.fit.monitor}); "
            f"{fit.get('images_per_class', 'n/a')} augmented images per class per epoch"
            + (" (stopped early by fit.max_minutes)." if fit.get("stopped_by_time_budget") else ".")
        ),
        (
            f"- Augmentation: shift {aug.shift:g}, rotation {aug.rotation:g} deg, shear "
            f"{aug.shear:g} deg, zoom {aug.zoom:g}, intensity {aug.intensity:g}, laterality-aware "
            f"flip p={aug.laterality_flip:g}; no plain flips."
        ),
        "",
    ]


def _test(cfg: TrainConfig, metrics: dict[str, Any]) -> list[str]:
    k = cfg.evaluate.top_k
    test = metrics.get("test", {})
    rows = []
    for name, level in (("case (mean of slice probabilities)", "case"), ("slice", "slice")):
        m = test.get(level, {})
        rows.append(
            f"| {name} | {m.get('n', 'n/a')} | {_pct(m.get('top1'))} | {_pct(m.get(f'top{k}'))} "
            f"| {_num(m.get('ece'))} |"
        )
    lines = [
        "## Held-out test metrics",
        f"| level | n | top-1 | top-{k} | ECE |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    recall = test.get("case", {}).get("per_class_recall", {})
    weakest = sorted((v, name) for name, v in recall.items() if v is not None)[:5]
    if weakest:
        listed = ", ".join(f"{name} {_pct(v)}" for v, name in weakest)
        lines += [f"Lowest case-level recall: {listed}.", ""]
    return lines


def _export(cfg: TrainConfig, metrics: dict[str, Any]) -> list[str]:
    export = metrics.get("export")
    if not export:
        return []
    k = cfg.evaluate.top_k
    par = export.get("parity", {})
    lines = [
        "## OpenVINO export",
        (
            f"- Keras vs FP16 IR (f32 arithmetic), {par.get('n', 'n/a')} test slices: max |delta "
            f"softmax| {_num(par.get('max_abs_softmax_delta'))}, argmax agreement "
            f"{_pct(par.get('argmax_agreement'))}."
        ),
    ]
    for variant in ("fp16", "int8"):
        acc = export.get(variant)
        if acc:
            lines.append(
                f"- {variant.upper()} IR (default CPU precision): case top-1 "
                f"{_pct(acc.get('case_top1'))}, top-{k} {_pct(acc.get(f'case_top{k}'))}; "
                f"slice top-1 {_pct(acc.get('slice_top1'))}."
            )
    if export.get("int8_vs_fp16"):
        agreement = export["int8_vs_fp16"].get("argmax_agreement")
        lines.append(f"- INT8 vs FP16 argmax agreement on test slices: {_pct(agreement)}.")
    return [*lines, ""]


def model_card(cfg: TrainConfig, metrics: dict[str, Any]) -> str:
    """Markdown model card built from the run's config and metrics."""
    lines = [
        f"# Model card: {cfg.export.name} {cfg.export.version}",
        "",
        "**Research use only. Not a medical device; not for diagnosis or treatment decisions.**",
        "",
        *_model(cfg, metrics),
        *_data(cfg, metrics),
        *_test(cfg, metrics),
        *_export(cfg, metrics),
    ]
    return "\n".join(lines) + "\n" + _LIMITS
