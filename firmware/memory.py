"""Keep the recording process's memory flat over a whole shift.

glibc raises its mmap threshold each time a large mmapped block is freed, after
which mid-sized native buffers (most likely FFmpeg's encoded 1080p keyframes, a
few hundred KB each; Python-level memory did not grow) come from the heap
instead and fragment it: RSS crept up 0.2 MB/s at 1080p (130 -> 195 MB in 200 s),
never at 360p. Pinning the threshold (what MALLOC_MMAP_THRESHOLD_ does) keeps
such blocks mmapped and returned on free; measured flat (bench/bench_memory_soak.py).
A no-op where libc is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 128 * 1024


def pin_mmap_threshold(threshold: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold (disabling its dynamic adjustment); True if applied."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not ok:
        log.warning("could not pin the malloc mmap threshold; memory may creep on long runs")
    return ok
