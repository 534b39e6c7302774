"""The orchestration-free bound: the daemon's per-scan work alone, in parallel processes.

What is the most *any* design of the service could reach on this machine, when it does the work
the daemon must do for each scan and nothing else? Each of ``workers`` processes (the daemon's
``pipeline.decode_workers``) takes its share of the burst, already sitting in a folder of its own,
and runs it through the daemon's own functions, one scan after another:

1. `daemon.decode_stage.decode_claim`: read, sha256, decode, preprocess (the daemon's limits);
2. inference on a model compiled in that process: the bundle's variant, one stream of one thread,
   OpenVINO's CPU pinning off (each process would otherwise pin its thread to the first core, and
   the processes would queue on it);
3. `daemon.report.encode_report` of a real `ScanResult`, written with the daemon's group commit
   (`daemon.files.write_atomic_group`, groups of `GROUP`, the daemon's batch size), then the input
   moved to done/ with `daemon.files.move_into`.

Left out, and so the daemon's own cost (its *orchestration*): noticing files (watchdog), claiming
them (one rename), handing claims, tensors and results between processes and threads, the log line,
the counters and the status file. ``daemon / bound`` is the share of the reachable rate the daemon
gets; ``bound / combined ceiling`` says whether the ceiling's assumption (decoding and inference
share the cores with nothing lost) holds on this machine with durable reports added.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from daemon.pipeline import MAX_BATCH

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

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
    done: Path
    max_bytes: int
    top_k: int


def _compile(share: _Share) -> tuple[Any, Any]:
    """The bundle's network compiled for one sequential worker; its infer request and model info."""
    import openvino as ov  # noqa: PLC0415 - in the worker process only
    import openvino.properties as props  # noqa: PLC0415
    import openvino.properties.hint as hints  # noqa: PLC0415

    from daemon.bundle import load_bundle  # noqa: PLC0415
    from daemon.jobs import ModelInfo  # noqa: PLC0415

    bundle = load_bundle(share.model)
    variant = bundle.variant(share.variant)
    core = ov.Core()
    model = core.read_model(str(variant.xml), str(variant.bin))
    spec = bundle.preprocess
    model.reshape([1, spec.input_size, spec.input_size, spec.channels])
    options: dict[Any, Any] = {hints.performance_mode: hints.PerformanceMode.LATENCY}
    if share.device == "CPU":
        options = {
            props.inference_num_threads: 1,
            props.num_streams: 1,
            hints.enable_cpu_pinning: False,
        }
    compiled = core.compile_model(model, share.device, options)
    try:
        precision = str(compiled.get_property(hints.inference_precision).to_string())
    except RuntimeError:
        precision = "unknown"
    info = ModelInfo(
        name=bundle.name,
        version=bundle.version,
        bundle_sha256=bundle.sha256,
        variant=variant.name,
        weights_precision=variant.precision,
        precision=precision,
        device_requested=share.device,
        device_used=share.device,
        labels=bundle.labels,
    )
    return compiled.create_infer_request(), (bundle, info)


def _work(conn: Connection, share: _Share) -> None:
    """One worker: set up, say ready, wait for the start, do its share, send (seconds, cpu s)."""
    import datetime as dt  # noqa: PLC0415 - in the worker process only

    import numpy as np  # noqa: PLC0415

    from daemon.decode import DecodeLimits  # noqa: PLC0415
    from daemon.decode_stage import (  # noqa: PLC0415
        Rejected,
        configure_decoders,
        decode_claim,
        warm_up,
    )
    from daemon.files import move_into, write_atomic_group  # noqa: PLC0415
    from daemon.jobs import Claim, Prediction, ScanResult  # noqa: PLC0415
    from daemon.memory import keep_freed_memory  # noqa: PLC0415
    from daemon.report import encode_report, report_path  # noqa: PLC0415

    keep_freed_memory()  # as the daemon's decode workers do
    configure_decoders()
    warm_up()
    request, (bundle, info) = _compile(share)
    limits, spec = DecodeLimits(), bundle.preprocess
    names = sorted(path.name for path in share.incoming.iterdir())
    conn.send("ready")
    conn.recv()  # go
    started, cpu0 = time.perf_counter(), time.process_time()
    group: list[ScanResult] = []
    for index, name in enumerate(names):
        claim = Claim("bound", share.incoming / name, name, dt.datetime.now(dt.UTC), 0.0)
        outcome = decode_claim(claim, spec, limits, share.max_bytes)
        if isinstance(outcome, Rejected):
            conn.send(f"{name} failed to decode: {outcome.failure}")
            return
        infer_started = time.perf_counter()
        output = request.infer(outcome.tensor[np.newaxis])[0]
        infer_ms = (time.perf_counter() - infer_started) * 1000.0
        prediction = Prediction(info.labels, tuple(output[0].tolist()))
        group.append(
            ScanResult(claim, outcome.source, info, prediction, None, outcome.decode_ms, infer_ms)
        )
        if len(group) == GROUP or index == len(names) - 1:
            encoded = [encode_report(result, share.top_k)[1] for result in group]
            paths = [report_path(share.reports, result) for result in group]
            errors = write_atomic_group(list(zip(paths, encoded, strict=True)))
            if any(errors):
                conn.send(f"a report could not be written: {next(e for e in errors if e)}")
                return
            for result in group:
                move_into(
                    result.claim.path,
                    share.done,
                    PurePosixPath(result.claim.name),
                    sha256=result.source.sha256,
                )
            group = []
    conn.send((time.perf_counter() - started, time.process_time() - cpu0))


def _shares(files: tuple[Path, ...], root: Path, workers: int, **common: Any) -> list[_Share]:
    """Split ``files`` over ``workers`` incoming folders under ``root``, copied and flushed."""
    shares = []
    for index in range(workers):
        folders = [root / f"{kind}-{index}" for kind in ("incoming", "reports", "done")]
        for folder in folders:
            folder.mkdir(parents=True)
        for path in files[index::workers]:
            shutil.copyfile(path, folders[0] / path.name)
        shares.append(_Share(incoming=folders[0], reports=folders[1], done=folders[2], **common))
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
