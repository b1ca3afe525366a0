"""Encrypted recordings at the station (issue 14): device -> dock -> station -> decrypt -> play.

A simulated device records with encryption on (real encoder, segmenter, age writer, sealer),
docks over the real TLS link, and the station verifies and stores the *ciphertext* (no key
needed for that). Viewing decrypts in memory with the agency key: the web interface plays it in
Debian's chromium through hls.js, each segment checked against the journal's plaintext SHA-256;
a wrong key, an unsafe key file and a rotated key are tried; a playable MP4 is made from
encrypted originals.
"""
import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from recorder import age
from recorder.journal import iter_records
from station.access import viewer
from station.db import models as m
from station.export import playable
from station.keys import keyring
from station.web.app import create_app
from station.web.playback import Playbacks
from station.web.tls import spki_pin
from tests.conftest import sim_pipeline
from tests.station_fixture import sqlite_station_world  # noqa: F401
from tests.test_encryption import make_key
from tests.test_station_export import CASE_NAME, CASE_NO, _grant
from tests.web_fixture import CHROMIUM, serving, sign_in

pytestmark = pytest.mark.skipif(not shutil.which("age-keygen"), reason="Debian's age is not installed")


def _record_encrypted(recipient: str):
    def extra(dev):
        p = sim_pipeline(dev.root, segment_seconds=1, recipients=(recipient,))
        p.sink, p.on_event = dev.sealer, dev.journal.append
        p.run(2)
    return extra


def _install_station_key(st, key: Path) -> Path:
    path = keyring.key_path(st.store)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(key, path)
    path.chmod(0o600)
    return path


@pytest.fixture()
def enc_world(sqlite_station_world, tmp_path):
    w = sqlite_station_world
    key, recipient = make_key(tmp_path / "agency")
    w.record("dev", {}, extra=_record_encrypted(recipient))
    w.dock_device("dev")
    w.agency_key, w.recipient = key, recipient
    with w.st.db.session() as s:
        w.rec = s.scalars(select(m.Recording)).one()
        w.segs = s.scalars(select(m.Segment).where(m.Segment.recording == w.rec.id)
                           .order_by(m.Segment.index)).all()
    mirror = w.st.store / "devices" / w.rec.device_id / "mirror"
    w.payloads = {r.payload["index"]: r.payload for r in iter_records(mirror / "journal.log")
                  if r.type == "segment"}
    return w


def test_device_dock_station_decrypt_and_play_round_trip(enc_world, tmp_path):
    w = enc_world
    st = w.st
    assert len(w.segs) == 2
    # stored at rest as the device wrote it: ciphertext, verified against the journal at ingest
    for g in w.segs:
        data = (st.store / "devices" / w.rec.device_id / "mirror" / g.path).read_bytes()
        assert data.startswith(age.INTRO) and hashlib.sha256(data).hexdigest() == g.sha256
    wang = w.user("wang")
    # no key installed: the recording is verified and listed, but cannot be played
    pbs = Playbacks()
    pb = pbs.start(st, "s1", wang, w.rec.id, "核对现场情况")
    with pytest.raises(keyring.KeyUnavailable, match="does not exist"):
        Playbacks.segment(st, wang, pb, 0)
    # the agency key installed (mode 0600): each segment decrypts to what the device signed
    path = _install_station_key(st, w.agency_key)
    for g in w.segs:
        plain = Playbacks.segment(st, wang, pb, g.index)
        enc = w.payloads[g.index]["encryption"]
        assert plain[:1] == b"\x47" and hashlib.sha256(plain).hexdigest() == enc["plaintext_sha256"]
    # a key file the office could read is not used
    path.chmod(0o644)
    with pytest.raises(keyring.KeyUnavailable, match="readable by others"):
        Playbacks.segment(st, wang, pb, 0)
    # the wrong agency key cannot decrypt
    other, _ = make_key(tmp_path / "other")
    _install_station_key(st, other)
    with pytest.raises(keyring.KeyUnavailable, match="none of the agency keys"):
        Playbacks.segment(st, wang, pb, 0)
    # rotation: a new key goes first, the old one stays below; old recordings still open
    _install_station_key(st, w.agency_key)
    new = keyring.create_key_file(path, rotate=True)
    assert keyring.FileKeyring(path).recipients() == [new.recipient, w.recipient]
    assert hashlib.sha256(Playbacks.segment(st, wang, pb, 1)).hexdigest() == \
        w.payloads[1]["encryption"]["plaintext_sha256"]
    with pytest.raises(FileExistsError):
        keyring.create_key_file(path)             # never replaced by accident


