"""GPS time path benchmark: NMEA accuracy through chronyd, time to GPS quality, reader CPU.

Run as root on a machine with Debian's chrony (chronyd runs with -x: the
machine's clock is never touched):

    .venv/bin/python bench/bench_gps.py [--accuracy-s 40] [--latency 0.05]

Truth: the simulator writes each epoch ``latency`` after the true UTC second
of the system clock, so a perfect time path reports offset 0 once chronyd's
refclock ``offset`` is calibrated to that latency.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import threading
import time
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from chronyd_fixture import Chronyd  # noqa: E402

from common.clock import TimeQuality  # noqa: E402
from firmware.timesync import TimeSyncService  # noqa: E402
from hw.chrony import ChronyQuality  # noqa: E402
from hw.chrony_sock import SockRefclock  # noqa: E402
from hw.gps import GpsReader  # noqa: E402
from hw.nmea_time import NmeaDecoder, TimePolicy  # noqa: E402
from sim.gps import Phase, SimulatedGps, epoch_lines, sentence  # noqa: E402

UTC = dt.timezone.utc


class RecordingRefclock(SockRefclock):
    """SockRefclock that also keeps what it sent, for the accuracy figures."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.offsets: list[float] = []

    def send(self, system_time_ns: int, offset_s: float, **kw) -> bool:
        self.offsets.append(offset_s)
        return super().send(system_time_ns, offset_s, **kw)


def _stats_ms(values: list[float]) -> str:
    if not values:
        return "no data"
    ms = [v * 1e3 for v in values]
    spread = statistics.pstdev(ms) if len(ms) > 1 else 0.0
    return (f"mean {statistics.fmean(ms):+.3f} ms, sd {spread:.3f} ms, "
            f"min {min(ms):+.3f}, max {max(ms):+.3f} (n={len(ms)})")


def accuracy(duration_s: float, latency_s: float, poll: int) -> None:
    conf = (f"refclock SOCK {{dir}}/gps.sock refid GPS poll {poll} delay 0.2 offset {latency_s}\n")
    with Chronyd(conf, "bench") as c:
        sim = SimulatedGps([Phase("fix", duration_s + 120)], latency_s=latency_s)
        reader = GpsReader(sim.path, policy=TimePolicy(confirm_epochs=3))
        ref = RecordingRefclock(c.gps_socket)
        svc = TimeSyncService(reader, ref)
        svc.start()
        while not reader.port_state.connected:
            time.sleep(0.01)
        sim.start()
        q = ChronyQuality(socket_path=c.cmd_socket, cache_s=0)
        start = time.monotonic()
        while q.refresh().quality is not TimeQuality.GPS:
            if time.monotonic() - start > 90:
                print("chronyd never selected GPS:\n" + c.report())
                return
            time.sleep(0.5)
        chrony_offsets = []
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            state = q.refresh()
            if state.tracking is not None:
                chrony_offsets.append(state.tracking.system_offset)
            time.sleep(1.0)
        svc.stop()
        sim.close()
        residual = [o + latency_s for o in ref.offsets]
        print(f"  NMEA samples sent to chronyd (offset + calibrated latency, truth 0): "
              f"{_stats_ms(residual)}")
        print(f"  chronyd's system-clock offset vs truth after selection (poll {poll}): "
              f"{_stats_ms(chrony_offsets)}")
        print(f"  chronyd's error bound at the end: {q.refresh().error_s * 1e3:.1f} ms")


