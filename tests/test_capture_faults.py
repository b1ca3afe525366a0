"""Bad input from the hardware: a clear logged error, and nothing already recorded is lost."""
import logging
import subprocess
import sys

import numpy as np
import pytest

from recorder.segmenter import StorageError
from recorder.timeline import AudioTimeline
from sim.camera import CameraFaults
from sim.microphone import MicFaults
from tests.media import decoded_counts, ffmpeg_errors, segments
from tests.tmpfs import tmpfs


def test_camera_stall_closes_the_recording_and_a_new_one_starts(record, caplog, tmp_path):
    caplog.set_level(logging.INFO)
    p, results = record(12, segment_seconds=2, camera_faults=CameraFaults(stalls=[(5.0, 2.0)]))
    assert [r.cause for r in results] == ["camera-stall", "stop"]
    assert any("camera stalled" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)
    first, second = results
    assert first.stats.frames == 5 * 30          # everything before the stall is kept
    assert first.segments[-1].final and first.segments[-1].video_frames == 30
    assert second.stats.frames == 5 * 30         # recording resumed at 7 s, ran to 12 s
    for f in segments(tmp_path / "evidence"):
        assert ffmpeg_errors(f) == "", f
    assert len({s.recording_id for r in results for s in r.segments}) == 2


def test_short_camera_hiccup_is_bridged_and_counted(record):
    _, results = record(4, segment_seconds=2, camera_faults=CameraFaults(dropped_frames={40, 41}))
    (r,) = results
    assert r.cause == "stop"
    assert r.stats.frames == 4 * 30
    assert r.stats.frames_repeated == 2
    assert [s.frames_repeated for s in r.segments] == [2, 0]


def test_dead_microphone_is_reported_and_bridged_with_silence(record, caplog, tmp_path):
    caplog.set_level(logging.INFO)
    _, results = record(8, segment_seconds=2, mic_faults=MicFaults(dead_from_s=3.0))
    (r,) = results
    errors = [x.getMessage() for x in caplog.records if x.levelno == logging.ERROR]
    assert any("microphone delivered no audio" in m for m in errors), errors
    assert r.stats.samples == 8 * 48000
    assert r.stats.silence_samples == pytest.approx(5 * 48000, abs=48000 // 10)
    assert sum(s.silence_samples for s in r.segments) == r.stats.silence_samples
    for f in segments(tmp_path / "evidence"):
        assert ffmpeg_errors(f) == ""
        assert decoded_counts(f)[0] == 60


def test_microphone_clock_skew_never_drifts_sound_off_the_pictures():
    """A mic crystal 300 ppm fast for an hour: the write position stays within one AAC frame."""
    rate, block = 48000, 960
    t0 = 1_000_000_000
    at = AudioTimeline(rate, t0)
    true_rate = rate * (1 + 300e-6)
    worst = 0
    for i in range(int(3600 * true_rate / block)):
        t_ns = t0 + int(i * block / true_rate * 1e9)
        fill, kept = at.place(np.zeros(block, np.int16), t_ns)
        worst = max(worst, abs(at.written - at.expected_at(t_ns + int(block / true_rate * 1e9))))
    assert worst <= 1024 + block
    # What was dropped is the crystal's surplus, to within the tolerance window (no 5 %
    # slack): the surplus is what the mic delivered beyond the clock's sample count; the
    # write position may end up to the tolerance (1024) plus one block ahead of the clock,
    # never behind it, since a drop cuts only what lies ahead.
    n_blocks = int(3600 * true_rate / block)
    delivered = n_blocks * block
    t_end = t0 + int(n_blocks * block / true_rate * 1e9)
    surplus = delivered - round((t_end - t0) * rate / 1e9)
    assert surplus == pytest.approx(3600 * rate * 300e-6, abs=block)   # whole blocks only
    assert at.silence == 0                       # a fast crystal never leaves a hole
    assert at.dropped + at.written == delivered
    assert 0 <= surplus - at.dropped <= 1024 + block


def test_skewed_microphone_in_a_recording_keeps_exact_sample_count(record):
    _, results = record(20, segment_seconds=5, mic_faults=MicFaults(skew_ppm=-2000))
    (r,) = results
    assert r.stats.samples == 20 * 48000
    assert r.stats.silence_samples > 0  # the slow crystal's shortfall was filled, and counted


@pytest.fixture
def tiny_disk(tmp_path):
    with tmpfs(tmp_path / "tiny", "size=3m") as mnt:
        yield mnt


def test_full_disk_stops_cleanly_and_keeps_closed_segments(tiny_disk, caplog):
    from tests.conftest import sim_pipeline
    caplog.set_level(logging.INFO)
    p = sim_pipeline(tiny_disk / "evidence", width=640, height=360, segment_seconds=1,
                     bitrate_kbps=4000)
    with pytest.raises(StorageError):
        p.run(60)
    assert any("storage failed" in x.getMessage() for x in caplog.records)
    closed = p.results[-1].segments
    assert closed, "some segments closed before the disk filled"
    assert p.results[-1].cause == "storage-error"
    for info in closed:
        assert info.path.exists()
        assert ffmpeg_errors(info.path) == ""
        assert decoded_counts(info.path)[0] == 30
    # the segment being written when space ran out is kept for salvage, not deleted
    assert list((tiny_disk / "evidence").rglob("*.ts.part"))


def _record_cli(tmp_path, out, config_text, duration="60"):
    cfg = tmp_path / "c.toml"
    cfg.write_text(config_text)
    return subprocess.run([sys.executable, "-m", "firmware", "record", "--sim", "--fast",
                           "--duration", duration, "--out", str(out), "--config", str(cfg),
                           "--key-dir", str(tmp_path / "key"), "--provision"],
                          capture_output=True, text=True)


def test_full_disk_through_the_command_exits_with_storage_status(tiny_disk, tmp_path):
    """No reserve: the disk really fills mid-segment; closed segments stay sealed."""
    r = _record_cli(tmp_path, tiny_disk / "ev", "[storage]\nreserve_mb = 0\n"
                    "[video]\nwidth = 640\nheight = 360\n[segment]\nseconds = 1\n")
    assert r.returncode == 4, r.stderr
    assert "storage failed" in r.stderr
    assert r.stdout.strip() == str(tiny_disk / "ev")
    sealed = list((tiny_disk / "ev").rglob("*.ts"))
    assert sealed
    for f in sealed:
        assert ffmpeg_errors(f) == ""


def test_nearly_full_disk_stops_cleanly_before_running_out(tmp_path):
    """With a reserve the device stops, seals and journals before the disk is full."""
    with tmpfs(tmp_path / "disk", "size=12m") as mnt:
        r = _record_cli(tmp_path, mnt / "ev", "[storage]\nreserve_mb = 8\n"
                        "[video]\nwidth = 640\nheight = 360\n[segment]\nseconds = 1\n")
        assert r.returncode == 4, r.stderr
        assert "storage nearly full" in r.stderr
        assert not list((mnt / "ev").rglob("*.part"))
        pub = tmp_path / "key" / "device-key.pub.pem"
        from recorder.verify import verify_directory
        result = verify_directory(mnt / "ev", pub.read_bytes())
        assert result.ok, result.failure
        journal = (mnt / "ev" / "journal.log").read_text()
        assert '"cause":"storage-full"' in journal
        # and it refuses to start again while the disk is still nearly full
        r2 = _record_cli(tmp_path, mnt / "ev", "[storage]\nreserve_mb = 8\n", duration="5")
        assert r2.returncode == 4 and "not starting" in r2.stderr
