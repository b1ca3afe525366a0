"""Encryption of a segment as it is written: an age file that grows in authenticated chunks.

The segmenter's muxer writes MPEG-TS bytes into :class:`EncryptingFile` exactly as into a
plain :class:`~recorder.segmenter.HashingFile`. Plaintext waits in RAM until it fills a
64 KiB chunk, which is sealed (ChaCha20-Poly1305) and written; nothing in clear reaches
the disk. The file key is made fresh per file, wrapped to the agency's public key(s) in the
header and kept only in this object: once the segment is finished the device cannot read
it back.

Power loss. A chunk is only written when full, and a crash leaves no last chunk, so what
survives is the header plus the whole chunks the kernel had made durable. To lose at most
the sync interval (one GOP, one second), each periodic sync first *completes* the open chunk
(:meth:`EncryptingFile.checkpoint`): it is padded with MPEG-TS null packets (PID 0x1FFF, which
every demuxer skips) until it is full, sealed and written; the padding belongs to the
plaintext like any other byte (it is counted in the plaintext hash and in the end marker).
The device cannot decrypt what it wrote, so it cannot look inside a cut-off segment after a
crash; instead each checkpoint appends one line of facts to a clear *sync index*
``NAME.ts.sync`` beside the part file: the ciphertext and plaintext length and SHA-256 of
the durable prefix and the media it holds (frames, PTS, audio samples, counted by
:class:`TsTally` from the TS packets written). The index holds no media, only what the
segment's journal record publishes anyway. Salvage cuts a part file back to the last index
entry whose ciphertext hash matches (``recorder.salvage``) and the index is removed once its
segment is sealed.
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

    def feed(self, data: bytes) -> None:
        buf = self._carry + data if self._carry else data
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
                self._pes(buf, off, pid)
            k = second.find(0x40 | VIDEO_PID >> 8, k + 1)

    def _pes(self, buf: bytes, off: int, pid: int) -> None:
        afc = (buf[off + 3] >> 4) & 3
        if not afc & 1:
            return
        pts = _pes_pts(buf, off + 4 + (1 + buf[off + 4] if afc & 2 else 0))
        if pts is None:
            return
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
        first = self.first_sample or 0
        span, n = (self.last_pts or 0) - (self.first_pts or 0), self.video_frames
        return {"video_frames": n, "first_pts": self.first_pts,
                "frame_duration": span // (n - 1) if n > 1 and span % (n - 1) == 0 else None,
                "last_pts": self.last_pts, "first_sample": first,
                "audio_samples": max(self.end_sample - first, 0)}


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
        self._chunks = 0
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
        return len(data)

    # -- durability -------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Complete the open chunk with null TS packets, write it, and note the durable prefix
        in the sync index. Call only at a TS packet boundary with the muxer flushed (the
        segmenter's per-GOP sync point). At least one padding byte stays pending, so the last
        chunk (written by :meth:`finish`) is never empty."""
        if self._pending:
            need = age.CHUNK - len(self._pending) + 1
            pad = NULL_PACKET * -(-need // TS_PACKET)
            self.sha.update(pad)
            self.size += len(pad)
            self._pending += pad
            while len(self._pending) > age.CHUNK:
                self._seal(False)
        self._note(False, self.tally.facts())

    def _note(self, complete: bool, facts: dict[str, Any]) -> None:
        entry = {"chunks": self._chunks, "stored_size": self._stored_size,
                 "stored_sha256": self._stored.copy().hexdigest(),
                 "plain_size": self.size - len(self._pending),
                 "plain_sha256": self._sealed_plain.copy().hexdigest(), "complete": complete,
                 **facts}
        self._f.flush()
        self._index.write(json.dumps(entry, sort_keys=True) + "\n")
        self._index.flush()

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
