"""Benchmark: our recorder vs. bare ffmpeg with the same libx264/AAC settings, in one run.

Both run as child processes as fast as they can; CPU seconds and peak RSS
come from the kernel's accounting of each child (os.wait4). Ours records the
simulated camera and microphone; ffmpeg encodes lavfi test sources into
``-f segment`` MPEG-TS. A second, in-process run of ours splits the main
thread's CPU time into encoder calls and everything else (the Python overhead).

    .venv/bin/python bench/bench_pipeline.py [--seconds 20] [--sizes 1920x1080,1280x720]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recorder.encode import AudioSettings, VideoSettings, x264_params  # noqa: E402


def run_child(cmd: list[str], cwd: Path | None = None) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {err}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024}


def ours(width: int, height: int, seconds: float, out: Path, sealing: bool = True) -> dict:
    cfg = out / "bench.toml"
    out.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"[video]\nwidth = {width}\nheight = {height}\n")
    cmd = [sys.executable, "-m", "firmware", "record", "--sim", "--fast", "--duration", str(seconds),
           "--config", str(cfg), "--out", str(out / "ev")]
    if not sealing:
        cmd.append("--no-seal")
    return run_child(cmd, cwd=REPO)


def ffmpeg(width: int, height: int, seconds: float, out: Path) -> dict:
    v, a = VideoSettings(width, height), AudioSettings()
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={v.fps}",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={a.sample_rate}",
           "-t", str(seconds), "-pix_fmt", "yuv420p",
           "-c:v", "libx264", "-preset", v.preset, "-b:v", f"{v.bitrate_kbps}k", "-g", str(v.gop),
           "-x264-params", x264_params(v),
           "-c:a", "aac", "-b:a", f"{a.bitrate_kbps}k", "-ac", "1",
           "-f", "segment", "-segment_time", "10", "-segment_format", "mpegts",
           str(out / "%05d.ts")]
    return run_child(cmd)


def overhead(width: int, height: int, seconds: float, out: Path) -> dict:
    """Main-thread CPU per frame outside the encoders, measured in-process."""
    from recorder import encode
    from recorder.clock import SimulatedWallClock
    from recorder.pipeline import Pipeline, PipelineSettings
    from sim.camera import SimCamera
    from sim.clock import SimTime
    from sim.microphone import SimMicrophone

    spent = {"encoder": 0.0, "camera": 0.0}

    def timed(fn, key):
        def wrapper(*a, **kw):
            t = time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += time.thread_time() - t
        return wrapper

    for cls in (encode.H264Encoder, encode.AacEncoder):
        cls.encode = timed(cls.encode, "encoder")
        cls.flush = timed(cls.flush, "encoder")
    SimCamera._render = timed(SimCamera._render, "camera")
    t = SimTime(realtime=False)
    p = Pipeline(PipelineSettings(video=VideoSettings(width, height)), SimCamera(width, height, 30, t),
                 SimMicrophone(time_source=t), t, SimulatedWallClock(time.time_ns(), t.now_ns()), out)
    start = time.thread_time()
    results = p.run(seconds)
    main = time.thread_time() - start
    frames = sum(r.stats.frames for r in results)
    rest = main - spent["encoder"]
    return {"frames": frames, "overhead_ms": 1000 * (rest - spent["camera"]) / frames,
            "camera_ms": 1000 * spent["camera"] / frames,
            "encoder_main_ms": 1000 * spent["encoder"] / frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--sizes", default="1920x1080,1280x720")
    ap.add_argument("--sealing", action="store_true", help="also run ours with sealing off")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        print(f"{args.seconds:g} s of 30 fps video + 48 kHz audio per run; cpu = user+sys seconds")
        for size in args.sizes.split(","):
            w, h = (int(x) for x in size.split("x"))
            f = ffmpeg(w, h, args.seconds, tmp / f"ff-{size}")
            o = ours(w, h, args.seconds, tmp / f"ours-{size}")
            frames = args.seconds * 30
            print(f"\n{size}:")
            for name, r in (("ffmpeg", f), ("ours", o)):
                print(f"  {name:7s} {frames / r['wall']:7.1f} fps  {r['cpu'] / args.seconds:6.3f} "
                      f"cpu-s per recorded s  peak RSS {r['rss_mb']:6.1f} MB")
            print(f"  ratio ours/ffmpeg CPU: {o['cpu'] / f['cpu']:.3f}   wall: {o['wall'] / f['wall']:.3f}")
            if args.sealing:
                n = ours(w, h, args.seconds, tmp / f"noseal-{size}", sealing=False)
                print(f"  sealing off: {n['cpu'] / args.seconds:6.3f} cpu-s per s; ratio sealing "
                      f"on/off {o['cpu'] / n['cpu']:.3f}; ours(no seal)/ffmpeg {n['cpu'] / f['cpu']:.3f}")
            ov = overhead(w, h, args.seconds, tmp / f"ov-{size}")
            print(f"  main thread per frame: {ov['overhead_ms']:.2f} ms Python overhead (stamp, "
                  f"timeline, muxing), {ov['camera_ms']:.2f} ms simulated camera, "
                  f"{ov['encoder_main_ms']:.2f} ms inside encoder calls")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
