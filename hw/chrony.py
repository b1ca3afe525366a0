"""How far the system clock can be trusted, as chronyd sees it.

:class:`ChronyQuality` implements ``common.clock.QualitySource`` from
``chronyc -c tracking`` and ``chronyc -c sources``:

* GPS      - the selected source (``*``) is a reference clock whose refid is the
             GPS or PPS one;
* NTP      - the selected source is an NTP server (or another reference clock);
* RTC      - nothing is selected now but the clock was synced before (since
             chronyd started, or earlier in this process), or chronyd runs on
             its ``local`` reference only; with seconds since the last sync;
* UNSYNCED - never synced, or chronyd cannot be asked.

The error estimate is chrony's own bound from its documentation (chronyc
``tracking``, "Root dispersion"): ``|system time offset| + root dispersion +
root delay / 2``. chrony grows root dispersion while unsynchronised, so the
bound widens by itself when GPS is lost.

``quality()`` is called per frame, so answers are cached for ``cache_s``;
a stale cache is refreshed in a background thread while the caller gets the
previous answer, and chronyc runs under a timeout. Only the very first call
waits for chronyc (bounded by ``timeout_s``). A missing or dead chronyd gives
UNSYNCED and one logged warning, never an exception.
"""
from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from common.clock import TimeQuality

log = logging.getLogger(__name__)

LOCAL_REFID = "7F7F0101"   # chronyd's own `local` reference (127.127.1.1)


@dataclass(frozen=True)
class Tracking:
    ref_id: str
    ref_name: str
    stratum: int
    ref_time: float            # wall time (s) of the last update; 0 = never
    system_offset: float       # seconds
    root_delay: float
    root_dispersion: float
    leap: str                  # "Normal", "Not synchronised", ...

    @property
    def error_bound(self) -> float:
        return abs(self.system_offset) + self.root_dispersion + self.root_delay / 2


@dataclass(frozen=True)
class Source:
    mode: str       # '^' server, '=' peer, '#' reference clock
    state: str      # '*' selected, '+' combined, '-', '?', 'x', '~'
    name: str       # address or refid
    stratum: int
    reach: int


@dataclass(frozen=True)
class ChronyState:
    """One answer, with what it was derived from (for logs and self-check)."""

    quality: TimeQuality
    error_s: float | None
    last_sync_wall: float | None     # wall time of the last sync seen, if any
    selected: Source | None
    tracking: Tracking | None
    problem: str | None = None       # why chronyd could not be asked
    mono: float = 0.0                # when this answer was made (time.monotonic)


def parse_tracking(text: str) -> Tracking:
    line = text.strip().splitlines()[0]
    f = line.split(",")
    if len(f) < 14:
        raise ValueError(f"unexpected tracking line: {line!r}")
    return Tracking(f[0].upper(), f[1], int(f[2]), float(f[3]), float(f[4]),
                    float(f[10]), float(f[11]), f[13])


def parse_sources(text: str) -> list[Source]:
    out = []
    for line in text.strip().splitlines():
        f = line.split(",")
        if len(f) < 10:
            raise ValueError(f"unexpected sources line: {line!r}")
        out.append(Source(f[0], f[1], f[2], int(f[3]), int(f[5], 8)))
    return out


def classify(tracking: Tracking, sources: list[Source],
             gps_refids: Sequence[str] = ("GPS", "PPS"),
             previous_sync_wall: float | None = None) -> ChronyState:
    """Turn chronyc's view into a quality. Pure, for tests."""
    selected = next((s for s in sources if s.state == "*"), None)
    if selected is not None and tracking.leap != "Not synchronised":   # synced
        if selected.mode == "#" and selected.name in gps_refids:
            quality = TimeQuality.GPS
        else:
            quality = TimeQuality.NTP
        return ChronyState(quality, tracking.error_bound, tracking.ref_time or None,
                           selected, tracking)
    local_only = tracking.ref_id == LOCAL_REFID
    last = None if local_only or tracking.ref_time <= 0 else tracking.ref_time
    if previous_sync_wall is not None and (last is None or previous_sync_wall > last):
        last = previous_sync_wall
    if last is None and not local_only:
        return ChronyState(TimeQuality.UNSYNCED, None, None, None, tracking)
    error = tracking.error_bound if last is not None else None
    return ChronyState(TimeQuality.RTC, error, last, None, tracking)


