"""GPS reader: real ptys and pySerial, every kind of junk a receiver sends (D1/D2).

Each junk case is counted under its named reason and never stops the reader;
time is only trusted when every rule passes.
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import tty
from pathlib import Path

import pytest

from firmware.timesync import TimeSyncService, WallStepDetector
from hw import nmea_time as nt
from hw.chrony_sock import SOCK_MAGIC, SockRefclock, pack_sample, unpack_sample
from hw.gps import GpsReader, format_position
from hw.nmea_time import NmeaDecoder, TimePolicy
from sim.gps import WEEK_ROLLOVER, CaptureReplay, Phase, SimulatedGps, epoch_lines, gga, gns, rmc, sentence, zda

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 5, 17, 8, 30, 0, tzinfo=UTC)
POS = (31.2304, 121.4737)
CAPTURES = Path(__file__).resolve().parent.parent / "sim" / "nmea_captures"


def wait_until(pred, timeout_s=10.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


class PtyGps:
    """A pty whose slave a real GpsReader reads in a thread; the test writes the master."""

    def __init__(self, policy: TimePolicy | None = None, path: str | None = None) -> None:
        if path is None:
            self.master, slave = os.openpty()
            tty.setraw(slave)
            self.slave = slave
            path = os.ttyname(slave)
        self.path = path
        self.fixes: list = []
        self.states: list = []
        self.reader = GpsReader(path, 9600, policy=policy, retry_interval_s=0.05,
                                max_retry_interval_s=0.1, on_port_state=self.states.append)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.reader.run, args=(self.fixes.append, self.stop),
                                       daemon=True)
        self.thread.start()
        wait_until(lambda: self.reader.port_state.connected, what="port open")

    def write(self, data: bytes) -> int:
        before = self.reader.stats.frames
        os.write(self.master, data)
        return before

    def wait_frames(self, n: int) -> None:
        wait_until(lambda: self.reader.stats.frames >= n, what=f"{n} frames "
                   f"(have {self.reader.stats.frames}: {self.reader.stats.snapshot()})")

    def wait_fixes(self, n: int) -> None:
        """Wait for ``n`` fixes handed to the callback.

        The decoder counts a frame before the reader thread calls back with its fix,
        so a frame count says nothing about ``fixes``: wait on the fixes themselves.
        Once the fix of the last sentence written is delivered, every earlier sentence
        has been fully decoded and counted (one reader thread, in order).
        """
        wait_until(lambda: len(self.fixes) >= n, what=f"{n} fixes "
                   f"(have {len(self.fixes)}: {self.reader.stats.snapshot()})")

    def wait_rejected(self, reason: str, n: int) -> None:
        """Wait until ``n`` sentences were refused for ``reason`` (counted as the last step)."""
        wait_until(lambda: self.reader.stats.rejected[reason] >= n,
                   what=f"{n} x {reason} (have {self.reader.stats.snapshot()})")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive(), "reader loop did not stop"
        fds, self.master, self.slave = (self.master, self.slave), -1, -1
        for fd in fds:  # once only: a reused fd number may belong to someone else
            if fd >= 0:
                os.close(fd)


@pytest.fixture
def pty_gps():
    made = []

    def make(**kw) -> PtyGps:
        p = PtyGps(**kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def fix_lines(t: dt.datetime, talker: str = "GN") -> bytes:
    return (rmc(t, POS, valid=True, talker=talker) + gga(t, POS, valid=True, talker=talker)
            + zda(t, talker=talker))


ONE_EPOCH = TimePolicy(confirm_epochs=1)


# ------------------------------------------------------------------ good input

@pytest.mark.parametrize("talker", ["GN", "GP", "GL", "GA", "BD"])
def test_fix_through_pty_has_time_position_quality(pty_gps, talker):
    g = pty_gps(policy=ONE_EPOCH)
    before = time.monotonic_ns()
    g.write(fix_lines(T0, talker))
    g.wait_fixes(3)
    after = time.monotonic_ns()
    rmc_fix, gga_fix, zda_fix = g.fixes
    assert [f.sentence for f in g.fixes] == ["RMC", "GGA", "ZDA"]
    assert all(f.talker == talker for f in g.fixes)
    assert all(f.utc == T0 for f in g.fixes)
    assert rmc_fix.new_epoch and not gga_fix.new_epoch and not zda_fix.new_epoch
    assert rmc_fix.position == pytest.approx(POS, abs=1e-6)
    assert gga_fix.satellites == 9 and gga_fix.hdop == pytest.approx(0.9)
    assert gga_fix.fix_quality == 1 and gga_fix.has_fix
    assert before <= rmc_fix.received_mono_ns <= after
    assert g.reader.stats.rejected == {}


def test_gns_fix_through_pty_has_trusted_time_position_and_satellites(pty_gps):
    """GNGNS (the multi-constellation GGA) + GNRMC, as real receivers send, default policy."""
    g = pty_gps()
    epochs = [T0 + dt.timedelta(seconds=k) for k in range(4)]
    g.write(b"".join(rmc(t, POS, valid=True) + gns(t, POS, mode="AAAN") for t in epochs))
    g.wait_fixes(8)
    gns_fixes = [f for f in g.fixes if f.sentence == "GNS"]
    assert len(gns_fixes) == 4 and all(f.talker == "GN" for f in gns_fixes)
    assert g.reader.stats.parsed["GNS"] == 4 and g.reader.stats.rejected == {}
    for f in gns_fixes:
        assert f.has_fix and f.fix_quality == 1
        assert f.position == pytest.approx(POS, abs=1e-6)
        assert f.satellites == 12 and f.hdop == pytest.approx(0.8)
    # trusted once the RMC dates have confirmed the time line (3 epochs); the date is the line's
    assert [f.utc for f in gns_fixes[2:]] == epochs[2:]
    assert all(f.time_rejected is None for f in gns_fixes[2:])


def test_receiver_reporting_its_fix_only_in_gns_gives_trusted_time(pty_gps):
    """No RMC, no GGA: GNS says there is a fix, so ZDA's date is trusted, and then GNS's time."""
    g = pty_gps(policy=ONE_EPOCH)
    t1 = T0 + dt.timedelta(seconds=1)
    g.write(gns(T0, POS, mode="DN") + zda(T0) + gns(t1, POS, mode="DN") + zda(t1))
    g.wait_fixes(4)
    assert [f.sentence for f in g.fixes] == ["GNS", "ZDA", "GNS", "ZDA"]
    assert [f.utc for f in g.fixes] == [None, T0, t1, t1]
    assert g.fixes[0].time_rejected == nt.NO_DATE and g.fixes[0].fix_quality == 2
    assert g.reader.stats.rejected == {}


def test_gns_without_a_fix_or_with_a_bad_mode_gives_no_time(pty_gps):
    g = pty_gps(policy=ONE_EPOCH)
    t = [T0 + dt.timedelta(seconds=k) for k in range(6)]
    g.write(rmc(t[0], POS, valid=True)                # a trusted time line, so a date is known
            + gns(t[1], None, mode="NNN")              # no fix in any constellation
            + gns(t[2], POS, mode="ENN")               # dead reckoning is not a fix
            + gns(t[3], POS, mode="MN") + gns(t[4], POS, mode="SS"))   # manual, simulator
    g.wait_fixes(5)
    no_fix = g.fixes[1:]
    assert [f.sentence for f in no_fix] == ["GNS"] * 4
    assert all(f.utc is None and f.position is None and not f.has_fix for f in no_fix)
    assert [f.fix_quality for f in no_fix] == [0, -6, -7, -8]
    assert g.reader.stats.time_rejected[nt.NO_FIX] == 4
    before = g.write(gns(t[5], POS, mode="AX")          # not a mode character
                     + gns(t[5], POS, mode="")          # no mode at all
                     + gns(t[5], POS, mode="AAAAAAAAA")  # more constellations than exist
                     + gns(t[5], None, mode="A")        # a fix without a position
                     + sentence("GNGNS,083005.00,3113.82400,N,12128.42200,E,AN,-1,0.8,1,1,,,S"))
    g.wait_frames(before + 5)
    g.wait_rejected(nt.BAD_FIELD, 5)    # the last sentence is refused: wait for its count
    assert len(g.fixes) == 5
    assert g.reader.stats.rejected[nt.BAD_FIELD] == 5
    assert nt.INTERNAL_ERROR not in g.reader.stats.rejected


def test_southern_western_position_text():
    assert format_position((-33.8688, -151.2093)) == "33.8688S 151.2093W"
    assert format_position((31.2304, 121.4737)) == "31.2304N 121.4737E"
    assert format_position(None) == "no fix"


# ------------------------------------------------------------------ junk input

def test_partial_line_at_start_is_noise_then_fixes_flow(pty_gps):
    g = pty_gps(policy=ONE_EPOCH)
    g.write(b"0.9,545.4,M,46.9,M,,*47\r\n" + fix_lines(T0))
    g.wait_fixes(3)
    assert g.reader.stats.rejected[nt.NOISE] == 1
    assert [f.utc for f in g.fixes] == [T0, T0, T0]


def test_checksum_failures_are_counted_by_reason(pty_gps):
    g = pty_gps(policy=ONE_EPOCH)
    good = rmc(T0, POS, valid=True)
    bad_sum = good[:-4] + (b"00" if good[-4:-2] != b"00" else b"11") + b"\r\n"
    no_sum = good[:-5] + b"\r\n"
    bad_hex = good[:-4] + b"ZZ\r\n"
    g.write(bad_sum + no_sum + bad_hex + fix_lines(T0))
    g.wait_frames(6)
    g.wait_fixes(3)
    rej = g.reader.stats.rejected
    assert rej[nt.BAD_CHECKSUM] == 2 and rej[nt.NO_CHECKSUM] == 1
    assert len(g.fixes) == 3


def test_binary_noise_non_ascii_truncated_and_too_long(pty_gps):
    g = pty_gps(policy=ONE_EPOCH)
    ubx = bytes([0xB5, 0x62, 0x01, 0x07, 0x5C, 0x00]) + bytes(range(0x80, 0xDC))  # UBX-ish
    non_ascii = b"$GPRMC,\xff\xfe,A*00\r\n"
    truncated = rmc(T0, POS, valid=True)[:30]           # cut by the next '$'
    too_long = b"$GPGGA," + b"1," * 100 + b"*00\r\n"
    g.write(ubx + non_ascii + truncated + too_long + fix_lines(T0))
    g.wait_frames(6)
    g.wait_fixes(3)
    rej = g.reader.stats.rejected
    assert rej[nt.NOISE] >= 1 and rej[nt.NON_ASCII] == 1
    assert rej[nt.TRUNCATED] == 1 and rej[nt.TOO_LONG] == 1
    assert [f.utc for f in g.fixes] == [T0, T0, T0]


def test_dollar_inside_binary_noise_does_not_eat_next_sentence(pty_gps):
    g = pty_gps(policy=ONE_EPOCH)
    g.write(b"\x00\x24\x01\x02" + fix_lines(T0))
    g.wait_frames(4)
    g.wait_fixes(3)
    assert g.reader.stats.rejected[nt.NON_ASCII] + g.reader.stats.rejected[nt.TRUNCATED] == 1
    assert len(g.fixes) == 3


def test_sentence_split_across_reads_keeps_first_byte_time(pty_gps):
    """The arrival time is the read that brought the '$', not the one that ended the line.

    No wall-clock bound: the reader's own read instants are recorded, the second half
    is only written once the first has been decoded, and the fix must carry exactly
    the first read's instant.
    """
    g = pty_gps(policy=ONE_EPOCH)
    line = rmc(T0, POS, valid=True)
    reads: list[tuple[bytes, int]] = []
    feed = g.reader.decoder.feed

    def recording_feed(data, mono_ns, char_time_ns=0):
        out = feed(data, mono_ns, char_time_ns)
        reads.append((bytes(data), mono_ns))      # after decoding: the bytes are consumed
        return out

    g.reader.decoder.feed = recording_feed         # the reader looks it up on every read
    t_first = time.monotonic_ns()
    os.write(g.master, line[:20])
    wait_until(lambda: sum(len(d) for d, _ in reads) == 20, what="first half decoded")
    t_second = time.monotonic_ns()
    os.write(g.master, line[20:])
    g.wait_fixes(1)
    fix = g.fixes[0]
    assert fix.utc == T0
    assert reads[0][0].startswith(b"$")
    assert fix.received_mono_ns == reads[0][1]
    assert t_first <= fix.received_mono_ns < t_second
    assert reads[-1][1] >= t_second > fix.received_mono_ns   # the line ended in a later read


def test_no_fix_sentences_give_status_but_no_time(pty_gps):
    g = pty_gps(policy=ONE_EPOCH)
    g.write(rmc(T0, None, valid=False) + gga(T0, None, valid=False) + rmc(None, None, valid=False))
    g.wait_fixes(3)
    assert len(g.fixes) == 3
    assert all(f.utc is None and f.position is None and not f.has_fix for f in g.fixes)
    assert g.reader.stats.time_rejected[nt.NO_FIX] == 2
    assert g.reader.stats.time_rejected[nt.NO_TIME] == 1


@pytest.mark.parametrize("date", [dt.date(1980, 1, 6), dt.date(1999, 8, 22), dt.date(2080, 1, 6),
                                  dt.date(2003, 1, 1)])
def test_receiver_default_dates_are_rejected(pty_gps, date):
    g = pty_gps(policy=ONE_EPOCH)
    t = dt.datetime.combine(date, dt.time(0, 0, 5), tzinfo=UTC)
    g.write(rmc(t, POS, valid=True) + zda(t))
    g.wait_fixes(2)
    assert [f.time_rejected for f in g.fixes] == [nt.IMPLAUSIBLE_DATE] * 2
    assert all(f.utc is None for f in g.fixes)
    assert g.fixes[0].position is not None   # position is still usable


def test_week_rollover_corrected_by_default(pty_gps):
    g = pty_gps(policy=ONE_EPOCH)
    early = T0.date() - WEEK_ROLLOVER
    g.write(rmc(T0, POS, valid=True, date=early) + zda(T0, date=early))
    g.wait_fixes(2)
    assert [f.utc for f in g.fixes] == [T0, T0]
    assert g.fixes[0].corrections == (nt.WEEK_ROLLOVER,)
    assert g.reader.stats.corrected[nt.WEEK_ROLLOVER] == 2


def test_week_rollover_rejected_when_policy_says_so(pty_gps):
    g = pty_gps(policy=TimePolicy(confirm_epochs=1, wnro="reject"))
    g.write(rmc(T0, POS, valid=True, date=T0.date() - WEEK_ROLLOVER))
    g.wait_fixes(1)
    assert g.fixes[0].utc is None and g.fixes[0].time_rejected == nt.WEEK_ROLLOVER


def test_bad_policy_values_are_refused():
    with pytest.raises(ValueError):
        TimePolicy(wnro="maybe")
    with pytest.raises(ValueError):
        TimePolicy(confirm_epochs=0)


# ------------------------------------------------ time line (synthetic arrivals)

def feed_epoch(dec: NmeaDecoder, t: dt.datetime, mono_s: float, kind: str = "fix"):
    out = []
    for line, _ in epoch_lines(kind, t):
        out += dec.feed(line, int(mono_s * 1e9))
    return out


def test_new_time_line_needs_confirming_epochs():
    dec = NmeaDecoder()   # default: 3 consistent epochs
    r = [feed_epoch(dec, T0 + dt.timedelta(seconds=k), 100 + k) for k in range(4)]
    assert r[0][0].time_rejected == r[1][0].time_rejected == nt.UNCONFIRMED
    assert r[2][0].utc == T0 + dt.timedelta(seconds=2) and r[2][0].new_epoch
    assert r[3][0].utc == T0 + dt.timedelta(seconds=3)


def test_single_jumped_sentence_rejected_and_line_kept():
    dec = NmeaDecoder(TimePolicy(confirm_epochs=2))
    for k in range(3):
        feed_epoch(dec, T0 + dt.timedelta(seconds=k), 100 + k)
    bad = dec.feed(rmc(T0 + dt.timedelta(seconds=3, minutes=5), POS, valid=True), int(103e9))
    good = feed_epoch(dec, T0 + dt.timedelta(seconds=4), 104)
    assert bad[0].utc is None and bad[0].time_rejected == nt.TIME_JUMP
    assert good[0].utc == T0 + dt.timedelta(seconds=4) and good[0].corrections == ()


def test_persistent_jump_accepted_after_confirmation_and_flagged():
    dec = NmeaDecoder(TimePolicy(confirm_epochs=3))
    for k in range(4):
        feed_epoch(dec, T0 + dt.timedelta(seconds=k), 100 + k)
    jumped = [feed_epoch(dec, T0 + dt.timedelta(seconds=k + 18), 100 + k)[0] for k in range(4, 8)]
    assert [f.time_rejected for f in jumped[:2]] == [nt.TIME_JUMP, nt.TIME_JUMP]
    assert jumped[2].utc == T0 + dt.timedelta(seconds=24)
    assert nt.TIME_JUMP in jumped[2].corrections
    assert jumped[3].utc is not None and jumped[3].corrections == ()


def test_frozen_receiver_clock_is_caught_as_jump():
    dec = NmeaDecoder()   # 3 epochs to confirm: a repeated second never confirms
    for k in range(4):
        feed_epoch(dec, T0 + dt.timedelta(seconds=k), 100 + k)
    frozen = [feed_epoch(dec, T0 + dt.timedelta(seconds=4), 104 + k)[0] for k in range(6)]
    assert frozen[0].utc is not None and not any(f.new_epoch for f in frozen[1:])
    assert [f.time_rejected for f in frozen[-3:]] == [nt.TIME_JUMP] * 3


def test_gga_takes_its_date_from_the_time_line_across_midnight():
    dec = NmeaDecoder(ONE_EPOCH)
    late = dt.datetime(2026, 5, 17, 23, 59, 59, tzinfo=UTC)
    dec.feed(rmc(late, POS, valid=True), int(100e9))
    after = late + dt.timedelta(seconds=2)
    fix = dec.feed(gga(after, POS, valid=True), int(102e9))[0]
    assert fix.utc == dt.datetime(2026, 5, 18, 0, 0, 1, tzinfo=UTC)


def test_gga_without_any_date_has_no_time():
    dec = NmeaDecoder(ONE_EPOCH)
    fix = dec.feed(gga(T0, POS, valid=True), 1)[0]
    assert fix.utc is None and fix.time_rejected == nt.NO_DATE and fix.position is not None


def test_leap_second_is_skipped_not_fatal():
    dec = NmeaDecoder(ONE_EPOCH)
    fixes = dec.feed(sentence("GNRMC,235960.00,A,3113.824,N,12128.422,E,0.1,,311226,,,A"), 1)
    assert fixes[0].utc is None and fixes[0].time_rejected == nt.LEAP_SECOND


def test_zda_is_trusted_only_just_after_a_fix():
    dec = NmeaDecoder(ONE_EPOCH)
    lone = dec.feed(zda(T0), int(1e9))[0]
    assert lone.time_rejected == nt.NO_FIX
    dec.feed(rmc(T0, POS, valid=True), int(2e9))
    assert dec.feed(zda(T0 + dt.timedelta(seconds=1)), int(3e9))[0].utc is not None
    stale = dec.feed(zda(T0 + dt.timedelta(seconds=9)), int(11e9))[0]
    assert stale.time_rejected == nt.NO_FIX


def test_dead_reckoning_and_bad_fields():
    dec = NmeaDecoder(ONE_EPOCH)
    dr = dec.feed(sentence("GNGGA,083000.00,3113.82400,N,12128.42200,E,6,04,2.0,1,M,1,M,,"), 1)
    assert dr[0].utc is None and not dr[0].has_fix and dr[0].position is None
    bad_lat = sentence("GNRMC,083000.00,A,9913.824,N,12128.422,E,0.1,,170526,,,A")
    bad_time = sentence("GNRMC,0830,A,3113.824,N,12128.422,E,0.1,,170526,,,A")
    bad_date = sentence("GNRMC,083000.00,A,3113.824,N,12128.422,E,0.1,,321326,,,A")
    assert dec.feed(bad_lat + bad_time + bad_date, 2) == []
    assert dec.stats.rejected[nt.BAD_FIELD] == 3


def test_other_sentences_are_ignored_not_rejected():
    dec = NmeaDecoder(ONE_EPOCH)
    gsv = sentence("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00")
    txt = sentence("GPTXT,01,01,02,ANTSTATUS=OK")
    assert dec.feed(gsv + txt, 1) == []
    assert sum(dec.stats.ignored.values()) == 2 and dec.stats.rejected == {}


# ------------------------------------------------------------ port lifecycle

def test_unplugged_receiver_is_reported_and_reconnected(tmp_path):
    link = tmp_path / "gps"
    m1, s1 = os.openpty()
    link.symlink_to(os.ttyname(s1))
    states = []
    fixes = []
    reader = GpsReader(str(link), retry_interval_s=0.05, max_retry_interval_s=0.1,
                       policy=ONE_EPOCH, on_port_state=states.append)
    stop = threading.Event()
    th = threading.Thread(target=reader.run, args=(fixes.append, stop), daemon=True)
    th.start()
    try:
        wait_until(lambda: reader.port_state.connected, what="first open")
        os.write(m1, fix_lines(T0))
        wait_until(lambda: len(fixes) == 3, what="fixes before unplug")
        # Unplug: the pty disappears and the path goes away.
        link.unlink()
        os.close(m1)
        os.close(s1)
        wait_until(lambda: not reader.port_state.connected, what="loss reported")
        assert th.is_alive()
        assert reader.port_state.error
        # Plug back in (a new pty at the same path).
        m2, s2 = os.openpty()
        link.symlink_to(os.ttyname(s2))
        wait_until(lambda: reader.port_state.connected, what="reconnect")
        os.write(m2, fix_lines(T0 + dt.timedelta(seconds=1)))
        wait_until(lambda: len(fixes) == 6, what="fixes after reconnect")
        assert fixes[-1].utc == T0 + dt.timedelta(seconds=1)
        assert reader.opens == 2 and reader.disconnects == 1
        assert [s.connected for s in states][:3] == [True, False, True] or \
            [s.connected for s in states if s.connected][:2] == [True, True]
        os.close(m2)
        os.close(s2)
    finally:
        stop.set()
        th.join(5)
    assert not th.is_alive()


def test_missing_port_is_retried_without_raising(tmp_path):
    reader = GpsReader(str(tmp_path / "nope"), retry_interval_s=0.02, max_retry_interval_s=0.05)
    stop = threading.Event()
    th = threading.Thread(target=reader.run, args=(lambda f: None, stop), daemon=True)
    th.start()
    wait_until(lambda: reader.port_state.error is not None
               and "open failed" in reader.port_state.error, what="open failure")
    stop.set()
    th.join(5)
    assert not th.is_alive() and reader.opens == 0


def test_failing_consumer_does_not_stop_the_reader(pty_gps):
    g = pty_gps(policy=ONE_EPOCH)
    calls = []

    def boom(fix):
        calls.append(fix)
        raise RuntimeError("consumer bug")

    g.stop.set()
    g.thread.join(5)
    g.stop = threading.Event()
    g.thread = threading.Thread(target=g.reader.run, args=(boom, g.stop), daemon=True)
    g.thread.start()
    wait_until(lambda: g.reader.port_state.connected, what="reopen")  # input flushed before
    os.write(g.master, fix_lines(T0))
    wait_until(lambda: len(calls) == 3, what="all fixes delivered despite errors")


# ----------------------------------------------------------------- simulator

def test_simulator_scenario_through_pty_matches_truth():
    sim = SimulatedGps([Phase("cold", 1), Phase("fix", 3)], rate_hz=5.0, latency_s=0.02)
    fixes = []
    reader = GpsReader(sim.path, policy=TimePolicy(confirm_epochs=2))
    stop = threading.Event()
    th = threading.Thread(target=reader.run, args=(fixes.append, stop), daemon=True)
    th.start()
    wait_until(lambda: reader.port_state.connected, what="open")
    sim.start()
    try:
        wait_until(lambda: sum(1 for f in fixes if f.utc is not None) >= 6, what="timed fixes")
    finally:
        sim.close()
        stop.set()
        th.join(5)
    truth = {r.reported_utc_ns for r in sim.truth if r.kind == "fix"}
    timed = [f for f in fixes if f.utc is not None]
    for f in timed:
        ns = int(f.utc.timestamp()) * 10**9 + f.utc.microsecond * 1000
        assert ns in truth
    assert reader.stats.time_rejected[nt.NO_FIX] >= 1


def test_capture_replay_is_decoded_with_rejects_counted():
    capture = CAPTURES / "ublox_cold_start.nmea"
    fixes = []
    replay = CaptureReplay(capture, speed=float("inf"))
    try:
        reader = GpsReader(replay.path, policy=TimePolicy(confirm_epochs=1, jump_tolerance_s=1e9))
        stop = threading.Event()
        th = threading.Thread(target=reader.run, args=(fixes.append, stop), daemon=True)
        th.start()
        wait_until(lambda: reader.port_state.connected, what="open")
        replay.start()
        wait_until(lambda: replay.done.is_set(), what="replay written")
        expected = sum(1 for ln in capture.read_bytes().splitlines() if ln.startswith(b"$"))
        wait_until(lambda: reader.stats.frames >= expected, what="capture decoded")
        stop.set()
        th.join(5)
    finally:
        replay.close()
    assert any(f.utc is not None for f in fixes)
    assert reader.stats.time_rejected[nt.NO_FIX] > 0
    assert reader.stats.rejected[nt.BAD_CHECKSUM] >= 1
    assert sum(reader.stats.ignored.values()) > 0


def test_every_scenario_phase_produces_decodable_lines():
    dec = NmeaDecoder(ONE_EPOCH)
    for kind in ("cold", "fix", "tunnel", "bad_checksum", "jump", "wnro", "noise"):
        for k in range(4):
            for line, _ in epoch_lines(kind, T0 + dt.timedelta(seconds=k), phase_epoch=k,
                                       offset_s=37):
                dec.feed(line, k)
    assert dec.stats.rejected[nt.INTERNAL_ERROR] == 0
    assert dec.stats.rejected[nt.BAD_CHECKSUM] == 8
    with pytest.raises(ValueError):
        Phase("teleport", 1)


# --------------------------------------------------- chrony sample + service

def test_sock_sample_layout_matches_chrony_struct():
    data = pack_sample(1_700_000_000_123_456_789, -0.25, leap=1)
    import struct
    assert len(data) == struct.calcsize("@lldiiii")
    assert int.from_bytes(data[-4:], "little" if struct.pack("=i", 1)[0] else "big") == SOCK_MAGIC
    ts, off, pulse, leap = unpack_sample(data)
    assert ts == 1_700_000_000_123_456_000 and off == -0.25 and pulse == 0 and leap == 1
    assert len(pack_sample(0, 0.0, time_bits=64)) == 40
    with pytest.raises(ValueError):
        pack_sample(0, 0.0, leap=7)


def test_sock_refclock_sends_datagrams_and_survives_absent_chronyd(tmp_path):
    path = str(tmp_path / "gps.sock")
    ref = SockRefclock(path)
    assert ref.send(1, 0.5) is False and ref.failed == 1      # nobody listening: no raise
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    try:
        assert ref.send(2_000_000_000, 0.125) is True
        ts, off, pulse, leap = unpack_sample(rx.recv(64))
        assert (ts, off, pulse, leap) == (2_000_000_000, 0.125, 0, 0)
    finally:
        rx.close()
        ref.close()


def test_service_feeds_first_sentence_of_each_epoch_and_gives_position(tmp_path, pty_gps):
    path = str(tmp_path / "gps.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(5)
    g = pty_gps(policy=ONE_EPOCH)
    g.stop.set()
    g.thread.join(5)                    # the service runs the reader itself
    svc = TimeSyncService(g.reader, SockRefclock(path))
    svc.start()
    try:
        wait_until(lambda: g.reader.port_state.connected, what="open")  # input flushed before
        assert svc.position_text() == "no fix"
        os.write(g.master, fix_lines(T0) + fix_lines(T0 + dt.timedelta(seconds=1)))
        samples = [unpack_sample(rx.recv(64)) for _ in range(2)]
        wait_until(lambda: svc.latest_fix() is not None, what="latest fix")
        assert svc.position_text() == "31.2304N 121.4737E"
        # offset = true - system at arrival: the fixture's times are years from now
        for (system_ns, offset, _, _), t in zip(samples, (T0, T0 + dt.timedelta(seconds=1)), strict=False):
            assert system_ns + offset * 1e9 == pytest.approx(t.timestamp() * 1e9, abs=2e3)
        rx.settimeout(0.3)
        with pytest.raises(socket.timeout):
            rx.recv(64)                  # GGA/ZDA of the same epochs were not sent
        assert svc.samples_sent == 2
        os.write(g.master, rmc(T0 + dt.timedelta(seconds=2), None, valid=False))
        wait_until(lambda: svc.latest_fix() is None, what="fix lost")
        assert svc.position_text() == "no fix"
    finally:
        svc.stop()
        rx.close()


def test_old_fix_is_not_shown_as_current_position(pty_gps):
    g = pty_gps(policy=ONE_EPOCH)
    g.stop.set()
    g.thread.join(5)
    now = [time.monotonic_ns()]
    svc = TimeSyncService(g.reader, None, fix_max_age_s=10, mono_ns=lambda: now[0])
    svc._handle_fix(NmeaDecoder(ONE_EPOCH).feed(rmc(T0, POS, valid=True), now[0])[0])
    assert svc.position_text() == "31.2304N 121.4737E"
    now[0] += 11 * 10**9
    assert svc.position_text() == "no fix"


def test_wall_step_detected_with_old_and_new_time():
    wall = [1_000 * 10**9]
    mono = [5 * 10**9]
    det = WallStepDetector(0.1, wall_ns=lambda: wall[0], mono_ns=lambda: mono[0])
    mono[0] += 250_000_000
    wall[0] += 250_000_000 + 15_000_000            # a 15 ms slew in 0.25 s: not a step
    assert det.check() is None
    mono[0] += 250_000_000
    wall[0] += 250_000_000 + 3_600 * 10**9          # stepped one hour forward
    step = det.check()
    assert step is not None and step.delta_s == pytest.approx(3600)
    assert step.new_wall_ns - step.old_wall_ns == 3_600 * 10**9
    assert step.new_wall_ns == wall[0] and step.mono_ns == mono[0]
    mono[0] += 250_000_000
    wall[0] += 250_000_000 - 2 * 10**9              # and back two seconds
    assert det.check().delta_s == pytest.approx(-2)


def test_service_signals_wall_steps_to_listeners(pty_gps):
    g = pty_gps(policy=ONE_EPOCH)
    g.stop.set()
    g.thread.join(5)
    jump = [0]
    reads = [0]

    def wall_ns():
        reads[0] += 1
        return time.time_ns() + jump[0]

    svc = TimeSyncService(g.reader, None, step_poll_s=0.01, wall_ns=wall_ns)
    steps = []
    svc.on_wall_step(steps.append)
    svc.on_wall_step(lambda s: 1 / 0)               # a broken listener is logged, not fatal
    svc.start()
    try:
        # the watcher has polled the unstepped clock (one read is the detector's baseline)
        wait_until(lambda: reads[0] >= 3, what="wall clock polled")
        assert steps == []
        jump[0] = -30 * 10**9
        wait_until(lambda: steps, what="step signalled")
    finally:
        svc.stop()
    assert steps[0].delta_s == pytest.approx(-30, abs=0.05)


def test_fixes_iterator_yields_and_stops(pty_gps):
    g = pty_gps(policy=ONE_EPOCH)
    g.stop.set()
    g.thread.join(5)
    reader = GpsReader(g.path, policy=ONE_EPOCH)
    it = reader.fixes()
    first = []

    def consume():
        for fix in it:
            first.append(fix)
            break

    th = threading.Thread(target=consume, daemon=True)
    th.start()
    wait_until(lambda: reader.port_state.connected, what="open")  # input flushed before
    os.write(g.master, fix_lines(T0))
    th.join(10)
    assert not th.is_alive() and first[0].utc == T0
    it.close()                      # ends the reader thread
    wait_until(lambda: not reader.port_state.connected, what="closed")


# ------------------------------------------------------------------ settings

def test_settings_defaults_build_services_and_bad_values_are_refused(tmp_path):
    from firmware.timesync import TimeConfig, build_timesync
    from hw.chrony import ChronyQuality
    from hw.gps import GpsConfig

    gps, tcfg = GpsConfig(), TimeConfig()
    assert gps.policy() == TimePolicy()
    assert isinstance(tcfg.quality_source(), ChronyQuality)
    m, s = os.openpty()
    try:
        svc = build_timesync(GpsConfig.from_mapping({"port": os.ttyname(s)}),
                             TimeConfig.from_mapping({"refclock_socket": str(tmp_path / "g")}))
        assert svc.reader.url == os.ttyname(s) and svc.refclock.path == str(tmp_path / "g")
    finally:
        os.close(m)
        os.close(s)
    assert build_timesync(GpsConfig(enabled=False), tcfg) is None
    for bad in ({"baudrate": 1234}, {"min_date": "yesterday"}, {"week_rollover": "guess"},
                {"confirm_epochs": 0}, {"port": ""}, {"color": "red"},
                {"min_date": "2030-01-01", "max_date": "2029-01-01"}):
        with pytest.raises(ValueError):
            GpsConfig.from_mapping(bad)
    for bad in ({"quality_timeout_s": 0}, {"gps_refids": " , "}, {"chronyc": ""}, {"x": 1}):
        with pytest.raises(ValueError):
            TimeConfig.from_mapping(bad)
