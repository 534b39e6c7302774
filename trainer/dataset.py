"""Load a folder-per-class dataset's slices as the tensors the network trains and is tested on.

Which files, which classes and which cases are `daemon.shared.dataset.scan`'s (shared with
``infarctwatch evaluate``). Images are read with `daemon.shared.decode.decode` and turned into
tensors with `daemon.shared.preprocess.preprocess`: the very code the daemon serves with. Each
image is preprocessed once; the grey plane is cached (the channels the model sees are copies of
it): as float16 for the training split, which only feeds augmentation, and as float32 for
evaluation, so held-out figures are computed on exactly the tensors the daemon would serve.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import structlog

from daemon.errors import ScanError
from daemon.shared.decode import decode
from daemon.shared.preprocess import PreprocessSpec, preprocess

if TYPE_CHECKING:
    from pathlib import Path

    from daemon.shared.dataset import Sample

log = structlog.get_logger("trainer.dataset")


@dataclass(frozen=True)
class Skipped:
    """A file that could not be read or preprocessed."""

    rel: str
    code: str
    message: str


@dataclass(frozen=True)
class Tensors:
    """Preprocessed grey planes of some samples, in the samples' order."""

    samples: tuple[Sample, ...]
    grey: npt.NDArray[np.floating]
    """``(n, size, size)``, float16 or float32."""
    skipped: tuple[Skipped, ...]


def _load_one(
    root: Path, sample: Sample, spec: PreprocessSpec, dtype: type[np.floating]
) -> npt.NDArray[np.floating] | Skipped:
    path = root / sample.rel
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Skipped(sample.rel, "READ_ERROR", str(exc))
    try:
        tensor = preprocess(decode(data, path.name).pixels, spec)
    except ScanError as exc:
        return Skipped(sample.rel, exc.code, exc.message)
    return tensor[:, :, 0].astype(dtype)


def load_tensors(
    root: Path,
    samples: tuple[Sample, ...] | list[Sample],
    spec: PreprocessSpec,
    *,
    workers: int,
    dtype: type[np.floating] = np.float32,
) -> Tensors:
    """Decode and preprocess every sample once; unreadable files are skipped and listed."""
    size = spec.input_size
    kept: list[Sample] = []
    planes: list[npt.NDArray[np.floating]] = []
    skipped: list[Skipped] = []
    step = max(500, len(samples) // 10)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preprocess") as pool:
        results = pool.map(lambda s: _load_one(root, s, spec, dtype), samples)
        for i, (sample, result) in enumerate(zip(samples, results, strict=True), start=1):
            if isinstance(result, Skipped):
                skipped.append(result)
                log.warning(
                    "slice_skipped", file=result.rel, code=result.code, reason=result.message
                )
            else:
                kept.append(sample)
                planes.append(result)
            if i % step == 0 or i == len(samples):
                log.info("preprocessing", done=i, total=len(samples), skipped=len(skipped))
    grey = np.stack(planes) if planes else np.zeros((0, size, size), dtype)
    return Tensors(samples=tuple(kept), grey=grey, skipped=tuple(skipped))
