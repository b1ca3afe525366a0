"""Time quality from a REAL chronyd (D1/D2): GPS via the SOCK refclock, NTP, RTC, UNSYNCED.

Every chronyd here runs with ``-x`` (never touches the machine's clock), its
own config/pidfile/driftfile and a command socket in a private directory,
and is killed at the end of its test (see tests/chronyd_fixture.py).
"""
from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chronyd_fixture import CHRONYC, Chronyd, free_udp_port, require_chronyd, wait_for  # noqa: E402

from common.clock import SystemWallClock, TimeQuality  # noqa: E402
from firmware.timesync import TimeSyncService  # noqa: E402
from hw.chrony import ChronyQuality, Source, Tracking, classify, parse_sources, parse_tracking  # noqa: E402
from hw.chrony_sock import SockRefclock  # noqa: E402
from hw.gps import GpsReader  # noqa: E402
from hw.nmea_time import TimePolicy  # noqa: E402
from sim.gps import Phase, SimulatedGps  # noqa: E402

SELECT_DEADLINE_S = 60

# Lines as printed by chronyc 4.3 -c (captured from the runs these tests make).
TRACKING_GPS = ("47505300,GPS,1,1795394233.249186625,0.010000000,-0.010000000,0.010000000,"
                "0.000,0.000,0.000,0.200000003,0.000003313,0.0,Normal\n")
TRACKING_NEVER = ("00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,0.000,0.000,"
                  "0.000,1.000000000,1.000000000,0.0,Not synchronised\n")
# Every field different, the system offset negative: a swapped column or a missing abs()
# changes the bound. Columns as documented for `chronyc -c tracking`: ref ID, ref name,
# stratum, ref time, system time offset, last offset, RMS offset, frequency, residual
# frequency, skew, root delay, root dispersion, update interval, leap status.
TRACKING_DISTINCT = ("47505300,GPS,1,1795394233.249186625,-0.004000000,0.300000000,0.700000000,"
                     "1.500,0.250,0.125,0.050000000,0.002000000,16.0,Normal\n")
SOURCES_GPS = "#,*,GPS,0,0,21,2,0.000000000,-0.010000000,0.100000016\n"
SOURCES_LOST = "#,?,GPS,0,0,0,14,0.000000000,-0.010000000,0.100000016\n"
SOURCES_NTP = ("#,?,GPS,0,0,0,-,0.0,0.0,0.0\n"
               "^,*,127.0.0.1,9,-4,377,0,0.000001,0.000001,0.000020\n")


# -------------------------------------------------------------- pure parsing

def test_tracking_and_sources_parse():
    t = parse_tracking(TRACKING_GPS)
    assert (t.ref_name, t.stratum, t.leap) == ("GPS", 1, "Normal")
    assert t.error_bound == pytest.approx(0.01 + 0.000003313 + 0.1, rel=1e-6)
    # chronyc(1), "tracking": clock error <= |system time offset| + root dispersion
    # + root delay / 2; worked by hand from the line's columns, not from the parser.
    d = parse_tracking(TRACKING_DISTINCT)
    assert d.error_bound == pytest.approx(0.004 + 0.002 + 0.050 / 2, rel=1e-9)
    s = parse_sources(SOURCES_GPS)
    assert s == [Source("#", "*", "GPS", 0, 0o21)]
    with pytest.raises(ValueError):
        parse_tracking("garbage")
    with pytest.raises(ValueError):
        parse_sources("#,*,GPS")


def test_classification_rules():
    gps = classify(parse_tracking(TRACKING_GPS), parse_sources(SOURCES_GPS))
    assert gps.quality is TimeQuality.GPS and gps.error_s == pytest.approx(0.110003, rel=1e-4)
    ntp = classify(parse_tracking(TRACKING_GPS), parse_sources(SOURCES_NTP))
    assert ntp.quality is TimeQuality.NTP
    lost = classify(parse_tracking(TRACKING_GPS), parse_sources(SOURCES_LOST))
    assert lost.quality is TimeQuality.RTC and lost.last_sync_wall == pytest.approx(1795394233.25)
    never = classify(parse_tracking(TRACKING_NEVER), [])
    assert never.quality is TimeQuality.UNSYNCED and never.error_s is None
    # chronyd restarted after a sync this process saw: still RTC, not UNSYNCED
    again = classify(parse_tracking(TRACKING_NEVER), [], previous_sync_wall=1795394000.0)
    assert again.quality is TimeQuality.RTC and again.last_sync_wall == 1795394000.0
    local = Tracking("7F7F0101", "LOCAL", 10, 1795394300.0, 0.0, 0.0, 0.001, "Normal")
    assert classify(local, []).quality is TimeQuality.RTC
    other = classify(parse_tracking(TRACKING_GPS),
                     [Source("#", "*", "PHC0", 0, 0o377)])
    assert other.quality is TimeQuality.NTP


# ------------------------------------------------------------ no chronyd (c)

def test_no_chronyd_gives_unsynced_without_raising(tmp_path, caplog):
    if not os.path.exists(CHRONYC):
        pytest.skip("chronyc not installed")
    q = ChronyQuality(socket_path=str(tmp_path / "absent.sock"), timeout_s=2)
    assert q.quality() == (TimeQuality.UNSYNCED, None, None)
    assert q.state().problem
    assert any("cannot read time quality" in r.message for r in caplog.records)
    # usable as the recorder's quality source
    sample = SystemWallClock(q).at(time.monotonic_ns())
    assert sample.quality is TimeQuality.UNSYNCED


def test_missing_chronyc_binary_gives_unsynced(tmp_path):
    q = ChronyQuality(str(tmp_path / "no-chronyc"))
    assert q.quality()[0] is TimeQuality.UNSYNCED
    assert "no-chronyc" in q.state().problem


