"""The orchestration-free bound: the daemon's per-scan work alone, in parallel processes.

What is the most *any* design of the service could reach on this machine, when it does the work
the daemon must do for each scan and nothing else? Each of ``workers`` processes (the daemon's
``pipeline.decode_workers``) takes its share of the burst, already sitting in a folder of its own,
and hands it, in batches of `GROUP` (the daemon's batch size), straight to the daemon's own worker
code, `daemon.scan.worker.ScanWorker`, as the daemon's worker processes run it: read, sha256,
decode, preprocess, inference on the worker's own one-thread engine, the reports with one group
commit per batch, the inputs moved to done/.

Left out, and so the daemon's own cost (its *orchestration*): noticing files (watchdog), claiming
them (one rename), the pipe between the daemon and its workers, the log line, the counters and the
status file. ``daemon / bound`` is the share of the reachable rate the daemon gets; ``bound /
combined ceiling`` says whether the ceiling's assumption (decoding and inference share the cores
with nothing lost) holds on this machine with durable reports added.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.service.dispatch import MAX_BATCH

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from pathlib import Path

GROUP = MAX_BATCH
"""Reports per group commit: as many as the daemon's workers take per batch in a burst."""
_START_TIMEOUT_S = 120.0
_CONTEXT = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class _Share:
    """One worker's part of the burst and where it writes."""

    model: Path
    variant: str
    device: str
    incoming: Path
    reports: Path
    work: Path
    max_bytes: int
    top_k: int


def _work(conn: Connection, share: _Share) -> None:
    """One worker: set up, say ready, wait for the start, do its share, send (seconds, cpu s)."""
    import datetime as dt  # noqa: PLC0415 - in the worker process only

    from daemon.config import InferenceConfig, OutcomeConfig  # noqa: PLC0415
    from daemon.intake.claims import ClaimArea  # noqa: PLC0415
    from daemon.memory import keep_freed_memory  # noqa: PLC0415
    from daemon.records import Claim  # noqa: PLC0415
    from daemon.scan.protocol import Finished, ModelChoice, ScanRequest, ScanSetup  # noqa: PLC0415
    from daemon.scan.read import configure_decoders, warm_up  # noqa: PLC0415
    from daemon.scan.worker import ScanWorker  # noqa: PLC0415
    from daemon.shared.bundle import load_bundle  # noqa: PLC0415
    from daemon.shared.decode import DecodeLimits  # noqa: PLC0415

    keep_freed_memory()  # as the daemon's worker processes do
    configure_decoders()
    warm_up()
    bundle = load_bundle(share.model)
    area = ClaimArea(share.incoming, share.work, OutcomeConfig())  # inputs go to work/done
    setup = ScanSetup(share.reports, share.top_k, area, InferenceConfig(device=share.device))
    worker = ScanWorker(DecodeLimits(), share.max_bytes)
    model = ModelChoice(bundle.path, share.variant, bundle.sha256)
    loaded = worker.handle(ScanRequest((), model, setup))  # compiles, as at the daemon's start
    if not isinstance(loaded, list):
        conn.send(f"the worker cannot serve the model: {loaded.message}")
        return
    now = dt.datetime.now(dt.UTC)
    claims = [
        Claim("bound", path, path.name, now, 0.0) for path in sorted(share.incoming.iterdir())
    ]
    conn.send("ready")
    conn.recv()  # go
    started, cpu0 = time.perf_counter(), time.process_time()
    for first in range(0, len(claims), GROUP):
        answers = worker.handle(ScanRequest(tuple(claims[first : first + GROUP])))
        if not isinstance(answers, list):
            conn.send(f"the worker cannot serve the model: {answers.message}")
            return
        failed = [
            a
            for a in answers
            if not isinstance(a, Finished) or not a.ok or a.write_error or a.outcome_error
        ]
        if failed:
            conn.send(f"a scan failed: {failed[0]}")
            return
    conn.send((time.perf_counter() - started, time.process_time() - cpu0))


def _shares(files: tuple[Path, ...], root: Path, workers: int, **common: Any) -> list[_Share]:
    """Split ``files`` over ``workers`` incoming folders under ``root``, copied and flushed."""
    shares = []
    for index in range(workers):
        folders = [root / f"{kind}-{index}" for kind in ("incoming", "reports", "work")]
        for folder in folders:
            folder.mkdir(parents=True)
        for path in files[index::workers]:
            shutil.copyfile(path, folders[0] / path.name)
        shares.append(_Share(incoming=folders[0], reports=folders[1], work=folders[2], **common))
    os.sync()  # the files arrive complete: their write-back is not part of the timed burst
    return shares


def _run(shares: list[_Share]) -> tuple[float, list[Any]]:
    """Start one process per share, wait for all to be ready, start them together; time them."""
    pairs = [_CONTEXT.Pipe() for _ in shares]
    processes = [
        _CONTEXT.Process(target=_work, args=(child, share), daemon=True)
        for (_, child), share in zip(pairs, shares, strict=True)
    ]
    try:
        for process in processes:
            process.start()
        for parent, _ in pairs:
            if not parent.poll(_START_TIMEOUT_S) or parent.recv() != "ready":
                msg = "a bound worker did not start"
                raise RuntimeError(msg)
        started = time.perf_counter()
        for parent, _ in pairs:
            parent.send("go")
        answers = [parent.recv() for parent, _ in pairs]
        return time.perf_counter() - started, answers
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def bound_burst(files: tuple[Path, ...], root: Path, workers: int, **common: Any) -> dict[str, Any]:
    """Run ``files`` through ``workers`` bound processes in folders under ``root`` (a new folder).

    ``common``: the `_Share` fields every worker has (model, variant, device, max_bytes, top_k).
    ``root`` is left for the caller to remove, once every timed run is over (see
    ``throughput.main``). Returns the rate, the CPU per scan of the workers, and each worker's
    seconds.
    """
    seconds, answers = _run(_shares(files, root, workers, **common))
    failed = [a for a in answers if isinstance(a, str)]
    if failed:
        raise RuntimeError(failed[0])
    return {
        "per_second": len(files) / seconds,
        "files": len(files),
        "seconds": seconds,
        "worker_seconds": [a[0] for a in answers],
        "workers": workers,
        "group": GROUP,
        "cpu_ms_per_file": sum(a[1] for a in answers) / len(files) * 1000,
    }
