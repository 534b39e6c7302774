"""CPU per scan of decode + preprocessing: the current code against version 1 (as trained).

Run from the repo with the dev venv::

    .venv/bin/python bench/preprocess.py                # the 8 samples, 25 passes, 5 rounds
    .venv/bin/python bench/preprocess.py --corpus 400   # 400 distinct files from bench/corpus.py

Both implementations run in this one process on the same files: the current `daemon.shared.decode`
and `daemon.shared.preprocess`, and the verbatim version-1 copy in
``tests/preprocessing_reference.py``. Per file, each stage is timed with the calling thread's CPU
clock (user + system):

* **read**: the file's bytes from disk;
* **decode**: bytes to float32 grey pixels;
* **box**: `brain_box` (small copy, robust range, opening, central parts);
* **resize+normalise**: crop, pad to a square, resize, normalise, repeat the channel;
* **whole**: read + decode + `preprocess` in one go, as a decode worker runs them.

The rounds alternate which implementation goes first; for each stage the best round (lowest mean)
is kept, the one least disturbed by other jobs. Minor page faults are counted per file too: fresh
memory for large temporaries is a system-time cost that depends on glibc's allocator state, so
run with ``GLIBC_TUNABLES`` set (see ``--help``) to see it with the allocator tuned. Prints
figures only.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import corpus
import numpy as np
from machine import cpu_lines

from daemon.shared import decode as current_decode
from daemon.shared import preprocess as current
from daemon.shared.bundle import DEFAULT_BUNDLE, load_bundle

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
STAGES = ("read", "decode", "box", "resize+normalise", "whole")


def _reference() -> ModuleType:
    """The version-1 code kept beside the tests (a module, not a package: loaded by path)."""
    path = REPO / "tests" / "preprocessing_reference.py"
    spec = importlib.util.spec_from_file_location("preprocessing_reference", path)
    if spec is None or spec.loader is None:
        msg = f"cannot load {path}"
        raise ImportError(msg)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Implementation:
    """One decode + preprocessing, split into the stages timed here."""

    name: str
    decode: Callable[[bytes, str], Any]
    brain_box: Callable[[Any, Any], tuple[int, int, int, int]]
    tail: Callable[[Any, tuple[int, int, int, int], Any], Any]
    preprocess: Callable[[Any, Any], Any]


def _tail_v1(module: ModuleType) -> Callable[[Any, tuple[int, int, int, int], Any], Any]:
    def tail(image: Any, box: tuple[int, int, int, int], spec: Any) -> Any:
        top, left, bottom, right = box
        crop = image[top:bottom, left:right]
        padded = module._pad_square(np.ascontiguousarray(crop), float(crop.min()))  # noqa: SLF001
        square = module.resize(padded, spec.input_size)
        square = module.normalise(square, spec.high_percentile)
        return np.repeat(square[:, :, np.newaxis], spec.channels, axis=2)

    return tail


def _tail_now(image: Any, box: tuple[int, int, int, int], spec: Any) -> Any:
    top, left, bottom, right = box
    crop = image[top:bottom, left:right]
    padded = current._pad_square(crop, float(crop.min()))  # noqa: SLF001 - a step of preprocess
    square = current.resize(padded, spec.input_size)
    square = current.normalise(square, spec.high_percentile)
    return np.stack([square] * spec.channels, axis=2)


def implementations() -> list[Implementation]:
    """Version 1 (the reference) and the current code."""
    reference = _reference()
    return [
        Implementation(
            "v1",
            reference.decode,
            reference.brain_box,
            _tail_v1(reference),
            reference.preprocess,
        ),
        Implementation(
            "now", current_decode.decode, current.brain_box, _tail_now, current.preprocess
        ),
    ]


@dataclass
class Tally:
    """CPU nanoseconds per stage and page faults, summed over the files of one round."""

    cpu_ns: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    faults: int = 0
    files: int = 0
    by_format: dict[str, list[int]] = field(default_factory=dict)

    def per_file_ms(self, stage: str) -> float:
        """Mean CPU milliseconds per file of ``stage``."""
        return self.cpu_ns[stage] / max(self.files, 1) / 1e6


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def measure_file(impl: Implementation, path: Path, fmt: str, spec: Any, tally: Tally) -> None:
    """Time each stage of one file, then the whole chain in one go."""
    clock = time.thread_time_ns
    t0 = clock()
    data = path.read_bytes()
    t1 = clock()
    image = impl.decode(data, path.name)
    t2 = clock()
    grey = np.ascontiguousarray(image.pixels, dtype=np.float32)
    t3 = clock()
    box = impl.brain_box(grey, spec)
    t4 = clock()
    impl.tail(grey, box, spec)
    t5 = clock()
    faults = _faults()
    t6 = clock()
    impl.preprocess(impl.decode(path.read_bytes(), path.name).pixels, spec)
    t7 = clock()
    tally.faults += _faults() - faults
    for stage, ns in zip(STAGES, (t1 - t0, t2 - t1, t4 - t3, t5 - t4, t7 - t6), strict=True):
        tally.cpu_ns[stage] += ns
    tally.files += 1
    tally.by_format.setdefault(fmt, []).append(t7 - t6)


def check_tails(impls: list[Implementation], files: list[tuple[Path, str]], spec: Any) -> None:
    """The staged split gives each implementation's own ``preprocess`` tensor, and both agree."""
    for path, _ in files:
        tensors = []
        for impl in impls:
            grey = np.ascontiguousarray(impl.decode(path.read_bytes(), path.name).pixels)
            staged = impl.tail(grey, impl.brain_box(grey, spec), spec)
            whole = impl.preprocess(grey, spec)
            if staged.tobytes() != whole.tobytes():
                msg = f"{impl.name}: the staged tail differs from preprocess on {path.name}"
                raise RuntimeError(msg)
            tensors.append(whole.tobytes())
        if len(set(tensors)) != 1:
            msg = f"the implementations give different tensors for {path.name}"
            raise RuntimeError(msg)


