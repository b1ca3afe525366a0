"""Encryption at rest on the device (issue 14, D13): age files written as the segment grows.

Real components only: the simulated camera through the real encoder, segmenter and sealer;
Debian's ``age``/``age-keygen`` make the agency key and decrypt what we wrote; ``pyrage``
reads and writes the same format; the third-party recipe checks an encrypted recording with
``openssl`` and ``sha256sum`` and no key at all.
"""
import hashlib
import io
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
from recorder.verify import verify_directory
from station.keys import opening
from tests.conftest import sim_pipeline
from tests.media_fixture import new_device, open_device

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


# ---- power loss: the crash test's kill points, encrypted -----------------------------------
_KILL = r"""
import os, signal, sys, threading
from pathlib import Path
import recorder.segmenter as segmenter
from tests.conftest import sim_pipeline
from tests.media_fixture import new_device

point, recipient = sys.argv[2], sys.argv[3]
dev = new_device(Path(sys.argv[1]))
dev.journal.append("boot", {"firmware": "test"})
segment_1_written = threading.Event()
real_rotate = segmenter.Segmenter._rotate

def rotate(self):
    if self._seg.index == 1:          # about to close segment 1: hold the capture thread here
        segment_1_written.set()
        threading.Event().wait()
    real_rotate(self)

def crashpoint(name, before=None):
    if name == point:
        assert segment_1_written.wait(120), "segment 1 was never written"
        os.kill(os.getpid(), signal.SIGKILL)

segmenter.Segmenter._rotate = rotate
segmenter.crashpoint = crashpoint
if point == "segment-before-sync":
    segmenter.HashingFile.close_synced = lambda self: crashpoint(point)
p = sim_pipeline(dev.root, fps=30, segment_seconds=2, recipients=(recipient,))
p.sink, p.on_event = dev.sealer, dev.journal.append
p.run(10)
sys.exit("the crash point was never reached")
"""


@pytest.mark.parametrize("point", ["segment-before-sync", "segment-before-rename", "segment-before-seal"])
def test_kill_points_salvage_to_the_last_whole_authenticated_chunk(tmp_path, keys, point):
    """Segment 0 (2 s) closed but not yet synced / renamed / sealed when the process dies, and
    segment 1's part file holding 2 s of frames, one sync point behind: salvage keeps segment 0
    whole and cuts segment 1 back to its last durable sync point (whole chunks only), with the
    sync index's facts. The station's key opens both; their plaintext is what the journal says."""
    from recorder.salvage import recover
    key, recipient = keys["agency"]
    r = subprocess.run([sys.executable, "-c", _KILL, str(tmp_path), point, recipient],
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
    # what was lost: the frames after the last sync point (one keyframe interval, 1 s)
    assert 60 - second["video_frames"] <= 31, second["video_frames"]
    # the cut-off ciphertext is kept and attested, as for a plain segment
    assert second["attachments"] and second["attachments"][0]["role"] == "salvage-cut"
    ids = age.parse_identities(key.read_text())
    for p in (first, second):
        data = (dev.root / p["path"]).read_bytes()
        plain = opening.plaintext(data, _Keys(ids), p["encryption"], p["path"])
        ts = opening.playable_ts(plain)
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
