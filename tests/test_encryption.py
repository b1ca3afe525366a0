"""Encryption at rest on the device (issue 14, D13): age files written as the segment grows.

Real components only: the simulated camera through the real encoder, segmenter and sealer;
Debian's ``age``/``age-keygen`` make the agency key and decrypt what we wrote; ``pyrage``
reads and writes the same format; the third-party recipe checks an encrypted recording with
``openssl`` and ``sha256sum`` and no key at all.
"""
import hashlib
import io
import itertools
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import av
import pyrage
import pytest

from recorder import age
from recorder.journal import iter_records
from recorder.verify import SegmentExtra, verify_directory
from station.keys import opening
from tests.conftest import sim_pipeline
from tests.media_fixture import new_device, open_device
from tests.test_crash_recovery import KILL_WHILE_SEGMENT_1_IS_OPEN

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (shutil.which("age") and shutil.which("age-keygen")),
                                reason="Debian's age is not installed (deploy/bootstrap-dev.sh)")


def make_key(directory: Path, name: str = "agency") -> tuple[Path, str]:
    """An agency identity made by ``age-keygen`` (the standard tool) and its recipient."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / f"{name}.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                               text=True).stdout.strip()
    return key, recipient


def age_decrypt(key: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["age", "-d", "-i", str(key), str(path)], capture_output=True)


def decoded(ts: bytes) -> tuple[int, int]:
    frames = samples = 0
    with av.open(io.BytesIO(ts), format="mpegts") as c:
        for pkt in c.demux():
            for f in pkt.decode():
                if pkt.stream.type == "video":
                    frames += 1
                else:
                    samples += f.samples
    return frames, samples


def media_ts(plain: bytes, enc: dict) -> bytes:
    """What the station gives players of a segment's checked plaintext (station.keys.opening
    .playable_ts, used by playback and playable exports): a salvaged one cut at a chunk boundary
    ends inside a PES packet, and its record's ``encryption.media_size`` says where the whole
    ones end (a segment cut at a padded sync point: whole TS packets, as before)."""
    if enc.get("complete", True):
        return plain
    shown = opening.playable_ts(plain, enc)
    if "media_size" in enc:                       # never more than the whole TS packets it holds
        assert len(shown) == enc["media_size"] <= len(plain) // 188 * 188
    return shown


def ffmpeg_errors(ts: bytes) -> str:
    return subprocess.run(["ffmpeg", "-v", "error", "-f", "mpegts", "-i", "-", "-f", "null", "-"],
                          input=ts, capture_output=True).stderr.decode()


def doc_recipe(marker: str, workdir: Path, key: Path, segment: Path, journal: Path, rel: str):
    """Run a recipe of docs/evidence-format.md with the system's tools only, in a directory
    holding ``agency.key``, ``SEGMENT.ts`` and ``journal.log``; returns (result, plain.ts)."""
    from tests.test_evidence_recipe import SYSTEM_PATH, doc_block
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(key, workdir / "agency.key")
    shutil.copyfile(segment, workdir / "SEGMENT.ts")
    shutil.copyfile(journal, workdir / "journal.log")
    (workdir / "recipe.sh").write_text(doc_block(marker), encoding="utf-8")
    r = subprocess.run(["sh", "recipe.sh"], cwd=workdir, capture_output=True, text=True, timeout=120,
                       env={"PATH": SYSTEM_PATH, "LC_ALL": "C", "P": rel})
    return r, workdir / "plain.ts"


def segments(root: Path) -> list[dict]:
    return [r.payload for r in iter_records(root / "journal.log") if r.type == "segment"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    agency, escrow, other = make_key(d, "agency"), make_key(d, "escrow"), make_key(d, "other")
    return {"agency": agency, "escrow": escrow, "other": other}


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory, keys):
    """A 3-segment recording encrypted to the agency key and an escrow key, sealed and journaled."""
    base = tmp_path_factory.mktemp("enc")
    dev = new_device(base)
    dev.journal.append("boot", {"firmware": "test"})
    p = sim_pipeline(dev.root, segment_seconds=1,
                     recipients=(keys["agency"][1], keys["escrow"][1]))
    p.sink, p.on_event = dev.sealer, dev.journal.append
    p.run(3)
    return dev


def test_age_format_interoperates_with_age_and_pyrage(tmp_path, keys):
    key, recipient = keys["agency"]
    ids = age.parse_identities(key.read_text())
    for n in (0, 1, age.CHUNK, age.CHUNK + 1, 3 * age.CHUNK - 7):
        plain = os.urandom(n)
        ours = tmp_path / f"{n}.age"
        ours.write_bytes(age.encrypt(plain, [recipient]))
        r = age_decrypt(key, ours)
        assert r.returncode == 0 and r.stdout == plain, r.stderr
        identity = pyrage.x25519.Identity.from_str(key.read_text().split()[-1])
        assert pyrage.decrypt(ours.read_bytes(), [identity]) == plain
        theirs = pyrage.encrypt(plain, [pyrage.x25519.Recipient.from_str(recipient)])
        assert age.decrypt(theirs, ids) == plain
    # a recipient with a typo is refused by its checksum, not silently used
    with pytest.raises(age.AgeError, match="checksum"):
        age.parse_recipient(recipient[:-1] + ("q" if recipient[-1] != "q" else "p"))


def test_segments_are_age_files_the_journal_attests_ciphertext_and_plaintext(encrypted, keys):
    dev = encrypted
    segs = segments(dev.root)
    assert [s["index"] for s in segs] == [0, 1, 2] and segs[-1]["final"]
    # anyone checks the recording without any key: the journal attests the ciphertext
    result = verify_directory(dev.root, dev.pem)
    assert result.ok, result.failure
    for s in segs:
        path = dev.root / s["path"]
        data = path.read_bytes()
        assert data.startswith(b"age-encryption.org/v1\n")
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["size"]
        enc = s["encryption"]
        assert enc["format"] == "age-v1" and enc["complete"] is True
        assert enc["recipients"] == [keys["agency"][1], keys["escrow"][1]]
        # the standard tool decrypts it, and the plaintext is what the device signed
        for who in ("agency", "escrow"):
            r = age_decrypt(keys[who][0], path)
            assert r.returncode == 0, r.stderr
            assert hashlib.sha256(r.stdout).hexdigest() == enc["plaintext_sha256"]
            assert len(r.stdout) == enc["plaintext_size"]
        assert decoded(r.stdout)[0] == s["video_frames"] == 30
        assert ffmpeg_errors(r.stdout) == ""
        # no clear MPEG-TS anywhere in the file: not a single sync byte run of TS packets
        assert b"\x47\x1f\xff\x10" + b"\xff" * 16 not in data
    # no sync index is left once the segments are sealed
    assert not list(dev.root.rglob("*.sync"))


def test_the_documented_decryption_recipes_check_the_plaintext_hash(tmp_path, encrypted, keys):
    s = segments(encrypted.root)[0]
    args = (encrypted.root / s["path"], encrypted.root / "journal.log", s["path"])
    r, plain = doc_recipe("decrypt-segment.sh", tmp_path / "a", keys["agency"][0], *args)
    assert r.returncode == 0, r.stderr
    assert "plaintext SHA-256 and size as signed" in r.stdout
    assert hashlib.sha256(plain.read_bytes()).hexdigest() == s["encryption"]["plaintext_sha256"]
    r, _ = doc_recipe("decrypt-segment.sh", tmp_path / "b", keys["other"][0], *args)
    assert r.returncode != 0                                        # not the agency's key
    r, plain = doc_recipe("decrypt-salvaged.sh", tmp_path / "c", keys["agency"][0], *args)
    assert r.returncode == 0 and "complete" in r.stderr, r.stderr
    assert hashlib.sha256(plain.read_bytes()).hexdigest() == s["encryption"]["plaintext_sha256"]


def test_a_wrong_agency_key_cannot_decrypt(encrypted, keys):
    path = encrypted.root / segments(encrypted.root)[0]["path"]
    r = age_decrypt(keys["other"][0], path)
    assert r.returncode != 0 and r.stdout == b""
    assert b"no identity matched" in r.stderr
    with pytest.raises(age.NoIdentity):
        age.decrypt(path.read_bytes(), age.parse_identities(keys["other"][0].read_text()))


def test_a_flipped_ciphertext_byte_is_caught_by_the_journal_hash_and_by_the_aead(tmp_path, encrypted, keys):
    copy = tmp_path / "copy"
    shutil.copytree(encrypted.root, copy)
    seg = segments(copy)[1]
    path = copy / seg["path"]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01             # inside a chunk
    path.write_bytes(bytes(data))
    result = verify_directory(copy, encrypted.pem)
    assert not result.ok and result.failure.reason == "SegmentHashMismatch"
    r = age_decrypt(keys["agency"][0], path)
    assert r.returncode != 0 and b"decrypt" in r.stderr.lower()
    ids = age.parse_identities(keys["agency"][0].read_text())
    with pytest.raises(age.AgeError, match="does not authenticate"):
        age.decrypt(bytes(data), ids)
    with pytest.raises(opening.DecryptionFailed):
        opening.plaintext(bytes(data), _Keys(ids), seg["encryption"], "segment 1")


class _Keys:
    """A Keyring over identities in memory (the station's FileKeyring reads them from a file)."""

    def __init__(self, ids):
        self.ids = ids

    def unwrap(self, header):
        return age.unwrap(header, self.ids)

    def recipients(self):
        return [i.recipient for i in self.ids]


def test_the_third_party_recipe_verifies_an_encrypted_recording_without_a_key(tmp_path, encrypted):
    from tests.test_evidence_recipe import doc_block, passes, run_recipe
    recipe = tmp_path / "check-evidence.sh"
    recipe.write_text(doc_block("check-evidence.sh"), encoding="utf-8")
    pub = tmp_path / "device-key.pub.pem"
    pub.write_bytes(encrypted.pem)
    r = run_recipe(recipe, encrypted.root, pub)
    assert passes(r), r.stderr
    assert "files 3" in r.stdout


def test_encrypted_voice_note_is_attested_and_opens_with_the_agency_key(tmp_path, keys):
    import numpy as np

    from common.clock import TimeQuality, TimeSample
    from recorder.voice_note import VoiceNoteWriter
    dev = new_device(tmp_path)
    t = TimeSample(1, 2, TimeQuality.NTP, None)
    w = VoiceNoteWriter(dev.store, dev.journal, 48000, recipients=(keys["agency"][1],))
    rec = w.seal("note-1", (np.sin(np.arange(48000) / 8) * 8000).astype(np.int16), t, t)
    [att] = rec.payload["attachments"]
    assert att["path"] == "notes/note-1.aac.age"
    r = age_decrypt(keys["agency"][0], dev.root / att["path"])
    assert r.returncode == 0 and r.stdout[:2] == b"\xff\xf1"      # an ADTS AAC clip
    assert hashlib.sha256(r.stdout).hexdigest() == rec.payload["encryption"]["plaintext_sha256"]
    assert verify_directory(dev.root, dev.pem).ok
    # the moment between the note's record and the removal of its sync index: the device's
    # own check while recording tolerates the index, as it does a segment's; the station not
    index = dev.root / "notes" / "note-1.aac.age.sync"
    index.write_text("{}\n")
    assert verify_directory(dev.root, dev.pem, allow_open_parts=True).ok
    refused = verify_directory(dev.root, dev.pem)
    assert isinstance(refused.failure, SegmentExtra) and refused.failure.file == "notes/note-1.aac.age.sync"
    # only a sync index: a stray file under notes/ is not tolerated, as before
    index.unlink()
    (dev.root / "notes" / "note-1.aac.sync").write_text("{}\n")
    assert isinstance(verify_directory(dev.root, dev.pem, allow_open_parts=True).failure, SegmentExtra)


# ---- power loss: the crash test's kill points, encrypted -----------------------------------
@pytest.mark.parametrize("point", ["segment-before-sync", "segment-before-rename", "segment-before-seal"])
def test_kill_points_salvage_to_the_last_whole_authenticated_chunk(tmp_path, keys, point):
    """Segment 0 (2 s) closed but not yet synced / renamed / sealed when the process dies, and
    segment 1's part file holding 2 s of frames: salvage keeps segment 0 whole and cuts
    segment 1 back to its last durable sync point (whole chunks only), with the
    sync index's facts. The station's key opens both; their plaintext is what the journal says."""
    from recorder.salvage import recover
    key, recipient = keys["agency"]
    r = subprocess.run([sys.executable, "-c", KILL_WHILE_SEGMENT_1_IS_OPEN, str(tmp_path), point, "2", recipient],
                       capture_output=True, text=True, cwd=REPO, timeout=180)
    assert r.returncode == -signal.SIGKILL, r.stderr
    [rdir] = (tmp_path / "dev-evidence" / "recordings").iterdir()
    left = sorted(p.name for p in rdir.iterdir())
    assert any(n.endswith(".ts.sync") for n in left), left      # clear facts, no clear media
    dev = open_device(tmp_path / "dev-key", tmp_path / "dev-evidence")   # the restart
    results = recover(dev.store, dev.sealer)
    result = verify_directory(dev.root, dev.pem)
    assert result.ok, result.failure
    assert not list(dev.root.rglob("*.sync"))
    first, second = (x.record.payload for x in results)
    assert results[0].cut_bytes == 0 and first["video_frames"] == 60
    assert first["encryption"]["complete"] is True
    assert second["first_pts"] == first["last_pts"] + first["frame_duration"]
    enc = second["encryption"]
    assert enc["complete"] is False and second["salvage"]["cut_at"] == "sync-index"
    assert (second["size"] - age.payload_start((dev.root / second["path"]).read_bytes())) % age.SEALED_CHUNK == 0
    # what was lost: the frames after the sync index's last entry (at most MAX_LAG_S, 16.5
    # frames, plus the few the muxer still held back to interleave them with sound)
    from recorder.encrypt import MAX_LAG_S
    assert 60 - second["video_frames"] <= MAX_LAG_S * 30 + 3, second["video_frames"]
    # whole chunks written after that sync point, if any, are cut off, kept and attested, as
    # for a plain segment
    cut = results[1].cut_bytes
    assert [a["size"] for a in second["attachments"] if a["role"] == "salvage-cut"] == ([cut] if cut else [])
    ids = age.parse_identities(key.read_text())
    for p in (first, second):
        data = (dev.root / p["path"]).read_bytes()
        plain = opening.plaintext(data, _Keys(ids), p["encryption"], p["path"])
        ts = media_ts(plain, p["encryption"])
        frames, _ = decoded(ts)
        assert frames == p["video_frames"]
        assert ffmpeg_errors(ts) == ""
    # the standard tool opens the whole segment; the cut one it reports as truncated, and the
    # documented recipe reads its whole chunks, whose plaintext is the one the device signed
    assert age_decrypt(key, dev.root / first["path"]).returncode == 0
    cut = age_decrypt(key, dev.root / second["path"])
    assert cut.returncode != 0
    r, plain = doc_recipe("decrypt-salvaged.sh", tmp_path / "recipe", key, dev.root / second["path"],
                          dev.root / "journal.log", second["path"])
    assert r.returncode == 0 and "cut short" in r.stderr, r.stderr
    assert hashlib.sha256(plain.read_bytes()).hexdigest() == enc["plaintext_sha256"]


def test_an_encrypted_part_without_a_sync_point_is_kept_unreadable_and_journaled(tmp_path, keys):
    from recorder.encrypt import EncryptingFile
    from recorder.salvage import recover
    dev = new_device(tmp_path)
    d = dev.store.recording_dir("r1")
    f = EncryptingFile(d / "r1_00000.ts.part", [keys["agency"][1]])
    f.write(b"\x47" + bytes(187))             # less than a chunk, no sync point: all in RAM
    f.abandon()
    results = recover(dev.store, dev.sealer)
    [res] = results
    assert res.unreadable is not None and "sync point" in res.reason
    assert verify_directory(dev.root, dev.pem).ok
    assert not list(dev.root.rglob("*.sync"))
    # a crash after the record but before the index was removed: the next start removes it
    (d / "r1_00000.ts.sync").write_text("{}\n")
    assert recover(dev.store, dev.sealer) == []
    assert not list(dev.root.rglob("*.sync")) and verify_directory(dev.root, dev.pem).ok


# ---- a voice note orphaned by a power cut: its plaintext facts from its sync index ----------
_NOTE_KILL = r"""
import sys
from pathlib import Path
import numpy as np
from common.clock import TimeQuality, TimeSample
from recorder.voice_note import VoiceNoteWriter
from tests.media_fixture import new_device

dev = new_device(Path(sys.argv[1]))
dev.journal.append("boot", {"firmware": "test"})
start = TimeSample(5_000_000_000, 1_790_000_000_000_000_000, TimeQuality.NTP, None)
end = TimeSample(start.mono_ns + int(sys.argv[3]) * 10**9, start.wall_ns + int(sys.argv[3]) * 10**9,
                 TimeQuality.NTP, None)
pcm = (np.sin(np.arange(int(sys.argv[3]) * 48000) / 8) * 8000).astype(np.int16)
VoiceNoteWriter(dev.store, dev.journal, 48000, recipients=(sys.argv[2],)).seal(
    "VN-1", pcm, start, end, {"recording_id": "r1", "answers": "interruption"})
sys.exit("the crash point was never reached")
"""


def orphan_note(tmp_path: Path, recipient: str, seconds: int):
    """A device killed (SIGKILL, the crash point) after its encrypted voice note reached the disk
    and before the note's journal record: returns (device root, note file, its sync index)."""
    r = subprocess.run([sys.executable, "-c", _NOTE_KILL, str(tmp_path), recipient, str(seconds)],
                       env={**os.environ, "BODYCAM_CRASHPOINT": "voice-note-before-record:1"},
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    note = tmp_path / "dev-evidence" / "notes" / "VN-1.aac.age"
    index = note.with_name(note.name + ".sync")
    assert note.exists() and index.exists()
    return tmp_path / "dev-evidence", note, index


def test_an_orphaned_encrypted_voice_note_is_journaled_with_its_plaintext_facts(tmp_path, keys):
    from recorder.voice_note import seal_orphans
    key, recipient = keys["agency"]
    root, note, index = orphan_note(tmp_path, recipient, 2)
    dev = open_device(tmp_path / "dev-key", root)          # the restart
    [rec] = seal_orphans(dev.store, dev.journal)
    p = rec.payload
    assert p["recovered"] is True and p["note_id"] == "VN-1"
    assert p["link"] == {"recording_id": "r1", "answers": "interruption"}     # the station links it
    assert p["samples"] == 2 * 48000 and p["duration_ms"] == 2000 and p["codec"] == "aac-adts"
    [att] = p["attachments"]
    data = note.read_bytes()
    assert att == {"path": "notes/VN-1.aac.age", "sha256": hashlib.sha256(data).hexdigest(),
                   "size": len(data), "role": "voice-note"}
    plain = age_decrypt(key, note)
    assert plain.returncode == 0 and plain.stdout[:2] == b"\xff\xf1"
    enc = p["encryption"]
    assert enc["complete"] is True and enc["recipients"] == [recipient]
    assert (enc["plaintext_sha256"], enc["plaintext_size"]) == (hashlib.sha256(plain.stdout).hexdigest(),
                                                                len(plain.stdout))
    ids = age.parse_identities(key.read_text())
    assert opening.plaintext(data, _Keys(ids), enc, "note") == plain.stdout
    assert not index.exists()                                # served; not evidence
    assert verify_directory(root, dev.pem).ok
    assert seal_orphans(dev.store, dev.journal) == []


def test_an_encrypted_voice_note_cut_short_salvages_to_its_last_whole_chunk(tmp_path, keys):
    from recorder.voice_note import seal_orphans
    key, recipient = keys["agency"]
    root, note, index = orphan_note(tmp_path, recipient, 10)   # ~80 KB of AAC: two chunks
    whole = note.read_bytes()
    original = age_decrypt(key, note).stdout
    first = age.payload_start(whole) + age.CHUNK + age.TAG
    assert len(whole) > first + 1000
    note.chmod(0o644)                                        # the power went while it was written
    os.truncate(note, first + 1000)
    dev = open_device(tmp_path / "dev-key", root)
    [rec] = seal_orphans(dev.store, dev.journal)
    p = rec.payload
    enc = p["encryption"]
    assert enc["complete"] is False and enc["chunks"] == 1 and enc["plaintext_size"] == age.CHUNK
    assert enc["plaintext_sha256"] == hashlib.sha256(original[:age.CHUNK]).hexdigest()
    assert "samples" not in p and "duration_ms" not in p and p["link"]["recording_id"] == "r1"
    assert p["salvage"] == {"cut_at": "sync-index", "cut_bytes": 1000, "original_size": first + 1000}
    note_att, cut_att = p["attachments"]
    assert note_att["size"] == first == note.stat().st_size and cut_att["role"] == "salvage-cut"
    assert (root / cut_att["path"]).read_bytes() == whole[first:first + 1000]
    ids = age.parse_identities(key.read_text())
    assert opening.plaintext(note.read_bytes(), _Keys(ids), enc, "note") == original[:age.CHUNK]
    assert not index.exists() and verify_directory(root, dev.pem).ok


def test_a_voice_note_cut_short_plays_to_its_last_whole_adts_frame(tmp_path, keys):
    """The station shows players a cut note up to its last whole ADTS frame (opening.playable):
    the frame boundaries come from FFmpeg's demuxer on the whole note, not from our parser.
    The rule for segments (whole 188-byte TS packets) would end inside a frame."""
    from recorder.voice_note import seal_orphans
    key, recipient = keys["agency"]
    root, note, _ = orphan_note(tmp_path, recipient, 10)
    original = age_decrypt(key, note).stdout
    with av.open(io.BytesIO(original), format="adts") as c:
        ends = list(itertools.accumulate(p.size for p in c.demux() if p.size))
    assert ends[-1] == len(original)
    note.chmod(0o644)
    os.truncate(note, age.payload_start(note.read_bytes()) + age.CHUNK + age.TAG + 1000)
    dev = open_device(tmp_path / "dev-key", root)
    [rec] = seal_orphans(dev.store, dev.journal)
    enc, path = rec.payload["encryption"], rec.payload["attachments"][0]["path"]
    plain = opening.plaintext(note.read_bytes(), _Keys(age.parse_identities(key.read_text())), enc, "note")
    assert plain == original[:age.CHUNK] and enc["complete"] is False
    shown = opening.playable(plain, enc, path)
    assert shown == original[:max(e for e in ends if e <= age.CHUNK)]
    assert len(plain) // opening.TS_PACKET * opening.TS_PACKET not in ends   # the segment rule would not do
    with av.open(io.BytesIO(shown), format="adts") as c:          # and it decodes to the end
        decoded = sum(f.samples for p in c.demux() for f in p.decode())
    assert decoded >= 1024 * (len([e for e in ends if e <= age.CHUNK]) - 1)
    # a whole note (complete) is shown whole
    assert opening.playable(original, {"complete": True}, path) == original


def test_a_note_index_without_its_note_is_dropped(tmp_path, keys):
    from recorder.voice_note import seal_orphans
    root, note, index = orphan_note(tmp_path, keys["agency"][1], 1)
    note.unlink()                                            # the power went before the note was created
    dev = open_device(tmp_path / "dev-key", root)
    assert seal_orphans(dev.store, dev.journal) == []
    assert not index.exists() and verify_directory(root, dev.pem).ok


# ---- the sync index: an entry per chunk, padding only when it lags ---------------------------
def _ts(tmp_path: Path, rate: str, seconds: int = 4) -> bytes:
    """A real MPEG-TS with one PES per AAC packet, as the encrypting segmenter writes it."""
    out = tmp_path / f"{rate.replace(' ', '')}.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30",
                    "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", str(seconds), "-c:v", "libx264",
                    "-preset", "ultrafast", *rate.split(), "-g", "30", "-bf", "0", "-c:a", "aac", "-ac", "1",
                    "-f", "mpegts", "-pes_payload_size", "0", str(out)], check=True, timeout=120)
    return out.read_bytes()