def _files(args: argparse.Namespace) -> list[tuple[Path, str]]:
    if args.corpus:
        built = corpus.build(args.out / "corpus-preprocess", args.corpus)
        formats = {".png": "png", ".jpg": "jpeg", ".dcm": "dicom"}
        return [(path, formats[path.suffix]) for path in built.files]
    with (corpus.SAMPLES / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [(corpus.SAMPLES / row["file"], row["format"]) for row in rows] * int(args.repeat)


def run(args: argparse.Namespace) -> dict[str, list[Tally]]:
    """Every round of every implementation over the files."""
    spec = load_bundle(DEFAULT_BUNDLE).preprocess
    impls = implementations()
    files = _files(args)
    check_tails(impls, sorted(set(files))[:16], spec)
    tallies: dict[str, list[Tally]] = {impl.name: [] for impl in impls}
    for round_index in range(args.rounds):
        order = impls if round_index % 2 == 0 else impls[::-1]
        for impl in order:
            for path, fmt in files[: min(len(files), 16)]:  # warm caches and the allocator
                measure_file(impl, path, fmt, spec, Tally())
            tally = Tally()
            for path, fmt in files:
                measure_file(impl, path, fmt, spec, tally)
            tallies[impl.name].append(tally)
    return tallies


def render(tallies: dict[str, list[Tally]], files: int, args: argparse.Namespace) -> str:
    """The table: best-round CPU ms per file for each stage, and the ratio v1 / now."""
    old, new = tallies["v1"], tallies["now"]
    lines = [
        (
            f"files per round: {files} ({'corpus' if args.corpus else 'samples/ repeated'}), "
            f"rounds: {args.rounds}, load average: {os.getloadavg()[0]:.2f}, "
            f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}"
        ),
        "",
        f"{'CPU ms per file (best round)':<34}{'v1':>9}{'now':>9}{'v1/now':>9}",
    ]
    for stage in STAGES:
        a = min(t.per_file_ms(stage) for t in old)
        b = min(t.per_file_ms(stage) for t in new)
        lines.append(f"{stage:<34}{a:>9.3f}{b:>9.3f}{a / b if b else float('nan'):>8.2f}x")
    formats = sorted(old[0].by_format)
    lines.append("")
    lines.append(f"{'whole, by format (best round)':<34}{'v1':>9}{'now':>9}{'v1/now':>9}")
    for fmt in formats:
        a = min(sum(t.by_format[fmt]) / len(t.by_format[fmt]) for t in old) / 1e6
        b = min(sum(t.by_format[fmt]) / len(t.by_format[fmt]) for t in new) / 1e6
        lines.append(f"{fmt:<34}{a:>9.3f}{b:>9.3f}{a / b:>8.2f}x")
    fa = min(t.faults / t.files for t in old)
    fb = min(t.faults / t.files for t in new)
    lines.append("")
    lines.append(f"{'minor page faults per file (whole)':<34}{fa:>9.0f}{fb:>9.0f}")
    lines.append("")
    lines.append("every round, whole, ms per file:")
    for name, rounds in tallies.items():
        figures = " ".join(f"{t.per_file_ms('whole'):.3f}" for t in rounds)
        lines.append(f"  {name:<4} {figures}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run the benchmark and print the table; 0 unless a step failed."""
    parser = argparse.ArgumentParser(
        prog="bench/preprocess.py",
        description=__doc__.split("\n")[0],
        epilog="To measure with glibc's allocator keeping freed memory (no page faults for the "
        "large temporaries), run with GLIBC_TUNABLES=glibc.malloc.mmap_threshold=16777216:"
        "glibc.malloc.trim_threshold=268435456 in the environment.",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds, best kept (5)")
    parser.add_argument("--repeat", type=int, default=25, help="passes over samples/ (25)")
    parser.add_argument(
        "--corpus", type=int, default=0, help="use this many bench/corpus.py files instead"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="work folder (bench/out)")
    args = parser.parse_args(argv)
    print("\n".join(cpu_lines()), flush=True)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        tallies = run(args)
    except (OSError, RuntimeError) as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 2
    print(render(tallies, tallies["now"][0].files, args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
