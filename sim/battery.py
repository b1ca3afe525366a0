"""A simulated battery: charge falls linearly with simulated time.

Scenarios need low-battery and dead-gauge situations on demand, faster than
real time: the charge is a function of the injected monotonic clock, and
``set_percent``/``set_rate``/``set_failure`` script the story.
"""
from __future__ import annotations

import math
from typing import Callable

from hw.battery import BatteryError, BatteryReading

NS_PER_H = 3600 * 1_000_000_000


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class SimulatedBattery:
    """Implements :class:`hw.battery.BatteryGauge`; voltage follows charge linearly."""

    def __init__(self, clock: Callable[[], int], percent: float = 100.0, drain_pct_per_h: float = 12.5,
                 empty_v: float = 3.3, full_v: float = 4.2) -> None:
        self._clock = clock
        self._empty_v, self._full_v = _number("empty_v", empty_v), _number("full_v", full_v)
        if not self._empty_v < self._full_v:
            raise ValueError("empty_v must be below full_v")
        self._failure: BaseException | None = None
        self._rate = 0.0
        self.set_percent(percent)
        self.set_drain(drain_pct_per_h)

    def percent(self) -> float:
        elapsed_h = (self._clock() - self._since_ns) / NS_PER_H
        return min(100.0, max(0.0, self._start + self._rate * elapsed_h))

    def _rebase(self) -> None:
        self._start = self.percent()
        self._since_ns = self._clock()

    def set_percent(self, percent: float) -> None:
        percent = _number("percent", percent)
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be 0-100, got {percent}")
        self._start, self._since_ns = percent, self._clock()

    def set_drain(self, drain_pct_per_h: float) -> None:
        """Discharge at this rate from now on (>= 0)."""
        drain = _number("drain_pct_per_h", drain_pct_per_h)
        if drain < 0:
            raise ValueError("drain must be >= 0 %/h; use set_charging() to charge")
        self._rebase()
        self._rate = -drain

    def set_charging(self, rate_pct_per_h: float) -> None:
        """Charge at this rate from now on (> 0), e.g. while docked."""
        rate = _number("rate_pct_per_h", rate_pct_per_h)
        if rate <= 0:
            raise ValueError("charging rate must be > 0 %/h")
        self._rebase()
        self._rate = rate

    def set_failure(self, failure: BaseException | None) -> None:
        """Make read() raise ``failure`` (e.g. BatteryError) until cleared with None."""
        self._failure = failure

    def read(self) -> BatteryReading:
        if self._failure is not None:
            raise self._failure
        percent = self.percent()
        if percent >= 100.0 and self._rate > 0:
            rate = 0.0
        elif percent <= 0.0 and self._rate < 0:
            rate = 0.0
        else:
            rate = self._rate
        voltage = self._empty_v + (self._full_v - self._empty_v) * percent / 100
        return BatteryReading(round(percent, 4), round(voltage, 4), rate)


__all__ = ["SimulatedBattery", "BatteryError"]
