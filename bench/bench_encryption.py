"""Benchmark: what encryption at rest costs the recorder, in one run (docs/encryption.md).

1. CPU seconds of ``bodycam record --sim --fast`` at 1080p30 with encryption on and off
   (the same child process as bench_pipeline.py, runs alternated, median of ``--repeats``),
   the ratio on/off (target <= 1.03), the storage ratio on/off, and the chunk padding itself:
   the encrypted segments are opened with the run's agency key and their null TS packets
   (the padding a sync point adds when the sync index lags, recorder/encrypt.py) counted.
   The same with the previous cadence ("padded": every sync point pads, one every 0.5 s),
   run in the same child with ``recorder.encrypt``'s two constants set back, for a
   before/after within one run; and a low-bitrate recording (``--low-kbps``, 320x240)
   on and off, where chunks fill more slowly than the lag bar and padding still applies.
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


def padding(ev: Path, identity: age.Identity) -> dict:
    """Null TS packets (PID 0x1FFF) in the decrypted segments: the sync points' padding (and
    one end marker per segment, not counted), against the plaintext and the stored bytes."""
    from recorder.segmenter import TS_PACKET
    null = plain = stored = segments = 0
    for p in sorted((ev / "recordings").rglob("*.ts")):
        data = p.read_bytes()
        text = age.decrypt(data, [identity])
        n = len(text) // TS_PACKET * TS_PACKET
        pids = text[1:n:TS_PACKET], text[2:n:TS_PACKET]
        null += sum(1 for hi, lo in zip(*pids, strict=True) if hi & 0x1F == 0x1F and lo == 0xFF) - 1
        plain, stored, segments = plain + len(text), stored + len(data), segments + 1
    return {"padding_bytes": null * TS_PACKET, "plaintext_bytes": plain, "stored_bytes": stored,
            "segments": segments}


PADDED = ("import runpy, recorder.encrypt as e; e.SYNC_INTERVAL_S = e.MAX_LAG_S = 0.5; "
          "runpy.run_module('firmware', run_name='__main__', alter_sys=True)")
"""The previous cadence: a sync point every 0.5 s that pads whenever any frame came after
the index's last entry (the lag margin is MAX_LAG_S - SYNC_INTERVAL_S = 0)."""


