"""Battery and storage watches: read the gauge and the free space now and then, and say so once.

Each watch polls at its own interval on the service's clock, journals a
condition when it starts (not every poll: a journal of repeats hides the
facts) and tells the service what to do; the service owns the cues and the
state changes, so the watches never stop a recording themselves.
"""
from __future__ import annotations

import enum
import logging
from typing import Any, Callable

from hw.battery import BatteryConfig, BatteryError, BatteryGauge

log = logging.getLogger(__name__)

NS = 1_000_000_000
MB = 1024 * 1024
Journal = Callable[[str, dict[str, Any]], object]


class Interval:
    """True once every ``seconds`` (and at the first call), on a monotonic clock in ns."""

    def __init__(self, seconds: float) -> None:
        self.every_ns = int(seconds * NS)
        self.last_ns: int | None = None

    def due(self, now_ns: int) -> bool:
        if self.last_ns is None or now_ns - self.last_ns >= self.every_ns:
            self.last_ns = now_ns
            return True
        return False


class Power(enum.Enum):
    OK = "ok"
    LOW = "low"              # cue the officer (again, every ``repeat_s``)
    CRITICAL = "critical"    # end the recording now: a clean close beats a power cut


class BatteryWatch:
    def __init__(self, gauge: BatteryGauge, cfg: BatteryConfig, journal: Journal,
                 poll_s: float, repeat_s: float) -> None:
        self.gauge, self.cfg, self.journal = gauge, cfg, journal
        self.interval = Interval(poll_s)
        self.repeat_ns = int(repeat_s * NS)
        self.low_cued_ns: int | None = None
        self.gauge_failed = False
        self.permille = 0          # of the last reading

    def poll(self, now_ns: int, recording: bool) -> Power:
        if not self.interval.due(now_ns):
            return Power.OK
        try:
            reading = self.gauge.read()
        except BatteryError as exc:
            if not self.gauge_failed:
                self.gauge_failed = True
                self.journal("battery-gauge-error", {"error": str(exc)})
                log.error("battery gauge: %s", exc)
            return Power.OK
        self.gauge_failed = False
        pct = reading.percent
        self.permille = round(pct * 10)
        if pct <= self.cfg.critical_percent and recording:
            self.journal("battery-critical", {"permille": self.permille})
            return Power.CRITICAL
        if pct <= self.cfg.low_percent and not reading.charging:
            if self.low_cued_ns is None or now_ns - self.low_cued_ns >= self.repeat_ns:
                if self.low_cued_ns is None:
                    self.journal("battery-low", {"permille": self.permille})
                self.low_cued_ns = now_ns
                return Power.LOW
        elif pct > self.cfg.low_percent:
            self.low_cued_ns = None
        return Power.OK


class StorageWatch:
    """Free space against the reserve that recording never eats into (evidence is never overwritten)."""

    def __init__(self, free_bytes: Callable[[], int], reserve_bytes: int, warn_bytes: int,
                 journal: Journal, poll_s: float) -> None:
        self.free_bytes, self.reserve, self.warn = free_bytes, reserve_bytes, warn_bytes
        self.journal = journal
        self.interval = Interval(poll_s)
        self.warned = False

    def at_reserve(self) -> bool:
        """Recording must stop (the pipeline asks once a second)."""
        return self.free_bytes() <= self.reserve

    def usable_bytes(self) -> int:
        return max(0, self.free_bytes() - self.reserve)

    def poll(self, now_ns: int) -> bool:
        """True when space just ran low (journaled once until it recovers): cue the officer."""
        if not self.interval.due(now_ns):
            return False
        free = self.free_bytes()
        low = free <= self.reserve + self.warn
        if low and not self.warned:
            self.warned = True
            self.journal("storage-low", {"free_bytes": free, "reserve_bytes": self.reserve})
            return True
        if not low:
            self.warned = False
        return False
