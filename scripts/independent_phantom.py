"""Command line of the independent DWI phantom: ``slices``, ``studies`` and ``classes``.

The phantom itself is the package ``phantom`` beside this file (its docstring is the ``--help``
text). Run this file by path::

    python scripts/independent_phantom.py slices OUT --cases 120 --seed 4242
    python scripts/independent_phantom.py studies OUT --studies 8 --seed 7 [--masks MASKS]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import phantom
from phantom.placement import PLACEMENT
from phantom.slices import make_slices
from phantom.studies import make_studies


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=phantom.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    slices = sub.add_parser(
        "slices",
        help="a labelled slice set (class folders + manifest.csv) for `infarctwatch evaluate`",
    )
    slices.add_argument("out", type=Path)
    slices.add_argument("--cases", type=int, default=120, help="cases; half normal (default 120)")
    slices.add_argument("--slices-per-case", type=int, default=2)
    slices.add_argument("--seed", type=int, default=4242)
    studies = sub.add_parser(
        "studies", help="whole DICOM studies (DWI, ADC, T1, FLAIR, CT) + truth.csv"
    )
    studies.add_argument("out", type=Path)
    studies.add_argument("--studies", type=int, default=8, help="studies; half normal (default 8)")
    studies.add_argument(
        "--slices", type=int, default=None, help="slices per series (default 20-30)"
    )
    studies.add_argument("--seed", type=int, default=7)
    studies.add_argument(
        "--masks",
        type=Path,
        default=None,
        help="also write each DWI slice's lesion mask here (MASKS/studyNNN/sKKK.png), not in OUT",
    )
    sub.add_parser("classes", help="list the classes this phantom places, and where")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.command == "classes":
        for label, placement in PLACEMENT.items():
            low, high = placement.volume_ml
            print(f"{label}: {', '.join(placement.regions)} ({low}-{high} mL)")
        return 0
    if args.command == "slices":
        rows = make_slices(args.out, args.cases, args.seed, args.slices_per_case)
        took = time.monotonic() - started
        print(f"{len(rows)} slices of {args.cases} cases in {args.out} ({took:.0f} s)")
    else:
        rows = make_studies(args.out, args.studies, args.seed, args.slices, args.masks)
        took = time.monotonic() - started
        print(f"{len(rows)} series of {args.studies} studies in {args.out} ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
