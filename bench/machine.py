"""The processor a benchmark ran on: its model and the instruction-set flags inference depends on.

OpenVINO's CPU plugin picks its kernels and its inference precision from these flags (AVX2,
AVX-512, AMX, bf16), so two machines with the same core count can differ by 2x in the inference
ceiling. Every benchmark in bench/ prints `cpu_lines` at the top of its output.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

_CPUINFO = Path("/proc/cpuinfo")
_PREFIXES = ("avx512", "amx")
_NAMED = ("avx2", "avx_vnni", "fma", "f16c")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where it cannot be read)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in _CPUINFO.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo, or what `platform` knows."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The flags that matter for inference: AVX2, every AVX-512 and AMX flag, and the bf16 ones."""
    flags = _cpuinfo().get("flags", "").split()
    return sorted(
        f for f in flags if f in _NAMED or f.startswith(_PREFIXES) or "bf16" in f or "fp16" in f
    )


def cpu_lines() -> list[str]:
    """Two lines for the top of a benchmark's output: the model, then the flags and bf16."""
    flags = cpu_flags()
    bf16 = "yes" if any("bf16" in f for f in flags) else "no"
    return [
        f"cpu: {cpu_model()}",
        f"cpu flags: {' '.join(flags) or '(none of avx2/avx512*/amx*)'}; bf16: {bf16}",
    ]


def cpu_summary() -> dict[str, object]:
    """The same, for a results file."""
    flags = cpu_flags()
    return {"model": cpu_model(), "flags": flags, "bf16": any("bf16" in f for f in flags)}
