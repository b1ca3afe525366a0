"""A simulated GNSS receiver writing NMEA into a pty, with its truth.

The reader under test opens the pty's slave path exactly as it would open
``/dev/serial0``. Each epoch (second) the simulator writes RMC, GGA and ZDA a
fixed ``latency_s`` after the true second starts, like a real receiver, and
records the truth: the UTC each sentence was meant to represent and when it
was written, so accuracy can be measured end to end (through chronyd).

Scenarios are lists of :class:`Phase`: ``cold`` (no fix: empty fields, then
the receiver's default date), ``fix``, ``tunnel`` (fix lost, receiver keeps
time), ``bad_checksum``, ``jump`` (reported time off by ``offset_s``),
``wnro`` (date 1024 weeks early) and ``noise`` (binary junk between
sentences). :class:`CaptureReplay` replays a recorded NMEA log instead.
"""
from __future__ import annotations

import datetime as dt
import errno
import logging
import math
import os
import threading
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_POSITION = (31.2304, 121.4737)   # Shanghai, People's Square
RECEIVER_DEFAULT_DATE = dt.date(1980, 1, 6)
WEEK_ROLLOVER = dt.timedelta(weeks=1024)
PHASE_KINDS = ("cold", "fix", "tunnel", "bad_checksum", "jump", "wnro", "noise")


def checksum(body: str) -> str:
    value = 0
    for ch in body.encode("ascii"):
        value ^= ch
    return f"{value:02X}"


def sentence(body: str) -> bytes:
    """``"GPRMC,..."`` -> ``b"$GPRMC,...*hh\\r\\n"``."""
    return f"${body}*{checksum(body)}\r\n".encode("ascii")


def _dm(value: float, width: int, pos: str, neg: str) -> tuple[str, str]:
    a = abs(value)
    deg = int(a)
    return f"{deg:0{width}d}{(a - deg) * 60:08.5f}", (pos if value >= 0 else neg)


def _hms(t: dt.datetime) -> str:
    return t.strftime("%H%M%S") + f".{t.microsecond // 10000:02d}"


def rmc(t: dt.datetime | None, position: tuple[float, float] | None, *, valid: bool,
        talker: str = "GN", date: dt.date | None = None) -> bytes:
    tm = _hms(t) if t else ""
    day = (date or (t.date() if t else None))
    ds = day.strftime("%d%m%y") if day else ""
    if position is not None and valid:
        lat, ns = _dm(position[0], 2, "N", "S")
        lon, ew = _dm(position[1], 3, "E", "W")
        return sentence(f"{talker}RMC,{tm},A,{lat},{ns},{lon},{ew},0.12,,{ds},,,A")
    return sentence(f"{talker}RMC,{tm},V,,,,,,,{ds},,,N")


def gga(t: dt.datetime | None, position: tuple[float, float] | None, *, valid: bool,
        talker: str = "GN", satellites: int = 9, hdop: float = 0.9) -> bytes:
    tm = _hms(t) if t else ""
    if position is not None and valid:
        lat, ns = _dm(position[0], 2, "N", "S")
        lon, ew = _dm(position[1], 3, "E", "W")
        return sentence(f"{talker}GGA,{tm},{lat},{ns},{lon},{ew},1,{satellites:02d},"
                        f"{hdop:.2f},12.3,M,8.9,M,,")
    return sentence(f"{talker}GGA,{tm},,,,,0,00,99.99,,,,,,")


def gns(t: dt.datetime | None, position: tuple[float, float] | None, *, mode: str = "AAN",
        talker: str = "GN", satellites: int = 12, hdop: float = 0.8) -> bytes:
    """A GNS sentence (NMEA 4.1, with navigational status); ``mode``: one character per
    constellation (GPS, GLONASS, Galileo...), e.g. "AAN"; "NNN" is no fix."""
    tm = _hms(t) if t else ""
    if position is not None:
        lat, ns = _dm(position[0], 2, "N", "S")
        lon, ew = _dm(position[1], 3, "E", "W")
        return sentence(f"{talker}GNS,{tm},{lat},{ns},{lon},{ew},{mode},{satellites:02d},"
                        f"{hdop:.2f},12.3,8.9,,,S")
    return sentence(f"{talker}GNS,{tm},,,,,{mode},{satellites:02d},99.99,,,,,V")


def zda(t: dt.datetime, *, talker: str = "GN", date: dt.date | None = None) -> bytes:
    d = date or t.date()
    return sentence(f"{talker}ZDA,{_hms(t)},{d.day:02d},{d.month:02d},{d.year:04d},00,00")


@dataclass(frozen=True)
class Phase:
    kind: str
    seconds: float
    offset_s: float = 0.0     # for "jump"

    def __post_init__(self) -> None:
        if self.kind not in PHASE_KINDS:
            raise ValueError(f"unknown phase kind {self.kind!r}; one of {PHASE_KINDS}")
        if self.seconds <= 0:
            raise ValueError("a phase lasts a positive time")