class ChronyQuality:
    """QualitySource backed by chronyc; cheap to call per frame."""

    def __init__(self, chronyc: str | Sequence[str] = "chronyc",
                 socket_path: str | None = None, *,
                 timeout_s: float = 1.0, cache_s: float = 1.0,
                 gps_refids: Sequence[str] = ("GPS", "PPS")) -> None:
        base = [chronyc] if isinstance(chronyc, str) else list(chronyc)
        if socket_path:
            base += ["-h", socket_path]
        self._cmd = base + ["-n", "-c"]
        self._timeout = timeout_s
        self._cache = cache_s
        self._gps_refids = tuple(gps_refids)
        self._lock = threading.Lock()
        self._state: ChronyState | None = None
        self._refreshing = False
        self._last_sync_wall: float | None = None
        self._last_problem: str | None = None

    # -------------------------------------------------------------- chronyc

    def _chronyc(self, command: str, allow_empty: bool = False) -> str:
        proc = subprocess.run(self._cmd + [command], capture_output=True, text=True,
                              timeout=self._timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not (allow_empty or proc.stdout.strip()):
            msg = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
            raise RuntimeError(f"chronyc {command}: {msg}")
        return proc.stdout

    def refresh(self) -> ChronyState:
        """Ask chronyd now (blocks at most about 2 x ``timeout_s``)."""
        try:
            tracking = parse_tracking(self._chronyc("tracking"))
            sources = parse_sources(self._chronyc("sources", allow_empty=True))
            state = classify(tracking, sources, self._gps_refids, self._last_sync_wall)
            problem = None
        except subprocess.TimeoutExpired:
            problem = f"chronyc timed out after {self._timeout:.1f} s"
        except (OSError, RuntimeError, ValueError) as exc:
            problem = str(exc)
        if problem is not None:
            state = ChronyState(TimeQuality.UNSYNCED, None, self._last_sync_wall, None, None,
                                problem)
            if self._last_sync_wall is not None:
                # chronyd died, but the clock was synced earlier in this process
                state = ChronyState(TimeQuality.RTC, None, self._last_sync_wall, None, None,
                                    problem)
        state = ChronyState(state.quality, state.error_s, state.last_sync_wall, state.selected,
                            state.tracking, problem, time.monotonic())
        with self._lock:
            if state.quality in (TimeQuality.GPS, TimeQuality.NTP) and state.last_sync_wall:
                self._last_sync_wall = state.last_sync_wall
            previous = self._state
            self._state = state
        if problem != self._last_problem:
            if problem:
                log.warning("cannot read time quality from chronyd: %s", problem)
            elif self._last_problem:
                log.info("chronyd answers again")
            self._last_problem = problem
        if previous is None or previous.quality != state.quality:
            log.info("time quality %s (error %s)", state.quality.value,
                     "unknown" if state.error_s is None else f"{state.error_s:.6f} s")
        return state

    def _background_refresh(self) -> None:
        try:
            self.refresh()
        except Exception:
            log.exception("time quality refresh failed")
        finally:
            with self._lock:
                self._refreshing = False

    def state(self) -> ChronyState:
        """The latest answer (asking chronyd first if there is none or it is stale)."""
        with self._lock:
            state = self._state
            stale = state is None or time.monotonic() - state.mono >= self._cache
            start = stale and state is not None and not self._refreshing
            if start:
                self._refreshing = True
        if state is None:
            return self.refresh()
        if start:
            threading.Thread(target=self._background_refresh, name="chrony-quality",
                             daemon=True).start()
        return state

    # --------------------------------------------------------- QualitySource

    def quality(self) -> tuple[TimeQuality, float | None, float | None]:
        state = self.state()
        since = None
        if state.quality is TimeQuality.RTC and state.last_sync_wall is not None:
            since = max(0.0, time.time() - state.last_sync_wall)
        return state.quality, state.error_s, since
