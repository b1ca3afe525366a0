"""Fuzzing the NMEA path: no input bytes may raise, hang, or sneak bad time through.

The decoder has a last-resort safety net that counts ``internal_error``; these
tests require that counter to stay at zero, so an exception caught by the net
is still a failure. Every complete '$' line must be accounted for exactly
once (parsed, ignored or rejected by reason).
"""
from __future__ import annotations

import datetime as dt
import functools
import itertools
import os
import re
import threading
import time
import tty
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hw import nmea_time as nt
from hw.gps import GpsReader
from hw.nmea_time import NmeaDecoder, TimePolicy
from sim.gps import epoch_lines, split_bursts

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 5, 17, 8, 30, 0, tzinfo=UTC)
VALID = [line for k in range(3) for kind in ("fix", "cold", "tunnel", "wnro")
         for line, _ in epoch_lines(kind, T0 + dt.timedelta(seconds=k), phase_epoch=k + 3)]
# The epochs those sentences state (a week-rollover date is corrected back to them): the
# only times a trusted fix may carry when fed VALID lines, however mangled.
SOURCE_EPOCHS = {T0 + dt.timedelta(seconds=k) for k in range(3)}
CAPTURES = Path(__file__).resolve().parent.parent / "sim" / "nmea_captures"
_CHECKSUMMED = re.compile(rb"\$([^$*\r\n]*)\*([0-9A-Fa-f]{2})")


def checksum_valid_bodies(data: bytes) -> set[bytes]:
    """Every '$body*hh' in ``data`` whose NMEA checksum (XOR of the body) matches: written
    here from the NMEA 0183 rule, not taken from the decoder."""
    return {m.group(1) for m in _CHECKSUMMED.finditer(data)
            if functools.reduce(lambda a, b: a ^ b, m.group(1), 0) == int(m.group(2), 16)}


VALID_BODIES = checksum_valid_bodies(b"".join(VALID))
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def check_invariants(dec: NmeaDecoder, fixes) -> None:
    s = dec.stats
    assert s.rejected[nt.INTERNAL_ERROR] == 0
    non_frame = s.rejected[nt.NOISE]
    assert s.frames == sum(s.parsed.values()) + sum(s.ignored.values()) \
        + sum(s.rejected.values()) - non_frame
    pol = dec.policy
    for f in fixes:
        if f.utc is not None:
            assert f.time_rejected is None
            assert pol.min_date <= f.utc.date() < pol.max_date
            assert f.utc.tzinfo is not None
        else:
            assert f.time_rejected is not None
        if f.position is not None:
            lat, lon = f.position
            assert -90 <= lat <= 90 and -180 <= lon <= 180
            assert f.has_fix


def feed_chunked(dec: NmeaDecoder, data: bytes, cuts: list[int], char_ns: int = 0):
    fixes = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for i, (a, b) in enumerate(itertools.pairwise(points)):
        fixes += dec.feed(data[a:b], 10**9 + i * 1000, char_ns)
    return fixes


@FUZZ
@given(st.binary(min_size=0, max_size=20000), st.lists(st.integers(0, 20000), max_size=30),
       st.sampled_from([0, 1_041_667]))
def test_random_bytes_never_raise(data, cuts, char_ns):
    dec = NmeaDecoder(TimePolicy(confirm_epochs=1))
    fixes = feed_chunked(dec, data, cuts, char_ns)
    check_invariants(dec, fixes)


_alphabet = st.sampled_from(list(b"$*,.0123456789ABCDEFNSEWAVGPRMZ\r\n\x00\xff"))


@FUZZ
@given(st.lists(_alphabet, min_size=0, max_size=3000), st.lists(st.integers(0, 3000), max_size=10))
def test_nmea_like_alphabet_never_raises(chars, cuts):
    dec = NmeaDecoder(TimePolicy(confirm_epochs=1))
    fixes = feed_chunked(dec, bytes(chars), cuts)
    check_invariants(dec, fixes)


