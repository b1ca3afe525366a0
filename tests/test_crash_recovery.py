"""Power-loss recovery: SIGKILL the recorder at 20+ points, restart, and nothing sealed is lost.

Nine kills land on named crash points (mid-seal, mid-journal-write, between
rename and seal, ...) through ``recorder.crashpoints``; twelve more land at
seeded random moments of a real-time recording, where the media lost per
crash is measured against what the camera had delivered.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recorder.journal import iter_records
from recorder.verify import verify_directory
from tests.media import decoded_counts, ffmpeg_errors

REPO = Path(__file__).resolve().parents[1]
SEGMENT_S, FPS = 2, 30
CRASHPOINTS = [
    "journal-write:1",           # the very first (boot) record torn in half
    "segment-before-rename:1",   # closed and fsynced, still .part
    "segment-before-seal:1",     # renamed, never sealed
    "seal-before-record:1",      # read-only and fsynced, record not written
    "journal-write:4",           # a segment record torn in half
    "journal-fsync:3",           # record written, not yet fsynced
    "segment-before-rename:3",
    "seal-before-record:2",
    "journal-write:7",
]


def _cmd(root: Path, fast: bool, duration: float) -> list[str]:
    cmd = [sys.executable, "-m", "firmware", "record", "--sim", "--duration", str(duration),
           "--config", str(root / "c.toml"), "--out", str(root / "evidence"),
           "--key-dir", str(root / "key"), "--provision"]
    return cmd + (["--fast"] if fast else [])


def _sealed(root: Path) -> dict[str, str]:
    journal = root / "evidence" / "journal.log"
    if not journal.exists():
        return {}
    out = {}
    for rec in iter_records(journal):
        if rec.type == "segment":
            out[rec.payload["path"]] = rec.payload["sha256"]
    return out


def _recordings(root: Path) -> set[str]:
    d = root / "evidence" / "recordings"
    return {p.name for p in d.iterdir()} if d.exists() else set()


def _wait_for_new_part(root: Path, before: set[str], proc, timeout=30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rid in _recordings(root) - before:
            if list((root / "evidence" / "recordings" / rid).glob("*.part")):
                return rid
        if proc.poll() is not None:
            raise AssertionError(f"recorder exited early: {proc.stderr.read()}")
        time.sleep(0.01)
    raise AssertionError("recording never started")


def _check_sealed_kept(root: Path, sealed_before: dict[str, str]) -> None:
    now = _sealed(root)
    for path, digest in sealed_before.items():
        assert now.get(path) == digest, f"sealed segment {path} lost or changed"
        assert (root / "evidence" / path).exists(), f"sealed segment {path} missing"


@pytest.mark.slow
def test_sigkill_at_many_points_loses_nothing_sealed(tmp_path):
    root = tmp_path
    (root / "c.toml").write_text(f"[video]\nwidth = 320\nheight = 240\nbitrate_kbps = 600\n"
                                 f"[segment]\nseconds = {SEGMENT_S}\n[storage]\nreserve_mb = 0\n")
    kills = 0
    # 1) named crash points, fast virtual clock
    for point in CRASHPOINTS:
        sealed_before = _sealed(root)
        env = dict(os.environ, BODYCAM_CRASHPOINT=point)
        r = subprocess.run(_cmd(root, True, 20), env=env, capture_output=True, text=True, cwd=REPO)
        assert r.returncode == -signal.SIGKILL, f"{point} not reached: {r.returncode} {r.stderr}"
        kills += 1
        _check_sealed_kept(root, sealed_before)
    # 2) random moments of a real-time recording; measure what each crash costs
    rng = random.Random(947)
    losses = []
    for _ in range(12):
        sealed_before = _sealed(root)
        before = _recordings(root)
        proc = subprocess.Popen(_cmd(root, False, 30), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, cwd=REPO)
        rid = _wait_for_new_part(root, before, proc)
        started = time.monotonic()
        time.sleep(rng.uniform(0.3, 3.5))
        proc.send_signal(signal.SIGKILL)
        captured = time.monotonic() - started
        proc.wait()
        kills += 1
        losses.append((rid, captured))
        _check_sealed_kept(root, sealed_before)
    # 3) a clean run salvages the last crash; then the whole history must verify
    r = subprocess.run(_cmd(root, True, 2), capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert kills >= 20
    pub = (root / "key" / "device-key.pub.pem").read_bytes()
    result = verify_directory(root / "evidence", pub)
    assert result.ok, result.failure
    assert not list((root / "evidence").rglob("*.part"))
    records = list(iter_records(root / "evidence" / "journal.log"))
    segs = [x.payload for x in records if x.type == "segment"]
    recovered = [s for s in segs if s["recovered"]]
    assert recovered, "the crashes left segments that had to be salvaged"
    for s in recovered:
        path = root / "evidence" / s["path"]
        assert ffmpeg_errors(path) == "", path
        assert decoded_counts(path)[0] == s["video_frames"]
    boots = [x.payload["previous_session"]["ended"] for x in records if x.type == "boot"]
    assert boots.count("abnormally") == kills        # every kill is visible at the next boot
    assert boots[0] in ("none", "abnormally") and "cleanly" not in boots
    interruptions = [x.payload for x in records if x.type == "interruption"]
    assert sum(1 for i in interruptions if i.get("cause") == "power-loss") >= 12
    # media lost per real-time crash: what the camera delivered minus what survived
    lost = []
    for rid, captured in losses:
        frames = sum(s["video_frames"] for s in segs if s["recording_id"] == rid)
        lost.append(captured - frames / FPS)
    summary = {"crashes": kills, "realtime_crashes": len(lost),
               "loss_mean_s": round(sum(lost) / len(lost), 3), "loss_max_s": round(max(lost), 3)}
    print("crash-loss", json.dumps(summary))
    assert max(lost) <= SEGMENT_S, summary   # never more than one segment
