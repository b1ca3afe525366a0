"""Voice notes: a spoken reason (D5/D6) as an AAC clip, sealed and attested like a segment.

The officer holds the mark button and speaks. The clip is encoded from the
microphone's own PCM blocks (ADTS AAC, decodable on its own), written once
with exclusive creation under ``notes/``, fsynced, made read-only, and then
attested by a signed ``voice-note`` journal record whose attachment carries
its SHA-256 and size, so the verifier checks it like any segment. The record
also carries what the note answers (``link``), and the reason record names
the note by ``note_id``.

A power cut between writing the file and journaling it leaves a file no
record attests; :func:`seal_orphans` (run at start) journals such files as
recovered notes instead of leaving the directory unverifiable.

An encrypted note (``NOTE.aac.age``) is opaque to the device once written, so before the
note file, a sync index ``NOTE.aac.age.sync`` is made durable beside it, in the segments'
format (recorder/encrypt.py): the record's facts (id, length, times, link) and, for each
whole chunk and for the whole file, the ciphertext and plaintext length and SHA-256. An
orphan is then journaled with its plaintext facts like a cut segment (recorder/salvage.py,
:func:`~recorder.salvage.salvage_encrypted_note`): whole if the file matches the complete
entry, else cut to the last whole chunk the file bears out. The station checks and plays
it like any encrypted note. The index is removed once the record is written.
"""
from __future__ import annotations

import fractions
import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from common.clock import TimeSample
from common.crashpoints import crashpoint
from recorder import age, records
from recorder.encrypt import SYNC_SUFFIX
from recorder.journal import Journal, fsync_dir, iter_records
from recorder.records import Record
from recorder.salvage import CUT_INFIX, salvage_encrypted_note
from recorder.store import EvidenceStore

log = logging.getLogger(__name__)

NOTES_DIR = "notes"
VOICE_NOTE = "voice-note"
SUFFIX = ".aac"
ENCRYPTED_SUFFIX = ".age"   # an encrypted note: NOTE.aac.age (docs/encryption.md)


class VoiceNoteError(Exception):
    """The note could not be encoded or stored (nothing is attested then)."""


def encode_aac(samples: np.ndarray, sample_rate: int, bitrate_kbps: int = 64) -> bytes:
    """Mono int16 PCM to an ADTS AAC byte string (PyAV)."""
    samples = np.asarray(samples)
    if samples.ndim != 1 or samples.dtype != np.int16:
        raise VoiceNoteError("voice note needs mono int16 samples")
    if samples.size == 0:
        raise VoiceNoteError("voice note has no sound")
    buf = io.BytesIO()
    with av.open(buf, "w", format="adts") as out:
        st = out.add_stream("aac", rate=sample_rate)
        st.codec_context.layout = "mono"
        st.codec_context.bit_rate = bitrate_kbps * 1000
        st.codec_context.time_base = fractions.Fraction(1, sample_rate)
        pcm = samples.astype(np.float32) / 32768.0
        step = 1024
        for i in range(0, len(pcm), step):
            chunk = pcm[i:i + step].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, i
            frame.time_base = fractions.Fraction(1, sample_rate)
            out.mux(st.encode(frame))
        out.mux(st.encode(None))
    return buf.getvalue()


def _write_sealed(store: EvidenceStore, path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with store.open(path, "xb", actor="voice-note") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o444)
    fsync_dir(path.parent)


