"""Benchmark: what encryption at rest costs the recorder, in one run (docs/encryption.md).

1. CPU seconds of ``bodycam record --sim --fast`` at 1080p30 with encryption on and off
   (the same child process as bench_pipeline.py, runs alternated, median of ``--repeats``),
   the ratio on/off (target <= 1.03) and the storage overhead of the chunk padding.
2. ChaCha20-Poly1305 throughput on 64 KiB age chunks, one core (``cryptography``/OpenSSL),
   and the whole encrypting writer (TS tally + plaintext and ciphertext SHA-256 + AEAD).
3. What that means at the recording bitrate: the share of one core the writer needs here,
   and projected for a Raspberry Pi 4 and a Pi Zero 2 W. The projection is *not* measured:
   it divides this machine's measured throughput by an assumed per-core slowdown (stated in
   the output); only figures marked "measured" come from this run.

    .venv/bin/python bench/bench_encryption.py [--seconds 10] [--repeats 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_pipeline import run_child  # noqa: E402
from recorder import age  # noqa: E402

# Assumed single-core slowdown of ChaCha20-Poly1305 + SHA-256 relative to an x86-64 core with
# AVX2 (OpenSSL's NEON code paths on the Arm cores; no ARMv8 crypto extensions used for
# ChaCha20). Assumptions for the projection, to be replaced by a measurement on the device.
PROJECTION = {"Raspberry Pi 4 (Cortex-A72, 1.5 GHz)": 5.0,
              "Raspberry Pi Zero 2 W (Cortex-A53, 1.0 GHz)": 12.0}


def record(out: Path, seconds: float, recipient: str | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "bench.toml"
    text = "[video]\nwidth = 1920\nheight = 1080\nfps = 30\n[storage]\nreserve_mb = 0\n"
    if recipient:
        (out / "recipients.txt").write_text(recipient + "\n")
        text += f'[encryption]\nmode = "required"\nrecipients_file = "{out / "recipients.txt"}"\n'
    else:
        text += '[encryption]\nmode = "off"\n'
    cfg.write_text(text)
    res = run_child([sys.executable, "-m", "firmware", "record", "--sim", "--fast", "--duration",
                     str(seconds), "--config", str(cfg), "--out", str(out / "ev"), "--key-dir",
                     str(out / "key"), "--provision"], cwd=REPO)
    segs = list((out / "ev" / "recordings").rglob("*.ts"))
    res["bytes"] = sum(p.stat().st_size for p in segs)
    head = segs[0].read_bytes()[:len(age.INTRO)] if segs else b""
    res["encrypted"] = head == age.INTRO
    return res


def aead_mb_s(seconds: float = 2.0) -> float:
    file_key = os.urandom(16)
    aead = age.payload_key(file_key, os.urandom(16))
    chunk = os.urandom(age.CHUNK)
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds and n < 200_000:
        aead.encrypt(age.chunk_nonce(n, False), chunk, None)
        n += 1
    return n * age.CHUNK / (time.process_time() - t0) / 1e6


def writer_mb_s(seconds: float = 2.0) -> float:
    """The whole EncryptingFile path, on TS-like data written in the muxer's 32 KiB pieces."""
    from recorder.encrypt import EncryptingFile
    recipient = age.Identity.generate().recipient
    piece = (b"\x47\x01\x00\x10" + os.urandom(184)) * (32 * 1024 // 188)
    with tempfile.TemporaryDirectory() as d:
        total, t0, k = 0, time.process_time(), 0
        while time.process_time() - t0 < seconds and k < 1000:
            f = EncryptingFile(Path(d) / f"s{k}.ts.part", [recipient])
            for _ in range(64):           # ~2 MB per segment, a checkpoint every 16 pieces
                f.write(piece)
                total += len(piece)
                if _ % 16 == 15:
                    f.checkpoint()
            f.finish()
            f.close_synced()
            f.discard_index()
            os.unlink(Path(d) / f"s{k}.ts.part")
            k += 1
        return total / (time.process_time() - t0) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of 1080p30 per recording run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bitrate-kbps", type=int, default=4064, help="video + audio bitrate for the projection")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    recipient = age.Identity.generate().recipient
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="bench-enc-") as tmp:
        for k in range(max(1, min(args.repeats, 10))):
            for mode in ("off", "on") if k % 2 == 0 else ("on", "off"):
                r = record(Path(tmp) / f"{mode}{k}", args.seconds, recipient if mode == "on" else None)
                assert r["encrypted"] == (mode == "on"), "encryption did not switch as configured"
                runs[mode].append(r)
    cpu = {m: statistics.median(r["cpu"] for r in rs) for m, rs in runs.items()}
    size = {m: statistics.median(r["bytes"] for r in rs) for m, rs in runs.items()}
    aead, writer = aead_mb_s(), writer_mb_s()
    need = args.bitrate_kbps * 1000 / 8 / 1e6
    out = {
        "measured": {
            "recording_1080p30_s": args.seconds, "repeats": args.repeats,
            "cpu_s_off": round(cpu["off"], 2), "cpu_s_on": round(cpu["on"], 2),
            "cpu_ratio_on_off": round(cpu["on"] / cpu["off"], 4),
            "cpu_s_all_off": [round(r["cpu"], 2) for r in runs["off"]],
            "cpu_s_all_on": [round(r["cpu"], 2) for r in runs["on"]],
            "storage_ratio_on_off": round(size["on"] / size["off"], 4),
            "chacha20poly1305_mb_s_per_core": round(aead, 1),
            "encrypting_writer_mb_s_per_core": round(writer, 1),
            "core_share_here_at_bitrate_pct": round(100 * need / writer, 3),
        },
        "projected": {name: {"assumed_slowdown": f,
                             "writer_mb_s_per_core": round(writer / f, 1),
                             "core_share_at_bitrate_pct": round(100 * need * f / writer, 2)}
                      for name, f in PROJECTION.items()},
        "bitrate_kbps": args.bitrate_kbps,
        "cpu": subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                              capture_output=True, text=True).stdout.strip(),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    mz = out["measured"]
    print(f"CPU: {out['cpu']}")
    print(f"measured: 1080p30 x {args.seconds:g} s, median of {args.repeats}: CPU {mz['cpu_s_off']} s off, "
          f"{mz['cpu_s_on']} s on, ratio {mz['cpu_ratio_on_off']} (target <= 1.03); "
          f"storage x{mz['storage_ratio_on_off']}")
    print(f"measured: ChaCha20-Poly1305 {mz['chacha20poly1305_mb_s_per_core']} MB/s per core; whole writer "
          f"{mz['encrypting_writer_mb_s_per_core']} MB/s; at {args.bitrate_kbps} kb/s it needs "
          f"{mz['core_share_here_at_bitrate_pct']} % of one core here")
    for name, p in out["projected"].items():
        print(f"projected (assumed {p['assumed_slowdown']}x slower per core, not measured): {name}: "
              f"writer ~{p['writer_mb_s_per_core']} MB/s, {p['core_share_at_bitrate_pct']} % of one core")


if __name__ == "__main__":
    main()
