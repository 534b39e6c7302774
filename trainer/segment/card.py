"""The segmenter's model-card section (Markdown): data, split, rule, figures, targets, limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.config import TrainConfig

_ROWS = (
    ("cases (lesion / normal)", None),
    ("Dice, mean over lesion cases", "dice_mean"),
    ("Dice, median", "dice_median"),
    ("lesion-wise F1, mean over lesion cases", "lesion_f1_mean"),
    ("lesion-wise F1, pooled over all cases", "lesion_f1_pooled"),
    ("absolute volume difference, median (mL)", "avd_ml_median"),
    ("absolute volume difference, mean (mL)", "avd_ml_mean"),
    ("lesion count difference, mean (pred - true)", "count_difference_mean"),
    ("normal cases with no predicted lesion", "normal_clean_share"),
    ("false-positive volume on normal cases, mean (mL)", "normal_fp_ml_mean"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _table(metrics: dict[str, Any]) -> list[str]:
    sets = [
        (f"{name}, {adc.replace('_', ' ')}", metrics[where][adc])
        for where, name in (("test", "test"), ("shifted_test", "shifted"))
        if where in metrics
        for adc in ("with_adc", "without_adc")
    ]
    lines = ["| figure | " + " | ".join(n for n, _ in sets) + " |"]
    lines.append("|---|" + "---|" * len(sets))
    for title, key in _ROWS:
        if key is None:
            cells = [f"{f['lesion_cases']} / {f['normal_cases']}" for _, f in sets]
        else:
            cells = [_fmt(f.get(key)) for _, f in sets]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def model_card(cfg: TrainConfig, metrics: dict[str, Any]) -> str:
    """The model-card section of a segmenter run."""
    seg, post, train = cfg.segment, metrics["postprocessing"], metrics["training"]
    split = metrics["split"]
    lines = [
        "## Lesion segmenter",
        "",
        "**Research use only. Not for diagnostic use.** Trained and tested on synthetic DWI only.",
        "",
        (
            f"A small U-Net ({seg.base_filters} base filters, depth {seg.depth}, "
            f"{train['parameters']:,} parameters) on the classifier's 128x128 input square, "
            "channels [dwi, adc] (adc zeros when absent), output `lesion`: a per-pixel lesion "
            f"probability. Trained for {train['epochs_run']} epochs (best validation epoch "
            f"{train['best_epoch']}, {train['seconds']:.0f} s), Dice + binary cross-entropy, "
            f"ADC dropped with probability {seg.adc_dropout}."
        ),
        "",
        (
            f"Split by case (no case on two sides): train {split['train']['cases']} cases / "
            f"{split['train']['slices']} slices, validation {split['validation']['cases']} / "
            f"{split['validation']['slices']}, test {split['test']['cases']} / "
            f"{split['test']['slices']}."
        ),
        "",
        (
            f"Served with threshold {post['threshold']} and min_lesion_px {post['min_lesion_px']}, "
            f"chosen on validation ({_chosen_on(post)}): {post['rule']} (target "
            f"{post['target_normal_clean']}, "
            f"{'met' if post['target_met'] else 'NOT met'} on validation)."
        ),
        "",
        "Figures per case (the case's slices stacked; ISLES'22 definitions, docs/training.md):",
        "",
        *_table(metrics),
        "",
        "Targets of the issue:",
        "",
        "| target | value | met |",
        "|---|---|---|",
    ]
    for name, t in metrics["targets"].items():
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(f"| {name} {t['comparison']} {t['target']} | {_fmt(t['value'])} | {met} |")
    parity = metrics["export"]["parity"]
    export = (
        f"Export: FP16 IR, largest |probability difference| against Keras (f32) "
        f"{_fmt(parity['max_abs_prob_delta'])}, mask Dice {_fmt(parity['mask_dice'])}."
    )
    limits = (
        "Limits: synthetic lesions and anatomy only; per-slice 2-D network (lesions are joined "
        "through a case's slices only when counting); volumes are measured on the 128x128 input "
        "square. Not validated on patient data."
    )
    lines += ["", export, "", limits, ""]
    return "\n".join(lines)


def _chosen_on(post: dict[str, Any]) -> str:
    if post.get("chosen_on") == "as_loaded":
        return "with ADC where the data has it"
    return "DWI alone, ADC channel zero, as the daemon segments"
