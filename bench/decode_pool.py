"""Decode-only: the daemon's decode code alone, in a small pool of processes of the benchmark's own.

Each of ``workers`` processes (``spawn``, as the daemon starts its workers) sets itself up as a
daemon worker process does (`daemon.memory.keep_freed_memory`, `configure_decoders`, `warm_up`),
takes its share of the files (every ``workers``-th), says it is ready, and on the start signal runs
`daemon.scan.read.decode_claim` (read, sha256, decode, preprocess) over its share, then sends
back its seconds and its CPU seconds. Nothing crosses the pipe per file: what is timed is the
decode stage and nothing else, the first term of the combined ceiling.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from pathlib import Path

    from daemon.shared.preprocess import PreprocessSpec

_START_TIMEOUT_S = 120.0
_CONTEXT = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class _Share:
    files: tuple[Path, ...]
    spec: PreprocessSpec
    max_bytes: int


def _work(conn: Connection, share: _Share) -> None:
    """One process: set up, decode one file untimed, say ready, decode the share, send figures."""
    import datetime as dt  # noqa: PLC0415 - in the child only

    from daemon.memory import keep_freed_memory  # noqa: PLC0415
    from daemon.records import Claim  # noqa: PLC0415
    from daemon.scan.read import Rejected, configure_decoders, decode_claim, warm_up  # noqa: PLC0415
    from daemon.shared.decode import DecodeLimits  # noqa: PLC0415

    keep_freed_memory()
    configure_decoders()
    warm_up()
    limits = DecodeLimits()
    now = dt.datetime.now(dt.UTC)
    claims = [Claim("bench", path, path.name, now, 0.0) for path in share.files]
    decode_claim(claims[0], share.spec, limits, share.max_bytes)  # first-use costs, untimed
    conn.send("ready")
    conn.recv()  # go
    started, cpu0 = time.perf_counter(), time.process_time()
    for claim in claims:
        outcome = decode_claim(claim, share.spec, limits, share.max_bytes)
        if isinstance(outcome, Rejected):
            conn.send(f"{claim.name} failed to decode: {outcome.failure}")
            return
    conn.send((time.perf_counter() - started, time.process_time() - cpu0))


def decode_burst(
    files: tuple[Path, ...],
    spec: PreprocessSpec,
    workers: int,
    max_bytes: int,
    cpus: set[int] | None = None,
) -> dict[str, object]:
    """Decode ``files`` in ``workers`` processes started together; the rate and CPU per file.

    ``cpus``: the processes' CPU affinity (they inherit the spawning thread's).

    Raises:
        RuntimeError: a process did not start, or a file failed to decode.
    """
    shares = [_Share(files[i::workers], spec, max_bytes) for i in range(workers)]
    pairs = [_CONTEXT.Pipe() for _ in shares]
    processes = [
        _CONTEXT.Process(target=_work, args=(child, share), daemon=True)
        for (_, child), share in zip(pairs, shares, strict=True)
    ]
    affinity = os.sched_getaffinity(0)
    try:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        for process in processes:
            process.start()
    finally:
        os.sched_setaffinity(0, affinity)
    try:
        for parent, _ in pairs:
            try:
                ready = parent.recv() if parent.poll(_START_TIMEOUT_S) else "no answer"
            except EOFError:
                ready = "it exited"
            if ready != "ready":
                msg = f"a decode-only process did not start: {ready}"
                raise RuntimeError(msg)
        started = time.perf_counter()
        for parent, _ in pairs:
            parent.send("go")
        answers = [parent.recv() for parent, _ in pairs]
        seconds = time.perf_counter() - started
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    failed = [a for a in answers if isinstance(a, str)]
    if failed:
        raise RuntimeError(failed[0])
    return {
        "per_second": len(files) / seconds,
        "files": len(files),
        "seconds": seconds,
        "workers": workers,
        "cpus": sorted(cpus) if cpus is not None else None,
        "cpu_ms_per_file": sum(a[1] for a in answers) / len(files) * 1000,
    }
