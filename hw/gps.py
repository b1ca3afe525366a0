"""GNSS receiver on a serial port: reads NMEA, survives junk and unplugging.

The port is opened with pySerial's ``serial_for_url``, so the same reader
works on the Pi's UART (``/dev/serial0``), a USB receiver (``/dev/ttyACM0``),
a pty from :mod:`sim.gps`, or ``loop://``. Decoding and every validation rule
live in :mod:`hw.nmea_time`; this module owns the port: arrival timestamps,
reconnects, and reporting a lost receiver clearly instead of going silent.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from common.settings import Section
from hw.nmea_time import DecoderStats, GpsFix, NmeaDecoder, TimePolicy

__all__ = ["GpsConfig", "GpsFix", "GpsReader", "PortState", "TimePolicy", "format_position"]

log = logging.getLogger(__name__)


class SerialPort(Protocol):
    """What the reader uses of a pyserial port (``serial.serial_for_url``)."""

    @property
    def in_waiting(self) -> int: ...
    def read(self, size: int = 1, /) -> bytes: ...
    def reset_input_buffer(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class PortState:
    """Whether the receiver's port is open; ``error`` says why not."""

    url: str
    connected: bool
    error: str | None = None
    mono_ns: int = 0


@dataclass(frozen=True)
class GpsConfig(Section):
    """The ``[gps]`` settings."""

    SECTION = "gps"

    enabled: bool = True                 # false: no receiver fitted; time from NTP/RTC only
    port: str = "/dev/serial0"           # pySerial URL: UART path, pty path, loop://, rfc2217://
    baudrate: int = 9600
    min_date: str = "2024-01-01"         # earlier receiver dates are defaults or rollover
    max_date: str = "2044-01-01"         # later receiver dates are refused
    week_rollover: str = "correct"       # "correct" or "reject" dates 1024 weeks early
    confirm_epochs: int = 3              # consistent seconds before a new time line is trusted
    jump_tolerance_s: float = 2.0        # larger disagreement with the time line is a jump
    retry_interval_s: float = 1.0        # first reopen delay after the port is lost (backs off)
    position_max_age_s: float = 10.0     # older positions are shown as "no fix"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError("[gps] enabled must be true or false")
        if not isinstance(self.port, str) or not self.port.strip():
            raise ValueError("[gps] port must be a serial port path or pySerial URL")
        if isinstance(self.baudrate, bool) or self.baudrate not in (
                4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800):
            raise ValueError(f"[gps] baudrate {self.baudrate!r} is not a standard GNSS baud rate")
        for name in ("jump_tolerance_s", "retry_interval_s", "position_max_age_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"[gps] {name} must be a positive number of seconds")
        self.policy()  # validates dates, week_rollover and confirm_epochs

    def policy(self) -> TimePolicy:
        import datetime as dt

        try:
            lo, hi = dt.date.fromisoformat(self.min_date), dt.date.fromisoformat(self.max_date)
        except (TypeError, ValueError):
            raise ValueError("[gps] min_date and max_date must be dates like 2024-01-01") from None
        if isinstance(self.confirm_epochs, bool) or not isinstance(self.confirm_epochs, int):
            raise ValueError("[gps] confirm_epochs must be an integer")
        try:
            return TimePolicy(lo, hi, self.week_rollover, self.confirm_epochs,
                              float(self.jump_tolerance_s))
        except ValueError as exc:
            raise ValueError(f"[gps] {exc}") from None


    def reader(self, **kw: Any) -> GpsReader:
        return GpsReader(self.port, self.baudrate, policy=self.policy(),
                         retry_interval_s=self.retry_interval_s, **kw)


def format_position(position: tuple[float, float] | None) -> str:
    """``(31.2304, 121.4737)`` -> ``"31.2304N 121.4737E"``; None -> ``"no fix"``."""
    if position is None:
        return "no fix"
    lat, lon = position
    return f"{abs(lat):.4f}{'N' if lat >= 0 else 'S'} {abs(lon):.4f}{'E' if lon >= 0 else 'W'}"


def _wire_timing(url: str) -> bool:
    """True for real UARTs, where bytes trickle in at the baud rate."""
    return "://" not in url and not url.startswith("/dev/pts/")


class GpsReader:
    """Reads fixes from one serial URL, forever, until stopped.

    ``run(on_fix, stop)`` is the loop (call it from a thread); ``fixes()``
    wraps it as an iterator. Nothing raised inside (port errors, decoder
    problems, a failing ``on_fix``) leaves the loop: a lost port is reported
    through ``on_port_state`` and the log, then reopened every
    ``retry_interval_s`` (backing off to ``max_retry_interval_s``).
    """

    def __init__(self, url: str, baudrate: int = 9600, *,
                 policy: TimePolicy | None = None,
                 read_timeout_s: float = 0.2,
                 retry_interval_s: float = 1.0,
                 max_retry_interval_s: float = 10.0,
                 wire_timing: bool | None = None,
                 on_port_state: Callable[[PortState], None] | None = None) -> None:
        self.url = url
        self.baudrate = baudrate
        self.decoder = NmeaDecoder(policy)
        self._read_timeout = read_timeout_s
        self._retry = retry_interval_s
        self._max_retry = max_retry_interval_s
        wire = _wire_timing(url) if wire_timing is None else wire_timing
        self._char_ns = int(10e9 / baudrate) if wire else 0
        self.on_port_state = on_port_state
        self._state = PortState(url, False, "not opened yet")
        self._stop = threading.Event()
        self.opens = 0
        self.disconnects = 0

    @property
    def stats(self) -> DecoderStats:
        return self.decoder.stats

    @property
    def port_state(self) -> PortState:
        return self._state

    def close(self) -> None:
        """Ask a running loop to end (it returns within about one read timeout)."""
        self._stop.set()

    def _set_state(self, connected: bool, error: str | None) -> None:
        was = self._state
        self._state = PortState(self.url, connected, error, time.monotonic_ns())
        if connected and not was.connected:
            log.info("GPS port %s open", self.url)
        elif error == "stopped":
            log.info("GPS port %s closed", self.url)
        elif not connected and (was.connected or was.error != error):
            log.warning("GPS port %s unavailable: %s; retrying every %.0f-%.0f s",
                        self.url, error, self._retry, self._max_retry)
        if self.on_port_state is not None and (was.connected != connected or was.error != error):
            try:
                self.on_port_state(self._state)
            except Exception:
                log.exception("GPS port-state callback failed")

    def _open(self) -> SerialPort:
        import serial  # pyserial

        port: SerialPort = serial.serial_for_url(self.url, baudrate=self.baudrate,
                                                 timeout=self._read_timeout)
        try:
            port.reset_input_buffer()  # stale bytes would carry wrong arrival times
        except Exception:
            pass
        return port

    def run(self, on_fix: Callable[[GpsFix], None],
            stop: threading.Event | None = None) -> None:
        """Read until ``stop`` (or :meth:`close`); call ``on_fix`` for every fix."""
        import serial

        stop = stop or self._stop
        delay = self._retry
        while not (stop.is_set() or self._stop.is_set()):
            try:
                port = self._open()
            except (serial.SerialException, OSError, ValueError) as exc:
                self._set_state(False, f"open failed: {exc}")
                stop.wait(delay)
                delay = min(delay * 2, self._max_retry)
                continue
            self.opens += 1
            delay = self._retry
            self._set_state(True, None)
            try:
                self._read_loop(port, on_fix, stop)
            except (serial.SerialException, OSError) as exc:
                self.disconnects += 1
                self._set_state(False, f"lost: {exc}")
                stop.wait(delay)
            except Exception as exc:  # last resort: log, reopen, keep the clock fed
                log.exception("GPS reader loop failed; reopening the port")
                self.disconnects += 1
                self._set_state(False, f"reader error: {exc!r}")
                stop.wait(delay)
            finally:
                try:
                    port.close()
                except Exception:
                    pass
        if self._state.connected:
            self._set_state(False, "stopped")

    def _read_loop(self, port: SerialPort, on_fix: Callable[[GpsFix], None],
                   stop: threading.Event) -> None:
        while not (stop.is_set() or self._stop.is_set()):
            waiting = port.in_waiting
            data = port.read(min(max(1, waiting), 4096))
            if not data:
                continue
            mono = time.monotonic_ns()
            for fix in self.decoder.feed(data, mono, self._char_ns):
                try:
                    on_fix(fix)
                except Exception:
                    log.exception("GPS fix consumer failed")

    def fixes(self, stop: threading.Event | None = None) -> Iterator[GpsFix]:
        """Iterate fixes; the port is read in a helper thread. Ends after ``stop``/close."""
        import queue

        q: queue.Queue[GpsFix | None] = queue.Queue(maxsize=1000)   # None: the reader ended
        stop = stop or self._stop

        def put(fix: GpsFix) -> None:
            try:
                q.put_nowait(fix)
            except queue.Full:
                log.warning("GPS fix queue full; fix dropped")

        def worker() -> None:
            try:
                self.run(put, stop)
            finally:
                q.put(None)

        thread = threading.Thread(target=worker, name="gps-reader", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                yield item
        finally:
            self.close()
            thread.join(timeout=5)
