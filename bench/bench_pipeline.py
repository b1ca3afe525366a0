"""Benchmark: our recorder vs. bare ffmpeg with the same libx264/AAC settings, in one run.

Both run as child processes as fast as they can; CPU seconds and peak RSS
come from the kernel's accounting of each child, taken by GNU time so that
this script's own memory (which a forked child inherits in ru_maxrss) does
not leak into the figures; ours is also sampled every 50 ms for how much of its
RSS is its own (anonymous) and how much is pages of shared libraries. Ours records the
simulated camera and microphone; ffmpeg encodes lavfi test sources into
``-f segment`` MPEG-TS. A second, in-process run of ours splits the main
thread's CPU time into encoder calls and everything else (the Python overhead).
Both runs of ours go through ``Pipeline.run``, a thin driver over ``Pipeline.step``:
the same per-frame loop the device service runs.

    .venv/bin/python bench/bench_pipeline.py [--seconds 20] [--sizes 1920x1080,1280x720]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recorder.encode import AudioSettings, VideoSettings, x264_params  # noqa: E402


def timed(cmd: list[str], report: Path) -> list[str]:
    return ["/usr/bin/time", "-o", str(report), "-f", "%e %U %S %M", *cmd]


def read_time(report: Path) -> dict:
    wall, user, sys_, rss_kb = report.read_text().split()[-4:]
    return {"wall": float(wall), "cpu": float(user) + float(sys_), "rss_mb": int(rss_kb) / 1024}


def rss_split(pid: int) -> tuple[float, float, float] | None:
    """(VmRSS, RssAnon, RssFile) of a live process in MB, from /proc/PID/status: anonymous
    memory is the process's own; file-backed is pages of mapped files (shared libraries),
    clean and shared with the page cache."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = dict(re.findall(r"^(VmRSS|RssAnon|RssFile):\s+(\d+) kB", text, re.M))
    if "VmRSS" not in kb:
        return None
    return int(kb["VmRSS"]) / 1024, int(kb.get("RssAnon", 0)) / 1024, int(kb.get("RssFile", 0)) / 1024


def only_child(pid: int) -> int | None:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def run_child(cmd: list[str], cwd: Path | None = None, sample: bool = False) -> dict:
    """Run ``cmd`` under GNU time. ``sample``: also read the command's RSS split every 50 ms
    (``rss_split``) and keep the largest sample as ``split`` (VmRSS, anonymous, file-backed)."""
    report = Path(tempfile.mktemp(prefix="bench-time-"))
    with tempfile.TemporaryFile(mode="w+") as err:
        p = subprocess.Popen(timed(cmd, report), cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        child, split = None, None
        while p.poll() is None:
            if sample:
                child = child or only_child(p.pid)      # the command is GNU time's only child
                now = rss_split(child) if child is not None else None
                if now is not None and (split is None or now[0] > split[0]):
                    split = now
            time.sleep(0.05)
        if p.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{cmd[0]} failed: {err.read()}")
    result = read_time(report)
    report.unlink()
    if split is not None:
        result["split"] = split
    return result


def ours(width: int, height: int, seconds: float, out: Path, sealing: bool = True) -> dict:
    cfg = out / "bench.toml"
    out.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"[video]\nwidth = {width}\nheight = {height}\n[storage]\nreserve_mb = 0\n")
    cmd = [sys.executable, "-m", "firmware", "record", "--sim", "--fast", "--duration", str(seconds),
           "--config", str(cfg), "--out", str(out / "ev"), "--key-dir", str(out / "key"),
           "--provision"]
    if not sealing:
        cmd.append("--no-seal")
    return run_child(cmd, cwd=REPO, sample=True)


def ffmpeg_args(v: VideoSettings, a: AudioSettings, seconds: float, out: Path) -> list[str]:
    return ["-t", str(seconds), "-pix_fmt", "yuv420p",
            "-c:v", "libx264", "-preset", v.preset, "-b:v", f"{v.bitrate_kbps}k", "-g", str(v.gop),
            "-x264-params", x264_params(v),
            "-c:a", "aac", "-b:a", f"{a.bitrate_kbps}k", "-ac", "1",
            "-f", "segment", "-segment_time", "10", "-segment_format", "mpegts",
            str(out / "%05d.ts")]


