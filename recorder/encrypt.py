"""Encryption of a segment as it is written: an age file that grows in authenticated chunks.

The segmenter's muxer writes MPEG-TS bytes into :class:`EncryptingFile` exactly as into a
plain :class:`~recorder.segmenter.HashingFile`. Plaintext waits in RAM until it fills a
64 KiB chunk, which is sealed (ChaCha20-Poly1305) and written; nothing in clear reaches
the disk. The file key is made fresh per file, wrapped to the agency's public key(s) in the
header and kept only in this object: once the segment is finished the device cannot read
it back.

Power loss. A chunk is only written when full, and a crash leaves no last chunk, so what
survives is the header plus the whole chunks the kernel had made durable. The device cannot
decrypt what it wrote, so it cannot look inside a cut-off segment after a crash; instead it
appends one line of facts to a clear *sync index* ``NAME.ts.sync`` beside the part file
**each time a chunk is written**: the ciphertext and plaintext length and SHA-256 of the
prefix, and the media in it (frames, PTS, audio samples, counted by :class:`TsTally` from the
TS packets written, only the PES packets that end inside the prefix), and ``media_size``,
where the last of those ends (a chunk boundary falls inside a TS packet; players get the
plaintext up to ``media_size``). Salvage cuts a part file back to the last index entry whose
ciphertext hash matches (``recorder.salvage``); the index is removed once its segment is
sealed. The index holds no media, only what the segment's journal record publishes anyway.

At a high bitrate chunks fill several times a second and those entries alone bound the
loss. At a low one a chunk may take longer than the bar allows, so the segmenter also offers
a sync point every :data:`SYNC_INTERVAL_S` of video and at each keyframe
(:meth:`EncryptingFile.sync_every_frames`); there :meth:`EncryptingFile.checkpoint` *completes*
the open chunk with MPEG-TS null packets (PID 0x1FFF, which every demuxer skips) **only when
the last entry is older** than :data:`MAX_LAG_S` less one interval, so that the media after the
last entry never exceeds :data:`MAX_LAG_S` (docs/encryption.md, "Sync cadence"). The padding
belongs to the plaintext like any other byte (plaintext hash, end marker). At every sync
point the closer fdatasyncs the segment and then its index, which bounds a power cut alike.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recorder import age
from recorder.segmenter import TS_PACKET, HashingFile

SYNC_SUFFIX = ".sync"
VIDEO_PID, AUDIO_PID = 0x100, 0x101   # what ffmpeg's mpegts muxer gives the first two streams
AAC_FRAME = 1024                      # samples per AAC-LC packet; one per audio PES (see segmenter)
NULL_PACKET = bytes((0x47, 0x1F, 0xFF, 0x10)) + b"\xff" * (TS_PACKET - 4)
SYNC_INTERVAL_S = 0.25
"""Media time between sync points of an encrypted segment (each keyframe is one too): there the
open chunk is padded if the sync index lags too far behind, and the closer fdatasyncs."""
MAX_LAG_S = 0.55
"""The media after the sync index's last entry stays below this (the lag left at a sync point
plus one interval): a kill or a power cut loses at most this plus what the encoder and muxer
still held. Where chunks fill more slowly than this (below ~1 Mb/s), every other sync point
pads, about every 0.53 s at 30 fps, as often as the padded sync point every 0.5 s before it,
which lost at most 0.60 s to a kill (tests/test_encryption_crash.py, docs/encryption.md)."""


def _pes_pts(packet: bytes, payload: int) -> int | None:
    """The PTS of a PES packet starting at ``payload`` within a TS packet, if it has one."""
    h = packet[payload:payload + 14]
    if len(h) < 14 or bytes(h[:3]) != b"\0\0\1" or not h[7] & 0x80:
        return None
    return (((h[9] >> 1) & 7) << 30 | h[10] << 22 | (h[11] >> 1) << 15 | h[12] << 7 | h[13] >> 1)


class TsTally:
    """Counts video frames and audio packets in TS bytes as they are written (one PES per
    video frame; one per AAC packet when the muxer's ``pes_payload_size`` is 0)."""

    def __init__(self, sample_rate: int, origin_s: int) -> None:
        self.rate, self.origin = sample_rate, origin_s
        self._carry = b""
        self.video_frames = 0
        self.first_pts: int | None = None
        self.last_pts: int | None = None
        self.first_sample: int | None = None
        self.end_sample = 0
        self._pos = 0   # plaintext offset of the first byte not yet fed (carry included)
        # (offset of a PES start, the counts of every PES before it): all of those ended
        # before that offset (ffmpeg's muxer writes each PES in one run of TS packets)
        self._marks: list[tuple[int, tuple[int, int | None, int | None, int | None, int]]] = []
        self._settled: tuple[int, tuple[int, int | None, int | None, int | None, int]] = (0, (0, None, None, None, 0))

    def feed(self, data: bytes) -> None:
        buf = self._carry + data if self._carry else data
        base = self._pos - len(self._carry)
        self._pos += len(data)
        whole = len(buf) // TS_PACKET * TS_PACKET
        self._carry = bytes(buf[whole:])
        # only packets that start a PES on our two PIDs (0x100, 0x101) matter: their second
        # header byte is 0x41 (PUSI + PID high bits). One strided slice gathers that byte of
        # every packet, so Python visits only the ~2 PES starts per frame, not all ~90 packets
        second = buf[1:whole:TS_PACKET]
        k = second.find(0x40 | VIDEO_PID >> 8)
        while k >= 0:
            off = k * TS_PACKET
            pid = (VIDEO_PID & 0xFF00) | buf[off + 2]
            if buf[off] == 0x47 and pid in (VIDEO_PID, AUDIO_PID):
                self._pes(buf, off, pid, base + off)
            k = second.find(0x40 | VIDEO_PID >> 8, k + 1)

    def _pes(self, buf: bytes, off: int, pid: int, at: int) -> None:
        afc = (buf[off + 3] >> 4) & 3
        if not afc & 1:
            return
        pts = _pes_pts(buf, off + 4 + (1 + buf[off + 4] if afc & 2 else 0))
        if pts is None:
            return
        self._marks.append((at, (self.video_frames, self.first_pts, self.last_pts,
                                 self.first_sample, self.end_sample)))
        if pid == VIDEO_PID:
            self.video_frames += 1
            self.first_pts = pts if self.first_pts is None else self.first_pts
            self.last_pts = pts if self.last_pts is None else max(self.last_pts, pts)
        else:
            sample = (pts * self.rate + 45000) // 90000 - self.origin * self.rate
            if self.first_sample is None:
                self.first_sample = max(sample, 0)
            self.end_sample = max(self.end_sample, sample + AAC_FRAME)

    def facts(self) -> dict[str, Any]:
        """Every PES written so far (call at a sync point: the muxer was flushed, the last
        PES is whole)."""
        return self._facts((self.video_frames, self.first_pts, self.last_pts,
                            self.first_sample, self.end_sample))

    def facts_before(self, limit: int) -> tuple[int, dict[str, Any]]:
        """(media_size, facts) of the PES packets that end within the first ``limit`` bytes:
        those before the last PES start at or before ``limit`` (the PES it starts, and any
        PES still in the muxer's buffer, may not have ended)."""
        marks, k = self._marks, 0
        while k < len(marks) and marks[k][0] <= limit:
            k += 1
        if k:
            self._settled = marks[k - 1]
            del marks[:k]
        at, counts = self._settled
        return at, self._facts(counts)

    def settle(self) -> dict[str, Any]:
        """At a sync point: every PES written so far has ended (see :meth:`facts`)."""
        counts = (self.video_frames, self.first_pts, self.last_pts, self.first_sample, self.end_sample)
        self._settled = (self._pos - len(self._carry), counts)
        self._marks.clear()
        return self._facts(counts)

    @staticmethod
    def _facts(counts: tuple[int, int | None, int | None, int | None, int]) -> dict[str, Any]:
        n, first_pts, last_pts, first_sample, end_sample = counts
        first = first_sample or 0
        span = (last_pts or 0) - (first_pts or 0)
        return {"video_frames": n, "first_pts": first_pts,
                "frame_duration": span // (n - 1) if n > 1 and span % (n - 1) == 0 else None,
                "last_pts": last_pts, "first_sample": first,
                "audio_samples": max(end_sample - first, 0)}


class EncryptingFile(HashingFile):
    """A HashingFile whose bytes reach the disk as an age v1 file (see the module docstring).

    ``sha``/``size`` are the plaintext's (what the muxer wrote and the end marker attests);
    ``stored_sha256``/``stored_size`` the ciphertext's (what the journal attests and anyone
    can check without a key)."""

    def __init__(self, path: Path, recipients: Sequence[str], sample_rate: int = 48000,
                 origin_s: int = 1) -> None:
        if not recipients:
            raise age.AgeError("an encrypted segment needs at least one recipient")
        self.recipients = [r.lower() for r in recipients]
        file_key = os.urandom(16)
        nonce = os.urandom(age.NONCE)
        head = age.header(file_key, self.recipients) + nonce
        super().__init__(path)
        self._aead: Any = age.payload_key(file_key, nonce)
        del file_key
        self._stored = hashlib.sha256()
        self._sealed_plain = hashlib.sha256()   # plaintext of the chunks written so far
        self._stored_size = 0
        self._pending = bytearray()
        self.padding = 0   # null TS bytes added at sync points (bench/bench_encryption.py)
        self._chunks = 0
        self._noted_chunks = 0
        self._noted_pts: int | None = None   # last_pts of the index's last entry
        self._pad_lag = 0                    # pad at a sync point when the index lags more (90 kHz)
        self.tally = TsTally(sample_rate, origin_s)
        self.sync_path = path.with_name(path.name.removesuffix(".part") + SYNC_SUFFIX)
        self._index = open(self.sync_path, "x", encoding="ascii")
        self._index.write(json.dumps({"format": age.FORMAT, "recipients": self.recipients}) + "\n")
        self._put(head)

    # -- ciphertext out -----------------------------------------------------------
    def _put(self, data: bytes) -> None:
        self._f.write(data)
        self._stored.update(data)
        self._stored_size += len(data)

    def _seal(self, last: bool) -> None:
        n = len(self._pending) if last else age.CHUNK
        chunk = bytes(self._pending[:n])
        del self._pending[:n]
        self._sealed_plain.update(chunk)
        self._put(self._aead.encrypt(age.chunk_nonce(self._chunks, last), chunk, None))
        self._chunks += 1

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.tally.feed(data)
        self._pending += data
        while len(self._pending) > age.CHUNK:   # a full chunk is sealed once more follows it
            self._seal(False)
        if self._chunks > self._noted_chunks:   # a chunk filled up: note the new durable prefix
            media_size, facts = self.tally.facts_before(self._chunks * age.CHUNK)
            self._note(False, facts, media_size)
        return len(data)

    # -- durability -------------------------------------------------------------------
    def sync_every_frames(self, fps: int) -> int:
        """Sync points between keyframes, every :data:`SYNC_INTERVAL_S` of video; padding
        there keeps the index's lag under :data:`MAX_LAG_S` until the next one."""
        every = max(1, round(fps * SYNC_INTERVAL_S))
        self._pad_lag = max(0, round((MAX_LAG_S - every / fps) * 90000))
        return every

    def checkpoint(self) -> None:
        """At a sync point (a TS packet boundary, the muxer flushed): if the index's last entry
        lags the media written by more than one interval's margin, complete the open chunk
        with null TS packets, write it, and note it; otherwise the entries written as chunks
        filled already bound the loss and nothing is padded. At least one padding byte stays
        pending, so the last chunk (written by :meth:`finish`) is never empty."""
        last = self.tally.last_pts
        if last is None or not self._pending:
            return
        since = self._noted_pts if self._noted_pts is not None else self.tally.first_pts
        if since is not None and last - since <= self._pad_lag:
            return
        media_size, facts = self.size, self.tally.settle()
        need = age.CHUNK - len(self._pending) + 1
        pad = NULL_PACKET * -(-need // TS_PACKET)
        self.sha.update(pad)
        self.size += len(pad)
        self.tally.feed(pad)
        self._pending += pad
        while len(self._pending) > age.CHUNK:
            self._seal(False)
        self.padding += len(pad)
        self._note(False, facts, media_size)

    def _note(self, complete: bool, facts: dict[str, Any], media_size: int | None = None) -> None:
        plain_size = self.size - len(self._pending)
        entry = {"chunks": self._chunks, "stored_size": self._stored_size,
                 "stored_sha256": self._stored.copy().hexdigest(),
                 "plain_size": plain_size, "media_size": plain_size if media_size is None else media_size,
                 "plain_sha256": self._sealed_plain.copy().hexdigest(), "complete": complete,
                 **facts}
        self._f.flush()
        self._index.write(json.dumps(entry, sort_keys=True) + "\n")
        self._index.flush()
        self._noted_chunks = self._chunks
        if facts.get("last_pts") is not None:
            self._noted_pts = facts["last_pts"]

    def finish(self) -> None:
        """Seal the last chunk (with the last flag) and hand the file to the kernel; the file
        key is forgotten."""
        self._seal(True)
        self._aead = None
        self._f.flush()

    def note_complete(self, facts: dict[str, Any]) -> None:
        """After :meth:`finish`: the index's last entry says the file is whole (salvage then
        seals it uncut, with these facts: the segmenter's own, as its record would carry)."""
        self._note(True, facts)

    @property
    def stored_sha256(self) -> str:
        return self._stored.hexdigest()

    @property
    def stored_size(self) -> int:
        return self._stored_size

    def attestation(self) -> dict[str, Any]:
        """The segment record's ``encryption`` object (``SegmentInfo.extra``)."""
        return {"encryption": {"format": age.FORMAT, "recipients": list(self.recipients),
                               "complete": True, "chunks": self._chunks,
                               "plaintext_sha256": self.sha.hexdigest(), "plaintext_size": self.size}}

    def sync(self) -> None:
        super().sync()
        try:   # the capture thread flushed the index line in checkpoint(); only the fd here
            os.fdatasync(self._index.fileno())
        except (OSError, ValueError):
            pass

    def close_synced(self) -> None:
        super().close_synced()
        self._index.flush()
        os.fsync(self._index.fileno())
        self._index.close()

    def abandon(self) -> None:
        super().abandon()
        try:
            self._index.close()
        except OSError:
            pass

    def discard_index(self) -> None:
        """The segment is sealed: its sync index has served (it is not evidence)."""
        try:
            os.unlink(self.sync_path)
        except FileNotFoundError:
            pass


def read_index(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(head, entries) of a sync index; a torn last line (power cut) is ignored."""
    head: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return head, entries
    for n, line in enumerate(text.split("\n")):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if n == 0:
            head = obj
        elif isinstance(obj.get("stored_size"), int) and isinstance(obj.get("stored_sha256"), str):
            entries.append(obj)
    return head, entries


def encrypted_part(data: bytes | memoryview) -> bool:
    """True when a (part) file is an age file: salvage cannot look inside it."""
    return bytes(data[:len(age.INTRO)]) == age.INTRO
