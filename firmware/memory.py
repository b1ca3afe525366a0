"""Keep the recording process's memory flat over a whole shift.

glibc raises its mmap threshold each time a large mmapped block is freed, after
which mid-sized native buffers (most likely FFmpeg's encoded 1080p keyframes, a
few hundred KB each; Python-level memory did not grow) come from the heap
instead and fragment it: RSS crept up 0.2 MB/s at 1080p (130 -> 195 MB in 200 s),
never at 360p. Pinning the threshold (what MALLOC_MMAP_THRESHOLD_ does) keeps
such blocks mmapped and returned on free; measured flat (bench/bench_memory_soak.py).
A no-op where libc is not glibc.

Transparent huge pages are turned off for the process (:func:`disable_transparent_huge_pages`):
libx264 madvises every buffer of 2 MB or more for huge pages, so where the kernel honours that
(``/sys/kernel/mm/transparent_hugepage/enabled`` = madvise or always) each such buffer is
resident in whole 2 MB pages however little of it is touched: its two 8 MB bitstream buffers
and 12 MB NAL buffer, which hold one encoded frame (~100 KB), cost 2 MB each. At 1080p that was
14 MB of the process (AnonHugePages 52 MB -> 0, RSS 138 -> 124 MB in-process; CPU unchanged
within noise, bench/bench_pipeline.py).
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


PR_SET_THP_DISABLE = 41


def disable_transparent_huge_pages() -> bool:
    """Opt this process (and its children) out of transparent huge pages; True if applied.
    Call before the encoder allocates. A no-op where prctl is unavailable."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    prctl.restype = ctypes.c_int
    if prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
        log.info("could not turn off transparent huge pages (errno %d)", ctypes.get_errno())
        return False
    return True
