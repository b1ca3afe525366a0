"""D3/D4: a two-minute recording is whole: every frame, every sample, no gap at any boundary."""
import itertools
from collections import Counter

import pytest

from tests.media import decoded_counts, ffmpeg_errors, ffprobe_packets, segments

DURATION, FPS, SEG = 120, 30, 10
AAC_FRAME = 1024      # samples per AAC-LC frame; the encoder primes with one such frame


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
    for i, (f, info) in enumerate(zip(segments(out), results[0].segments, strict=True)):
        n_frames, n_samples = decoded_counts(f)
        assert n_frames == info.video_frames == FPS * SEG
        # The only surplus a decoder may show is the AAC encoder's priming frame (1024
        # samples), and only in the first segment: the audio stream runs on across segment
        # boundaries, so later segments decode to exactly the samples they hold. Never fewer.
        assert 0 <= n_samples - info.audio_samples <= (AAC_FRAME if i == 0 else 0), f
        frames += n_frames
        samples += n_samples
    assert frames == DURATION * FPS
    # one-directional: at most the one priming frame more than was recorded, never less
    assert 0 <= samples - DURATION * 48000 <= AAC_FRAME
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
        for prev, nxt in itertools.pairwise(a):
            assert int(nxt["pts"]) == int(prev["pts"]) + int(prev["duration"]), f"audio hole in {f}"
        if audio_end is not None:
            assert int(a[0]["pts"]) == audio_end, f"audio gap/overlap before {f}"
        audio_end = int(a[-1]["pts"]) + int(a[-1]["duration"])
    infos = results[0].segments
    for prev, nxt in itertools.pairwise(infos):
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
    for prev, nxt in itertools.pairwise(infos):
        gap_ns = nxt.wall_start.wall_ns - prev.wall_end.wall_ns
        assert gap_ns == pytest.approx(1e9 / FPS, abs=1e6)


# The simulated microphone's tone: 440 Hz at amplitude 8000/32768 (see sim/microphone.py)
TONE_HZ, TONE_RMS = 440.0, 8000 / 32768 / 2 ** 0.5


def test_audio_is_declared_aac_lc_48k_mono(two_minutes):
    """README promises mono: every segment's stream (and so its ADTS headers) says one channel."""
    import json
    import subprocess
    out, _ = two_minutes
    for f in segments(out):
        r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries",
                            "stream=codec_name,profile,sample_rate,channels,channel_layout",
                            "-of", "json", str(f)], capture_output=True, text=True, check=True)
        (stream,) = json.loads(r.stdout)["streams"]
        assert stream == {"codec_name": "aac", "profile": "LC", "sample_rate": "48000",
                          "channels": 1, "channel_layout": "mono"}, f


def test_every_adts_header_says_one_channel(two_minutes):
    import av
    out, _ = two_minutes
    for f in segments(out)[:2]:
        with av.open(str(f)) as c:
            headers = [bytes(p)[:7] for p in c.demux(c.streams.audio[0]) if p.size]
        assert headers, f
        for h in headers:
            assert h[0] == 0xFF and h[1] & 0xF0 == 0xF0, "not an ADTS frame"
            assert ((h[2] & 1) << 2) | (h[3] >> 6) == 1, f"ADTS channel configuration in {f}"


def test_decoded_audio_is_one_channel_carrying_the_tone(two_minutes):
    import av
    import numpy as np
    out, _ = two_minutes
    f = segments(out)[1]
    chunks = []
    with av.open(str(f)) as c:
        for frame in c.decode(audio=0):
            assert frame.layout.name == "mono" and len(frame.layout.channels) == 1
            a = frame.to_ndarray()
            assert a.shape[0] == 1
            chunks.append(a[0])
    pcm = np.concatenate(chunks)[2048:]     # past the decoder's priming
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert rms == pytest.approx(TONE_RMS, rel=0.1)
    spectrum = np.abs(np.fft.rfft(pcm[:48000]))
    assert np.argmax(spectrum) * 48000 / len(pcm[:48000]) == pytest.approx(TONE_HZ, abs=2)
