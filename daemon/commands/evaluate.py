"""``infarctwatch evaluate DATA``: score a model on a labelled folder the way the daemon serves it.

Only what an entry point does: parse flags, load the daemon's configuration, configure logging,
run the evaluation (`daemon.evaluate.evaluation`) and turn the outcome into an exit code and a
short summary on stdout: 0 done, 2 a bad folder, an unknown class folder, a bad configuration or
bundle, an existing ``--out``, or a device that cannot compile the model; 130 interrupted (nothing
is left behind). Needs the edge install only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from daemon.clock import utc_now
from daemon.config import load_config
from daemon.errors import BundleError, ConfigError, DatasetError, EngineError
from daemon.evaluate.evaluation import Request, run_evaluation
from daemon.evaluate.outputs import folder_name
from daemon.logs import configure_logging
from daemon.shared.bundle import designated_bundle
from daemon.shared.dataset import DatasetLayout
from daemon.shared.labels import DEFAULT_LABELS

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_DEFAULT = DatasetLayout()


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``infarctwatch evaluate``."""
    parser = argparse.ArgumentParser(
        prog="infarctwatch evaluate",
        description=(
            "Run the daemon's decoding, preprocessing and inference over a labelled folder (the "
            "layout and label map of `infarctwatch train`) or an out-of-scope set (`infarctwatch "
            "synth DIR --out-of-scope N`) and write metrics.json, results.csv, "
            "confusion_matrix.png and reliability.png. Research use only, not for diagnosis."
        ),
    )
    parser.add_argument("data", type=Path, metavar="DATA", help="the labelled folder")
    parser.add_argument(
        "--model",
        type=Path,
        help="bundle or models folder (default: model.path of --config, else the embedded model)",
    )
    parser.add_argument(
        "--out", type=Path, help="new folder for the results (default: evaluations/<UTC time>)"
    )
    parser.add_argument(
        "--variant",
        choices=("fp16", "int8", "auto"),
        help="network variant; auto: the bundle's default_variant (default: model.variant)",
    )
    parser.add_argument("--device", help="OpenVINO device: CPU, GPU, AUTO... (inference.device)")
    parser.add_argument("--config", type=Path, help="the daemon's YAML configuration")
    parser.add_argument(
        "--labels", type=Path, default=DEFAULT_LABELS, help="label map (default: the shipped one)"
    )
    parser.add_argument(
        "--case-pattern",
        default=_DEFAULT.case_pattern,
        help="regex whose group 'case' names a file's case (data.case_pattern of train)",
    )
    parser.add_argument(
        "--exclude",
        default=_DEFAULT.exclude,
        help="regex of file names that are not DWI slices (data.exclude of train)",
    )
    parser.add_argument("--bins", type=_positive, default=15, help="calibration bins (default: 15)")
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "log"),
        default="auto",
        help="a bar on stderr (a terminal's default) or a JSON log line every tenth",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        help="log lines on stderr (default: logging.format of --config, auto)",
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _pattern_problems(case_pattern: str, exclude: str) -> list[str]:
    problems = []
    for flag, text in (("--case-pattern", case_pattern), ("--exclude", exclude)):
        try:
            compiled = re.compile(text)
        except re.error as exc:
            problems.append(f"{flag} {text!r} is not a regular expression: {exc}")
            continue
        if flag == "--case-pattern" and "case" not in compiled.groupindex:
            problems.append(f"{flag} {text!r} has no named group 'case'")
    return problems


def _summary(metrics: dict[str, Any], out: Path) -> str:
    model, data, outcome = metrics["model"], metrics["data"], metrics["outcomes"]
    codes = ", ".join(f"{code} {n}" for code, n in outcome["by_code"].items()) or "none"
    lines = [
        (
            f"evaluated {data['files']} file(s) of {data['path']} ({metrics['kind']}) with "
            f"{model['name']} {model['version']} ({model['variant']}, {model['device_used']})"
        ),
        (
            f"  analysed {outcome['ok']}, refused {outcome['not_analysed']}, errors "
            f"{outcome['error']} (codes: {codes})"
        ),
    ]
    if metrics["kind"] == "labelled":
        for level in ("slice", "case"):
            m = metrics[level]
            k = metrics["settings"]["top_k"]
            lines.append(
                f"  {level:<5}  n {m['n']}  top1 {_fmt(m['top1'])}  top{k} {_fmt(m[f'top{k}'])}"
                f"  ECE {_fmt(m['ece'])}  'No acute infarct' recall "
                f"{_fmt(m['no_acute_infarct_recall'])}"
            )
    else:
        lines.append(f"  refused {_fmt(outcome['refused_share'])} of the out-of-scope files")
        for kind, figures in metrics["per_kind"].items():
            lines.append(f"    {kind:<10} refused {_fmt(figures['refused_share'])}")
    lines.append(f"wrote {out}")
    lines.append("Research use only, not for diagnosis.")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str]) -> int:
    """Entry point of ``infarctwatch evaluate``."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    overrides = {"model.path": args.model, "inference.device": args.device}
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"infarctwatch evaluate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problems = _pattern_problems(args.case_pattern, args.exclude)
    if problems:
        print(f"infarctwatch evaluate: {'; '.join(problems)}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.logging.level, args.log_format or config.logging.format, sys.stderr)
    out = args.out or folder_name(utc_now().strftime("%Y%m%d-%H%M%S"))
    request = Request(
        data=args.data,
        bundle=designated_bundle(config.model.path),
        variant=args.variant or config.model.variant,
        out=out,
        config=config,
        layout=DatasetLayout(case_pattern=args.case_pattern, exclude=args.exclude),
        labels=args.labels,
        bins=args.bins,
        progress={"auto": None, "bar": True, "log": False}[args.progress],
    )
    try:
        metrics = run_evaluation(request, sys.stderr)
    except (DatasetError, BundleError, EngineError) as exc:
        print(f"infarctwatch evaluate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("infarctwatch evaluate: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(_summary(metrics, out))
    return EXIT_OK