@pytest.mark.parametrize("rate", ["-qp 12", "-b:v 300k"])
def test_sync_points_pad_only_when_the_index_lags(tmp_path, keys, rate):
    """Whole-packet pieces written with a sync point after each (as the segmenter's flushed
    muxer does): after every sync point the index's last entry is at most the lag margin
    behind the media written, so that one interval later it is at most MAX_LAG_S behind. At
    ~4 Mb/s the entries made as chunks fill keep it there with no padding at all; at 300 kb/s video
    a chunk takes most of a second to fill and the sync points pad."""
    from recorder.encrypt import MAX_LAG_S, EncryptingFile, read_index
    ts = _ts(tmp_path, rate)
    f = EncryptingFile(tmp_path / "s.ts.part", [keys["agency"][1]])
    every = f.sync_every_frames(30)
    lag = round((MAX_LAG_S - every / 30) * 90000)
    piece = 188 * 64     # 12 KiB: a sync point at least every 0.1 s of this video
    lags = []
    for off in range(0, len(ts), piece):
        f.write(ts[off:off + piece])
        f.checkpoint()
        _, entries = read_index(f.sync_path)
        noted = [e["last_pts"] for e in entries if e["last_pts"] is not None]
        if noted:
            lags.append(f.tally.last_pts - noted[-1])
    f.finish()
    f.close_synced()
    assert lags and max(lags) <= lag, (max(lags), lag)
    _, entries = read_index(f.sync_path)
    chunks = [e["chunks"] for e in entries]
    assert chunks == sorted(set(chunks))          # one entry per chunk written
    if rate == "-qp 12":
        assert f.padding == 0 and len(ts) > 1_500_000   # over 3 Mb/s
    else:
        assert f.padding > 0 and len(ts) < 400_000     # under 0.8 Mb/s


