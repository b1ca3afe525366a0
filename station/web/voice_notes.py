"""A recording's voice notes (D5/D6 spoken reasons), found in the verified device journal, played
only inside an open playback.

The station does not catalogue voice notes: a docking mirrors them with the journal that
attests them (a ``voice-note`` record whose attachment carries the clip's path, SHA-256 and
size, checked at docking like any attested file). Their place is read back from that verified
mirror journal: a note belongs to a recording when its link names the recording
(``link.recording_id``, the recording running when it was spoken) or when a reason record
shown with the recording (``reason-given`` / ``not-recording``) names it by ``note_id``.

Hearing a note is viewing the recording (S8): it is served only while the user holds an open
playback of that recording (``web.playbacks``: the access rules and the audited ``view``
record), and its bytes are hashed against the journal first; a mismatch is an integrity alert
and nothing is served. A note encrypted on the device is decrypted like a segment
(``viewer.segment_plaintext``).
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recorder import records
from recorder.journal import JOURNAL_NAME, iter_records
from station.access import viewer
from station.access.viewer import SegmentFile
from station.app import Station
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.errors import NotFound

VOICE_NOTE = "voice-note"        # recorder.voice_note.VOICE_NOTE (that module needs PyAV)
NOTE_INDEX = -1                  # not a segment: an integrity alert names the note by its path


@dataclass(frozen=True)
class VoiceNote:
    note_id: str
    seq: int                     # the device journal record that attests it
    path: str                    # on the device (and in the mirror), e.g. notes/VN-....aac
    sha256: str
    size: int
    wall_ns: int | None          # when it was spoken (its start, device clock)
    duration_ms: int | None
    answers: str                 # what it answers: interruption, pause-request, or ""
    recording_id: str | None     # the recording running when it was spoken


_cache: dict[Path, tuple[tuple[int, int], list[VoiceNote], dict[int, str]]] = {}
_lock = threading.Lock()


def _note(rec: records.Record) -> VoiceNote | None:
    p = rec.payload
    files = [f for f in p.get("attachments") or [] if isinstance(f, dict) and f.get("role") == VOICE_NOTE]
    note_id = p.get("note_id")
    if not files or not isinstance(note_id, str):
        return None
    f = files[0]
    start: dict[str, Any] = p["start"] if isinstance(p.get("start"), dict) else {}
    link: dict[str, Any] = p["link"] if isinstance(p.get("link"), dict) else {}
    return VoiceNote(note_id, rec.seq, str(f["path"]), str(f["sha256"]), int(f["size"]),
                     start.get("wall_ns") if isinstance(start.get("wall_ns"), int) else rec.message.get("wall_ns"),
                     p.get("duration_ms") if isinstance(p.get("duration_ms"), int) else None,
                     str(link.get("answers") or ""),
                     link.get("recording_id") if isinstance(link.get("recording_id"), str) else None)


def _journal(st: Station, device_id: str) -> tuple[list[VoiceNote], dict[int, str]]:
    """The device's voice notes and, by journal seq, the note each reason record names; cached
    until the mirror journal changes (a docking replaces it)."""
    path = st.store / "devices" / device_id / "mirror" / JOURNAL_NAME
    try:
        stat = path.stat()
    except FileNotFoundError:
        return [], {}
    key = (stat.st_ino, stat.st_size)
    with _lock:
        hit = _cache.get(path)
    if hit is not None and hit[0] == key:
        return hit[1], hit[2]
    notes: list[VoiceNote] = []
    named: dict[int, str] = {}
    for rec in iter_records(path):
        if rec.type == VOICE_NOTE:
            note = _note(rec)
            if note is not None:
                notes.append(note)
        elif isinstance(rec.payload.get("note_id"), str) and rec.payload["note_id"]:
            named[rec.seq] = rec.payload["note_id"]
    with _lock:
        _cache[path] = (key, notes, named)
    return notes, named


def stops_near(s: Session, rec: m.Recording) -> list[m.Interruption]:
    """The device's interruption and reason records within an hour of the recording (as its page shows)."""
    return list(s.scalars(select(m.Interruption).where(
        m.Interruption.device_id == rec.device_id,
        m.Interruption.wall_ns >= (rec.start_wall_ns or 0) - NS_PER_HOUR,
        m.Interruption.wall_ns <= (rec.end_wall_ns or 0) + NS_PER_HOUR)))


def notes_of(st: Station, rec: m.Recording, stops: Iterable[m.Interruption]) -> list[VoiceNote]:
    """The recording's voice notes (see the module doc), in the order they were spoken."""
    notes, named = _journal(st, rec.device_id)
    wanted = {named[i.journal_seq] for i in stops if i.device_id == rec.device_id and i.journal_seq in named}
    return [n for n in notes if n.recording_id == rec.recording_id or n.note_id in wanted]


def note_bytes(st: Station, user: m.User, rec: m.Recording, note: VoiceNote) -> bytes:
    """The note's bytes after checking them against its journal record (integrity alert if not)."""
    f = SegmentFile(NOTE_INDEX, st.store / "devices" / rec.device_id / "mirror" / note.path, note.sha256,
                    note.size, note.path)
    if not records.safe_relpath(note.path):
        raise NotFound(f"voice note {note.note_id} has no safe path")
    try:
        data = f.path.read_bytes()
    except FileNotFoundError:
        raise viewer.integrity_alert(st, user.username, rec, f, None, None, "play-voice-note") from None
    found = hashlib.sha256(data).hexdigest()
    if found != note.sha256 or len(data) != note.size:
        raise viewer.integrity_alert(st, user.username, rec, f, found, len(data), "play-voice-note")
    return viewer.segment_plaintext(st, user.username, rec, f, data, note.seq, "play-voice-note")

