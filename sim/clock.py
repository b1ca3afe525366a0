"""Time for simulated devices: real time, or a virtual clock run as fast as possible.

The simulated camera and microphone share one :class:`SimTime`, so in fast mode
the microphone has captured exactly as much sound as the camera has frames.
"""
from __future__ import annotations

import time

from common.clock import MonotonicTime


class SimTime(MonotonicTime):
    """A monotonic clock that either follows the real one or jumps ahead on demand."""

    def __init__(self, realtime: bool = True, start_ns: int | None = None) -> None:
        self.realtime = realtime
        self._virtual = start_ns if start_ns is not None else time.monotonic_ns()

    def now_ns(self) -> int:
        return super().now_ns() if self.realtime else self._virtual

    def sleep_until(self, t_ns: int) -> None:
        if self.realtime:
            super().sleep_until(t_ns)
        elif t_ns > self._virtual:
            self._virtual = t_ns
