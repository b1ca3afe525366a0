"""Seal latency: from segment close (after rename) to a sealed, fsynced journal record.

Writes N segment-sized files (default 60 x 5 MB, about a 10 s segment at 4 Mbit/s)
the way the pipeline does (NAME.ts.part, hashed while written, fsync is left to
the sealer, rename), then times Sealer.segment_closed for each, with and without
the re-hash. Reports p50/p99 in ms and as a fraction of the segment duration.

With ``--pipeline MINUTES`` it instead records that many minutes on the simulator
(virtual clock, 640x360 at the default 4 Mbit/s, so segments have their real size)
with sealing on, and reports the pipeline's own figure: from the moment a segment
is closed by the muxer to its file being fsynced, renamed, sealed and journaled.

    .venv/bin/python bench/bench_seal.py [--count 60] [--mb 5] [--dir /var/tmp]
    .venv/bin/python bench/bench_seal.py --pipeline 10
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from common.clock import SystemWallClock, TimeQuality, TimeSample
from recorder.identity import provision
from recorder.journal import Journal
from recorder.seal import Sealer
from recorder.segment_info import SegmentInfo
from recorder.store import EvidenceStore

SEGMENT_SECONDS = 10.0


def write_segment(directory: Path, index: int, size: int) -> SegmentInfo:
    name = f"bench_{index:05d}.ts"
    packet_count = size // 188
    h = hashlib.sha256()
    with open(directory / (name + ".part"), "wb") as f:
        block = bytearray(os.urandom(188 * 1000))
        for k in range(0, 188 * 1000, 188):
            block[k] = 0x47
        written = 0
        while written < packet_count:
            n = min(1000, packet_count - written)
            chunk = bytes(block[:188 * n])
            f.write(chunk)
            h.update(chunk)
            written += n
    os.rename(directory / (name + ".part"), directory / name)
    t = TimeSample(0, time.time_ns(), TimeQuality.NTP, 0.001)
    return SegmentInfo(path=directory / name, recording_id="bench", index=index,
                       sha256=h.hexdigest(), size=packet_count * 188, time_base=90000,
                       first_pts=index * 900000, last_pts=index * 900000 + 896400,
                       frame_duration=3600, video_frames=250, first_sample=index * 480000,
                       audio_samples=480000, wall_start=t, wall_end=t)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(base: Path, count: int, size: int, rehash: bool) -> list[float]:
    signer = provision(base / f"key-{rehash}")
    journal = Journal.open(base / f"ev-{rehash}", signer, SystemWallClock())
    store = EvidenceStore(base / f"ev-{rehash}", journal)
    sealer = Sealer(store, rehash=rehash)
    directory = store.recording_dir("bench")
    latencies = []
    for i in range(count):
        info = write_segment(directory, i, size)
        t0 = time.perf_counter()
        sealer.segment_closed(info)
        latencies.append(time.perf_counter() - t0)
    journal.close()
    return latencies


def run_pipeline(base: Path, minutes: float) -> list[float]:
    from common.clock import TimeQuality
    from firmware import config, hardware
    from firmware.evidence import open_evidence
    from recorder.encode import VideoSettings
    from recorder.pipeline import Pipeline, PipelineSettings

    cfg = config.defaults()
    cfg["video"].update(width=640, height=360, fps=30)
    d = hardware.simulated(cfg, realtime=False, wall_start_ns=time.time_ns(),
                           time_quality=TimeQuality.UNSYNCED)
    t, wall = d.timebase, d.wall_clock
    ev = open_evidence(base / "evidence", base / "key", wall, t.now_ns, provision=True)
    settings = PipelineSettings(video=VideoSettings(640, 360))
    p = Pipeline(settings, d.camera, d.microphone, t, wall,
                 base / "evidence", sink=ev.sealer, on_event=ev.record)
    recordings = []
    start = p._start  # keep each recording, to read its segmenter's figures afterwards
    p._start = lambda *a, **kw: recordings.append(start(*a, **kw)) or recordings[-1]
    p.run(minutes * 60)
    ev.close()
    return [x for rec in recordings for x in rec.segmenter.seal_latencies]


def report(label: str, lat: list[float]) -> None:
    p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
    print(f"{label}  n={len(lat)}  p50={p50 * 1e3:7.1f} ms  p99={p99 * 1e3:7.1f} ms  "
          f"max={max(lat) * 1e3:7.1f} ms  mean={statistics.mean(lat) * 1e3:7.1f} ms  "
          f"p99/segment={p99 / SEGMENT_SECONDS:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--pipeline", type=float, metavar="MINUTES")
    args = ap.parse_args()
    if args.pipeline:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            report(f"pipeline {args.pipeline:g} min, close->sealed", run_pipeline(Path(tmp), args.pipeline))
        return
    size = int(args.mb * 1024 * 1024)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for rehash in (True, False):
            lat = run(Path(tmp), args.count, size, rehash)
            p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
            print(f"rehash={str(rehash):5}  n={len(lat)}  size={size / 1e6:.1f} MB  "
                  f"p50={p50 * 1e3:7.1f} ms  p99={p99 * 1e3:7.1f} ms  max={max(lat) * 1e3:7.1f} ms  "
                  f"mean={statistics.mean(lat) * 1e3:7.1f} ms  "
                  f"p99/segment={p99 / SEGMENT_SECONDS:.4f}")


if __name__ == "__main__":
    main()
