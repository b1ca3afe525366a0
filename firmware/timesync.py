"""Trusted time on the device: GPS fixes to chronyd, latest position, clock steps.

:class:`TimeSyncService` runs the GPS reader in a thread and passes the first
trusted sentence of every second to chronyd's SOCK refclock (chronyd, not
this code, disciplines the clock). It keeps the latest fix for the position
on the on-screen stamp, and watches the wall clock for steps (chronyd's
first-fix ``makestep``, an NTP step when docked, a manual set) so the lead
can journal old and new time. It journals nothing itself.

Callbacks run on the service's threads; keep them short and thread-safe.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from common.settings import Section
from hw.chrony import ChronyQuality
from hw.chrony_sock import SockRefclock
from hw.gps import GpsConfig, GpsFix, GpsReader, PortState, format_position

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: chrony slews at most 83 333 ppm (maxslewrate default); anything faster is a step.
MAX_SLEW_RATE = 0.083334


@dataclass(frozen=True)
class WallClockStep:
    """The wall clock moved by ``new - old`` at monotonic instant ``mono_ns``."""

    mono_ns: int
    old_wall_ns: int     # what the wall clock would read now without the step
    new_wall_ns: int     # what it reads now

    @property
    def delta_s(self) -> float:
        return (self.new_wall_ns - self.old_wall_ns) / 1e9


class WallStepDetector:
    """Notices wall-clock steps by watching ``wall - monotonic``.

    A slew changes that difference by at most ``MAX_SLEW_RATE`` per second; a
    larger change since the last check, beyond ``threshold_s``, is a step.
    """

    def __init__(self, threshold_s: float = 0.1, *,
                 wall_ns: Callable[[], int] = time.time_ns,
                 mono_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.threshold_s = threshold_s
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._last_mono = mono_ns()
        self._last_offset = wall_ns() - self._last_mono

    def check(self) -> WallClockStep | None:
        mono = self._mono_ns()
        wall = self._wall_ns()
        offset = wall - mono
        elapsed = (mono - self._last_mono) / 1e9
        change = (offset - self._last_offset) / 1e9
        old_offset = self._last_offset
        self._last_mono, self._last_offset = mono, offset
        if abs(change) > self.threshold_s + MAX_SLEW_RATE * elapsed:
            return WallClockStep(mono, mono + old_offset, wall)
        return None


class TimeSyncService:
    """GPS reader thread + chrony feed + latest fix + wall-step watch.

    ``refclock`` may be None (no chronyd on this build): fixes are still read
    for position. Call :meth:`start` once and :meth:`stop` at shutdown.
    """

    def __init__(self, reader: GpsReader, refclock: SockRefclock | None = None, *,
                 step_threshold_s: float = 0.1, step_poll_s: float = 0.25,
                 fix_max_age_s: float = 10.0,
                 wall_ns: Callable[[], int] = time.time_ns,
                 mono_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.reader = reader
        self.refclock = refclock
        self.fix_max_age_s = fix_max_age_s
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._step_poll_s = step_poll_s
        self._detector = WallStepDetector(step_threshold_s, wall_ns=wall_ns, mono_ns=mono_ns)
        self._lock = threading.Lock()
        self._latest: GpsFix | None = None          # latest fix with a position
        self._last_status: GpsFix | None = None     # latest sentence of any kind
        self._step_listeners: list[Callable[[WallClockStep], None]] = []
        self._fix_listeners: list[Callable[[GpsFix], None]] = []
        self._port_listeners: list[Callable[[PortState], None]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.samples_sent = 0
        self.samples_failed = 0
        if reader.on_port_state is not None:
            self._port_listeners.append(reader.on_port_state)
        reader.on_port_state = self._port_changed

    # ------------------------------------------------------------ listeners

    def on_wall_step(self, callback: Callable[[WallClockStep], None]) -> None:
        """Call ``callback(step)`` whenever the wall clock steps (for the journal)."""
        self._step_listeners.append(callback)

    def on_fix(self, callback: Callable[[GpsFix], None]) -> None:
        self._fix_listeners.append(callback)

    def on_port_state(self, callback: Callable[[PortState], None]) -> None:
        """Called when the receiver's port opens or is lost (e.g. unplugged)."""
        self._port_listeners.append(callback)

    @staticmethod
    def _notify(listeners: list[Callable[[_T], None]], value: _T) -> None:
        for cb in list(listeners):
            try:
                cb(value)
            except Exception:
                log.exception("time-sync listener failed")

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("time sync already started")
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self.reader.run, args=(self._handle_fix, self._stop),
                             name="gps-reader", daemon=True),
            threading.Thread(target=self._watch_steps, name="wall-step-watch", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()   # the reader loop watches this event too; it can be restarted
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        if self.refclock is not None:
            self.refclock.close()

    def __enter__(self) -> "TimeSyncService":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- work

    def _port_changed(self, state: PortState) -> None:
        self._notify(self._port_listeners, state)

    def _handle_fix(self, fix: GpsFix) -> None:
        with self._lock:
            self._last_status = fix
            if fix.position is not None:
                self._latest = fix
        if fix.utc is not None and fix.new_epoch and self.refclock is not None:
            # Map the arrival instant onto system time now; the offset is
            # true time minus system time at that instant.
            system_ns = fix.received_mono_ns + (self._wall_ns() - self._mono_ns())
            utc_ns = int(fix.utc.timestamp()) * 1_000_000_000 + fix.utc.microsecond * 1000
            if self.refclock.send(system_ns, (utc_ns - system_ns) / 1e9):
                self.samples_sent += 1
            else:
                self.samples_failed += 1
        self._notify(self._fix_listeners, fix)

    def _watch_steps(self) -> None:
        while not self._stop.wait(self._step_poll_s):
            try:
                step = self._detector.check()
            except Exception:
                log.exception("wall-step check failed")
                continue
            if step is not None:
                log.warning("wall clock stepped by %+.3f s", step.delta_s)
                self._notify(self._step_listeners, step)

    # -------------------------------------------------------------- queries

    def latest_fix(self, max_age_s: float | None = None) -> GpsFix | None:
        """Latest fix with a position, if it is younger than ``max_age_s``
        (default ``fix_max_age_s``) and no later sentence reported the fix lost."""
        age_limit = self.fix_max_age_s if max_age_s is None else max_age_s
        with self._lock:
            fix, status = self._latest, self._last_status
        if fix is None:
            return None
        if status is not None and status.received_mono_ns > fix.received_mono_ns \
                and status.sentence != "ZDA" and not status.has_fix:
            return None
        if (self._mono_ns() - fix.received_mono_ns) / 1e9 > age_limit:
            return None
        return fix

    def position_text(self, max_age_s: float | None = None) -> str:
        """Short text for the stamp: ``"31.2304N 121.4737E"`` or ``"no fix"``."""
        fix = self.latest_fix(max_age_s)
        return format_position(fix.position if fix else None)

    @property
    def port_state(self) -> PortState:
        return self.reader.port_state


@dataclass(frozen=True)
class TimeConfig(Section):
    """The ``[time]`` settings: how to talk to chronyd."""

    SECTION = "time"

    chronyc: str = "chronyc"             # chronyc executable
    chronyc_socket: str = ""             # chronyd command socket for chronyc -h; "" = chronyc's
                                         # default (/run/chrony/chronyd.sock, then 127.0.0.1:323)
    refclock_socket: str = "/run/chrony/bodycam-gps.sock"  # `refclock SOCK` path; "" = do not feed
    gps_refids: str = "GPS,PPS"          # selected refclocks with these refids mean quality GPS
    quality_timeout_s: float = 1.0       # chronyc is killed after this long (-> UNSYNCED)
    quality_cache_s: float = 1.0         # answers are reused this long (called per frame)
    step_threshold_s: float = 0.1        # wall-clock changes beyond slewing are reported as steps

    def __post_init__(self) -> None:
        for name in ("chronyc", "chronyc_socket", "refclock_socket", "gps_refids"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"[time] {name} must be a string")
        if not self.chronyc.strip():
            raise ValueError("[time] chronyc must name the chronyc program")
        if not self.refids():
            raise ValueError("[time] gps_refids must list at least one refid")
        for name in ("quality_timeout_s", "quality_cache_s", "step_threshold_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"[time] {name} must be a number of seconds >= 0")
        if not self.quality_timeout_s > 0:
            raise ValueError("[time] quality_timeout_s must be > 0")

    def refids(self) -> tuple[str, ...]:
        return tuple(r.strip() for r in self.gps_refids.split(",") if r.strip())


    def quality_source(self) -> ChronyQuality:
        """The ``common.clock.QualitySource`` for ``SystemWallClock``."""
        return ChronyQuality(self.chronyc, self.chronyc_socket or None,
                             timeout_s=self.quality_timeout_s, cache_s=self.quality_cache_s,
                             gps_refids=self.refids())


def build_timesync(gps: GpsConfig, time_cfg: TimeConfig) -> TimeSyncService | None:
    """The service for these settings, not started; None when ``[gps] enabled = false``."""
    if not gps.enabled:
        return None
    refclock = SockRefclock(time_cfg.refclock_socket) if time_cfg.refclock_socket else None
    return TimeSyncService(gps.reader(), refclock, step_threshold_s=time_cfg.step_threshold_s,
                           fix_max_age_s=gps.position_max_age_s)
