"""Feed time samples to chronyd's SOCK reference clock.

chronyd, not this program, disciplines the clock: we only tell it, for a
moment of system time, how far true (GPS) time was from it. The datagram is
chrony's ``struct sock_sample`` (refclock_sock.c)::

    struct timeval tv;   /* system time of the measurement */
    double offset;       /* true time - system time, seconds */
    int pulse;           /* non-zero: PPS-style sample, seconds unknown */
    int leap;            /* 0 normal, 1 insert, 2 delete leap second */
    int _pad;
    int magic;           /* 0x534f434b ("SOCK") */

in the machine's native layout: 40 bytes on 64-bit Linux, 32 on 32-bit
(armhf) with a 32-bit ``time_t``. chronyd drops datagrams of any other
length silently (chrony >= 4.4 on 32-bit glibc also accepts the other
``time_t`` width), so ``time_bits`` can be forced for an unusual chronyd build.
"""
from __future__ import annotations

import errno
import logging
import socket
import struct

log = logging.getLogger(__name__)

SOCK_MAGIC = 0x534F434B
LEAP_NONE, LEAP_INSERT, LEAP_DELETE = 0, 1, 2


def sample_format(time_bits: int | None = None) -> str:
    """struct format of ``sock_sample``; None means the C ``long`` of this machine."""
    timeval = {None: "ll", 64: "qq", 32: "ii"}.get(time_bits)
    if timeval is None:
        raise ValueError("time_bits must be None, 32 or 64")
    return "@" + timeval + "diiii"


def pack_sample(system_time_ns: int, offset_s: float, *, pulse: bool = False,
                leap: int = LEAP_NONE, time_bits: int | None = None) -> bytes:
    """Build one datagram: at system time ``system_time_ns``, true - system = ``offset_s``."""
    if leap not in (LEAP_NONE, LEAP_INSERT, LEAP_DELETE):
        raise ValueError(f"bad leap indicator {leap}")
    sec, nsec = divmod(int(system_time_ns), 1_000_000_000)
    return struct.pack(sample_format(time_bits), sec, nsec // 1000, float(offset_s),
                       1 if pulse else 0, leap, 0, SOCK_MAGIC)


def unpack_sample(data: bytes, time_bits: int | None = None) -> tuple[int, float, int, int]:
    """Inverse of :func:`pack_sample`: (system_time_ns, offset_s, pulse, leap)."""
    sec, usec, offset, pulse, leap, _pad, magic = struct.unpack(sample_format(time_bits), data)
    if magic != SOCK_MAGIC:
        raise ValueError(f"bad magic {magic:#x}")
    return sec * 1_000_000_000 + usec * 1000, offset, pulse, leap


class SockRefclock:
    """Datagram sender to chronyd's ``refclock SOCK <path>``; never raises on send.

    chronyd creates the socket when it starts; until then (or after it dies)
    :meth:`send` returns False, counts the failure and logs once per outage.
    """

    def __init__(self, path: str, *, time_bits: int | None = None) -> None:
        self.path = path
        self._time_bits = time_bits
        sample_format(time_bits)  # validate now, not on the first fix
        self._sock: socket.socket | None = None
        self.sent = 0
        self.failed = 0
        self._down = False

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)  # a stalled chronyd must not stall the reader
            self._sock = sock
        return self._sock

    def send(self, system_time_ns: int, offset_s: float, *, leap: int = LEAP_NONE,
             pulse: bool = False) -> bool:
        data = pack_sample(system_time_ns, offset_s, pulse=pulse, leap=leap,
                           time_bits=self._time_bits)
        try:
            self._socket().sendto(data, self.path)
        except OSError as exc:
            self.failed += 1
            if not self._down:
                reason = ("chronyd not listening"
                          if exc.errno in (errno.ENOENT, errno.ECONNREFUSED) else str(exc))
                log.warning("cannot send time sample to chronyd at %s: %s", self.path, reason)
                self._down = True
            return False
        if self._down:
            log.info("time samples reach chronyd at %s again", self.path)
            self._down = False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
