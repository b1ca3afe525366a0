"""A byte progress bar on stderr, only when stderr is a terminal."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str = "offload", stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.done_bytes, self.label = max(total, 1), 0, label
        self._t0 = self._last = time.monotonic()

    def advance(self, n: int) -> None:
        self.done_bytes += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.2 or self.done_bytes >= self.total):
            self._last = now
            frac = min(self.done_bytes / self.total, 1.0)
            rate = self.done_bytes / max(now - self._t0, 1e-6) / 1e6
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% "
                              f"{self.done_bytes / 1e6:8.1f}/{self.total / 1e6:.1f} MB {rate:6.1f} MB/s")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
