"""Wall time with its quality, kept apart from monotonic media time.

Media timestamps come from a monotonic clock and never jump. Wall time, used
for the on-screen stamp and the journal, comes from the best source the
device has and always says how far it can be trusted. The recorder only sees
these small types; where the quality comes from (GPS, chrony, RTC) lives in
``hw/``.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Protocol


class TimeQuality(str, enum.Enum):
    """How far a wall time can be trusted, best first."""

    GPS = "GPS"            # disciplined by a GNSS receiver (with or without PPS)
    NTP = "NTP"            # disciplined by network time servers
    RTC = "RTC"            # free-running since the last sync (or from the RTC chip)
    UNSYNCED = "UNSYNCED"  # never synced since boot; the wall time is a guess


@dataclass(frozen=True)
class TimeSample:
    """A wall time tied to the monotonic instant it describes."""

    mono_ns: int
    wall_ns: int
    quality: TimeQuality
    error_s: float | None = None        # estimated error bound, when the source gives one
    since_sync_s: float | None = None   # for RTC: seconds since the last good sync

    @property
    def wall_s(self) -> float:
        return self.wall_ns / 1e9


class WallClock(Protocol):
    """Maps a monotonic instant to wall time with quality."""

    def at(self, mono_ns: int) -> TimeSample: ...


class QualitySource(Protocol):
    """Reports the current quality of the system wall clock (e.g. from chrony)."""

    def quality(self) -> tuple[TimeQuality, float | None, float | None]:
        """Return (quality, estimated error in s or None, seconds since sync or None)."""


class FixedQuality:
    """A quality source that always reports one answer (used until a real one is wired)."""

    def __init__(self, quality: TimeQuality = TimeQuality.UNSYNCED) -> None:
        self._quality = quality

    def quality(self) -> tuple[TimeQuality, float | None, float | None]:
        return self._quality, None, None


class SystemWallClock:
    """The OS wall clock, read at the moment asked and mapped onto the monotonic instant.

    The offset between wall and monotonic time is read afresh on every call, so a
    step of the system clock (first GPS fix, NTP step) shows in the next stamp
    while media timestamps, which use the monotonic instant, do not move.
    """

    def __init__(self, quality_source: QualitySource | None = None) -> None:
        self._source = quality_source or FixedQuality(TimeQuality.UNSYNCED)

    def at(self, mono_ns: int) -> TimeSample:
        offset = time.time_ns() - time.monotonic_ns()
        quality, error, since = self._source.quality()
        return TimeSample(mono_ns, mono_ns + offset, quality, error, since)


class ManualClock:
    """A monotonic clock advanced by hand, for simulation faster than real time."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def monotonic_ns(self) -> int:
        return self._now

    def advance_to(self, t_ns: int) -> None:
        if t_ns < self._now:
            raise ValueError("a monotonic clock cannot go back")
        self._now = t_ns


class SimulatedWallClock:
    """Wall time that runs with a simulated monotonic clock from a chosen start.

    ``step(delta_ns)`` moves wall time as an NTP step or manual set would,
    without touching monotonic time.
    """

    def __init__(self, wall_start_ns: int, mono_start_ns: int = 0,
                 quality_source: QualitySource | None = None) -> None:
        self._offset = wall_start_ns - mono_start_ns
        self._source = quality_source or FixedQuality(TimeQuality.UNSYNCED)

    def step(self, delta_ns: int) -> None:
        self._offset += delta_ns

    def at(self, mono_ns: int) -> TimeSample:
        quality, error, since = self._source.quality()
        return TimeSample(mono_ns, mono_ns + self._offset, quality, error, since)


class MonotonicTime:
    """The real monotonic clock, with the same face as ``sim.clock.SimTime``."""

    realtime = True

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until(self, t_ns: int) -> None:
        delay = (t_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