def _index_lines(head: dict[str, Any], plain: bytes, cipher: bytes) -> str:
    """A note's sync index (recorder.encrypt's format): the head, one entry per whole chunk
    (as a power cut can leave them) and one for the complete file."""
    start = age.payload_start(cipher)
    stored, plain_sha = hashlib.sha256(cipher[:start]), hashlib.sha256()
    lines = [json.dumps(head, sort_keys=True)]
    n = max(1, -(-len(plain) // age.CHUNK))
    for k in range(n):
        stored.update(cipher[start + k * (age.CHUNK + age.TAG):start + (k + 1) * (age.CHUNK + age.TAG)])
        plain_sha.update(plain[k * age.CHUNK:(k + 1) * age.CHUNK])
        last = k == n - 1
        lines.append(json.dumps({
            "chunks": k + 1, "complete": last,
            "stored_size": len(cipher) if last else start + (k + 1) * (age.CHUNK + age.TAG),
            "stored_sha256": stored.hexdigest(), "plain_size": min(len(plain), (k + 1) * age.CHUNK),
            "plain_sha256": plain_sha.hexdigest()}, sort_keys=True))
    return "\n".join(lines) + "\n"


class VoiceNoteWriter:
    def __init__(self, store: EvidenceStore, journal: Journal, sample_rate: int,
                 bitrate_kbps: int = 64, recipients: Sequence[str] = ()) -> None:
        """``recipients``: age recipients to encrypt every note to (``NOTE.aac.age``, the clip
        encoded in RAM and encrypted before it is written: no clear byte reaches the disk)."""
        self.store, self.journal = store, journal
        self.rate, self.bitrate = sample_rate, bitrate_kbps
        self.recipients = tuple(recipients)

    def seal(self, note_id: str, samples: np.ndarray, start: TimeSample, end: TimeSample,
             link: dict[str, Any] | None = None) -> Record:
        """Encode, store and attest one note; returns its journal record."""
        if not records.safe_relpath(note_id) or "/" in note_id:
            raise VoiceNoteError(f"bad note id {note_id!r}")
        data = encode_aac(samples, self.rate, self.bitrate)
        facts: dict[str, Any] = {
            "note_id": note_id, "samples": int(len(samples)), "sample_rate": self.rate,
            "duration_ms": int(len(samples) * 1000 // self.rate), "codec": "aac-adts",
            "start": records.time_sample_payload(start), "end": records.time_sample_payload(end),
            "link": link or {}}
        encryption: dict[str, Any] = {}
        index: Path | None = None
        path = self.store.root / NOTES_DIR / f"{note_id}{SUFFIX}{ENCRYPTED_SUFFIX if self.recipients else ''}"
        try:
            if self.recipients:
                plain = data
                data = age.encrypt(plain, self.recipients)
                encryption = {"format": age.FORMAT, "recipients": list(self.recipients), "complete": True,
                              "chunks": max(1, -(-len(plain) // age.CHUNK)),
                              "plaintext_sha256": hashlib.sha256(plain).hexdigest(),
                              "plaintext_size": len(plain)}
                index = path.with_name(path.name + SYNC_SUFFIX)
                head = {"format": age.FORMAT, "recipients": list(self.recipients), "note": facts}
                _write_sealed(self.store, index, _index_lines(head, plain, data).encode("ascii"))
            _write_sealed(self.store, path, data)
        except OSError as exc:
            raise VoiceNoteError(f"cannot store voice note {note_id}: {exc}") from exc
        crashpoint("voice-note-before-record")
        rel = self.store.relpath(path)
        digest = hashlib.sha256(data).hexdigest()
        payload = {**facts, "attachments": [records.file_attestation(rel, digest, len(data), VOICE_NOTE)]}
        if encryption:
            payload["encryption"] = encryption
        rec = self.journal.append(VOICE_NOTE, payload)
        if index is not None:
            _drop(index)     # not evidence: its facts are in the record now
        log.info("voice note %s sealed (%d ms, record %d)", note_id, payload["duration_ms"], rec.seq)
        return rec


def _drop(index: Path) -> None:
    try:
        os.unlink(index)
        fsync_dir(index.parent)
    except FileNotFoundError:
        pass


def seal_orphans(store: EvidenceStore, journal: Journal) -> list[Record]:
    """Attest note files that a power cut left without their record; an encrypted one with
    the plaintext facts of its sync index (see the module doc)."""
    notes = store.root / NOTES_DIR
    if not notes.is_dir():
        return []
    attested = {f["path"] for rec in iter_records(journal.path) for f in records.attested_files(rec)}
    out = []
    for p in sorted(notes.iterdir()):
        rel = store.relpath(p)
        if not p.is_file() or p.is_symlink() or rel in attested or p.name.endswith(SYNC_SUFFIX):
            continue
        if CUT_INFIX in p.name and p.name.split(CUT_INFIX)[0] in {q.name for q in notes.iterdir()}:
            continue     # the cut-off tail of a note below: attested with it
        note_id = p.name.removesuffix(ENCRYPTED_SUFFIX).removesuffix(SUFFIX)
        index = p.with_name(p.name + SYNC_SUFFIX)
        found = salvage_encrypted_note(p, store.root, attested) if index.exists() else None
        if found is not None:
            payload = {"note_id": note_id, "link": {}, **found, "recovered": True}
        else:
            data = p.read_bytes()
            payload = {"note_id": note_id, "recovered": True, "link": {},
                       "attachments": [records.file_attestation(rel, hashlib.sha256(data).hexdigest(),
                                                                len(data), VOICE_NOTE)]}
        rec = journal.append(VOICE_NOTE, payload)
        attested.update(a["path"] for a in payload["attachments"])
        log.warning("voice note %s had no record (power cut?): attested as recovered%s", rel,
                    " with its plaintext facts" if found else "")
        out.append(rec)
    for index in sorted(notes.glob("*" + SYNC_SUFFIX)):
        note = index.with_name(index.name.removesuffix(SYNC_SUFFIX))
        if not index.is_symlink() and (store.relpath(note) in attested or not note.exists()):
            if not note.exists():
                log.warning("voice note %s never reached storage (power cut while it was written)",
                            note.name)
            _drop(index)
    return out