def record(out: Path, seconds: float, recipient: str | None, padded: bool = False,
           video: str = "width = 1920\nheight = 1080\n") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "bench.toml"
    text = f"[video]\n{video}fps = 30\n[storage]\nreserve_mb = 0\n"
    if recipient:
        (out / "recipients.txt").write_text(recipient + "\n")
        text += f'[encryption]\nmode = "required"\nrecipients_file = "{out / "recipients.txt"}"\n'
    else:
        text += '[encryption]\nmode = "off"\n'
    cfg.write_text(text)
    child = [sys.executable, *(["-c", PADDED] if padded else ["-m", "firmware"])]
    res = run_child([*child, "record", "--sim", "--fast", "--duration", str(seconds), "--config", str(cfg),
                     "--out", str(out / "ev"), "--key-dir", str(out / "key"), "--provision"], cwd=REPO)
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
            for _ in range(64):           # ~2 MB per segment, a sync point every 8 pieces
                f.write(piece)            # (256 KiB: 0.5 s at 4 Mbit/s; no PES here: no padding)
                total += len(piece)
                if _ % 8 == 7:
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
    ap.add_argument("--low-kbps", type=int, default=600,
                    help="video bitrate of the low-bitrate case at 320x240 (0: skip it)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from recorder.encrypt import MAX_LAG_S, SYNC_INTERVAL_S
    identity = age.Identity.generate()
    recipient = identity.recipient
    runs: dict[str, list[dict]] = {"off": [], "on": [], "padded": []}
    pad: dict[str, dict] = {}
    orders = (("off", "on", "padded"), ("padded", "on", "off"), ("on", "off", "padded"))
    with tempfile.TemporaryDirectory(prefix="bench-enc-") as tmp:
        for k in range(max(1, min(args.repeats, 10))):
            for mode in orders[k % 3]:
                r = record(Path(tmp) / f"{mode}{k}", args.seconds, recipient if mode != "off" else None,
                           padded=mode == "padded")
                assert r["encrypted"] == (mode != "off"), "encryption did not switch as configured"
                runs[mode].append(r)
                if mode != "off" and mode not in pad:
                    pad[mode] = padding(Path(tmp) / f"{mode}{k}" / "ev", identity)
        low: dict = {}
        if args.low_kbps:
            video = f"width = 320\nheight = 240\nbitrate_kbps = {args.low_kbps}\n"
            for mode in ("off", "on", "padded"):
                r = record(Path(tmp) / f"low-{mode}", args.seconds, recipient if mode != "off" else None,
                           padded=mode == "padded", video=video)
                low[mode] = r["bytes"]
                if mode != "off":
                    p = padding(Path(tmp) / f"low-{mode}" / "ev", identity)
                    low[f"padding_pct_{mode}"] = round(100 * p["padding_bytes"] / p["stored_bytes"], 2)
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
            "sync_interval_s": SYNC_INTERVAL_S, "max_lag_s": MAX_LAG_S,
            "padding_pct_of_stored": round(100 * pad["on"]["padding_bytes"] / pad["on"]["stored_bytes"], 2),
            "padding_kib_per_s": round(pad["on"]["padding_bytes"] / 1024 / args.seconds, 1),
            "padded_cadence": {
                "cpu_s": round(cpu["padded"], 2), "cpu_ratio_padded_off": round(cpu["padded"] / cpu["off"], 4),
                "storage_ratio_padded_off": round(size["padded"] / size["off"], 4),
                "padding_pct_of_stored": round(100 * pad["padded"]["padding_bytes"]
                                               / pad["padded"]["stored_bytes"], 2)},
            "low_bitrate": ({"video_kbps": args.low_kbps, "size": "320x240",
                             "storage_ratio_on_off": round(low["on"] / low["off"], 4),
                             "storage_ratio_padded_off": round(low["padded"] / low["off"], 4),
                             "padding_pct_on": low["padding_pct_on"],
                             "padding_pct_padded": low["padding_pct_padded"]} if low else None),
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
    print(f"measured: an index entry per chunk, sync points every {mz['sync_interval_s']:g} s of video and "
          f"at each keyframe, padding only when the index lags; chunk padding "
          f"{mz['padding_pct_of_stored']} % of the stored bytes ({mz['padding_kib_per_s']} KiB per second of video)")
    pc = mz["padded_cadence"]
    print(f"measured, previous cadence (every sync point pads, every 0.5 s): CPU ratio {pc['cpu_ratio_padded_off']}, "
          f"storage x{pc['storage_ratio_padded_off']}, padding {pc['padding_pct_of_stored']} % of the stored bytes")
    if mz["low_bitrate"]:
        lo = mz["low_bitrate"]
        print(f"measured, {lo['size']} at {lo['video_kbps']} kb/s: storage x{lo['storage_ratio_on_off']} "
              f"(padding {lo['padding_pct_on']} %); previous cadence x{lo['storage_ratio_padded_off']} "
              f"(padding {lo['padding_pct_padded']} %)")
    print(f"measured: ChaCha20-Poly1305 {mz['chacha20poly1305_mb_s_per_core']} MB/s per core; whole writer "
          f"{mz['encrypting_writer_mb_s_per_core']} MB/s; at {args.bitrate_kbps} kb/s it needs "
          f"{mz['core_share_here_at_bitrate_pct']} % of one core here")
    for name, p in out["projected"].items():
        print(f"projected (assumed {p['assumed_slowdown']}x slower per core, not measured): {name}: "
              f"writer ~{p['writer_mb_s_per_core']} MB/s, {p['core_share_at_bitrate_pct']} % of one core")


if __name__ == "__main__":
    main()
