"""The crash test again, with encryption on: SIGKILL ``bodycam record`` at named crash points
and at seeded random moments of a real-time recording, restart, and measure what each crash
cost. Nothing sealed is lost; every salvaged segment is an age file cut at a whole chunk,
verified without a key, opened with the agency key, and its plaintext is what was signed.

Media lost is measured in media time, not from when the test saw a part file: the camera
delivers frame i at ``t0 + i/fps`` on the system's monotonic clock, and the journaled
``recording-start`` record carries ``t0_mono_ns`` (frame 0's instant). So the frames the camera
had delivered when the recorder was dead are counted exactly from the monotonic instant taken
after it was reaped, and what survived is the salvaged segments' frame count. The bar is the
issue's: at most 1 s of media lost per kill (docs/encryption.md, "Sync cadence").
"""
import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from recorder import age
from recorder.journal import iter_records
from recorder.verify import verify_directory
from station.keys import opening
from tests.test_crash_recovery import _check_sealed_kept, _cmd, _recordings, _sealed, _wait_for_new_part
from tests.test_encryption import decoded, ffmpeg_errors, make_key, media_ts

REPO = Path(__file__).resolve().parents[1]
SEGMENT_S, FPS = 2, 30
MAX_LOSS_S = 1.0          # the bar (D13): at most 1 s of media lost by a kill
POINTS = ["segment-before-rename:1", "segment-before-seal:1", "seal-before-record:2"]


class _Keys:
    def __init__(self, ids):
        self.ids = ids

    def unwrap(self, header):
        return age.unwrap(header, self.ids)

    def recipients(self):
        return [i.recipient for i in self.ids]


@pytest.mark.slow
def test_sigkill_while_recording_encrypted_loses_at_most_a_sync_interval(tmp_path):
    root = tmp_path
    key, recipient = make_key(root / "agency")
    (root / "recipients.txt").write_text(recipient + "\n")
    (root / "c.toml").write_text(
        "[video]\nwidth = 320\nheight = 240\nbitrate_kbps = 600\n"
        f"[segment]\nseconds = {SEGMENT_S}\n[storage]\nreserve_mb = 0\n"
        f'[encryption]\nmode = "required"\nrecipients_file = "{root / "recipients.txt"}"\n')
    kills = 0
    for point in POINTS:
        sealed_before = _sealed(root)
        env = {**__import__("os").environ, "BODYCAM_CRASHPOINT": point}
        r = subprocess.run(_cmd(root, True, 20), env=env, capture_output=True, text=True, cwd=REPO)
        assert r.returncode == -signal.SIGKILL, f"{point} not reached: {r.returncode} {r.stderr}"
        kills += 1
        _check_sealed_kept(root, sealed_before)
    rng = random.Random(1403)
    losses = []
    for _ in range(6):
        sealed_before = _sealed(root)
        before = _recordings(root)
        proc = subprocess.Popen(_cmd(root, False, 30), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, cwd=REPO)
        rid = _wait_for_new_part(root, before, proc)
        time.sleep(rng.uniform(1.3, 3.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        dead_ns = time.monotonic_ns()    # the recorder is gone: nothing after this was captured
        kills += 1
        losses.append((rid, dead_ns))
        _check_sealed_kept(root, sealed_before)
    r = subprocess.run(_cmd(root, True, 2), capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    pub = (root / "key" / "device-key.pub.pem").read_bytes()
    result = verify_directory(root / "evidence", pub)          # no key needed
    assert result.ok, result.failure
    assert not list((root / "evidence").rglob("*.part")) and not list((root / "evidence").rglob("*.sync"))
    segs = [x.payload for x in iter_records(root / "evidence" / "journal.log") if x.type == "segment"]
    assert segs and all(s["encryption"]["format"] == "age-v1" for s in segs)
    recovered = [s for s in segs if s["recovered"]]
    assert any(not s["encryption"]["complete"] for s in recovered), "no segment was cut by a crash"
    keys = _Keys(age.parse_identities(key.read_text()))
    for s in recovered:
        data = (root / "evidence" / s["path"]).read_bytes()
        ts = media_ts(opening.plaintext(data, keys, s["encryption"], s["path"]), s["encryption"])
        assert ffmpeg_errors(ts) == "", s["path"]
        assert decoded(ts)[0] == s["video_frames"]
    starts = {x.payload["recording_id"]: x.payload["t0_mono_ns"]
              for x in iter_records(root / "evidence" / "journal.log") if x.type == "recording-start"}
    lost = []
    for rid, dead_ns in losses:
        delivered = _frames_delivered(starts[rid], dead_ns)
        kept = sum(s["video_frames"] for s in segs if s["recording_id"] == rid)
        assert 0 < kept <= delivered, (rid, kept, delivered)
        lost.append((delivered - kept) / FPS)
    summary = {"crashes": kills, "realtime_crashes": len(lost),
               "loss_mean_s": round(sum(lost) / len(lost), 3), "loss_max_s": round(max(lost), 3),
               "losses_s": [round(x, 3) for x in lost]}
    print("encrypted-crash-loss", json.dumps(summary))
    assert max(lost) <= MAX_LOSS_S, summary


def _frames_delivered(t0_ns: int, dead_ns: int) -> int:
    """Frames the (simulated, real-time) camera had delivered by ``dead_ns``: frame i is due
    at ``t0 + i * 1e9 // FPS`` (sim.camera.SimCamera), frame 0 at the journaled ``t0_mono_ns``."""
    d = dead_ns - t0_ns   # frames i with i * 1e9 // FPS <= d, i.e. i < (d + 1) * FPS / 1e9
    return -(-(d + 1) * FPS // 1_000_000_000)


def test_frames_delivered_counts_the_camera_grid():
    t0 = 5_000_000_000
    assert _frames_delivered(t0, t0) == 1
    assert _frames_delivered(t0, t0 + 33_333_332) == 1
    assert _frames_delivered(t0, t0 + 33_333_333) == 2     # frame 1 is due at t0 + 33_333_333
    assert _frames_delivered(t0, t0 + 33_333_334) == 2
    assert _frames_delivered(t0, t0 + 1_000_000_000) == FPS + 1
