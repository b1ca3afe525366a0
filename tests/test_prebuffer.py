"""Pre-event buffer: whole GOPs in RAM, bounded in seconds, handed to the recording without a gap."""
import itertools

import pytest

from recorder.prebuffer import MAX_SECONDS, BufferedFrame, PreEventBuffer
from tests.conftest import sim_pipeline
from tests.media import decoded_counts, ffmpeg_errors, ffprobe_packets, segments

FPS, SEG = 10, 2


class _Pkt:
    """Only what the ring reads of an av.Packet (pts, size, is_keyframe)."""

    def __init__(self, pts, size, key):
        self.pts, self.size, self.is_keyframe = pts, size, key


def test_ring_drops_whole_gops_from_the_front_and_never_exceeds_its_span():
    ticks = 9000
    buf = PreEventBuffer(FPS, 3.0, ticks)
    for slot in range(100):
        buf.note_frame(BufferedFrame(slot, None))
        buf.add_packet(_Pkt(slot * ticks, 100, slot % FPS == 0))
        assert buf.first_slot % FPS == 0, "the buffer always starts on a keyframe"
        assert buf.span_frames <= 3 * FPS
        assert buf.nbytes == 100 * sum(len(g.packets) for g in buf.gops)
        assert buf.frames[0].slot == buf.first_slot
    assert buf.span_frames > 2 * FPS, "at most one GOP less than the configured span"
    first, frames, packets = buf.take()
    assert packets[0].is_keyframe and packets[0].pts == first * ticks
    assert [f.slot for f in frames] == list(range(first, 100))
    assert buf.nbytes == 0 and buf.first_slot is None


def test_ring_refuses_a_span_outside_0_to_120_s():
    with pytest.raises(ValueError, match="0-120"):
        PreEventBuffer(FPS, MAX_SECONDS + 1, 9000)
    with pytest.raises(ValueError):
        PreEventBuffer(FPS, -1, 9000)


def test_packet_before_any_keyframe_is_not_kept():
    buf = PreEventBuffer(FPS, 3.0, 9000)
    buf.add_packet(_Pkt(0, 50, False))
    assert buf.nbytes == 0 and not buf.gops


def drive(p, until_s, t0):
    while p.time.now_ns() < t0 + int(until_s * 1e9):
        p.step()


@pytest.mark.parametrize("audio", [False, True])
def test_recording_starts_with_the_buffer_and_continues_without_a_gap(tmp_path, audio):
    p = sim_pipeline(tmp_path, width=160, height=120, fps=FPS, segment_seconds=SEG,
                     prebuffer_s=5.0, prebuffer_audio=audio)
    t0 = p.time.now_ns()
    p.open()
    drive(p, 12.0, t0)
    nothing_written = list(tmp_path.rglob("*"))
    press = p.last_frame_ns
    rid = p.begin_recording({"press": "test"})
    drive(p, 20.0, t0)
    result = p.end_recording("stop")
    p.close()

    assert nothing_written == [], "the buffer touches storage only when recording starts"
    first_frame_ns = result.segments[0].wall_start.mono_ns
    before = (press - first_frame_ns) / 1e9
    assert 4.0 <= before <= 5.0, before
    assert (first_frame_ns - t0) % (1_000_000_000 // FPS * FPS) < 1_000_000, "keyframe-aligned"
    files = segments(tmp_path)
    assert [s.index for s in result.segments] == list(range(len(files)))
    assert rid == result.recording_id
    # continuous: every segment starts one frame after the last one ended, audio follows
    for a, b in itertools.pairwise(result.segments):
        assert b.first_pts == a.last_pts + a.frame_duration
        assert b.first_sample == a.first_sample + a.audio_samples
    frames = sum(decoded_counts(f)[0] for f in files)
    assert frames == result.stats.frames == sum(s.video_frames for s in result.segments)
    assert abs(frames / FPS - (before + 8.0)) <= 0.3
    for f in files:
        assert ffmpeg_errors(f) == ""
        assert ffprobe_packets(f, "v")[0]["flags"].startswith("K")
    silence = sum(s.silence_samples for s in result.segments)
    if audio:
        assert silence == 0, "kept sound fills the pre-event part"
    else:
        # exactly the pre-event span is silence, and it is counted where it lies
        assert abs(silence - before * 48000) <= 48000 // FPS + 1024
        per_segment = 48000 * SEG
        assert result.segments[0].silence_samples == per_segment, "wholly before the press"
        assert abs(result.segments[0].audio_samples - per_segment) <= 1024
        assert result.segments[-1].silence_samples == 0


def test_no_buffer_while_not_buffering_and_zero_seconds_starts_at_the_press(tmp_path):
    p = sim_pipeline(tmp_path, width=160, height=120, fps=FPS, segment_seconds=SEG, prebuffer_s=5.0)
    t0 = p.time.now_ns()
    p.open()
    p.set_buffering(False)
    drive(p, 6.0, t0)
    assert p.capture.buffer.nbytes == 0
    press = p.last_frame_ns
    p.begin_recording()
    drive(p, 8.0, t0)
    result = p.end_recording()
    p.close()
    assert result.segments[0].wall_start.mono_ns > press
    assert result.stats.silence_samples == 0
    assert sum(s.video_frames for s in result.segments) == result.stats.frames


def test_camera_stall_while_ready_restarts_the_buffer(tmp_path):
    from sim.camera import CameraFaults
    p = sim_pipeline(tmp_path, width=160, height=120, fps=FPS, segment_seconds=SEG, prebuffer_s=5.0,
                     camera_faults=CameraFaults(stalls=[(3.0, 2.0)]))
    t0 = p.time.now_ns()
    p.open()
    drive(p, 6.5, t0)
    press = p.last_frame_ns
    p.begin_recording()
    drive(p, 7.5, t0)
    result = p.end_recording()
    p.close()
    first = result.segments[0].wall_start.mono_ns
    assert first >= t0 + 5_000_000_000, "nothing from before the stall: it would leave a hole"
    assert press - first <= 1.6e9
    assert result.stats.frames_repeated == 0
