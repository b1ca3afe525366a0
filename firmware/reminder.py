"""Periodic "still recording" reminder (GA/T 947 prompt; D7 recording state obvious).

While recording, a cue fires every ``interval_s`` (120 s by default, as the
market leader does) so the officer never forgets the device is on, and the
other party hears it too. Driven by :meth:`poll` on an injected clock; the
schedule is anchored to the start, so slow polls never make it drift.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

from common.settings import Section

log = logging.getLogger(__name__)

NS = 1_000_000_000


@dataclass(frozen=True)
class ReminderConfig(Section):
    """The ``[reminder]`` settings."""

    SECTION = "reminder"

    enabled: bool = True
    interval_s: float = 120.0
    cue: str = "reminder"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError("[reminder] enabled must be true or false")
        value = self.interval_s
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 5:
            raise ValueError(f"[reminder] interval_s must be a number >= 5, got {value!r}")
        if not isinstance(self.cue, str) or not self.cue:
            raise ValueError("[reminder] cue must be a cue name")



class RecordingReminder:
    """Calls ``remind()`` every ``interval_s`` between :meth:`start` and :meth:`stop`.

    A poll that comes more than one interval late fires once, not a burst.
    An exception from ``remind`` is logged and the schedule continues.
    """

    def __init__(self, remind: Callable[[], object], clock: Callable[[], int] = time.monotonic_ns,
                 interval_s: float = 120.0, enabled: bool = True) -> None:
        ReminderConfig(enabled=enabled, interval_s=interval_s)   # same validation as the config
        self._remind = remind
        self._clock = clock
        self._interval_ns = round(interval_s * NS)
        self._enabled = enabled
        self._next_ns: int | None = None
        self.fired = 0

    @classmethod
    def from_config(cls, config: ReminderConfig, remind: Callable[[], object],
                    clock: Callable[[], int] = time.monotonic_ns) -> "RecordingReminder":
        return cls(remind, clock, config.interval_s, config.enabled)

    @property
    def running(self) -> bool:
        return self._next_ns is not None

    @property
    def next_due_ns(self) -> int | None:
        return self._next_ns

    def start(self) -> None:
        """Recording started: first reminder one interval from now (restarts if running)."""
        if self._enabled:
            self._next_ns = self._clock() + self._interval_ns

    def stop(self) -> None:
        self._next_ns = None

    def poll(self) -> bool:
        """Fire if due; True when it fired."""
        if self._next_ns is None:
            return False
        now = self._clock()
        if now < self._next_ns:
            return False
        missed = (now - self._next_ns) // self._interval_ns
        if missed:
            log.debug("reminder polled %d interval(s) late", missed)
        self._next_ns += (missed + 1) * self._interval_ns
        self.fired += 1
        try:
            self._remind()
        except Exception:
            log.exception("reminder cue failed")
        return True