def test_hanging_chronyc_is_cut_off(tmp_path):
    q = ChronyQuality(["/bin/sh", "-c", "sleep 30", "chronyc"], timeout_s=0.3)
    state = q.refresh()
    assert state.quality is TimeQuality.UNSYNCED and "timed out" in state.problem


# ------------------------------------------------------------- real chronyd

def _counting_chronyc(tmp_path: Path) -> tuple[list[str], Path]:
    log = tmp_path / "calls"
    script = tmp_path / "chronyc-wrapper"
    script.write_text(f'#!/bin/sh\necho x >> "{log}"\nexec "{CHRONYC}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return [str(script)], log


def test_answers_are_cached_and_refreshed_in_background(tmp_path):
    require_chronyd()
    cmd, calls = _counting_chronyc(tmp_path)
    with Chronyd("") as c:
        q = ChronyQuality(cmd, c.cmd_socket, cache_s=1.0)
        assert q.quality()[0] is TimeQuality.UNSYNCED   # running, never synced
        first = len(calls.read_text().split())
        assert first == 2                              # tracking + sources
        for _ in range(50):
            q.quality()
        assert len(calls.read_text().split()) == first  # served from the cache
        time.sleep(1.1)
        q.quality()                                     # stale: refresh starts behind
        wait_for(lambda: len(calls.read_text().split()) >= first + 2, 10,
                 lambda: "no background refresh")


def test_gps_feed_selected_by_chronyd_then_lost_gives_rtc():
    """(a) simulated NMEA -> pty -> reader -> SOCK -> chronyd selects GPS; then the
    receiver goes quiet and the quality degrades to RTC with seconds since sync."""
    require_chronyd()
    conf = "refclock SOCK {dir}/gps.sock refid GPS poll 0 delay 0.2 offset 0.05\n"
    with Chronyd(conf, "gps") as c, \
            SimulatedGps([Phase("cold", 2), Phase("fix", 600)], latency_s=0.05) as sim:
        reader = GpsReader(sim.path, policy=TimePolicy(confirm_epochs=2))
        svc = TimeSyncService(reader, SockRefclock(c.gps_socket))
        svc.start()
        try:
            q = ChronyQuality(socket_path=c.cmd_socket, cache_s=0)
            wait_for(lambda: q.refresh().quality is TimeQuality.GPS, SELECT_DEADLINE_S,
                     lambda: f"{c.report()}\nsent={svc.samples_sent} "
                             f"stats={reader.stats.snapshot()}")
            state = q.refresh()
            assert state.quality is TimeQuality.GPS and q.quality()[2] is None
            # chrony's bound: at least delay/2 (0.1 s); right after selection its
            # skew estimate is still wide, so no upper bound is asserted here.
            assert state.error_s >= 0.1
            t = state.tracking      # chronyc(1): |system offset| + root dispersion + delay/2
            assert state.error_s == pytest.approx(
                abs(t.system_offset) + t.root_dispersion + t.root_delay / 2, rel=1e-9)
            assert t.root_delay >= 0.2 - 1e-6      # the refclock's configured delay 0.2
            assert svc.position_text() == "31.2304N 121.4737E"
            # The receiver stops talking (cable cut): chronyd loses the source.
            sim.close()
            wait_for(lambda: q.refresh().quality is TimeQuality.RTC, SELECT_DEADLINE_S,
                     c.report)
            quality, error, since = q.quality()
            assert quality is TimeQuality.RTC and since > 0 and error is not None
        finally:
            svc.stop()
        assert svc.samples_sent > 0


def test_ntp_server_on_loopback_gives_ntp_when_gps_absent():
    """(b) a second chronyd serves NTP on 127.0.0.1:<free port>; the client has the
    GPS refclock configured but nothing feeds it, so it must report NTP."""
    require_chronyd()
    port = free_udp_port()
    server_conf = "local stratum 8\nallow 127.0.0.1\n"
    client_conf = ("refclock SOCK {dir}/gps.sock refid GPS poll 0 delay 0.2\n"
                   f"server 127.0.0.1 port {port} iburst minpoll -4 maxpoll -4\n")
    with Chronyd(server_conf, "ntp-server", ntp_port=port), Chronyd(client_conf, "client") as c:
        q = ChronyQuality(socket_path=c.cmd_socket, cache_s=0)
        wait_for(lambda: q.refresh().quality is TimeQuality.NTP, SELECT_DEADLINE_S, c.report)
        quality, error, since = q.quality()
        assert quality is TimeQuality.NTP and error is not None and since is None
        assert q.state().selected.name == "127.0.0.1"


def test_chronyd_dying_after_sync_keeps_rtc_not_exception():
    require_chronyd()
    port = free_udp_port()
    server = Chronyd("local stratum 8\nallow 127.0.0.1\n", "ntp-server", ntp_port=port).start()
    client = Chronyd(f"server 127.0.0.1 port {port} iburst minpoll -4 maxpoll -4\n", "client")
    try:
        client.start()
        q = ChronyQuality(socket_path=client.cmd_socket, cache_s=0, timeout_s=2)
        wait_for(lambda: q.refresh().quality is TimeQuality.NTP, SELECT_DEADLINE_S, client.report)
        client.stop()
        state = q.refresh()
        assert state.quality is TimeQuality.RTC and state.problem
        assert q.quality()[2] is not None
    finally:
        client.stop()
        server.stop()


def test_fixture_kills_chronyd():
    require_chronyd()
    c = Chronyd("").start()
    pid = c.proc.pid
    c.stop()
    assert c.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not os.path.exists(c.cmd_socket)
