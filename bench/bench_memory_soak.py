"""Memory over a long recording: peak RSS and its slope, the way a whole shift would see it.

Records on the simulator's virtual clock (as fast as the machine allows), with the same
process set-up as ``bodycam record`` (pinned malloc threshold), sampling RSS every 20 s of
media. A recorder whose RSS keeps climbing would run out of memory in a long shift, so the
figure to watch is the slope after warm-up (MB per hour of recording).

    .venv/bin/python bench/bench_memory_soak.py [--minutes 10] [--size 1920x1080] [--no-pin]
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def least_squares_slope(points: list[tuple[float, float]]) -> float:
    """MB per second fitted through all samples (endpoints alone are at the mercy of noise)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--no-pin", action="store_true", help="leave glibc's malloc as it is")
    args = ap.parse_args()
    from firmware.memory import disable_transparent_huge_pages, pin_mmap_threshold
    if not args.no_pin:
        pin_mmap_threshold()
        disable_transparent_huge_pages()
    from common.clock import TimeQuality
    from firmware import config, hardware
    from recorder.encode import VideoSettings
    from recorder.pipeline import Pipeline, PipelineSettings

    w, h = (int(x) for x in args.size.split("x"))
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        cfg = config.defaults()
        cfg["video"].update(width=w, height=h, fps=30)
        d = hardware.simulated(cfg, realtime=False, wall_start_ns=time.time_ns(),
                               time_quality=TimeQuality.UNSYNCED)
        t = d.timebase
        p = Pipeline(PipelineSettings(video=VideoSettings(w, h)), d.camera, d.microphone, t,
                     d.wall_clock, Path(tmp))
        start = t.now_ns()
        next_sample = [0.0]

        def storage_low():  # the pipeline asks once per second of media: sample RSS there
            media_s = (t.now_ns() - start) / 1e9
            if media_s >= next_sample[0]:
                samples.append((media_s, rss_mb()))
                next_sample[0] += 20
            return False

        p.storage_low = storage_low
        p.run(args.minutes * 60)
    warm = [s for s in samples if s[0] >= 60] or samples
    slope = least_squares_slope(warm) * 3600
    for media_s, mb in samples:
        print(f"{media_s:7.0f} s  {mb:6.1f} MB")
    print(f"{args.size}, {args.minutes:g} min, malloc threshold "
          f"{'as is' if args.no_pin else 'pinned'}: peak {max(m for _, m in samples):.1f} MB, "
          f"least-squares slope after 60 s {slope:+.1f} MB per hour of recording")


if __name__ == "__main__":
    main()