def ffmpeg_same_input(width: int, height: int, seconds: float, out: Path) -> dict:
    """ffmpeg encoding our simulated camera's own frames, piped from a generator process;
    the generator's CPU is counted too, as ours renders the same frames itself."""
    v, a = VideoSettings(width, height), AudioSettings()
    out.mkdir(parents=True, exist_ok=True)
    gen_report, enc_report = out / "gen.time", out / "enc.time"
    gen = subprocess.Popen(timed([sys.executable, str(Path(__file__).with_name("sim_frames.py")),
                                  f"{width}x{height}", str(int(seconds * v.fps))], gen_report),
                           stdout=subprocess.PIPE, cwd=REPO)
    enc = subprocess.Popen(timed(["ffmpeg", "-nostdin", "-v", "error", "-y",
                                  "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
                                  "-r", str(v.fps), "-i", "pipe:0",
                                  "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={a.sample_rate}",
                                  *ffmpeg_args(v, a, seconds, out)], enc_report), stdin=gen.stdout)
    gen.stdout.close()
    if gen.wait() or enc.wait():
        raise SystemExit("same-input ffmpeg run failed")
    g, e = read_time(gen_report), read_time(enc_report)
    return {"wall": e["wall"], "cpu": g["cpu"] + e["cpu"], "rss_mb": e["rss_mb"]}


def ffmpeg(width: int, height: int, seconds: float, out: Path) -> dict:
    v, a = VideoSettings(width, height), AudioSettings()
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={v.fps}",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={a.sample_rate}",
           *ffmpeg_args(v, a, seconds, out)]
    return run_child(cmd)


def overhead(width: int, height: int, seconds: float, out: Path) -> dict:
    """Main-thread CPU per frame outside the encoders, measured in-process (``Pipeline.run``,
    which drives the service's own ``step`` loop)."""
    from common.clock import TimeQuality
    from firmware import config, hardware
    from recorder import encode
    from recorder.pipeline import Pipeline, PipelineSettings
    from sim.camera import SimCamera

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
    cfg = config.defaults()
    cfg["video"].update(width=width, height=height, fps=30)
    d = hardware.simulated(cfg, realtime=False, wall_start_ns=time.time_ns(),
                           time_quality=TimeQuality.UNSYNCED)
    p = Pipeline(PipelineSettings(video=VideoSettings(width, height)), d.camera, d.microphone,
                 d.timebase, d.wall_clock, out)
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
    ap.add_argument("--overhead", metavar="WxH", help=argparse.SUPPRESS)  # child: in-process split
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.overhead:
        w, h = (int(x) for x in args.overhead.split("x"))
        print(json.dumps(overhead(w, h, args.seconds, args.out)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        print(f"{args.seconds:g} s of 30 fps video + 48 kHz audio per run; cpu = user+sys seconds")
        for size in args.sizes.split(","):
            w, h = (int(x) for x in size.split("x"))
            f = ffmpeg(w, h, args.seconds, tmp / f"ff-{size}")
            s = ffmpeg_same_input(w, h, args.seconds, tmp / f"ffsame-{size}")
            o = ours(w, h, args.seconds, tmp / f"ours-{size}")
            frames = args.seconds * 30
            print(f"\n{size}:")
            for name, r in (("ffmpeg lavfi testsrc2", f), ("ffmpeg on our frames", s),
                            ("ours (sealed)", o)):
                print(f"  {name:22s} {frames / r['wall']:7.1f} fps  {r['cpu'] / args.seconds:6.3f} "
                      f"cpu-s per recorded s  peak RSS {r['rss_mb']:6.1f} MB")
            if "split" in o:
                total, anon, files = o["split"]
                print(f"  ours, largest RSS sampled every 50 ms: {total:.1f} MB = {anon:.1f} anonymous "
                      f"+ {files:.1f} file-backed (pages of shared libraries, shared with the page cache)")
            print(f"  ratio ours/ffmpeg CPU: {o['cpu'] / f['cpu']:.3f} (lavfi source), "
                  f"{o['cpu'] / s['cpu']:.3f} (same input)")
            if args.sealing:
                n = ours(w, h, args.seconds, tmp / f"noseal-{size}", sealing=False)
                print(f"  sealing off: {n['cpu'] / args.seconds:6.3f} cpu-s per s; ratio sealing "
                      f"on/off {o['cpu'] / n['cpu']:.3f}; ours(no seal)/ffmpeg {n['cpu'] / f['cpu']:.3f}")
            ov = json.loads(subprocess.run(
                [sys.executable, __file__, "--overhead", size, "--seconds", str(args.seconds),
                 "--out", str(tmp / f"ov-{size}")], capture_output=True, text=True, check=True,
                cwd=REPO).stdout)
            print(f"  main thread per frame: {ov['overhead_ms']:.2f} ms Python overhead (stamp, "
                  f"timeline, muxing), {ov['camera_ms']:.2f} ms simulated camera, "
                  f"{ov['encoder_main_ms']:.2f} ms inside encoder calls")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
