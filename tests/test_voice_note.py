"""Voice notes: real AAC from espeak-ng speech, stored once, attested, orphans recovered."""
import subprocess

import av
import numpy as np
import pytest

from common.clock import TimeQuality, TimeSample
from recorder.journal import iter_records
from recorder.store import OverwriteRefused
from recorder.verify import verify_directory
from recorder.voice_note import NOTES_DIR, VoiceNoteError, VoiceNoteWriter, encode_aac, seal_orphans
from sim.microphone import load_wav
from tests.media_fixture import new_device

RATE = 16000


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    wav = tmp_path_factory.mktemp("wav") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Stopped because the camera fell off."], check=True)
    return load_wav(wav, RATE)


def _t(ns):
    return TimeSample(ns, 1_790_000_000 * 10**9 + ns, TimeQuality.NTP)


def best_alignment(decoded: np.ndarray, source: np.ndarray, max_lag: int) -> tuple[int, float]:
    """(lag, normalised correlation) of ``decoded`` against ``source`` delayed by 0..max_lag
    samples: the AAC encoder puts priming samples in front of the signal."""
    best = (0, -1.0)
    for lag in range(max_lag + 1):
        a = decoded[lag:]
        n = min(len(a), len(source))
        a, b = a[:n], source[:n]
        c = float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))
        if c > best[1]:
            best = (lag, c)
    return best


def test_note_is_aac_sealed_read_only_and_verifies(tmp_path, speech):
    dev = new_device(tmp_path)
    rec = VoiceNoteWriter(dev.store, dev.journal, RATE).seal("VN-1", speech, _t(0), _t(10**9),
                                                            {"answers": "interruption"})
    path = dev.store.root / rec.payload["attachments"][0]["path"]
    assert path.parent.name == NOTES_DIR and (path.stat().st_mode & 0o222) == 0
    with av.open(str(path)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        assert c.streams.audio[0].codec_context.sample_rate == RATE
        decoded = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)]).astype(np.float64)
    n = len(decoded)
    assert abs(n - len(speech)) <= 2048
    # The content is the speech, not just as many samples: after the encoder's priming
    # (at most two 1024-sample AAC frames) the decoded waveform matches the input closely
    # and carries the same energy (AAC is lossy: 0.95 correlation, 1 dB).
    source = speech.astype(np.float64) / 32768.0
    lag, corr = best_alignment(decoded, source, 2048)
    assert corr >= 0.95, (lag, corr)
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))   # noqa: E731
    aligned = decoded[lag:lag + len(source)]
    assert abs(20 * np.log10(rms(aligned) / rms(source[:len(aligned)]))) <= 1.0
    assert rms(source) > 0.01                          # the input itself is not near-silence
    assert verify_directory(dev.store.root, dev.signer.public_key_pem()).ok
    with pytest.raises(OverwriteRefused):
        VoiceNoteWriter(dev.store, dev.journal, RATE).seal("VN-1", speech, _t(0), _t(1), {})


@pytest.mark.parametrize("samples,note_id", [(np.zeros(0, np.int16), "VN-2"),
                                             (np.zeros(100, np.float32), "VN-3"),
                                             (np.zeros(100, np.int16), "../escape")])
def test_bad_notes_are_refused_and_nothing_is_attested(tmp_path, samples, note_id):
    dev = new_device(tmp_path)
    before = dev.journal.head
    with pytest.raises(VoiceNoteError):
        VoiceNoteWriter(dev.store, dev.journal, RATE).seal(note_id, samples, _t(0), _t(1), {})
    assert dev.journal.head == before
    assert verify_directory(dev.store.root, dev.signer.public_key_pem()).ok


def test_a_note_left_without_its_record_is_attested_at_start(tmp_path, speech):
    dev = new_device(tmp_path)
    (dev.store.root / NOTES_DIR).mkdir()
    (dev.store.root / NOTES_DIR / "VN-9.aac").write_bytes(encode_aac(speech, RATE))
    assert verify_directory(dev.store.root, dev.signer.public_key_pem()).failure.reason == "SegmentExtra"
    [rec] = seal_orphans(dev.store, dev.journal)
    assert rec.payload["recovered"] is True and rec.payload["note_id"] == "VN-9"
    assert seal_orphans(dev.store, dev.journal) == []
    assert verify_directory(dev.store.root, dev.signer.public_key_pem()).ok
    assert [r.type for r in iter_records(dev.journal.path)][-1] == "voice-note"
