"""The capture loop hands a drain's sound blocks to the recording in one call
(``Recording.add_audio_blocks``): the segments must be byte for byte what the recorder
wrote before, block by block (``_BlockByBlock`` keeps that code), gaps (counted silence)
included."""
import numpy as np

from common.clock import SimulatedWallClock
from recorder.encode import AudioSettings, VideoSettings
from recorder.recording import Recording
from recorder.stamp import Stamper


class _BlockByBlock(Recording):
    """``add_audio`` as it was before blocks were batched: place, hold and encode each block."""

    def add_audio(self, samples: np.ndarray, mono_ns: int) -> None:
        fill, samples = self.at.place(samples, mono_ns)
        if fill:
            self._add_silence(fill)
        if len(samples):
            self.mic_silent = False
            self._hold = np.concatenate([self._hold, samples])
        self._release_audio(self._video_samples())


W, H, FPS, RATE, BLOCK = 160, 96, 30, 48000, 960
FRAME_NS = 1_000_000_000 // FPS


def _record(directory, batched: bool) -> tuple[list[tuple[bytes, int]], int]:
    v, a = VideoSettings(W, H, FPS, bitrate_kbps=200), AudioSettings(RATE)
    stamper = Stamper(W, H, "BWC-0001", "000001")
    clock = SimulatedWallClock(1_763_900_000_000_000_000)
    rec = (Recording if batched else _BlockByBlock)(directory, "r", v, a, 1, 0, stamper, clock)
    picture = np.full((H * 3 // 2, W), 128, dtype=np.uint8)
    emitted, blocks = 0, []
    for i in range(75):   # 2.5 s: two whole segments and part of a third
        picture[:H] = (i * 7) % 200 + 16
        rec.add_frame(picture.copy(), i * FRAME_NS)
        while emitted + BLOCK <= (i + 4) * RATE // FPS:   # sound runs ahead: some is held
            t_ns = emitted * 1_000_000_000 // RATE
            samples = (np.sin(np.arange(emitted, emitted + BLOCK) / 7) * 8000).astype(np.int16)
            # blocks 47-51 never arrive: 100 ms of silence across the first segment's end
            # (sample 48000), after sound of the same drain (45, 46)
            if not 47 <= emitted // BLOCK <= 51:
                blocks.append((samples, t_ns))
            emitted += BLOCK
        if i % 6 == 5:   # drained every sixth frame: several blocks, some of them after the gap
            if batched:
                rec.add_audio_blocks(blocks)
            else:
                for samples, t_ns in blocks:
                    rec.add_audio(samples, t_ns)
            blocks = []
        rec.check_microphone()
    infos = rec.close()
    return [(info.path.read_bytes(), info.silence_samples) for info in infos], rec.stats.silence_samples


def test_batched_blocks_write_the_same_segments(tmp_path):
    one_by_one, silence_a = _record(tmp_path / "a", batched=False)
    batched, silence_b = _record(tmp_path / "b", batched=True)
    assert len(one_by_one) == 3
    assert silence_a == 5 * BLOCK and silence_b == silence_a
    assert [n for _, n in one_by_one] == [2880, 1920, 0]   # 45120..49920 split at 48000
    assert [n for _, n in batched] == [n for _, n in one_by_one]   # each segment's silence
    assert batched == one_by_one
