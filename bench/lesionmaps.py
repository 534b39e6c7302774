"""What lesion maps add to a scan worker's CPU per image, and to a series report.

``.venv/bin/python bench/lesionmaps.py [--images 64] [--rounds 3] [--slices 24]``

One process, the daemon's worker code on one OpenVINO thread (`Engine.compile` with
``one_thread``, as in a scan worker). The images (256 x 256 16-bit PNG slices, with or without a
20 x 20 pixel bright blob) go through `daemon.scan.worker.scan_claims` in batches of
``bound.GROUP``, then their map files are written (`daemon.lesionmaps.files.write_map_files`,
into a temporary reports folder), three times per round:

* **classifier**: the committed bundle (format 1: no segmenter);
* **+ segmenter** (images without a lesion, then every image with one, which adds the overlay):
  the same bundle with the tests' threshold segmenter
  (`tests/segmenter_bundles.py`: one multiply, a sum and a sigmoid per pixel, so its inference
  is close to free: the figure is the daemon's own cost around a segmenter: the second queue,
  the map back onto the source pixels, the lesions, the mask PNG, the overlay PNG, the files).
  A trained segmenter adds its own inference time on top (docs/training.md).

The calling thread's CPU (``thread_time``) and the wall clock are read around each part; the
median round (by CPU) is printed in ms per image. CPU is the figure to read on a shared machine:
the wall clock there follows the load. Then a series of ``--slices`` slices (a blob on three of
them) gets its lesion fields (`daemon.series.lesions.lesion_fields`: read the masks, label in
3-D, write the montage), timed the same way. Prints figures only.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bound import GROUP
from machine import cpu_lines
from PIL import Image

from daemon.clock import utc_now
from daemon.config import InferenceConfig, ThresholdsConfig
from daemon.lesionmaps.files import write_map_files
from daemon.records import Claim
from daemon.scan.decision import resolve
from daemon.scan.inference import Engine
from daemon.scan.read import decode_claim, warm_up
from daemon.scan.report import encode_report
from daemon.scan.slices import slice_records
from daemon.scan.worker import scan_claims
from daemon.series.lesions import lesion_fields
from daemon.shared.bundle import DEFAULT_BUNDLE, load_bundle
from daemon.shared.decode import DecodeLimits

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from segmenter_bundles import default_with_segmenter  # noqa: E402


def slice_png(index: int, *, blob: bool) -> bytes:
    """A 256 x 256 slice: tissue, a grid of small bright dots, and maybe a 20 x 20 blob."""
    yy, xx = np.mgrid[:256, :256]
    image = np.zeros((256, 256), np.uint16)
    inside = ((yy - 128) / 90.0) ** 2 + ((xx - 128) / 75.0) ** 2 < 1
    image[inside] = 1000 + index % 7
    image[inside & (yy % 8 < 2) & (xx % 8 < 2) & ~((abs(yy - 110) < 20) & (abs(xx - 150) < 20))] = (
        3000
    )
    if blob:
        image[100:120, 140:160] = 3000
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def one_round(
    bundle: Path, folder: Path, count: int, *, lesions: bool
) -> tuple[float, float, float]:
    """(scan CPU ms, files CPU ms, wall ms) per image for ``count`` images through ``bundle``.

    ``lesions``: every image has the blob (else none has).
    """
    loaded = load_bundle(bundle)
    engine = Engine.compile(loaded, InferenceConfig(device="CPU"), one_thread=True)
    rule = resolve(loaded, ThresholdsConfig(in_scope=0))
    spec = loaded.preprocess
    incoming, reports = folder / "incoming", folder / "reports"
    shutil.rmtree(folder, ignore_errors=True)
    incoming.mkdir(parents=True)
    reports.mkdir()
    claims = []
    for index in range(count):
        path = incoming / f"img{index}.png"
        path.write_bytes(slice_png(index, blob=lesions))
        claims.append(Claim(f"c{index}", path, f"img{index}.png", utc_now(), time.monotonic()))

    def decode(claim: Claim) -> Any:
        return decode_claim(claim, spec, DecodeLimits(), 1 << 26, None)

    scan_cpu = files_cpu = 0.0
    wall = time.perf_counter()
    for start in range(0, count, GROUP):
        began = time.thread_time()
        results, _ = scan_claims(claims[start : start + GROUP], engine, rule, decode)
        middle = time.thread_time()
        for result in results:
            encode_report(result, 3)
        write_map_files(reports, [(r.scan_id, r.lesion_map) for r in results])
        scan_cpu += middle - began
        files_cpu += time.thread_time() - middle
    wall = time.perf_counter() - wall
    engine.close()
    return scan_cpu * 1000 / count, files_cpu * 1000 / count, wall * 1000 / count


def series_cost(bundle: Path, folder: Path, slices: int) -> tuple[float, int]:
    """CPU ms of `lesion_fields` for a series of ``slices`` slices (a blob on three); lesions."""
    loaded = load_bundle(bundle)
    engine = Engine.compile(loaded, InferenceConfig(device="CPU"), one_thread=True)
    rule = resolve(loaded, ThresholdsConfig(in_scope=0))
    shutil.rmtree(folder, ignore_errors=True)
    incoming, reports = folder / "incoming" / "case", folder / "reports"
    incoming.mkdir(parents=True)
    reports.mkdir()
    claims = []
    for index in range(slices):
        path = incoming / f"img{index:02d}.png"
        path.write_bytes(slice_png(index, blob=slices // 2 <= index < slices // 2 + 3))
        name = f"case/img{index:02d}.png"
        claims.append(Claim(f"c{index}", path, name, utc_now(), time.monotonic()))
    spec = loaded.preprocess
    results, _ = scan_claims(
        claims, engine, rule, lambda c: decode_claim(c, spec, DecodeLimits(), 1 << 26, None)
    )
    engine.close()
    write_map_files(reports, [(r.scan_id, r.lesion_map) for r in results])
    records = [slice_records(encode_report(r, 3)[0])[0] for r in results]
    records.sort(key=lambda r: r.name)
    started = time.thread_time()
    fields = lesion_fields(reports, "0" * 20, records, "bench")
    spent = (time.thread_time() - started) * 1000
    assert fields is not None
    return spent, len(fields["lesions"] or [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slices", type=int, default=24)
    args = parser.parse_args()
    for line in cpu_lines():
        print(line)
    warm_up()
    with tempfile.TemporaryDirectory(prefix="iw-bench-lesions-") as tmp:
        root = Path(tmp)
        segmenting = default_with_segmenter(root / "bundle", level=0.67, min_lesion_px=8)
        runs = {
            "classifier": (DEFAULT_BUNDLE, False),
            "+ segmenter, no lesion": (segmenting, False),
            "+ segmenter, a lesion": (segmenting, True),
        }
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
        one_round(segmenting, root / "warm", GROUP, lesions=True)  # first-use costs, untimed
        for _ in range(args.rounds):
            for name, (source, lesions) in runs.items():
                figures[name].append(one_round(source, root / "r", args.images, lesions=lesions))
        print(f"{args.images} images a round, {args.rounds} rounds, median round (by CPU):")
        print(f"{'':24} {'scan CPU':>9} {'files CPU':>9} {'wall':>9}   ms per image")
        medians = {}
        for name, rows in figures.items():
            median = sorted(rows, key=lambda r: r[0] + r[1])[len(rows) // 2]
            medians[name] = median
            print(f"{name:24} {median[0]:9.2f} {median[1]:9.2f} {median[2]:9.2f}")
        base = medians["classifier"]
        for name in list(runs)[1:]:
            added = medians[name]
            print(
                f"added per image ({name[2:]}): {added[0] + added[1] - base[0] - base[1]:.2f} ms"
                f" CPU of the worker's main thread"
            )
        spent = [series_cost(segmenting, root / "series", args.slices) for _ in range(3)]
        cost = statistics.median(s for s, _ in spent)
        print(
            f"series of {args.slices} slices: lesion fields {cost:.1f} ms CPU "
            f"({spent[0][1]} lesion(s), montage included)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
