"""Allocator tuning for a process that handles one image after another.

Every scan allocates the same few large numpy arrays (a 512x512 slice as float32 is 1 MB) and
frees them. glibc serves allocations above its mmap threshold (128 kB at first) with a fresh
``mmap`` and returns them with ``munmap``, so every scan paid for its memory again in page faults:
measured in a scan worker, 605 page faults and 1.4 ms of kernel time per scan, against 33 and
0.25 ms once freed memory is kept for the next scan (CPU per scan 4.3 ms -> 3.0 ms).

`keep_freed_memory` raises the mmap threshold to 32 MiB (glibc's maximum) and the trim threshold
to 64 MiB: arrays up to 32 MiB come from the heap and their memory is reused, larger ones (a huge
hostile image) still go straight back to the system, and at most 64 MiB of freed heap is kept.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


def keep_freed_memory() -> bool:
    """Tune glibc's allocator as above; False where it is not glibc (then nothing changes)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
