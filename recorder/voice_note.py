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
"""
from __future__ import annotations

import fractions
import hashlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from common.clock import TimeSample
from recorder import age, records
from recorder.journal import Journal, fsync_dir, iter_records
from recorder.records import Record
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
        encryption: dict[str, Any] = {}
        if self.recipients:
            encryption = {"format": age.FORMAT, "recipients": list(self.recipients), "complete": True,
                          "plaintext_sha256": hashlib.sha256(data).hexdigest(),
                          "plaintext_size": len(data)}
            data = age.encrypt(data, self.recipients)
        path = self.store.root / NOTES_DIR / f"{note_id}{SUFFIX}{ENCRYPTED_SUFFIX if encryption else ''}"
        try:
            _write_sealed(self.store, path, data)
        except OSError as exc:
            raise VoiceNoteError(f"cannot store voice note {note_id}: {exc}") from exc
        rel = self.store.relpath(path)
        digest = hashlib.sha256(data).hexdigest()
        payload = {
            "note_id": note_id, "samples": int(len(samples)), "sample_rate": self.rate,
            "duration_ms": int(len(samples) * 1000 // self.rate), "codec": "aac-adts",
            "start": records.time_sample_payload(start), "end": records.time_sample_payload(end),
            "link": link or {},
            "attachments": [records.file_attestation(rel, digest, len(data), VOICE_NOTE)],
        }
        if encryption:
            payload["encryption"] = encryption
        rec = self.journal.append(VOICE_NOTE, payload)
        log.info("voice note %s sealed (%d ms, record %d)", note_id, payload["duration_ms"], rec.seq)
        return rec


def seal_orphans(store: EvidenceStore, journal: Journal) -> list[Record]:
    """Attest note files that a power cut left without their record."""
    notes = store.root / NOTES_DIR
    if not notes.is_dir():
        return []
    attested = {f["path"] for rec in iter_records(journal.path) for f in records.attested_files(rec)}
    out = []
    for p in sorted(notes.iterdir()):
        rel = store.relpath(p)
        if not p.is_file() or rel in attested:
            continue
        data = p.read_bytes()
        rec = journal.append(VOICE_NOTE, {
            "note_id": p.name.removesuffix(ENCRYPTED_SUFFIX).removesuffix(SUFFIX), "recovered": True, "link": {},
            "attachments": [records.file_attestation(rel, hashlib.sha256(data).hexdigest(), len(data),
                                                     VOICE_NOTE)]})
        log.warning("voice note %s had no record (power cut?): attested as recovered", rel)
        out.append(rec)
    return out