def test_playable_copy_of_encrypted_originals(enc_world, tmp_path):
    w = enc_world
    mirror = w.st.store / "devices" / w.rec.device_id / "mirror"
    pkg = tmp_path / "pkg"
    ev = pkg / "devices" / w.rec.device_id / "evidence"
    ev.mkdir(parents=True)
    shutil.copyfile(mirror / "journal.log", ev / "journal.log")
    sources = []
    for g in w.segs:
        (ev / g.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mirror / g.path, ev / g.path)
        sources.append(f"devices/{w.rec.device_id}/evidence/{g.path}")
    ffmpeg = playable.find_ffmpeg()
    with pytest.raises(keyring.KeyUnavailable):       # no key: a clear refusal, no MP4 left
        playable.remux(ffmpeg, pkg, sources, "playable/x.mp4",
                       keys=keyring.FileKeyring(tmp_path / "absent.key"))
    assert not (pkg / "playable" / "x.mp4").exists()
    keyfile = _install_station_key(w.st, w.agency_key)
    made = playable.remux(ffmpeg, pkg, sources, "playable/x.mp4", keys=keyring.FileKeyring(keyfile))
    assert "decrypted with the agency key" in made["note"]
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                            "-show_entries", "stream=nb_read_frames", "-of", "json",
                            str(pkg / "playable" / "x.mp4")], capture_output=True, text=True, check=True)
    frames = int(json.loads(probe.stdout)["streams"][0]["nb_read_frames"])
    assert frames == sum(p["video_frames"] for p in w.payloads.values())


def test_the_web_interface_plays_an_encrypted_recording(enc_world):
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian chromium not installed (deploy/bootstrap-dev.sh)")
    from playwright.sync_api import sync_playwright
    w = enc_world
    _install_station_key(w.st, w.agency_key)
    cert, key = w.cfg.web_cert_path, w.cfg.web_key_path
    with serving(create_app(w.st), cert, key) as base_url:
        w.base_url, w.pin = base_url, spki_pin(cert)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                  args=[f"--ignore-certificate-errors-spki-list={w.pin}"])
            try:
                page = sign_in(b, w, "wang")
                page.goto(f"{base_url}/recordings/{w.rec.id}")
                page.fill("input[name=reason]", "核对现场情况")
                page.click("#play")
                page.wait_for_selector("#video[data-state=ready]", timeout=30000)
                size = page.evaluate(f"fetch('/recordings/{w.rec.id}/segments/0.ts')"
                                     ".then(r => r.arrayBuffer()).then(b => b.byteLength)")
                assert size == w.payloads[0]["encryption"]["plaintext_size"]   # the plaintext, checked
                page.evaluate("document.getElementById('video').play()")
                page.wait_for_function("() => document.getElementById('video').currentTime > 0.3",
                                       timeout=30000)
                page.evaluate("() => { document.getElementById('video').currentTime = 1.2; }")
                page.wait_for_function("() => document.getElementById('video').currentTime >= 1.2",
                                       timeout=30000)
            finally:
                b.close()
    assert viewer.agency_keys(w.st).recipients() == [w.recipient]


def test_station_keys_command_makes_keys_the_standard_tool_uses(tmp_path):
    import sys
    key = tmp_path / "keys" / "agency-identities.txt"
    run = [sys.executable, "-m", "station.keys"]
    r = subprocess.run([*run, "init", "--file", str(key), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)["current"]
    assert key.stat().st_mode & 0o777 == 0o600
    assert subprocess.run([*run, "init", "--file", str(key)], capture_output=True).returncode == 2
    r = subprocess.run([*run, "rotate", "--file", str(key), "--json"], capture_output=True, text=True)
    new = json.loads(r.stdout)
    assert new["recipients"] == [new["current"], first]
    # a file encrypted to the old recipient still opens with the rotated key file, by age itself
    (tmp_path / "old.age").write_bytes(age.encrypt(b"old recording", [first]))
    r = subprocess.run(["age", "-d", "-i", str(key), str(tmp_path / "old.age")], capture_output=True)
    assert r.returncode == 0 and r.stdout == b"old recording"
    key.chmod(0o640)
    r = subprocess.run([*run, "recipients", "--file", str(key)], capture_output=True, text=True)
    assert r.returncode == 1 and "readable by others" in r.stderr


def test_export_makes_a_playable_copy_of_encrypted_originals_with_the_stations_key(enc_world, tmp_path,
                                                                                   monkeypatch):
    """``station export --playable`` opens encrypted originals with the key in the store, as the
    viewer does (no environment variable needed); the originals in the package stay encrypted."""
    from station.casework.cases import open_case
    from station.casework.labels import LabelInput, label_recording
    from station.export.package import export
    w = enc_world
    monkeypatch.delenv(keyring.KEYS_ENV, raising=False)
    _install_station_key(w.st, w.agency_key)
    clerk = w.user("clerk")
    open_case(w.st, clerk, CASE_NO, CASE_NAME, "行政处罚", "市容科")
    label_recording(w.st, clerk, f"#{w.rec.id}", LabelInput(case_no=CASE_NO, counterpart="某餐饮店",
                                                            content="占道经营检查", place="思明区湖滨南路"))
    _grant(w, w.rec.id)
    r = export(w.st, w.user("clerk"), refs=[f"#{w.rec.id}"], out=tmp_path / "out", maker="张三",
               extractor="李四", want_playable=True)
    copy = r.copies[0]
    (p,) = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))["playable"]
    assert "decrypted with the agency key" in p["note"]
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                            "-show_entries", "stream=nb_read_frames", "-of", "json", str(copy / p["path"])],
                           capture_output=True, text=True, check=True)
    assert int(json.loads(probe.stdout)["streams"][0]["nb_read_frames"]) == sum(
        q["video_frames"] for q in w.payloads.values())
    original = copy / "devices" / w.rec.device_id / "evidence" / w.segs[0].path
    assert original.read_bytes().startswith(b"age-encryption.org/v1\n")


