"""``infarctwatch train`` and ``infarctwatch export``: argument parsing, logging, exit codes.

Exit codes: 0 success, 1 a dataset / export / run-folder problem, 2 a usage or configuration
problem. TensorFlow is imported only after the arguments and configuration are checked, so a typo
is reported at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import TRAINER_ERRORS, TrainConfigError
from trainer.logs import configure_logging

if TYPE_CHECKING:
    from trainer.config import TrainConfig

EXIT_FAILED, EXIT_USAGE = 1, 2
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "train.yaml"
_DISCLAIMER = "Research use only, not for diagnosis."
TASKS = ("classify", "segment")
_CLASSIFY_ONLY = (
    ("out_of_scope", "--out-of-scope"),
    ("init_from", "--init-from"),
    ("freeze", "--freeze"),
)


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infarctwatch train",
        description="Train a model on a folder-per-class DWI dataset and export a verified "
        f"OpenVINO bundle to RUN/bundle. {_DISCLAIMER}",
    )
    parser.add_argument("data", type=Path, help="dataset folder: one sub-folder per class")
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="classify",
        help="classify (default): the location classifier; segment: the lesion segmenter, "
        "added to the --classifier bundle (DATA needs lesion masks: 'infarctwatch synth')",
    )
    parser.add_argument(
        "--classifier",
        type=Path,
        metavar="BUNDLE",
        help="with --task segment: the classifier bundle the segmenter joins (segment.classifier)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"training configuration (default: {DEFAULT_CONFIG}, else the built-in defaults)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="run folder to create (default: runs/<UTC time>)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set fit.epochs=5 (repeatable; values are YAML)",
    )
    parser.add_argument(
        "--version",
        help="bundle version (--set export.version=...; with --task segment segment.version)",
    )
    parser.add_argument(
        "--shifted-test",
        type=Path,
        metavar="DATA",
        help="a shifted-acquisition test set ('infarctwatch synth --profile shifted', its own "
        "seed), scored and reported beside the test split (data.shifted_test)",
    )
    parser.add_argument(
        "--out-of-scope",
        type=Path,
        metavar="DATA",
        help="images that are not DWI b1000 brain slices ('infarctwatch synth --out-of-scope N'): "
        "adds the in_scope output (data.out_of_scope)",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="BUNDLE",
        help="fine-tune a bundle's model (it must carry model.keras; labels must match) "
        "instead of training a new network (finetune.init_from)",
    )
    parser.add_argument(
        "--freeze",
        choices=("none", "features"),
        help="with --init-from: 'features' keeps the convolutional layers (finetune.freeze)",
    )
    return parser


def _path_overrides(args: argparse.Namespace) -> list[str]:
    """The path flags as --set overrides (JSON strings are YAML: any path survives)."""
    pairs = (
        ("data.shifted_test", args.shifted_test),
        ("data.out_of_scope", args.out_of_scope),
        ("finetune.init_from", args.init_from),
        ("segment.classifier", args.classifier),
    )
    out = [f"{key}={json.dumps(str(value))}" for key, value in pairs if value is not None]
    if args.freeze:
        out.append(f"finetune.freeze={args.freeze}")
    return out


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infarctwatch export",
        description="Redo the OpenVINO export (FP16 + INT8), parity checks and the bundle of a "
        f"finished training run. {_DISCLAIMER}",
    )
    parser.add_argument("run", type=Path, help="a run folder written by 'infarctwatch train'")
    parser.add_argument("--name", help="bundle name (default: the run's export.name)")
    parser.add_argument("--version", help="bundle version (default: the run's export.version)")
    return parser


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train_main(argv: list[str]) -> int:
    """Entry point of ``infarctwatch train``."""
    args = _train_parser().parse_args(argv)
    configure_logging()
    from trainer.config import load_config  # noqa: PLC0415  (keeps --help fast)

    config_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    overrides = list(args.overrides)
    segment = args.task == "segment"
    if args.version:
        key = "segment.version" if segment else "export.version"
        overrides.append(f"{key}={json.dumps(args.version)}")
    overrides += _path_overrides(args)
    try:
        cfg = load_config(config_path, overrides)
    except TrainConfigError as exc:
        print(f"infarctwatch train: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = _usage_problem(args, cfg)
    if problem:
        print(f"infarctwatch train: {problem}", file=sys.stderr)
        return EXIT_USAGE
    out = args.out or Path("runs") / dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    _quiet_tensorflow()
    if segment:
        return _train_segmenter(args.data, cfg, out)
    from trainer.run import train  # noqa: PLC0415  (imports TensorFlow)

    try:
        result = train(args.data, cfg, out)
    except TRAINER_ERRORS as exc:
        print(f"infarctwatch train: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _print_result(result.run, result.bundle, result.metrics, cfg.evaluate.top_k)
    return 0


def _usage_problem(args: argparse.Namespace, cfg: TrainConfig) -> str | None:
    """What is wrong with the arguments beyond the configuration, or None.

    A flag of the other task, a missing classifier bundle or dataset folder.
    """
    if args.task == "segment":
        used = [flag for attr, flag in _CLASSIFY_ONLY if getattr(args, attr)]
        if used:
            return f"{', '.join(used)} apply to --task classify only"
        if not cfg.segment.classifier:
            return (
                "--task segment needs the classifier bundle it joins "
                "(--classifier BUNDLE or segment.classifier)"
            )
    elif args.classifier is not None:
        return "--classifier applies to --task segment only"
    if not args.data.is_dir():
        return f"dataset folder {args.data} does not exist"
    return None


def _train_segmenter(data: Path, cfg: TrainConfig, out: Path) -> int:
    from trainer.segment.run import train_segmenter  # noqa: PLC0415  (imports TensorFlow)

    try:
        result = train_segmenter(data, cfg, out)
    except TrainConfigError as exc:
        print(f"infarctwatch train: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TRAINER_ERRORS as exc:
        print(f"infarctwatch train: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"run:     {result.run}")
    print(f"bundle:  {result.bundle}")
    for line in segment_lines(result.metrics):
        print(line)
    print(_DISCLAIMER)
    return 0


def segment_lines(metrics: dict[str, Any]) -> list[str]:
    """The headline figures of a segmenter run, one line per test set and ADC input."""
    post = metrics.get("postprocessing", {})
    lines = [f"lesion threshold {post.get('threshold')}, min_lesion_px {post.get('min_lesion_px')}"]

    def show(value: object, digits: int = 3) -> str:
        return f"{value:.{digits}f}" if isinstance(value, float) else "n/a"

    for key, name in (("test", "test"), ("shifted_test", "shifted")):
        for adc in ("with_adc", "without_adc"):
            f = metrics.get(key, {}).get(adc)
            if not f:
                continue
            lines.append(
                f"{name + ', ' + adc.replace('_', ' ') + ':':<25}{f['lesion_cases']} lesion + "
                f"{f['normal_cases']} normal cases, Dice {show(f['dice_mean'])}, lesion F1 "
                f"{show(f['lesion_f1_mean'])}, median AVD {show(f['avd_ml_median'], 2)} mL, "
                f"normals clean {show(f['normal_clean_share'])}"
            )
    missed = [k for k, t in metrics.get("targets", {}).items() if t.get("met") is False]
    lines.append(f"targets missed: {', '.join(missed) if missed else 'none'}")
    return lines


def export_main(argv: list[str]) -> int:
    """Entry point of ``infarctwatch export``."""
    args = _export_parser().parse_args(argv)
    configure_logging()
    _quiet_tensorflow()
    from trainer.run import export_run  # noqa: PLC0415  (imports TensorFlow)

    try:
        result = export_run(args.run, name=args.name, version=args.version)
    except TrainConfigError as exc:
        print(f"infarctwatch export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TRAINER_ERRORS as exc:
        print(f"infarctwatch export: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _print_result(result.run, result.bundle, result.metrics, 3)
    return 0


def _print_result(run: Path, bundle: Path, metrics: dict[str, object], top_k: int) -> None:
    print(f"run:     {run}")
    print(f"bundle:  {bundle}")
    for key, name in (("test", "test"), ("shifted_test", "shifted")):
        test = metrics.get(key)
        case = test.get("case", {}) if isinstance(test, dict) else {}
        if case:
            top1, topk = case.get("top1"), case.get(f"top{top_k}")
            recall = case.get("no_acute_infarct_recall")
            normal = "" if recall is None else f", 'No acute infarct' recall {recall:.3f}"
            print(
                f"{name + ':':<9}{case.get('n')} cases, top-1 {top1:.3f}, top-{top_k} {topk:.3f}"
                f"{normal}, ECE {case.get('ece', float('nan')):.3f} (case level, calibrated)"
            )
    oos = metrics.get("out_of_scope")
    if isinstance(oos, dict) and isinstance(oos.get("test"), dict):
        refused = oos["test"].get("refused")
        if isinstance(refused, float):
            print(
                f"refused: {100 * refused:.1f} % of {oos['test'].get('n')} out-of-scope test images"
            )
    print(_DISCLAIMER)