SCENARIOS: dict[str, list[Phase]] = {
    "cold_start": [Phase("cold", 30)],
    "fix_acquired": [Phase("cold", 5), Phase("fix", 60)],
    "tunnel": [Phase("fix", 10), Phase("tunnel", 10), Phase("fix", 60)],
    "bad_checksums": [Phase("fix", 5), Phase("bad_checksum", 5), Phase("fix", 60)],
    "clock_jump": [Phase("fix", 10), Phase("jump", 10, offset_s=37.0), Phase("fix", 60)],
}


def epoch_lines(kind: str, truth: dt.datetime, *, index: int = 0,
                position: tuple[float, float] = DEFAULT_POSITION, talker: str = "GN",
                offset_s: float = 0.0, phase_epoch: int = 0) -> list[tuple[bytes, dt.datetime | None]]:
    """The sentences for one epoch, each with the UTC it reports (None: none)."""
    if kind == "fix" or kind == "noise":
        out: list[tuple[bytes, dt.datetime | None]] = [(rmc(truth, position, valid=True, talker=talker), truth),
               (gga(truth, position, valid=True, talker=talker), truth),
               (zda(truth, talker=talker), truth)]
        if kind == "noise":
            junk = bytes((index * 37 + i * 101) % 256 for i in range(40))
            out.insert(1, (junk, None))
        return out
    if kind == "cold":
        if phase_epoch < 3:   # nothing known yet
            return [(rmc(None, None, valid=False, talker=talker), None),
                    (gga(None, None, valid=False, talker=talker), None)]
        rtc = dt.datetime.combine(RECEIVER_DEFAULT_DATE, dt.time(), tzinfo=dt.timezone.utc) \
            + dt.timedelta(seconds=phase_epoch)
        return [(rmc(rtc, None, valid=False, talker=talker), rtc),
                (gga(rtc, None, valid=False, talker=talker), rtc),
                (zda(rtc, talker=talker), rtc)]
    if kind == "tunnel":
        return [(rmc(truth, None, valid=False, talker=talker), truth),
                (gga(truth, None, valid=False, talker=talker), truth)]
    if kind == "bad_checksum":
        lines = [rmc(truth, position, valid=True, talker=talker),
                 gga(truth, position, valid=True, talker=talker)]
        bad = [ln[:-4] + (b"00" if ln[-4:-2] != b"00" else b"FF") + b"\r\n" for ln in lines]
        return [(b, truth) for b in bad]
    if kind == "jump":
        told = truth + dt.timedelta(seconds=offset_s)
        return [(rmc(told, position, valid=True, talker=talker), told),
                (gga(told, position, valid=True, talker=talker), told),
                (zda(told, talker=talker), told)]
    if kind == "wnro":
        early = truth.date() - WEEK_ROLLOVER
        return [(rmc(truth, position, valid=True, talker=talker, date=early), truth),
                (gga(truth, position, valid=True, talker=talker), truth),
                (zda(truth, talker=talker, date=early), truth)]
    raise ValueError(f"unknown phase kind {kind!r}")


@dataclass(frozen=True)
class TruthRecord:
    """What one write meant: the true epoch, the UTC it reported, when it went out."""

    epoch_utc_ns: int            # the true UTC second this epoch describes
    reported_utc_ns: int | None  # what the sentence says (None: no time in it)
    written_wall_ns: int
    written_mono_ns: int
    kind: str
    line: bytes


