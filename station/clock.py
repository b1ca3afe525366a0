"""The station's time: one injectable ``Clock`` so the time rules (48 h, retention, grants,
expiry) are tested on a clock the test moves, and the audit journal's time quality.

The quality stamped on audit records comes from the kernel: ``adjtimex`` says whether a
time daemon (chronyd, ntpd, systemd-timesyncd) keeps the clock synchronised (NTP) or not
(UNSYNCED), with the kernel's own error estimate.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Protocol

from common.clock import TimeQuality, TimeSample

NS_PER_HOUR = 3600 * 10**9
NS_PER_DAY = 24 * NS_PER_HOUR


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()


class FixedClock:
    """A clock that moves only when told (tests)."""

    def __init__(self, now_ns: int) -> None:
        self.t = now_ns

    def now_ns(self) -> int:
        return self.t

    def advance(self, ns: int) -> None:
        self.t += ns


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h): the fields up to 'tai' we read; padding as the kernel has it
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_pad", ctypes.c_int * 11)]


STA_UNSYNC = 0x0040
TIME_ERROR = 5


def kernel_time_quality() -> tuple[TimeQuality, float | None]:
    """(NTP, max error in s) when the kernel clock is synchronised, else (UNSYNCED, None)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return TimeQuality.UNSYNCED, None
    if state < 0 or state == TIME_ERROR or tx.status & STA_UNSYNC:
        return TimeQuality.UNSYNCED, None
    return TimeQuality.NTP, tx.maxerror / 1e6


class AuditWallClock:
    """``common.clock.WallClock`` over a station ``Clock``, for the audit journal."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def at(self, mono_ns: int) -> TimeSample:
        quality, error = kernel_time_quality()
        return TimeSample(mono_ns, self.clock.now_ns(), quality, error)