def _mutate(line: bytes, ops) -> bytes:
    b = bytearray(line)
    for kind, pos, value in ops:
        if not b:
            b.append(value)
            continue
        i = pos % len(b)
        if kind == "flip":
            b[i] ^= 1 << (value % 8)
        elif kind == "set":
            b[i] = value
        elif kind == "delete":
            del b[i]
        elif kind == "insert":
            b.insert(i, value)
        elif kind == "duplicate":
            b[i:i] = b[i:i + (value % 20)]
        elif kind == "truncate":
            del b[i:]
    return bytes(b)


_ops = st.lists(st.tuples(st.sampled_from(["flip", "set", "delete", "insert", "duplicate",
                                           "truncate"]),
                          st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(VALID), _ops), min_size=1, max_size=20),
       st.lists(st.integers(0, 2000), max_size=10))
def test_mutated_valid_sentences_never_raise_or_pass_bad_time(items, cuts):
    dec = NmeaDecoder(TimePolicy(confirm_epochs=1))
    stream = b"".join(_mutate(line, ops) for line, ops in items)
    # A mutation that leaves a well-formed sentence with a matching checksum makes a new,
    # valid sentence (a receiver could send it): out of scope for "bad time".
    assume(checksum_valid_bodies(stream) <= VALID_BODIES)
    fixes = feed_chunked(dec, stream, cuts)
    check_invariants(dec, fixes)
    # Bad time never passes: every trusted time is one the input actually stated.
    trusted = [f for f in fixes if f.utc is not None]
    assert all(f.utc in SOURCE_EPOCHS for f in trusted), [(f.sentence, f.utc) for f in trusted]
    # A valid sentence after any garbage is still decoded.
    tail = dec.feed(b"\r\n" + VALID[0], 2 * 10**9)
    assert tail and tail[-1].sentence == "RMC"


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(VALID), st.integers(-3600, 3600)), max_size=30))
def test_shuffled_epochs_and_arrival_times_never_raise(items):
    dec = NmeaDecoder()
    fixes = []
    for line, mono_s in items:
        fixes += dec.feed(line, (mono_s + 10_000) * 10**9)
    check_invariants(dec, fixes)
    assert all(f.utc in SOURCE_EPOCHS for f in fixes if f.utc is not None)


def test_captures_decode_with_all_talkers_and_midnight():
    dec = NmeaDecoder(TimePolicy(confirm_epochs=2))
    fixes = []
    data = (CAPTURES / "mixed_talkers_midnight.nmea").read_bytes()
    for k, burst in enumerate(split_bursts(data)):
        fixes += dec.feed(burst, (100 + k) * 10**9)
    check_invariants(dec, fixes)
    timed = [f for f in fixes if f.utc is not None]
    assert {f.talker for f in timed} >= {"GN", "GL", "GA", "BD", "GB"}
    assert timed[-1].utc == dt.datetime(2026, 11, 21, 0, 0, 4, tzinfo=UTC)
    assert all(f.position[0] < 0 for f in timed)


def test_reader_survives_long_random_stream_through_pty():
    """The real reader on a pty: 256 KiB of random bytes, then still decoding."""
    master, slave = os.openpty()
    tty.setraw(slave)
    fixes = []
    reader = GpsReader(os.ttyname(slave), policy=TimePolicy(confirm_epochs=1))
    stop = threading.Event()
    th = threading.Thread(target=reader.run, args=(fixes.append, stop), daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 10
        while not reader.port_state.connected:
            assert time.monotonic() < deadline, "port did not open"
            time.sleep(0.01)
        junk = os.urandom(256 * 1024)
        for i in range(0, len(junk), 4096):
            os.write(master, junk[i:i + 4096])
        os.write(master, b"\r\n" + VALID[0])
        while not any(f.sentence == "RMC" and f.utc is not None for f in fixes):
            assert th.is_alive(), "reader loop died"
            assert time.monotonic() < deadline + 20, f"no fix after junk: {reader.stats.snapshot()}"
            time.sleep(0.02)
        assert reader.stats.rejected[nt.INTERNAL_ERROR] == 0
        assert reader.stats.noise_bytes > 0 and reader.disconnects == 0
    finally:
        stop.set()
        th.join(5)
        os.close(master)
        os.close(slave)
    assert not th.is_alive()
