"""The baseline the daemon is compared with: a naive synchronous folder loop.

What a first version of the service would do, in one thread: poll the incoming folder, and for each
file read it, decode and preprocess it (the daemon's own `daemon.shared.decode` and
`daemon.shared.preprocess`), run a plain compiled model synchronously, write a JSON report
(temporary file, optional fsync, rename), move the input to done/. Nothing overlaps: decode waits
for inference and the other way round, and one core idles while the other works.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import openvino as ov

from daemon.shared.decode import decode
from daemon.shared.preprocess import preprocess

if TYPE_CHECKING:
    from pathlib import Path

    from daemon.shared.bundle import Bundle

POLL_S = 0.05


@dataclass(frozen=True)
class NaiveResult:
    """One run of the loop over a burst."""

    files: int
    seconds: float
    fsync: bool

    @property
    def per_second(self) -> float:
        """Files per second."""
        return self.files / self.seconds


class NaiveLoop:
    """The loop, with its model compiled (outside the timed part)."""

    def __init__(self, bundle: Bundle, device: str, variant_name: str, *, fsync: bool) -> None:
        self.bundle = bundle
        self.fsync = fsync
        variant = bundle.variant(variant_name)
        core = ov.Core()
        model = core.read_model(str(variant.xml), str(variant.bin))
        spec = bundle.preprocess
        model.reshape([1, spec.input_size, spec.input_size, spec.channels])
        self._compiled: Any = core.compile_model(model, device)

    def _report(self, name: str, data: bytes) -> dict[str, Any]:
        image = decode(data, name)
        tensor = preprocess(image.pixels, self.bundle.preprocess)
        probabilities = np.asarray(self._compiled(tensor[np.newaxis])[0][0], dtype=np.float32)
        best = int(probabilities.argmax())
        return {
            "source": {"name": name, "sha256": hashlib.sha256(data).hexdigest()},
            "model": {"name": self.bundle.name, "version": self.bundle.version},
            "prediction": {
                "label": self.bundle.labels[best],
                "probability": float(probabilities[best]),
                "probabilities": dict(
                    zip(self.bundle.labels, map(float, probabilities), strict=True)
                ),
            },
            "reported_at": time.time(),
            "disclaimer": "Research use only. Not for diagnostic use.",
        }

    def _write(self, folder: Path, name: str, report: dict[str, Any]) -> None:
        temporary = folder / f".{name}.tmp"
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(report, handle)
            if self.fsync:
                handle.flush()
                os.fsync(handle.fileno())
        temporary.rename(folder / f"{name}.json")

    def run(self, incoming: Path, reports: Path, done: Path, expected: int) -> None:
        """Process files from ``incoming`` until ``expected`` reports are written."""
        written = 0
        while written < expected:
            entries = sorted(
                (e for e in os.scandir(incoming) if e.is_file() and not e.name.startswith(".")),
                key=lambda e: e.name,
            )
            if not entries:
                time.sleep(POLL_S)
                continue
            for entry in entries:
                with open(entry.path, "rb") as handle:  # noqa: PTH123 - the naive way
                    data = handle.read()
                self._write(reports, entry.name, self._report(entry.name, data))
                os.rename(entry.path, done / entry.name)  # noqa: PTH104 - the naive way
                written += 1
