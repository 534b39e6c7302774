"""The model card: what the model is, what it was trained and tested on, and what it is not for."""

from __future__ import annotations

from typing import Any

from trainer.config import TrainConfig


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f} %"


def _num(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}g}"


def model_card(cfg: TrainConfig, metrics: dict[str, Any]) -> str:
    """Markdown model card built from the run's config and metrics."""
    k = cfg.evaluate.top_k
    data = metrics.get("data", {})
    split = metrics.get("split", {})
    test = metrics.get("test", {})
    case, slc = test.get("case", {}), test.get("slice", {})
    export = metrics.get("export", {})
    fit = metrics.get("training", {})
    recall = case.get("per_class_recall", {})
    weakest = sorted(
        ((v, name) for name, v in recall.items() if v is not None), key=lambda t: (t[0], t[1])
    )[:5]
    lines = [
        f"# Model card: {cfg.export.name} {cfg.export.version}",
        "",
        "**Research use only. Not a medical device; not for diagnosis or treatment decisions.**",
        "",
        "## Model",
        f"- Architecture: `{cfg.model.architecture}` ({fit.get('parameters', 'n/a')} parameters), "
        f"input {cfg.preprocess.input_size}x{cfg.preprocess.input_size}x{cfg.preprocess.channels}, "
        f"{len(metrics.get('classes', []))} classes (softmax).",
        "- Input: one DWI slice (PNG, JPEG, BMP, TIFF or DICOM), preprocessed by "
        "`daemon.preprocess` (brain crop, resize, robust normalisation), the code the daemon serves with.",
        "- Output: the infarct location class (`labels.json`), or 'No acute infarct'.",
        "",
        "## Data",
        f"- Dataset: `{data.get('root', 'n/a')}`: {data.get('slices', 'n/a')} slices of "
        f"{data.get('cases', 'n/a')} cases; case ids from {data.get('case_ids_from', 'n/a')}.",
        f"- Skipped unreadable files: {len(data.get('skipped', []))}; "
        f"excluded non-DWI files: {data.get('excluded', 'n/a')}.",
        "- Split by case (all slices of a patient in one split), stratified by class, before any "
        f"augmentation (seed {cfg.seed}): "
        + ", ".join(
            f"{name} {part.get('cases', 0)} cases / {part.get('slices', 0)} slices"
            for name, part in split.items()
        )
        + ".",
        f"- Training: {fit.get('epochs_run', 'n/a')} epochs, weights of epoch "
        f"{fit.get('best_epoch', 'n/a')} kept (best {cfg.fit.monitor}); "
        f"{fit.get('images_per_class', 'n/a')} augmented images per class per epoch; augmentation: "
        f"shift {cfg.augment.shift:g}, rotation {cfg.augment.rotation:g} deg, shear "
        f"{cfg.augment.shear:g} deg, laterality-aware flip p={cfg.augment.laterality_flip:g}; no plain flips.",
        "",
        "## Held-out test metrics",
        "| level | n | top-1 | top-%d | ECE |" % k,
        "|---|---|---|---|---|",
        f"| case (mean of slice probabilities) | {case.get('n', 'n/a')} | {_pct(case.get('top1'))} | "
        f"{_pct(case.get(f'top{k}'))} | {_num(case.get('ece'), 3)} |",
        f"| slice | {slc.get('n', 'n/a')} | {_pct(slc.get('top1'))} | {_pct(slc.get(f'top{k}'))} | "
        f"{_num(slc.get('ece'), 3)} |",
        "",
    ]
    if weakest:
        lines += [
            "Lowest case-level recall: "
            + ", ".join(f"{name} {_pct(v)}" for v, name in weakest)
            + ".",
            "",
        ]
    if export:
        par = export.get("parity", {})
        lines += [
            "## OpenVINO export",
            f"- Keras vs FP16 IR (f32 arithmetic), {par.get('n', 'n/a')} test slices: max |delta "
            f"softmax| {_num(par.get('max_abs_softmax_delta'), 3)}, argmax agreement "
            f"{_pct(par.get('argmax_agreement'))}.",
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
            lines.append(f"- INT8 vs FP16 argmax agreement: {_pct(agreement)}.")
        lines.append("")
    lines += [
        "## Intended use and limits",
        "- Intended use: research on automated infarct localisation, software testing, and "
        "demonstrations. Research use only; not for diagnosis.",
        "- One slice at a time: the model does not see neighbouring slices, the ADC map or "
        "clinical information, and it names one location class per slice.",
        "- Metrics hold for data like the test split only. Data from another scanner, protocol or "
        "population, or synthetic data standing in for patients, can behave very differently.",
        "",
    ]
    return "\n".join(lines)
