"""Peak memory of the pre-event buffer: ready (encoding into RAM) for longer than the buffer span.

Runs the driven pipeline on the simulator's virtual clock at 1080p in a child process per
setting and reports the child's peak RSS (ru_maxrss) and the buffer's peak encoded bytes,
with prebuffer 0 s as the baseline. Usage:

    python bench/bench_prebuffer.py [--seconds 120] [--fps 10] [--ready 130]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def child(seconds: float, fps: int, ready_s: float, width: int, height: int) -> dict:
    from common.clock import TimeQuality
    from firmware import config, hardware
    from recorder.encode import VideoSettings
    from recorder.pipeline import Pipeline, PipelineSettings

    cfg = config.defaults()
    cfg["video"].update(width=width, height=height, fps=fps)
    cfg["audio"].update(sample_rate=48000)
    dev = hardware.simulated(cfg, realtime=False, start_ns=10**9,
                             wall_start_ns=1_795_392_000 * 10**9, time_quality=TimeQuality.UNSYNCED)
    t = dev.timebase
    s = PipelineSettings(video=VideoSettings(width, height, fps), prebuffer_s=seconds)
    with tempfile.TemporaryDirectory() as d:
        p = Pipeline(s, dev.camera, dev.microphone, t, dev.wall_clock, Path(d))
        p.open()
        end = t.now_ns() + int(ready_s * 1e9)
        while t.now_ns() < end:
            p.step()
        written = sum(1 for _ in Path(d).rglob("*"))
        peak = p.capture.peak_bytes
        span = p.capture.buffer.span_frames / fps
        p.close()
    return {"prebuffer_s": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "buffer_peak_mb": peak / 2**20, "buffer_span_s": span, "files_written": written,
            "encoded_mbit_s": peak * 8 / max(span, 1e-9) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--ready", type=float, default=None, help="seconds in ready (default: span + 10)")
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    w, h = (int(x) for x in a.size.split("x"))
    ready = a.ready or a.seconds + 10
    if a.child:
        print(json.dumps(child(a.seconds, a.fps, ready, w, h)))
        return
    rows = []
    for seconds in (0.0, a.seconds):
        out = subprocess.run([sys.executable, __file__, "--child", "--seconds", str(seconds), "--fps",
                              str(a.fps), "--ready", str(ready), "--size", a.size],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in rows:
        print(f"prebuffer {r['prebuffer_s']:5.0f} s at {a.size}@{a.fps}: peak RSS {r['peak_rss_mb']:7.1f} MB, "
              f"buffer peak {r['buffer_peak_mb']:6.1f} MB over {r['buffer_span_s']:.0f} s "
              f"({r['encoded_mbit_s']:.2f} Mbit/s encoded), files written while ready: {r['files_written']}")
    print(f"pre-event buffer cost: {rows[1]['peak_rss_mb'] - rows[0]['peak_rss_mb']:.1f} MB RSS; "
          f"bound at the configured bitrate: 4 Mbit/s x {a.seconds:.0f} s = {4e6 * a.seconds / 8 / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
