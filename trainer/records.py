"""Small helpers for the files a run writes: JSON with NaN as null, framework versions."""

from __future__ import annotations

import importlib.metadata
import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN as None, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON (NaN written as null)."""
    Path(path).write_text(json.dumps(json_safe(data), indent=2) + "\n", encoding="utf-8")


def versions() -> dict[str, str]:
    """Installed versions of infarctwatch and the frameworks that made a model."""
    out = {}
    for package in ("infarctwatch", "tensorflow-cpu", "keras", "openvino", "nncf", "numpy"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