def time_to_gps(cold_s: float, latency_s: float, poll: int, runs: int) -> None:
    conf = f"refclock SOCK {{dir}}/gps.sock refid GPS poll {poll} delay 0.2 offset {latency_s}\n"
    from_fix = []
    from_start = []
    for _ in range(runs):
        with Chronyd(conf, "bench") as c:
            sim = SimulatedGps([Phase("cold", cold_s), Phase("fix", 300)], latency_s=latency_s)
            reader = GpsReader(sim.path)
            svc = TimeSyncService(reader, SockRefclock(c.gps_socket))
            svc.start()
            while not reader.port_state.connected:
                time.sleep(0.01)
            sim.start()
            q = ChronyQuality(socket_path=c.cmd_socket, cache_s=0)
            while q.refresh().quality is not TimeQuality.GPS:
                time.sleep(0.1)
            now = time.monotonic_ns()
            from_start.append((now - sim.started_mono_ns) / 1e9)
            from_fix.append((now - sim.phase_started_mono_ns[1]) / 1e9)
            svc.stop()
            sim.close()
    print(f"  cold start ({cold_s:.0f} s without fix) to quality GPS, refclock poll {poll}, "
          f"{runs} runs: from power-on {statistics.fmean(from_start):.1f} s "
          f"[{min(from_start):.1f}-{max(from_start):.1f}], from first fix "
          f"{statistics.fmean(from_fix):.1f} s [{min(from_fix):.1f}-{max(from_fix):.1f}]")


def cpu_cost(epochs: int) -> None:
    t0 = dt.datetime(2026, 5, 17, 8, 0, 0, tzinfo=UTC)
    # A chatty receiver: RMC+GGA+ZDA plus GSA, 3 GSV and VTG per epoch (8 sentences).
    extra = (sentence("GNGSA,A,3,05,12,13,02,,,,,,,,,1.81,0.90,1.57")
             + sentence("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00") * 3
             + sentence("GNVTG,,T,,M,0.12,N,0.22,K,A"))
    bursts = [b"".join(line for line, _ in epoch_lines("fix", t0 + dt.timedelta(seconds=k)))
              + extra for k in range(epochs)]
    per_epoch = 8
    dec = NmeaDecoder()
    c0 = time.process_time()
    for k, burst in enumerate(bursts):
        dec.feed(burst, k * 1_000_000_000)
    decode_cpu = time.process_time() - c0
    per_sentence_us = decode_cpu / (epochs * per_epoch) * 1e6
    print(f"  decoder only: {per_sentence_us:.1f} us CPU per sentence; at 1 Hz with "
          f"{per_epoch} sentences/s: {per_sentence_us * per_epoch / 1e4:.4f} % of one core")

    master, slave = os.openpty()
    tty.setraw(slave)
    # Bursts arrive faster than real time here, so the time-line check is relaxed.
    reader = GpsReader(os.ttyname(slave), policy=TimePolicy(jump_tolerance_s=1e9))
    stop = threading.Event()
    seen = []
    th = threading.Thread(target=reader.run, args=(seen.append, stop), daemon=True)
    th.start()
    while not reader.port_state.connected:
        time.sleep(0.01)
    c0 = time.process_time()
    for burst in bursts:
        os.write(master, burst)
        time.sleep(0.0005)     # a burst per read, as at 1 Hz
    while reader.stats.frames < epochs * per_epoch:
        time.sleep(0.01)
    total_cpu = time.process_time() - c0
    stop.set()
    th.join(5)
    os.close(master)
    os.close(slave)
    per_epoch_us = total_cpu / epochs * 1e6
    print(f"  reader on a pty (reads + decode + writer): {per_epoch_us:.0f} us CPU per "
          f"1 s epoch = {per_epoch_us / 1e4:.3f} % of one core at 1 Hz "
          f"(ratio to decoder alone {total_cpu / decode_cpu:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accuracy-s", type=float, default=40.0)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--cold-s", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3000)
    ap.add_argument("--skip-chrony", action="store_true")
    args = ap.parse_args()
    print("GPS time path benchmark")
    print("CPU:")
    cpu_cost(args.epochs)
    if args.skip_chrony:
        return
    print("Accuracy of NMEA-only time through chronyd (-x):")
    for poll in (0, 2):
        accuracy(args.accuracy_s, args.latency, poll)
    print("Time to first GPS quality:")
    for poll in (0, 2):
        time_to_gps(args.cold_s, args.latency, poll, args.runs)


if __name__ == "__main__":
    main()
