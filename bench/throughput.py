"""infarctwatch throughput and latency benchmark: the daemon against its ceilings, on one IR.

Run from the repo with the dev venv (``.venv/bin/python bench/throughput.py --help``). In one run,
on the same IR (the committed default bundle unless ``--model``) and device:

1. **inference ceiling**: OpenVINO's ``benchmark_app -hint throughput`` on the IR; with a format 2
   bundle, on its lesion segmenter too (the daemon runs both on every analysed image, so the
   networks' ceiling is ``1 / (1/classifier + 1/segmenter)``); the naive loop and the bound below
   run the classifier only;
2. **decode-only**: read + sha256 + decode + preprocess (`daemon.scan.read.decode_claim`) in
   a pool of the benchmark's own processes (``decode_pool.py``), as many as the daemon has worker
   processes (``--workers``);
3. **combined ceiling** ``1 / (1/decode + 1/inference)``: both stages sharing the same cores
   (``inference``: the networks' ceiling);
4. **daemon end-to-end**: a burst of ``--files`` distinct files renamed into the incoming folder of
   a real ``infarctwatch run`` process, timed until the last report is visible;
5. **latency**: ``--latency-files`` files dropped one at a time, rename -> report visible
   (watched with inotify, see ``folder_events.py``);
6. **naive loop**: the same burst through a synchronous poll/read/decode/infer/write loop
   (``naive.py``), with and without fsync of each report;
7. **orchestration-free bound**: the same burst through the daemon's per-scan work alone (read,
   hash, decode, preprocess, infer, durable report, move), one sequential process per decode
   worker and nothing else (``bound.py``): what any design could reach here;
8. with ``--scaling``: the same on one core (``taskset``) and with one decode worker;
9. with ``--baseline DIR``: the daemon of another checkout too, in every round, interleaved with
   this one's (an A/B whose ratios come from one run).

``--corpus mixed`` (default) uses every sample format; ``--corpus png`` only 256x256 PNGs, whose
decode is cheap, so inference and the daemon's own work per scan dominate. The output starts with
the CPU model and its flags (AVX2, AVX-512, AMX, bf16): they decide OpenVINO's kernels.

The throughput phases run ``--rounds`` times, interleaved, and the best round of each is kept (the
one least disturbed by other jobs); every round's figure is printed too. The CPU time each stage
spends per scan is recorded as well: unlike rates, it hardly depends on other load. Prints a table
with the targets, writes everything to ``bench/out/results.json``. Figures measured while other
jobs load the machine are pessimistic: the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import corpus
import naive
import openvino as ov
import yaml
from bound import bound_burst
from decode_pool import decode_burst
from folder_events import FolderEvents
from machine import cpu_lines, cpu_summary

from daemon.config import load_config
from daemon.scan.read import configure_decoders, warm_up
from daemon.shared.bundle import Bundle, designated_bundle, load_bundle

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
RUNS = "runs"
"""Every run's folders, each used once and all removed when the benchmark ends (see `main`)."""
TARGETS = {"ceiling_ratio": 0.8, "naive_ratio": 1.5, "p50_ms": 15.0, "p99_ms": 50.0}
_THROUGHPUT_LINE = re.compile(r"Throughput:\s*([0-9.]+)\s*FPS")
_MEDIAN_LINE = re.compile(r"Median:\s*([0-9.]+)\s*ms")
_COUNT_LINE = re.compile(r"Count:\s*([0-9]+)\s*iterations")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A step of the benchmark could not run (the message says which and why)."""


def _load() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=30
    )
    return result.stdout.strip()


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _tree_cpu_s(pid: int) -> float:
    """`_process_cpu_s` of a process plus its children (the daemon's decode workers)."""
    total = _process_cpu_s(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text(encoding="utf-8").split():
                with contextlib.suppress(OSError):
                    total += _process_cpu_s(int(child))
    return total


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _taskset(cpus: str | None) -> list[str]:
    if cpus is None:
        return []
    tool = shutil.which("taskset")
    if tool is None:
        msg = "taskset (util-linux) is needed for --scaling"
        raise BenchError(msg)
    return [tool, "-c", cpus]


# -- 1. the inference ceiling ---------------------------------------------------------------------


def inference_ceiling(
    bundle: Bundle,
    settings: DaemonSettings,
    seconds: int,
    cpus: str | None = None,
    *,
    segmenter: bool = False,
) -> dict[str, Any]:
    """benchmark_app's throughput on the IR the daemon serves (batch 1, throughput hint).

    ``segmenter``: on the bundle's lesion segmenter instead of its classifier.
    """
    device = settings.device
    tool = Path(sys.executable).with_name("benchmark_app")
    if not tool.exists():
        found = shutil.which("benchmark_app")
        if found is None:
            msg = "benchmark_app not found (it comes with the openvino wheel)"
            raise BenchError(msg)
        tool = Path(found)
    spec = bundle.preprocess
    shape = f"[1,{spec.input_size},{spec.input_size},{spec.channels}]"
    xml = bundle.variant(settings.variant).xml
    if segmenter and bundle.segmenter is not None:
        _, height, width, channels = bundle.segmenter.input_shape
        shape = f"[1,{height},{width},{channels}]"
        xml = bundle.segmenter.variant(settings.variant).xml
    command = [
        *_taskset(cpus),
        str(tool),
        "-m",
        str(xml),
        "-shape",
        shape,
        "-d",
        device,
        "-hint",
        "throughput",
        "-t",
        str(seconds),
    ]
    load = _load()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=seconds + 300
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    match = _THROUGHPUT_LINE.search(result.stdout)
    count = _COUNT_LINE.search(result.stdout)
    if result.returncode != 0 or match is None:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        msg = f"benchmark_app failed (exit {result.returncode}): {' | '.join(tail)}"
        raise BenchError(msg)
    median = _MEDIAN_LINE.search(result.stdout)
    return {
        "per_second": float(match.group(1)),
        "latency_median_ms": float(median.group(1)) if median else None,
        "cpu_ms_per_inference": cpu / int(count.group(1)) * 1000 if count else None,
        "command": " ".join(command[len(_taskset(cpus)) :]),
        "cpus": cpus,
        "load_before": load,
    }


# -- 2. decode-only ------------------------------------------------------------------------------


def decode_only(
    files: tuple[Path, ...], bundle: Bundle, workers: int, cpus: set[int] | None = None
) -> dict[str, Any]:
    """The daemon's decode stage alone, over ``files``, in ``workers`` processes (`decode_pool`)."""
    load = _load()
    try:
        result = decode_burst(
            files, bundle.preprocess, workers, load_config(None).limits.max_file_bytes, cpus
        )
    except RuntimeError as exc:
        msg = f"decode-only failed: {exc}"
        raise BenchError(msg) from exc
    result["load_before"] = load
    return result


# -- 3. the daemon, as a real process -----------------------------------------------------------


@dataclass(frozen=True)
class DaemonSettings:
    """How the daemon under test is configured (everything else: its defaults)."""

    model: Path | None
    device: str
    workers: int
    variant: str
    cpus: str | None = None
    source: Path | None = None
    """Run the daemon from this checkout instead of this one (``--baseline``: an A/B)."""


class DaemonRun:
    """``python -m daemon run`` on fresh folders under ``root``; a context manager."""

    def __init__(self, root: Path, settings: DaemonSettings) -> None:
        self.root = root
        self.settings = settings
        shutil.rmtree(root, ignore_errors=True)
        for name in ("incoming", "reports", "work", "stage"):
            (root / name).mkdir(parents=True)
        self.incoming, self.reports = root / "incoming", root / "reports"
        self.work, self.stage = root / "work", root / "stage"
        config: dict[str, Any] = {
            "incoming": str(self.incoming),
            "reports": str(self.reports),
            "work": str(self.work),
            "inference": {"device": settings.device},
            "model": {"variant": settings.variant},
            "pipeline": {"decode_workers": settings.workers},
            "logging": {"format": "json"},
        }
        if settings.model is not None:
            config["model"]["path"] = str(settings.model)
        self.config = root / "daemon.yaml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log = root / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0
        self.exit_code: int | None = None

    def command(self) -> list[str]:
        """``[taskset -c CPUS] python -m daemon run --config ...``."""
        daemon = [sys.executable, "-m", "daemon", "run", "--config", str(self.config)]
        return [*_taskset(self.settings.cpus), *daemon]

    def __enter__(self) -> Self:
        started = time.perf_counter()
        source = self.settings.source
        env = None if source is None else {**os.environ, "PYTHONPATH": str(source)}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=source or REPO, env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        status = self.work / "status.json"
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                msg = f"the daemon exited with {self.process.returncode} at start (see {self.log})"
                raise BenchError(msg)
            with contextlib.suppress(OSError, ValueError):
                if json.loads(status.read_text(encoding="utf-8"))["state"] == "running":
                    break
            if time.monotonic() > deadline:
                msg = f"the daemon was not ready after 180 s (see {self.log})"
                raise BenchError(msg)
            time.sleep(0.05)
        self.startup_s = time.perf_counter() - started
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        if self.process is None:
            msg = "the daemon is not running"
            raise BenchError(msg)
        return self.process.pid

    def stop(self) -> int | None:
        """SIGTERM, then wait; returns (and records) the exit code."""
        if self.process is None or self.exit_code is not None:
            return self.exit_code
        self.process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.exit_code = self.process.wait()
        return self.exit_code

    def stage_files(self, files: tuple[Path, ...]) -> list[Path]:
        """Copy ``files`` next to incoming (same file system: the drop is one rename each)."""
        staged = []
        for path in files:
            target = self.stage / path.name
            shutil.copyfile(path, target)
            staged.append(target)
        return staged

    def settle(self, expected_done: int, timeout: float = 120.0) -> None:
        """Wait until the daemon has moved ``expected_done`` inputs to done/ and holds none."""
        done, processing = self.work / "done", self.incoming / ".infarctwatch" / "processing"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = sum(1 for _ in done.iterdir()) if done.is_dir() else 0
            busy = any(files for _, _, files in os.walk(processing))
            if count >= expected_done and not busy:
                return
            time.sleep(0.05)
        msg = f"the daemon did not finish its {expected_done} inputs within {timeout} s"
        raise BenchError(msg)

    def report_timings(self) -> dict[str, Any]:
        """Statuses and the medians of the daemon's own timings across every report."""
        statuses: dict[str, int] = {}
        decode_ms, infer_ms, total_ms = [], [], []
        for path in self.reports.glob("*.json"):
            report = json.loads(path.read_text(encoding="utf-8"))
            statuses[report["status"]] = statuses.get(report["status"], 0) + 1
            timing = report["timing"]
            decode_ms.append(timing["decode_ms"])
            total_ms.append(timing["total_ms"])
            if timing.get("infer_ms") is not None:
                infer_ms.append(timing["infer_ms"])
        return {
            "statuses": statuses,
            "decode_ms_median": statistics.median(decode_ms) if decode_ms else None,
            "infer_ms_median": statistics.median(infer_ms) if infer_ms else None,
            "total_ms_median": statistics.median(total_ms) if total_ms else None,
            "total_ms_p99": _percentile(total_ms, 99) if total_ms else None,
        }


def daemon_burst(run: DaemonRun, files: tuple[Path, ...], timeout: float) -> dict[str, Any]:
    """Rename ``files`` into incoming at once; time until every report is visible."""
    staged = run.stage_files(files)
    os.sync()  # the files arrive complete: their write-back is not part of the timed burst
    load = _load()
    with FolderEvents(run.reports, ".json") as events:
        cpu0 = _tree_cpu_s(run.pid)
        started = time.perf_counter()
        for path in staged:
            path.rename(run.incoming / path.name)
        dropped = time.perf_counter() - started
        finished = events.wait_for(len(files), timeout)
        cpu = _tree_cpu_s(run.pid) - cpu0
    if finished is None:
        count = len(list(run.reports.glob("*.json")))
        msg = f"only {count} of {len(files)} reports after {timeout} s (see {run.log})"
        raise BenchError(msg)
    seconds = finished - started
    run.settle(len(files))
    timings = run.report_timings()
    if timings["statuses"] != {"ok": len(files)}:
        msg = f"not every scan succeeded: {timings['statuses']} (see {run.log})"
        raise BenchError(msg)
    return {
        "per_second": len(files) / seconds,
        "files": len(files),
        "seconds": seconds,
        "drop_seconds": dropped,
        "daemon_cpu_ms_per_file": cpu / len(files) * 1000,
        "daemon_timings": timings,
        "load_before": load,
    }


def daemon_latency(
    run: DaemonRun, files: tuple[Path, ...], gap_s: float, timeout: float = 30.0
) -> dict[str, Any]:
    """Drop ``files`` one at a time (rename), each after the previous report appeared."""
    staged = run.stage_files(files)
    latencies: list[float] = []
    load = _load()
    with FolderEvents(run.reports, ".json") as events:
        events.drain()
        for path in staged:
            time.sleep(gap_s)
            started = time.perf_counter()
            path.rename(run.incoming / path.name)
            seen = events.wait_for(1, timeout)
            if seen is None:
                msg = f"no report for {path.name} within {timeout} s (see {run.log})"
                raise BenchError(msg)
            latencies.append((seen - started) * 1000)
    return {
        "files": len(files),
        "gap_ms": gap_s * 1000,
        "p50_ms": _percentile(latencies, 50),
        "p90_ms": _percentile(latencies, 90),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": max(latencies),
        "mean_ms": statistics.fmean(latencies),
        "load_before": load,
    }


# -- 4. the naive loop ----------------------------------------------------------------------------


def naive_burst(
    root: Path, files: tuple[Path, ...], bundle: Bundle, settings: DaemonSettings, *, fsync: bool
) -> dict[str, Any]:
    """The same burst through `naive.NaiveLoop` (model compiled before the clock starts)."""
    shutil.rmtree(root, ignore_errors=True)
    folders = {name: root / name for name in ("incoming", "reports", "done", "stage")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    staged = []
    for path in files:
        shutil.copyfile(path, folders["stage"] / path.name)
        staged.append(folders["stage"] / path.name)
    os.sync()  # as for the daemon: the staged copies' write-back is not timed
    loop = naive.NaiveLoop(bundle, settings.device, settings.variant, fsync=fsync)
    load = _load()
    cpu0, started = time.process_time(), time.perf_counter()
    for path in staged:
        path.rename(folders["incoming"] / path.name)
    loop.run(folders["incoming"], folders["reports"], folders["done"], len(files))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return {
        "per_second": len(files) / seconds,
        "files": len(files),
        "seconds": seconds,
        "fsync": fsync,
        "cpu_ms_per_file": cpu / len(files) * 1000,
        "load_before": load,
    }


# -- the run --------------------------------------------------------------------------------------


def _bundle(model: Path | None) -> Bundle:
    return load_bundle(designated_bundle(model))


def _machine(bundle: Bundle, settings: DaemonSettings) -> dict[str, Any]:
    device = settings.device
    dirty = bool(_git("status", "--porcelain", "--", "daemon", "bench"))
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu_summary()["model"],
        "cpu_flags": cpu_summary()["flags"],
        "cpu_bf16": cpu_summary()["bf16"],
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_at_start": _load(),
        "python": platform.python_version(),
        "openvino": ov.get_version(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "daemon_or_bench_modified": dirty,
        "model": {
            "name": bundle.name,
            "version": bundle.version,
            "bundle_sha256": bundle.sha256,
            "ir": str(bundle.variant(settings.variant).xml.relative_to(REPO))
            if REPO in bundle.variant(settings.variant).xml.parents
            else str(bundle.variant(settings.variant).xml),
        },
        "device": device,
    }


def _progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _daemon_phase(
    args: argparse.Namespace,
    name: str,
    settings: DaemonSettings,
    burst: tuple[Path, ...],
    latency: tuple[Path, ...] = (),
) -> dict[str, Any]:
    with DaemonRun(args.out / RUNS / name, settings) as run:
        _progress(f"daemon {name}: ready in {run.startup_s:.1f} s; burst of {len(burst)}")
        result: dict[str, Any] = {"startup_s": run.startup_s, "settings": settings.__dict__}
        result["burst"] = daemon_burst(run, burst, args.timeout)
        if latency:
            _progress(f"daemon {name}: latency, {len(latency)} files one at a time")
            result["latency"] = daemon_latency(run, latency, args.latency_gap_ms / 1000)
        code = run.stop()
    result["exit_code"] = code
    result["settings"] = {
        k: str(v) if isinstance(v, Path) else v for k, v in result["settings"].items()
    }
    if code != 0:
        msg = f"the daemon exited {code} after SIGTERM (see {run.log})"
        raise BenchError(msg)
    return result


def _best(rounds: list[dict[str, Any]], key: str = "per_second") -> dict[str, Any]:
    """The fastest round (the one least disturbed by other load), with every round's figure."""
    best = dict(max(rounds, key=lambda r: r[key]))
    best["rounds_per_second"] = [r[key] for r in rounds]
    for cpu in ("cpu_ms_per_file", "cpu_ms_per_inference"):
        if all(r.get(cpu) is not None for r in rounds):
            best["rounds_cpu_ms"] = [r[cpu] for r in rounds]
    return best


def _median_cpu(result: dict[str, Any]) -> float | None:
    """The median over the rounds of a phase's CPU per scan (it moves less than the rates)."""
    rounds = result.get("rounds_cpu_ms")
    return statistics.median(rounds) if rounds else None


def _best_daemon(rounds: list[dict[str, Any]], *, latency: bool = True) -> dict[str, Any]:
    best = dict(max(rounds, key=lambda r: r["burst"]["per_second"]))
    best["rounds_per_second"] = [r["burst"]["per_second"] for r in rounds]
    best["rounds_cpu_ms"] = [r["burst"]["daemon_cpu_ms_per_file"] for r in rounds]
    best["exit_codes"] = [r["exit_code"] for r in rounds]
    if latency:
        best["latency"] = next(r["latency"] for r in rounds if "latency" in r)
    return best


def _ceilings(
    rounds: dict[str, list[dict[str, Any]]], bundle: Bundle, settings: DaemonSettings, seconds: int
) -> None:
    """One round of benchmark_app: the classifier, and the segmenter when the bundle has one."""
    rounds["inference"].append(inference_ceiling(bundle, settings, seconds))
    if bundle.segmenter is not None:
        rounds.setdefault("segmenter", []).append(
            inference_ceiling(bundle, settings, seconds, segmenter=True)
        )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase; throughput phases interleaved over ``--rounds``, best round kept."""
    configure_decoders()
    warm_up()
    bundle = _bundle(args.model)
    settings = DaemonSettings(args.model, args.device, args.workers, args.variant)
    results: dict[str, Any] = {"machine": _machine(bundle, settings)}
    total = args.files + args.latency_files
    _progress(f"corpus: {total} distinct files from samples/")
    folder = args.out / ("corpus" if args.corpus == "mixed" else f"corpus-{args.corpus}")
    built = corpus.build(folder, total, kind=args.corpus)
    burst, latency = built.files[: args.files], built.files[args.files :]
    results["corpus"] = {
        "files": total,
        "formats": built.formats,
        "mean_kb": round(built.total_bytes / total / 1000, 1),
        "kind": args.corpus,
        "source": "samples/ perturbed (bench/corpus.py)",
    }
    baseline = None
    if args.baseline is not None:
        baseline = dataclasses.replace(settings, source=args.baseline.resolve())
        results["baseline_source"] = {
            "path": str(args.baseline),
            "git_commit": _git("-C", str(args.baseline.resolve()), "rev-parse", "--short", "HEAD")
            or None,
        }
    rounds: dict[str, list[dict[str, Any]]] = {
        name: [] for name in ("inference", "decode", "daemon", "naive", "naive_no_fsync", "bound")
    }
    if baseline is not None:
        rounds["baseline"] = []
    for number in range(1, args.rounds + 1):
        _progress(f"round {number}/{args.rounds}: benchmark_app -t {args.benchmark_seconds}")
        _ceilings(rounds, bundle, settings, args.benchmark_seconds)
        _progress(f"round {number}: decode-only, {args.files} files on {args.workers} workers")
        rounds["decode"].append(decode_only(burst, bundle, args.workers))
        daemons = [("daemon", "main", settings), ("baseline", "baseline", baseline)]
        if number % 2 == 0:  # A/B: alternate which daemon goes first
            daemons.reverse()
        for key, name, chosen in daemons:
            if chosen is None:
                continue
            rounds[key].append(
                _daemon_phase(
                    args,
                    f"{name}-{number}",
                    chosen,
                    burst,
                    latency if number == 1 and key == "daemon" else (),
                )
            )
        for fsync in (True, False):
            label = "naive" if fsync else "naive_no_fsync"
            _progress(f"round {number}: {label}, burst of {args.files}")
            rounds[label].append(
                naive_burst(
                    args.out / RUNS / f"{label}-{number}", burst, bundle, settings, fsync=fsync
                )
            )
        _progress(f"round {number}: orchestration-free bound, {args.workers} processes")
        rounds["bound"].append(_bound_phase(args, bundle, burst, number))
    results["rounds"] = args.rounds
    results["daemon"] = _best_daemon(rounds.pop("daemon"))
    if baseline is not None:
        results["baseline"] = _best_daemon(rounds.pop("baseline"), latency=False)
    results.update({name: _best(values) for name, values in rounds.items()})
    if args.scaling:
        results["scaling"] = scaling(args, bundle, settings, burst[: args.scaling_files])
        results["scaling"]["inference_all"] = results["inference"]
    results["machine"]["load_at_end"] = _load()
    results["summary"] = summarise(results)
    return results


def _bound_phase(
    args: argparse.Namespace, bundle: Bundle, burst: tuple[Path, ...], number: int
) -> dict[str, Any]:
    config = load_config(None)
    try:
        return bound_burst(
            burst,
            args.out / RUNS / f"bound-{number}",
            args.workers,
            model=bundle.path,
            variant=args.variant,
            device=args.device,
            max_bytes=config.limits.max_file_bytes,
            top_k=config.inference.top_k,
        )
    except RuntimeError as exc:
        msg = f"the orchestration-free bound failed: {exc}"
        raise BenchError(msg) from exc


def scaling(
    args: argparse.Namespace, bundle: Bundle, everyday: DaemonSettings, burst: tuple[Path, ...]
) -> dict[str, Any]:
    """The same stages on one core (taskset / affinity) and the daemon with one decode worker."""
    one_cpu = str(min(os.sched_getaffinity(0)))
    out: dict[str, Any] = {"files": len(burst), "one_core": one_cpu}
    rounds: dict[str, list[dict[str, Any]]] = {}

    def keep(name: str, result: dict[str, Any]) -> None:
        rounds.setdefault(name, []).append(result)

    for number in range(1, args.rounds + 1):
        _progress(f"scaling round {number}/{args.rounds}: benchmark_app on CPU {one_cpu}")
        keep(
            "inference_1core",
            inference_ceiling(bundle, everyday, args.benchmark_seconds, cpus=one_cpu),
        )
        _progress(f"scaling round {number}: decode-only on 1 core / 1 worker / all")
        keep("decode_1core", decode_only(burst, bundle, 1, cpus={int(one_cpu)}))
        keep("decode_1worker", decode_only(burst, bundle, 1))
        keep("decode_all", decode_only(burst, bundle, args.workers))
        daemons = {
            "daemon_1core": dataclasses.replace(everyday, cpus=one_cpu),
            "daemon_1worker": dataclasses.replace(everyday, workers=1),
            "daemon_all": everyday,
        }
        for name, settings in daemons.items():
            keep(name, _daemon_phase(args, f"{name}-{number}", settings, burst)["burst"])
    out.update({name: _best(values) for name, values in rounds.items()})
    return out


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures and whether each target is met."""
    decode = results["decode"]["per_second"]
    classifier = results["inference"]["per_second"]
    segmenter = results["segmenter"]["per_second"] if "segmenter" in results else None
    inference = classifier if segmenter is None else 1 / (1 / classifier + 1 / segmenter)
    combined = 1 / (1 / decode + 1 / inference)
    daemon = results["daemon"]["burst"]["per_second"]
    naive_rate = results["naive"]["per_second"]
    latency = results["daemon"]["latency"]
    summary: dict[str, Any] = {
        "classifier_per_s": classifier,
        "segmenter_per_s": segmenter,
        "inference_per_s": inference,
        "decode_per_s": decode,
        "combined_ceiling_per_s": combined,
        "daemon_per_s": daemon,
        "ceiling_ratio": daemon / combined,
        "naive_per_s": naive_rate,
        "naive_ratio": daemon / naive_rate,
        "naive_no_fsync_per_s": results["naive_no_fsync"]["per_second"],
        "naive_no_fsync_ratio": daemon / results["naive_no_fsync"]["per_second"],
        "bound_per_s": results["bound"]["per_second"],
        "bound_ceiling_ratio": results["bound"]["per_second"] / combined,
        "daemon_bound_ratio": daemon / results["bound"]["per_second"],
        "bound_naive_ratio": results["bound"]["per_second"] / naive_rate,
        # Medians over the rounds: a round slowed by other jobs also spends more CPU per scan
        # (contended caches, more switches), so the best round's rate and its CPU are not paired.
        "cpu_ms_per_scan": {
            name: _median_cpu(results[name])
            for name in ("decode", "inference", "daemon", "naive", "bound")
        },
        "latency_p50_ms": latency["p50_ms"],
        "latency_p99_ms": latency["p99_ms"],
    }
    cpu = summary["cpu_ms_per_scan"]
    if segmenter is not None and cpu["inference"] is not None:
        segmenter_cpu = _median_cpu(results["segmenter"])
        cpu["inference"] = None if segmenter_cpu is None else cpu["inference"] + segmenter_cpu
    if cpu["inference"] is not None:
        # Load-independent view: the work a scan needs (decode + inference) over what the daemon
        # spends per scan. On an idle machine the throughput ratio cannot exceed it.
        summary["cpu_efficiency"] = (cpu["decode"] + cpu["inference"]) / cpu["daemon"]
        # The daemon's own work per scan: what it spends beyond decoding and inferring (sha256
        # and reading are part of decode-only; reports, commit, moves, pipe, log line are not).
        summary["cpu_ms_outside_work"] = cpu["daemon"] - cpu["decode"] - cpu["inference"]
    # Each round against its own ceiling (that round's decode-only and benchmark_app).
    networks = results["inference"]["rounds_per_second"]
    if segmenter is not None:
        networks = [
            1 / (1 / c + 1 / g)
            for c, g in zip(networks, results["segmenter"]["rounds_per_second"], strict=True)
        ]
    ceilings = [
        1 / (1 / d + 1 / i)
        for d, i in zip(results["decode"]["rounds_per_second"], networks, strict=True)
    ]
    for name in ("daemon", "baseline"):
        if name in results:
            summary[f"{name}_round_ceiling_ratios"] = [
                rate / ceiling
                for rate, ceiling in zip(results[name]["rounds_per_second"], ceilings, strict=True)
            ]
    if "baseline" in results:
        rate = results["baseline"]["burst"]["per_second"]
        cpu["baseline"] = _median_cpu(results["baseline"])
        summary["baseline_per_s"] = rate
        summary["baseline_ceiling_ratio"] = rate / combined
        summary["daemon_baseline_ratio"] = daemon / rate
        if cpu["inference"] is not None:
            summary["baseline_cpu_ms_outside_work"] = (
                cpu["baseline"] - cpu["decode"] - cpu["inference"]
            )
    summary["targets"] = {
        "ceiling_ratio": summary["ceiling_ratio"] >= TARGETS["ceiling_ratio"],
        "naive_ratio": summary["naive_ratio"] >= TARGETS["naive_ratio"],
        "latency_p50": summary["latency_p50_ms"] <= TARGETS["p50_ms"],
        "latency_p99": summary["latency_p99_ms"] <= TARGETS["p99_ms"],
    }
    return summary


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def _header(results: dict[str, Any]) -> list[str]:
    machine, model = results["machine"], results["machine"]["model"]
    formats = ", ".join(f"{k} {v}" for k, v in sorted(results["corpus"]["formats"].items()))
    modified = " (daemon/ or bench/ modified)" if machine["daemon_or_bench_modified"] else ""
    load_start = "/".join(map(str, machine["load_at_start"]))
    load_end = "/".join(map(str, machine["load_at_end"]))
    return [
        (
            f"infarctwatch bench  {machine['date']}  {machine['host']}  "
            f"git {machine['git_commit']}{modified}"
        ),
        (
            f"cpu: {machine['cpus_usable']} x {machine['cpu']}; load average {load_start} at "
            f"start, {load_end} at end (1/5/15 min)"
        ),
        f"cpu flags: {' '.join(machine['cpu_flags'])}; bf16: {machine['cpu_bf16']}",
        (
            f"model: {model['name']} {model['version']} ({model['ir']}), device "
            f"{machine['device']}, OpenVINO {machine['openvino']}"
        ),
        (
            f"corpus {results['corpus']['kind']}: {results['corpus']['files']} distinct files "
            f"({formats}), mean {results['corpus']['mean_kb']} kB"
        ),
        *(
            [f"baseline daemon: {results['baseline_source']}"]
            if "baseline_source" in results
            else []
        ),
    ]


def render(results: dict[str, Any]) -> str:
    """The human-readable table."""
    summary = results["summary"]
    met = {name: _met(ok) for name, ok in summary["targets"].items()}
    daemon, decode = results["daemon"], results["decode"]
    burst, latency = daemon["burst"], daemon["latency"]
    rows = [
        *(
            [
                ("classifier ceiling (benchmark_app)", summary["classifier_per_s"], "/s"),
                ("segmenter ceiling (benchmark_app)", summary["segmenter_per_s"], "/s"),
                ("networks 1/(1/classifier + 1/segmenter)", summary["inference_per_s"], "/s"),
            ]
            if summary.get("segmenter_per_s") is not None
            else [
                (
                    "inference ceiling (benchmark_app, throughput hint)",
                    summary["inference_per_s"],
                    "/s",
                )
            ]
        ),
        (
            f"decode-only (read+decode+preprocess, {decode['workers']} processes)",
            summary["decode_per_s"],
            "/s",
        ),
        ("combined ceiling 1/(1/decode + 1/inference)", summary["combined_ceiling_per_s"], "/s"),
        (f"daemon end-to-end, burst of {burst['files']}", summary["daemon_per_s"], "/s"),
        ("  / combined ceiling", summary["ceiling_ratio"], "", ">= 0.8", met["ceiling_ratio"]),
        *(
            [
                ("baseline daemon (--baseline), same rounds", summary["baseline_per_s"], "/s"),
                ("  baseline / combined ceiling", summary["baseline_ceiling_ratio"], ""),
                ("  daemon / baseline", summary["daemon_baseline_ratio"], ""),
            ]
            if "baseline_per_s" in summary
            else []
        ),
        ("naive synchronous loop (fsync each report)", summary["naive_per_s"], "/s"),
        ("  daemon / naive", summary["naive_ratio"], "x", ">= 1.5x", met["naive_ratio"]),
        ("naive loop without fsync (weaker guarantee)", summary["naive_no_fsync_per_s"], "/s"),
        ("  daemon / naive without fsync", summary["naive_no_fsync_ratio"], "x"),
        (
            f"orchestration-free bound ({results['bound']['workers']} processes, no daemon)",
            summary["bound_per_s"],
            "/s",
        ),
        ("  bound / combined ceiling", summary["bound_ceiling_ratio"], ""),
        ("  bound / naive", summary["bound_naive_ratio"], "x"),
        ("  daemon / bound", summary["daemon_bound_ratio"], ""),
        (
            f"latency p50, rename -> report ({latency['files']} files)",
            latency["p50_ms"],
            " ms",
            "<= 15 ms",
            met["latency_p50"],
        ),
        ("latency p90", latency["p90_ms"], " ms"),
        ("latency p99", latency["p99_ms"], " ms", "<= 50 ms", met["latency_p99"]),
    ]
    lines = [*_header(results), "", f"{'figure':<52}{'value':>12}  {'target':<10}met", "-" * 78]
    for name, value, unit, *target in rows:
        digits = 0 if unit == "/s" else (1 if unit == " ms" else 2)
        goal, ok = target or ("", "")
        lines.append(f"{name:<52}{value:>{12 - len(unit)}.{digits}f}{unit}  {goal:<10}{ok}")
    timings = burst["daemon_timings"]
    cpu = summary["cpu_ms_per_scan"]
    if "cpu_efficiency" in summary:
        lines += [
            "",
            "CPU per scan, median over the rounds:",
            (
                f"  decode {cpu['decode']:.2f} ms + inference {cpu['inference']:.2f} "
                f"ms = {cpu['decode'] + cpu['inference']:.2f} ms of work; the daemon spends "
                f"{cpu['daemon']:.2f} ms (efficiency {summary['cpu_efficiency']:.2f}), the bound "
                f"{cpu['bound']:.2f} ms, the naive loop {cpu['naive']:.2f} ms"
            ),
            (
                f"  outside decode + inference: the daemon "
                f"{summary['cpu_ms_outside_work']:.2f} ms"
                + (
                    f", the baseline daemon {summary['baseline_cpu_ms_outside_work']:.2f} ms"
                    if "baseline_cpu_ms_outside_work" in summary
                    else ""
                )
            ),
        ]
    lines += [
        "",
        (
            f"daemon: ready in {daemon['startup_s']:.1f} s; SIGTERM exit {daemon['exit_code']}; "
            f"CPU {burst['daemon_cpu_ms_per_file']:.1f} ms per scan in the burst "
            f"(decode-only: {decode['cpu_ms_per_file']:.1f} ms per file)"
        ),
        (
            f"burst, medians from the reports: decode {timings['decode_ms_median']:.1f} ms, "
            f"infer {timings['infer_ms_median']:.1f} ms, claim->report "
            f"{timings['total_ms_median']:.0f} ms (queueing included); "
            f"latency max {latency['max_ms']:.1f} ms"
        ),
    ]
    spread = "; ".join(
        f"{name} " + "/".join(f"{v:.0f}" for v in results[key]["rounds_per_second"])
        for name, key in (
            ("inference", "inference"),
            ("decode", "decode"),
            ("daemon", "daemon"),
            ("naive", "naive"),
            ("naive without fsync", "naive_no_fsync"),
            ("bound", "bound"),
            ("baseline", "baseline"),
        )
        if key in results
    )
    lines.append(f"every round (per second; the best is kept): {spread}")
    lines.append(
        "each round / its own combined ceiling: "
        + "; ".join(
            f"{name} " + "/".join(f"{v:.2f}" for v in summary[f"{name}_round_ceiling_ratios"])
            for name in ("daemon", "baseline")
            if f"{name}_round_ceiling_ratios" in summary
        )
    )
    if "scaling" in results:
        lines += ["", *render_scaling(results["scaling"])]
    return "\n".join(lines)


def render_scaling(scaling_results: dict[str, Any]) -> list[str]:
    """How each stage scales from one core (or one worker) to all."""
    s = scaling_results
    cores = len(os.sched_getaffinity(0))
    lines = [
        f"scaling ({s['files']} files; 1 core = taskset/affinity to CPU {s['one_core']}):",
        f"{'stage':<44}{'1 core':>10}{f'{cores} cores':>10}{'speed-up':>10}",
    ]
    pairs = [
        ("inference (benchmark_app)", s["inference_1core"], s["inference_all"]),
        ("decode-only", s["decode_1core"], s["decode_all"]),
        ("daemon end-to-end", s["daemon_1core"], s["daemon_all"]),
    ]
    for name, one, many in pairs:
        a, b = one["per_second"], many["per_second"]
        lines.append(f"{name:<44}{a:>8.0f}/s{b:>8.0f}/s{b / a:>9.2f}x")
    singles = [
        ("decode-only, 1 worker", s["decode_1worker"]),
        ("daemon, 1 decode worker", s["daemon_1worker"]),
    ]
    lines += [f"{name:<44}{'':>10}{one['per_second']:>8.0f}/s" for name, one in singles]
    return lines


def main(argv: list[str]) -> int:
    """Run the benchmark; 0 when every target is met, 1 when one is missed, 2 when it failed."""
    defaults = load_config(None)
    parser = argparse.ArgumentParser(prog="bench/throughput.py", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="bundle (default: the committed default bundle)")
    parser.add_argument(
        "--variant",
        choices=("auto", "fp16", "int8"),
        default=load_config(None).model.variant,
        help="the bundle's IR to serve and measure everywhere (default: the daemon's default; "
        "auto: the bundle's default_variant)",
    )
    parser.add_argument("--device", default="CPU", help="OpenVINO device (default: CPU)")
    parser.add_argument(
        "--corpus",
        choices=corpus.KINDS,
        default="mixed",
        help="mixed: every sample format (default); png: 256x256 PNGs only, cheap to decode, so "
        "inference and the daemon's own work dominate",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of the project (e.g. `git worktree add /tmp/base main`): its "
        "daemon runs in every round too, interleaved with this one's (an A/B in one run)",
    )
    parser.add_argument("--files", type=int, default=2000, help="burst size (default: 2000)")
    parser.add_argument(
        "--latency-files", type=int, default=200, help="files dropped one at a time (200)"
    )
    parser.add_argument(
        "--latency-gap-ms",
        type=float,
        default=10.0,
        help="pause before each latency drop, so each file meets an idle daemon (10)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.pipeline.decode_workers,
        help=f"decode worker processes, for decode-only and the daemon (daemon default: "
        f"{defaults.pipeline.decode_workers})",
    )
    parser.add_argument(
        "--benchmark-seconds", type=int, default=10, help="benchmark_app -t (default: 10)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="limit for one burst, seconds (600)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the throughput phases, interleaved; the best of each is kept (3)",
    )
    parser.add_argument(
        "--scaling", action="store_true", help="also measure on one core and with one worker"
    )
    parser.add_argument(
        "--scaling-files", type=int, default=1000, help="burst size of the scaling runs (1000)"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="work and results folder (bench/out)")
    args = parser.parse_args(argv)
    print("\n".join(cpu_lines()), flush=True)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / RUNS).exists():  # an interrupted benchmark's: see below
        _progress("removing the folders an interrupted benchmark left")
        shutil.rmtree(args.out / RUNS)
    # Each run gets fresh folders, deleted only once every run is over: deleting thousands of
    # files just before a timed run made the next files' inode allocations slow (ext4 without a
    # journal skips inodes deleted in the last minute, reading inode tables to find them).
    try:
        results = measure(args)
    except (BenchError, OSError) as exc:
        print(f"bench: FAILED: {exc} (run folders kept in {args.out / RUNS})", file=sys.stderr)
        return 2
    shutil.rmtree(args.out / RUNS, ignore_errors=True)
    results["command"] = " ".join(["bench/throughput.py", *argv])
    path = args.out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(render(results))
    print(f"\nresults: {path}")
    return 0 if all(results["summary"]["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
