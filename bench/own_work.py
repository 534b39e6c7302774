"""Where a worker process's main thread spends its CPU per scan, piece by piece.

Run from the repo with the dev venv (``.venv/bin/python bench/own_work.py --help``). Like
``bound.py``, each of ``--workers`` processes takes its share of a corpus (``--corpus png`` by
default) from a folder of its own and runs it through the daemon's worker code
(`daemon.scan.worker.ScanWorker`, batches of ``bound.GROUP``), the processes at the same time. Here
the calling thread's CPU clock is read around each piece of a scan:

* **read**: `daemon.scan.read.read_claimed` (lstat, open, read, sha256);
* **decode + preprocess**: the rest of `decode_claim`;
* **submit**: `Engine.submit` (the tensor into the request, ``start_async``);
* **report JSON**: `daemon.scan.report.encode_report`;
* **group commit**: `daemon.fs.write_atomic_group`;
* **outcome**: `daemon.intake.claims.ClaimArea.finish` (the input to done/);
* **rest**: everything else of the thread (batches, results, waiting for the last inference).

OpenVINO's own threads (inference, callbacks) are the process's CPU beyond its main thread. To
measure another checkout's code the same way (an A/B), run this file with ``PYTHONPATH`` set to
that checkout. Prints figures only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import corpus
from bound import GROUP, _Share, _shares
from machine import cpu_lines

from daemon.config import load_config
from daemon.shared.bundle import DEFAULT_BUNDLE

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection

OUT = Path(__file__).resolve().parent / "out"
PIECES = ("read", "decode_claim", "submit", "encode_report", "write_atomic_group", "finish")
_CONTEXT = multiprocessing.get_context("spawn")


def _timed(
    real: Callable[..., Any], spent: defaultdict[str, float], name: str
) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return real(*args, **kwargs)
        finally:
            spent[name] += time.thread_time() - started

    return wrapper


def _work(conn: Connection, share: _Share) -> None:
    """One process: set up as a daemon worker, time the pieces of its share, send the sums."""
    import datetime as dt  # noqa: PLC0415 - in the worker process only

    from daemon.config import InferenceConfig, OutcomeConfig  # noqa: PLC0415
    from daemon.intake import claims as claim  # noqa: PLC0415
    from daemon.memory import keep_freed_memory  # noqa: PLC0415
    from daemon.records import Claim  # noqa: PLC0415
    from daemon.scan import protocol  # noqa: PLC0415
    from daemon.scan import read as decode_stage  # noqa: PLC0415
    from daemon.scan import worker as scan_worker  # noqa: PLC0415
    from daemon.shared.bundle import load_bundle  # noqa: PLC0415
    from daemon.shared.decode import DecodeLimits  # noqa: PLC0415

    keep_freed_memory()
    decode_stage.configure_decoders()
    decode_stage.warm_up()
    bundle = load_bundle(share.model)
    area = claim.ClaimArea(share.incoming, share.work, OutcomeConfig())
    setup = protocol.ScanSetup(
        share.reports, share.top_k, area, InferenceConfig(device=share.device)
    )
    worker = scan_worker.ScanWorker(DecodeLimits(), share.max_bytes)
    model = protocol.ModelChoice(bundle.path, share.variant, bundle.sha256)
    worker.handle(protocol.ScanRequest((), model, setup))
    spent: defaultdict[str, float] = defaultdict(float)
    decode_stage.read_claimed = _timed(decode_stage.read_claimed, spent, "read")
    for name in ("decode_claim", "encode_report", "write_atomic_group"):
        setattr(scan_worker, name, _timed(getattr(scan_worker, name), spent, name))
    claim.ClaimArea.finish = _timed(claim.ClaimArea.finish, spent, "finish")  # type: ignore[method-assign]
    engine = worker._engine  # noqa: SLF001 - a benchmark looks inside
    assert engine is not None
    engine.submit = _timed(engine.submit, spent, "submit")  # type: ignore[method-assign]
    now = dt.datetime.now(dt.UTC)
    claims = [Claim("own", p, p.name, now, 0.0) for p in sorted(share.incoming.iterdir())]
    conn.send("ready")
    conn.recv()
    thread0, process0 = time.thread_time(), time.process_time()
    for first in range(0, len(claims), GROUP):
        worker.handle(protocol.ScanRequest(tuple(claims[first : first + GROUP])))
    spent["thread"] = time.thread_time() - thread0
    spent["process"] = time.process_time() - process0
    conn.send((len(claims), dict(spent)))


def run(args: argparse.Namespace) -> dict[str, float]:
    """Every process's sums, as ms of CPU per scan."""
    config = load_config(None)
    folder = args.out / ("corpus" if args.corpus == "mixed" else f"corpus-{args.corpus}")
    files = corpus.build(folder, args.files, kind=args.corpus).files
    root = args.out / "own-work"
    shutil.rmtree(root, ignore_errors=True)
    shares = _shares(
        files,
        root,
        args.workers,
        model=DEFAULT_BUNDLE,
        variant=config.model.variant,
        device="CPU",
        max_bytes=config.limits.max_file_bytes,
        top_k=config.inference.top_k,
    )
    pairs = [_CONTEXT.Pipe() for _ in shares]
    processes = [
        _CONTEXT.Process(target=_work, args=(child, share), daemon=True)
        for (_, child), share in zip(pairs, shares, strict=True)
    ]
    try:
        for process in processes:
            process.start()
        for parent, _ in pairs:
            if parent.recv() != "ready":
                msg = "a worker did not start"
                raise RuntimeError(msg)
        for parent, _ in pairs:
            parent.send("go")
        answers = [parent.recv() for parent, _ in pairs]
    finally:
        for process in processes:
            process.join(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    scans = sum(count for count, _ in answers)
    total: defaultdict[str, float] = defaultdict(float)
    for _, spent in answers:
        for name, seconds in spent.items():
            total[name] += seconds
    return {name: seconds / scans * 1000 for name, seconds in total.items()}


def render(ms: dict[str, float]) -> str:
    """The table: ms of CPU per scan per piece."""
    rows = [
        ("read (read_claimed: lstat, open, read, sha256)", ms["read"]),
        ("decode + preprocess (decode_claim without reading)", ms["decode_claim"] - ms["read"]),
        ("submit (Engine.submit)", ms["submit"]),
        ("report JSON (encode_report)", ms["encode_report"]),
        ("group commit (write_atomic_group)", ms["write_atomic_group"]),
        ("outcome (ClaimArea.finish)", ms["finish"]),
        (
            "rest of the main thread",
            ms["thread"] - sum(ms[p] for p in PIECES if p != "read"),
        ),
        ("main thread", ms["thread"]),
        ("OpenVINO's threads (process - main thread)", ms["process"] - ms["thread"]),
    ]
    return "\n".join(f"{name:<54}{value:8.3f} ms" for name, value in rows)


def main(argv: list[str]) -> int:
    """Run and print; 0 unless a step failed."""
    parser = argparse.ArgumentParser(prog="bench/own_work.py", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", choices=corpus.KINDS, default="png", help="(png)")
    parser.add_argument("--files", type=int, default=2000, help="scans in all (2000)")
    parser.add_argument("--workers", type=int, default=2, help="processes at once (2)")
    parser.add_argument("--out", type=Path, default=OUT, help="work folder (bench/out)")
    args = parser.parse_args(argv)
    print("\n".join(cpu_lines()), flush=True)
    args.out = args.out.resolve()
    try:
        ms = run(args)
    except (OSError, RuntimeError, EOFError) as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 2
    print(f"CPU per scan, {args.files} scans of the {args.corpus} corpus on {args.workers} workers")
    print(render(ms))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
