"""D3/D4: a two-minute recording is whole: every frame, every sample, no gap at any boundary."""
from collections import Counter

import pytest

from tests.media import decoded_counts, ffmpeg_errors, ffprobe_packets, segments

DURATION, FPS, SEG = 120, 30, 10


@pytest.fixture(scope="module")
def two_minutes(tmp_path_factory):
    from tests.conftest import sim_pipeline
    out = tmp_path_factory.mktemp("two-minutes")
    p = sim_pipeline(out, fps=FPS, segment_seconds=SEG)
    results = p.run(DURATION)
    return out, results


def test_one_recording_of_the_expected_segments(two_minutes):
    out, results = two_minutes
    assert [r.cause for r in results] == ["stop"]
    files = segments(out)
    assert len(files) == DURATION // SEG
    assert [s.path for s in results[0].segments] == files
    assert [s.index for s in results[0].segments] == list(range(DURATION // SEG))
    assert [s.final for s in results[0].segments] == [False] * (DURATION // SEG - 1) + [True]
    assert not list(out.rglob("*.part"))


def test_every_segment_decodes_without_a_single_error(two_minutes):
    out, _ = two_minutes
    for f in segments(out):
        assert ffmpeg_errors(f) == "", f


def test_frames_and_samples_add_up_exactly(two_minutes):
    out, results = two_minutes
    frames = samples = 0
    for f, info in zip(segments(out), results[0].segments):
        n_frames, n_samples = decoded_counts(f)
        assert n_frames == info.video_frames == FPS * SEG
        frames += n_frames
        samples += n_samples
    assert frames == DURATION * FPS
    # AAC decoders emit the priming frame too; the count must be right within one AAC frame
    assert abs(samples - DURATION * 48000) <= 1024 * len(segments(out))
    assert sum(s.audio_samples for s in results[0].segments) == DURATION * 48000
    assert results[0].stats.silence_samples == 0
    assert results[0].stats.frames_repeated == 0


def test_no_timestamp_gap_or_overlap_at_any_boundary(two_minutes):
    out, results = two_minutes
    tick = 90000 // FPS
    last_video = None
    audio_end = None
    for f in segments(out):
        v = sorted(int(p["pts"]) for p in ffprobe_packets(f, "v"))
        assert v == list(range(v[0], v[0] + len(v) * tick, tick)), f"frame gap inside {f}"
        if last_video is not None:
            assert v[0] == last_video + tick, f"gap/overlap before {f}"
        last_video = v[-1]
        a = ffprobe_packets(f, "a")
        for prev, nxt in zip(a, a[1:]):
            assert int(nxt["pts"]) == int(prev["pts"]) + int(prev["duration"]), f"audio hole in {f}"
        if audio_end is not None:
            assert int(a[0]["pts"]) == audio_end, f"audio gap/overlap before {f}"
        audio_end = int(a[-1]["pts"]) + int(a[-1]["duration"])
    infos = results[0].segments
    for prev, nxt in zip(infos, infos[1:]):
        assert nxt.first_pts == prev.last_pts + prev.frame_duration
        assert nxt.first_sample == prev.first_sample + prev.audio_samples


def test_each_segment_starts_on_a_keyframe_once_per_second(two_minutes):
    out, _ = two_minutes
    for f in segments(out):
        packets = sorted(ffprobe_packets(f, "v"), key=lambda p: int(p["pts"]))
        assert packets[0]["flags"].startswith("K"), f
        keyframes = Counter(p["flags"].startswith("K") for p in packets)
        assert keyframes[True] == SEG  # keyframe_interval_s = 1


def test_wall_times_of_segments_follow_each_other(two_minutes):
    _, results = two_minutes
    infos = results[0].segments
    for prev, nxt in zip(infos, infos[1:]):
        gap_ns = nxt.wall_start.wall_ns - prev.wall_end.wall_ns
        assert gap_ns == pytest.approx(1e9 / FPS, abs=1e6)
