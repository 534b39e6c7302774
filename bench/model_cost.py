"""CPU inference cost of the networks: OpenVINO ``benchmark_app`` on their IRs, in one run.

Run from the repo with the dev venv (the ``[train]`` extra)::

    .venv/bin/python bench/model_cost.py                       # seed against compact, 2 rounds
    .venv/bin/python bench/model_cost.py --rounds 3 --seconds 15
    .venv/bin/python bench/model_cost.py --precision f32         # as on a CPU without bf16
    .venv/bin/python bench/model_cost.py --xml RUN/bundle/model.xml --xml RUN/bundle/model-int8.xml
    .venv/bin/python bench/model_cost.py --arch compact --arch unet   # classifier against segmenter
    .venv/bin/python bench/model_cost.py --arch seed --arch compact --arch compact@1.5  # widths

Without ``--xml`` it builds each architecture of ``--arch`` (default ``seed`` and ``compact``) for
the shipped label map's classes with the in_scope head, exports it exactly as a bundle is exported
(`trainer.export.to_openvino`, FP16 IR) and counts its parameters and multiply-accumulates
(convolutions and dense layers; batch norm folds into the convolution in the IR). Weights are
untrained: the cost of a network does not depend on them. With ``--xml`` it measures the given
IRs as they are (e.g. a bundle's FP16 and INT8 variants). ``--arch unet`` is the lesion segmenter
(`trainer.segment.model`, the default ``segment`` settings: base 8 filters, depth 3) on its
``[1,128,128,2]`` input; ``compact@W`` is ``compact`` at ``model.width`` W. An ``--xml`` whose
input has two channels is measured with that shape.

Each IR is measured with ``benchmark_app -m X.xml -d CPU -t SECONDS -hint throughput -shape
[1,128,128,3]``; the rounds alternate the models, so a load change on a shared machine hits all of
them. Per model it prints the throughput (FPS) and median latency of every round and their best,
and the ratio of each model's best throughput to the first model's. Prints figures only.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_lines

_THROUGHPUT = re.compile(r"Throughput:\s+([\d.]+)\s+FPS")
_MEDIAN = re.compile(r"Median:\s+([\d.]+)\s+(ms|us)")
SIZE = 128


def _segmenter(workdir: Path) -> Path:
    """The FP16 IR of an untrained segmenter (default segment settings); print its size."""
    import openvino as ov  # noqa: PLC0415

    from trainer.config import SegmentConfig  # noqa: PLC0415
    from trainer.model import multiply_accumulates  # noqa: PLC0415
    from trainer.segment.export import write_ir  # noqa: PLC0415
    from trainer.segment.model import build_unet  # noqa: PLC0415

    seg = SegmentConfig()
    model = build_unet(SIZE, base_filters=seg.base_filters, depth=seg.depth)
    xml = workdir / "unet.xml"
    write_ir(model, workdir, xml)
    macs = multiply_accumulates(model)
    print(
        f"unet: {model.count_params():,} parameters, {macs / 1e6:.1f} M multiply-accumulates "
        f"({2 * macs / 1e6:.1f} MFLOPs) per slice, base {seg.base_filters} filters, depth "
        f"{seg.depth}, input [1,{SIZE},{SIZE},2] ({ov.__version__})"
    )
    return xml


def build_irs(architectures: list[str], workdir: Path) -> list[tuple[str, Path]]:
    """FP16 IRs of untrained ``architectures`` with the in_scope head; print their size."""
    import openvino as ov  # noqa: PLC0415

    from daemon.shared.labels import load_label_map  # noqa: PLC0415
    from trainer.export import to_openvino  # noqa: PLC0415
    from trainer.model import build_model, multiply_accumulates  # noqa: PLC0415

    classes = len(load_label_map().classes)
    irs = []
    for arch in architectures:
        if arch == "unet":
            irs.append((arch, _segmenter(workdir)))
            continue
        name, _, width = arch.partition("@")
        model = build_model(
            name, classes, (SIZE, SIZE, 3), 0.25, in_scope=True, width=float(width or 1)
        )
        xml = workdir / f"{arch}.xml"
        ov.save_model(to_openvino(model, workdir), str(xml), compress_to_fp16=True)
        macs = multiply_accumulates(model)
        print(
            f"{arch}: {model.count_params():,} parameters, {macs / 1e6:.1f} M "
            f"multiply-accumulates ({2 * macs / 1e6:.1f} MFLOPs) per image, "
            f"{classes} classes + in_scope"
        )
        irs.append((arch, xml))
    return irs


def _channels(xml: Path) -> int:
    """The input's channel count (the last dimension; 3 when it is not static)."""
    import openvino as ov  # noqa: PLC0415

    last = ov.Core().read_model(str(xml)).inputs[0].get_partial_shape()[-1]
    return last.get_length() if last.is_static else 3


def benchmark(xml: Path, seconds: int, precision: str | None) -> tuple[float, float]:
    """One ``benchmark_app`` run: (throughput FPS, median latency ms)."""
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    command = [tool, "-m", str(xml), "-d", "CPU", "-t", str(seconds), "-hint", "throughput"]
    command += ["-shape", f"[1,{SIZE},{SIZE},{_channels(xml)}]"]
    if precision:
        command += ["-infer_precision", precision]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    fps, median = _THROUGHPUT.search(out), _MEDIAN.search(out)
    if fps is None or median is None:
        raise SystemExit(f"benchmark_app printed no throughput for {xml}:\n{out[-2000:]}")
    scale = 1e-3 if median.group(2) == "us" else 1.0
    return float(fps.group(1)), float(median.group(1)) * scale


def main() -> None:
    """Build or take the IRs, measure them alternately, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--arch", action="append", help="architecture (default: seed, compact)")
    parser.add_argument("--xml", action="append", type=Path, help="measure this IR instead")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--precision",
        help="benchmark_app -infer_precision (f32: no bf16 even where the CPU has it)",
    )
    args = parser.parse_args()
    for line in cpu_lines():
        print(line)
    print(f"inference precision: {args.precision or 'the CPU plugin default'}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.xml:
            irs = [(str(x), x) for x in args.xml]
        else:
            irs = build_irs(args.arch or ["seed", "compact"], Path(tmp))
        results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in irs}
        for _ in range(args.rounds):
            for name, xml in irs:
                results[name].append(benchmark(xml, args.seconds, args.precision))
    first = max(fps for fps, _ in results[irs[0][0]])
    for name, runs in results.items():
        best = max(fps for fps, _ in runs)
        rounds = ", ".join(f"{fps:,.0f} FPS / {ms:.2f} ms" for fps, ms in runs)
        print(
            f"{name}: {rounds}; best {best:,.0f} FPS, "
            f"cost {first / best:.2f}x the first ({irs[0][0]})"
        )


if __name__ == "__main__":
    main()
