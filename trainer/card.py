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
            f"- Architecture: `{cfg.model.architecture}`{_width(cfg.model.width)} "
            f"({parameters} parameters), "
            f"input {size}x{size}x{channels}, {classes} classes (softmax)."
        ),
        (
            "- Input: one DWI slice (PNG, JPEG, BMP, TIFF or DICOM) preprocessed by "
            "`daemon.shared.preprocess` (brain crop, resize, robust normalisation): the code the "
            "daemon serves with."
        ),
        "- Output: the infarct location class (`labels.json`), or 'No acute infarct'"
        + (
            "; and `in_scope`, the probability that the image is an axial DWI b1000 brain slice."
            if metrics.get("training", {}).get("in_scope_head")
            else "."
        ),
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
            f"{aug.shear:g} deg, zoom {aug.zoom:g}, intensity {aug.intensity:g}, blur "
            f"{aug.blur:g} px, noise {aug.noise:g}, saturation {aug.saturation:g} (on "
            f"{aug.acquisition_share:.0%} of images), laterality-aware "
            f"flip p={aug.laterality_flip:g}; no plain flips; 'No acute infarct' weight "
            f"{aug.negative_weight:g} per epoch."
        ),
        "",
    ]


_SETS = (("test", "in-distribution test"), ("shifted_test", "shifted-acquisition test"))


