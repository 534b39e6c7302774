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

from trainer.errors import TRAINER_ERRORS, TrainConfigError
from trainer.logs import configure_logging

EXIT_FAILED, EXIT_USAGE = 1, 2
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "train.yaml"
_DISCLAIMER = "Research use only, not for diagnosis."


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infarctwatch train",
        description="Train a model on a folder-per-class DWI dataset and export a verified "
        f"OpenVINO bundle to RUN/bundle. {_DISCLAIMER}",
    )
    parser.add_argument("data", type=Path, help="dataset folder: one sub-folder per class")
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
    parser.add_argument("--version", help="bundle version (same as --set export.version=...)")
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
    if args.version:
        overrides.append(f"export.version={args.version}")
    overrides += _path_overrides(args)
    try:
        cfg = load_config(config_path, overrides)
    except TrainConfigError as exc:
        print(f"infarctwatch train: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.data.is_dir():
        print(f"infarctwatch train: dataset folder {args.data} does not exist", file=sys.stderr)
        return EXIT_USAGE
    out = args.out or Path("runs") / dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    _quiet_tensorflow()
    from trainer.run import train  # noqa: PLC0415  (imports TensorFlow)

    try:
        result = train(args.data, cfg, out)
    except TRAINER_ERRORS as exc:
        print(f"infarctwatch train: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _print_result(result.run, result.bundle, result.metrics, cfg.evaluate.top_k)
    return 0


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