class _PowerCut(Exception):
    """The power goes at the crash point: the note's file is on disk, its record is not."""


def test_an_orphaned_encrypted_voice_note_is_checked_and_played_after_docking(sqlite_station_world,  # noqa: F811
                                                                                 tmp_path, monkeypatch):
    """A device loses power after writing an encrypted voice note and before journaling it; at
    the restart seal_orphans journals it with the plaintext facts and link of its sync index, so
    after docking the station finds it with its recording, checks it against the journal's
    plaintext SHA-256 and plays it (web.voice_notes, what /recordings/ID/notes/VN.aac serves)."""
    import av
    import numpy as np

    import recorder.voice_note as vn
    from common.clock import TimeQuality, TimeSample
    from station.web import voice_notes
    w = sqlite_station_world
    key, recipient = make_key(tmp_path / "agency")
    rate = 16000
    pcm = (np.sin(2 * np.pi * 440 * np.arange(rate) / rate) * 8000).astype(np.int16)

    def crash_at(name, before=None):
        if name == "voice-note-before-record":
            raise _PowerCut

    def extra(dev):
        p = sim_pipeline(dev.root, segment_seconds=1, recipients=(recipient,))
        p.sink, p.on_event = dev.sealer, dev.journal.append
        [result] = p.run(2)
        t = TimeSample(10**9, 1_790_000_000 * 10**9, TimeQuality.NTP)
        monkeypatch.setattr(vn, "crashpoint", crash_at)
        with pytest.raises(_PowerCut):
            vn.VoiceNoteWriter(dev.store, dev.journal, rate, recipients=(recipient,)).seal(
                "VN-1", pcm, t, t, {"recording_id": result.recording_id, "answers": "interruption"})
        monkeypatch.undo()
        assert not any(r.type == "voice-note" for r in iter_records(dev.journal.path))
        [rec] = vn.seal_orphans(dev.store, dev.journal)           # the restart
        assert rec.payload["recovered"] and rec.payload["encryption"]["complete"]

    w.record("dev", {}, extra=extra)
    w.dock_device("dev")
    st = w.st
    _install_station_key(st, key)
    with st.db.session() as s:
        rec = s.scalars(select(m.Recording)).one()
        stops = voice_notes.stops_near(s, rec)
    [note] = voice_notes.notes_of(st, rec, stops)            # found with its recording (the link)
    assert note.note_id == "VN-1" and note.path == "notes/VN-1.aac.age" and note.duration_ms == 1000
    mirror = st.store / "devices" / rec.device_id / "mirror"
    [payload] = [r.payload for r in iter_records(mirror / "journal.log") if r.type == "voice-note"]
    plain = voice_notes.note_bytes(st, w.user("wang"), rec, note)
    assert hashlib.sha256(plain).hexdigest() == payload["encryption"]["plaintext_sha256"]
    samples = 0
    with av.open(io.BytesIO(plain), format="adts") as c:   # it plays
        for packet in c.demux():
            samples += sum(f.samples for f in packet.decode())
    assert abs(samples - rate) <= 2048
    # another agency's key does not open it
    other, _ = make_key(tmp_path / "other")
    _install_station_key(st, other)
    with pytest.raises(keyring.KeyUnavailable):
        voice_notes.note_bytes(st, w.user("wang"), rec, note)