def _test(cfg: TrainConfig, metrics: dict[str, Any]) -> list[str]:
    k = cfg.evaluate.top_k
    rows = []
    for key, set_name in _SETS:
        test = metrics.get(key)
        if not test:
            continue
        for name, level in (("case", "case"), ("slice", "slice")):
            m = test.get(level, {})
            rows.append(
                f"| {set_name} | {name} | {m.get('n', 'n/a')} | {_pct(m.get('top1'))} "
                f"| {_pct(m.get(f'top{k}'))} | {_pct(m.get('no_acute_infarct_recall'))} "
                f"| {_num(m.get('ece_uncalibrated'))} | {_num(m.get('ece'))} |"
            )
    lines = [
        "## Held-out test metrics",
        (
            "Case level: the mean of a case's slice probabilities. Probabilities calibrated "
            f"(see below); ECE with {cfg.evaluate.ece_bins} bins before and after calibration. "
            "'No acute infarct' recall is the specificity of the location answer."
        ),
        "",
        (
            f"| set | level | n | top-1 | top-{k} | 'No acute infarct' recall | ECE before "
            "| ECE after |"
        ),
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    for key, set_name in _SETS:
        test = metrics.get(key)
        if not test:
            continue
        formats = test.get("per_format", {})
        if formats:
            listed = "; ".join(
                f"{fmt} {f.get('slices')} slices, top-1 {_pct(f.get('slice_top1'))}, "
                f"'No acute infarct' recall {_pct(f.get('no_acute_infarct_recall'))}"
                for fmt, f in formats.items()
            )
            lines += [f"Per file format ({set_name}, slice level): {listed}.", ""]
        recall = test.get("case", {}).get("per_class_recall", {})
        weakest = sorted((v, name) for name, v in recall.items() if v is not None)[:5]
        if weakest:
            listed = ", ".join(f"{name} {_pct(v)}" for v, name in weakest)
            lines += [f"Lowest case-level recall ({set_name}): {listed}.", ""]
    return lines


def _decisions(metrics: dict[str, Any]) -> list[str]:
    cal = metrics.get("calibration")
    if not cal:
        return []
    lines = [
        "## Calibration, findings and refusals",
        (
            f"- Temperature scaling fitted on {cal.get('n', 'n/a')} validation slices: T = "
            f"{_num(cal.get('temperature'))} (NLL {_num(cal.get('nll_before'))} -> "
            f"{_num(cal.get('nll_after'))}). Served probabilities are softmax(log(p) / T)."
        ),
    ]
    thresholds = metrics.get("thresholds", {})
    finding = thresholds.get("finding")
    if finding:
        lines.append(
            f"- finding: acute_infarct when 1 - p(No acute infarct) >= "
            f"{_num(finding.get('acute_infarct'), 4)}, else no_acute_infarct when p(No acute "
            f"infarct) >= {_num(finding.get('no_acute_infarct'), 4)}, else indeterminate; chosen "
            f"on validation for specificity >= {_pct(finding.get('target_specificity'))} and "
            f"sensitivity >= {_pct(finding.get('target_sensitivity'))} (slices)."
        )
        for key, set_name in (("validation", "validation"), *_SETS):
            rates = metrics.get(key, {}).get("findings")
            if rates:
                lines.append(
                    f"  - {set_name} slices: no_acute_infarct for {_pct(rates.get('specificity'))}"
                    f" of normals (acute_infarct for {_pct(rates.get('false_alarm_rate'))}); "
                    f"acute_infarct for {_pct(rates.get('sensitivity'))} of infarcts "
                    f"(no_acute_infarct for {_pct(rates.get('missed_rate'))}); indeterminate "
                    f"{_pct(rates.get('indeterminate_rate'))}."
                )
    scope = thresholds.get("in_scope")
    if scope:
        lines.append(
            f"- in_scope: an image is refused when the in_scope output is below "
            f"{_num(scope.get('threshold'), 4)} (chosen on validation for at most "
            f"{_pct(scope.get('max_wrongly_refused'))} wrongly refused DWI slices)."
        )
        oos = metrics.get("out_of_scope", {}).get("test", {})
        if oos:
            kinds = ", ".join(
                f"{kind} {_pct(v.get('refused'))}" for kind, v in oos.get("per_kind", {}).items()
            )
            lines.append(
                f"  - out-of-scope test images refused: {_pct(oos.get('refused'))} of "
                f"{oos.get('n')} ({kinds}); {oos.get('not_preprocessed', 0)} more not "
                "preprocessed at all."
            )
        for key, set_name in _SETS:
            wrong = metrics.get(key, {}).get("in_scope")
            if wrong:
                lines.append(
                    f"  - {set_name} DWI slices wrongly refused: "
                    f"{_pct(wrong.get('wrongly_refused'))} of {wrong.get('n')}."
                )
    return [*lines, ""]


def _lineage(metrics: dict[str, Any]) -> list[str]:
    parent = metrics.get("parent")
    training = metrics.get("training", {})
    if not parent:
        return []
    frozen = ", ".join(training.get("frozen_layers", [])) or "none"
    return [
        "## Parent model (site adaptation)",
        (
            f"- Fine-tuned from {parent.get('name')} {parent.get('version')} "
            f"(bundle sha256 {parent.get('sha256')}); frozen layers: {frozen}."
        ),
        "",
    ]


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
    scope = export.get("parity_in_scope")
    if scope:
        lines.append(
            f"- Keras vs FP16 IR, in_scope output on {scope.get('n')} test and out-of-scope "
            f"images: max |delta| {_num(scope.get('max_abs_softmax_delta'))}."
        )
    for variant in ("fp16", "int8"):
        acc = export.get(variant)
        if acc:
            shifted = export.get(f"{variant}_shifted", {})
            also = f"; shifted test case top-1 {_pct(shifted.get('case_top1'))}" if shifted else ""
            lines.append(
                f"- {variant.upper()} IR (default CPU precision): case top-1 "
                f"{_pct(acc.get('case_top1'))}, top-{k} {_pct(acc.get(f'case_top{k}'))}; "
                f"slice top-1 {_pct(acc.get('slice_top1'))}{also}."
            )
    gate = export.get("int8_gate")
    if gate:
        drops = ", ".join(f"{k} {v:+.2f}" for k, v in gate.get("drop_points", {}).items())
        verdict = "INT8" if gate.get("int8_default") else "FP16"
        lines.append(
            f"- Default variant: {verdict} (INT8 is the default when no top-1 drops by more than "
            f"{gate.get('within_points')} points against FP16; drops: {drops})."
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
        *_lineage(metrics),
        *_test(cfg, metrics),
        *_decisions(metrics),
        *_export(cfg, metrics),
    ]
    return "\n".join(lines) + "\n" + _LIMITS


def _width(width: float) -> str:
    return "" if width == 1 else f" at width {width:g} (`model.width`)"