def test_a_part_cut_where_a_chunk_filled_salvages_to_whole_pes_packets(tmp_path, keys):
    """No sync point at all: the entries written as chunks filled are the salvage points. The
    prefix ends inside a TS packet and a PES packet; the record's ``media_size`` marks where
    the PES packets it counts end, and that much decodes cleanly to exactly its frames."""
    from recorder.encrypt import EncryptingFile
    from recorder.salvage import recover
    ts = _ts(tmp_path, "-qp 12", seconds=2)
    dev = new_device(tmp_path / "dev")
    d = dev.store.recording_dir("r1")
    f = EncryptingFile(d / "r1_00000.ts.part", [keys["agency"][1]])
    for off in range(0, len(ts) * 2 // 3, 32768):     # the muxer's 32 KiB writes, not packet-aligned
        f.write(ts[off:off + 32768])
    f.abandon()                                          # killed: no last chunk
    [res] = recover(dev.store, dev.sealer)
    assert verify_directory(dev.root, dev.pem).ok
    p = res.record.payload
    enc = p["encryption"]
    assert enc["complete"] is False and p["salvage"]["cut_at"] == "sync-index"
    assert enc["plaintext_size"] % age.CHUNK == 0 and 0 < enc["media_size"] < enc["plaintext_size"]
    plain = opening.plaintext((dev.root / p["path"]).read_bytes(), _Keys(age.parse_identities(
        keys["agency"][0].read_text())), enc, p["path"])
    assert plain == ts[:enc["plaintext_size"]]
    media = media_ts(plain, enc)
    assert decoded(media)[0] == p["video_frames"] > 30 and ffmpeg_errors(media) == ""
    assert p["audio_samples"] > 0