class _PtyWriter:
    """The receiver end of a pty; writes never block (full buffer: dropped, counted)."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.dropped = 0

    def write(self, data: bytes) -> bool:
        try:
            os.write(self.master, data)
            return True
        except BlockingIOError:
            self.dropped += 1
            return False
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EBADF):
                self.dropped += 1
                return False
            raise

    def close(self) -> None:
        """Close both ends once. A second call must not close again: the numbers may
        already belong to another file (a double close once broke an unrelated socket)."""
        fds, self.master, self.slave = (self.master, self.slave), -1, -1
        for fd in fds:
            if fd < 0:
                continue
            try:
                os.close(fd)
            except OSError:
                pass


class SimulatedGps:
    """Writes a scenario into a pty at ``rate_hz`` epochs per second, in real time.

    ``path`` is what the reader opens. ``truth`` lists every write.
    ``unplug()`` closes the pty as pulling the receiver's cable would.
    """

    def __init__(self, phases: Sequence[Phase] | str = "fix_acquired", *, rate_hz: float = 1.0,
                 latency_s: float = 0.05, position: tuple[float, float] = DEFAULT_POSITION,
                 talker: str = "GN", loop_last: bool = True,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.phases = list(SCENARIOS[phases] if isinstance(phases, str) else phases)
        if not self.phases:
            raise ValueError("a scenario needs at least one phase")
        if not rate_hz > 0:
            raise ValueError("rate_hz must be positive")
        self.rate_hz = rate_hz
        self.latency_s = latency_s
        self.position = position
        self.talker = talker
        self.loop_last = loop_last
        self._wall_ns = wall_ns
        self._pty = _PtyWriter()
        self.path = self._pty.path
        self.truth: list[TruthRecord] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_mono_ns: int | None = None
        self.phase_started_mono_ns: dict[int, int] = {}
        self._epoch = 0                                  # the epoch the writer is at
        self._live: tuple[int, Phase] | None = None      # switch(): from this epoch on, this phase

    @property
    def dropped(self) -> int:
        return self._pty.dropped

    def _phase_at(self, epoch: int) -> tuple[int, Phase, int] | None:
        start = 0
        for i, phase in enumerate(self.phases):
            n = max(1, round(phase.seconds * self.rate_hz))
            if epoch < start + n:
                return i, phase, epoch - start
            start += n
        if self.loop_last:
            return len(self.phases) - 1, self.phases[-1], epoch - start + n
        return None

    def switch(self, kind: str, offset_s: float = 0.0) -> None:
        """From the next epoch on, play ``kind`` (a :data:`PHASE_KINDS` phase, ``offset_s``
        for ``jump``) until switched again: the bench console's ``gps fix|nofix|cold|jump``."""
        phase = Phase(kind, 1e9, offset_s)
        self._live = (self._epoch + 1, phase)

    def _where(self, epoch: int) -> tuple[int, Phase, int] | None:
        live = self._live
        if live is not None and epoch >= live[0]:
            return len(self.phases), live[1], epoch - live[0]
        return self._phase_at(epoch)

    def start(self) -> "SimulatedGps":
        self._thread = threading.Thread(target=self._run, name="sim-gps", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close(self) -> None:
        self.stop()
        self._pty.close()

    unplug = close

    def __enter__(self) -> "SimulatedGps":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        period_ns = int(1e9 / self.rate_hz)
        now = self._wall_ns()
        first = (now // period_ns + 1) * period_ns
        self.started_mono_ns = time.monotonic_ns()
        epoch = 0
        while not self._stop.is_set():
            self._epoch = epoch
            where = self._where(epoch)
            if where is None:
                return
            index, phase, phase_epoch = where
            epoch_ns = first + epoch * period_ns
            due = epoch_ns + int(self.latency_s * 1e9)
            wait = (due - self._wall_ns()) / 1e9
            if wait > 0 and self._stop.wait(wait):
                return
            if phase_epoch == 0:
                self.phase_started_mono_ns[index] = time.monotonic_ns()
            truth = dt.datetime.fromtimestamp(epoch_ns / 1e9, dt.timezone.utc)
            for line, reported in epoch_lines(phase.kind, truth, index=epoch,
                                              position=self.position, talker=self.talker,
                                              offset_s=phase.offset_s,
                                              phase_epoch=phase_epoch):
                mono, wall = time.monotonic_ns(), self._wall_ns()
                if self._pty.write(line):
                    rep = None if reported is None else _dt_ns(reported)
                    self.truth.append(TruthRecord(epoch_ns, rep, wall, mono, phase.kind, line))
            epoch += 1


def _dt_ns(t: dt.datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


class CaptureReplay:
    """Replays an NMEA log into a pty, one burst (epoch) at a time.

    A burst starts at each RMC sentence. ``speed`` 1.0 is real time (one burst
    per second); 10.0 is ten times faster; ``math.inf`` writes as fast as the
    reader drains the pty. Call :meth:`start` once the reader has the port
    open: it discards bytes that were waiting before it opened (their arrival
    times would be wrong). The same holds for :class:`SimulatedGps`.
    """

    def __init__(self, capture: str | os.PathLike[str], *, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError("speed must be positive")
        with open(capture, "rb") as fh:
            self.bursts = split_bursts(fh.read())
        self.speed = speed
        self._pty = _PtyWriter()
        self.path = self._pty.path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()

    def start(self) -> "CaptureReplay":
        self._thread = threading.Thread(target=self._run, name="sim-gps-replay", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        period = 0.0 if math.isinf(self.speed) else 1.0 / self.speed
        try:
            for burst in self.bursts:
                if self._stop.is_set():
                    return
                data = memoryview(burst)
                while data and not self._stop.is_set():
                    try:
                        n = os.write(self._pty.master, data)
                        data = data[n:]
                    except BlockingIOError:
                        time.sleep(0.005)
                if period:
                    self._stop.wait(period)
        finally:
            self.done.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pty.close()

    def __enter__(self) -> "CaptureReplay":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_bursts(data: bytes) -> list[bytes]:
    """NMEA log -> one bytes object per epoch (a new epoch starts at each RMC)."""
    bursts: list[bytearray] = [bytearray()]
    for line in data.splitlines(keepends=True):
        if line[3:6] == b"RMC" and bursts[-1]:
            bursts.append(bytearray())
        bursts[-1] += line
    return [bytes(b) for b in bursts if b]
