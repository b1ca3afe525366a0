"""The plaintext of an encrypted segment or voice note, proven to be the original.

The station decrypts at *view time*, not at ingest: the ciphertext stays at rest in the
store (a copied disk or a stolen backup reveals nothing; anyone can still check every file
against the device journal without a key), and the private key is needed only where and
when someone is allowed to watch. Each opening is checked three ways: the ciphertext's
SHA-256 against the catalogue (done by the caller, as for plain segments), every chunk's
ChaCha20-Poly1305 tag (an altered byte fails), and the SHA-256 of the plaintext against the
``encryption.plaintext_sha256`` the device signed in the segment's journal record.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from recorder import age
from recorder.journal import iter_records
from station.errors import EXIT_FAILED, StationError
from station.keys.keyring import Keyring, KeyUnavailable

TS_PACKET = 188


class DecryptionFailed(StationError):
    """The file does not decrypt to what the device attested (altered, or damaged)."""

    exit_code = EXIT_FAILED


def is_encrypted(data: bytes) -> bool:
    return data.startswith(age.INTRO)


def journal_record(journal: Path, seq: int) -> dict[str, Any] | None:
    """The payload of record ``seq`` of a (verified, stored) device journal."""
    for rec in iter_records(journal):
        if rec.seq == seq:
            return rec.payload
        if rec.seq > seq:
            break
    return None


def attested_encryption(journal: Path, seq: int, path: str) -> dict[str, Any] | None:
    """The ``encryption`` object the device journaled for file ``path`` in record ``seq``."""
    payload = journal_record(journal, seq)
    if payload is None:
        return None
    if payload.get("path") == path or any(a.get("path") == path for a in payload.get("attachments", [])):
        enc = payload.get("encryption")
        return enc if isinstance(enc, dict) else None
    return None


def plaintext(data: bytes, keys: Keyring, enc: dict[str, Any] | None, what: str) -> bytes:
    """Decrypt ``data`` (an age file) and check it against ``enc`` (its journaled facts).

    A segment salvaged after a power cut (``complete: false``) has no last chunk: its whole
    chunks are opened and checked the same way. Raises KeyUnavailable (no key opens it) or
    DecryptionFailed (a chunk or the plaintext hash does not match)."""
    if enc is None:
        raise DecryptionFailed(f"{what}: encrypted, but its journal record has no encryption facts")
    try:
        plain, complete = age.decrypt_prefix(data, keys.unwrap)
    except age.NoIdentity:
        raise KeyUnavailable(f"{what}: none of the agency keys opens it (encrypted to "
                             f"{', '.join(enc.get('recipients', [])) or 'an unknown key'})") from None
    except age.AgeError as exc:
        raise DecryptionFailed(f"{what}: does not decrypt: {exc}") from None
    if complete != bool(enc.get("complete", True)):
        raise DecryptionFailed(f"{what}: the journal says complete={enc.get('complete')}, the file "
                               f"{'ends with' if complete else 'lacks'} its last chunk")
    digest = hashlib.sha256(plain).hexdigest()
    if digest != enc.get("plaintext_sha256") or len(plain) != enc.get("plaintext_size"):
        raise DecryptionFailed(f"{what}: the plaintext's SHA-256 {digest} is not the journal's "
                               f"{enc.get('plaintext_sha256')}")
    return plain


def playable(plain: bytes, enc: dict[str, Any] | None, path: str) -> bytes:
    """What players get of the plaintext of ``path`` (a segment or a voice note): all of it,
    unless salvage cut it back after a power cut (``complete`` false); then whole PES/TS packets
    of a segment (:func:`playable_ts`) or whole ADTS frames of an AAC note (:func:`whole_adts_frames`)."""
    if (enc or {}).get("complete", True):
        return plain
    if path.removesuffix(".age").endswith(".aac"):
        return whole_adts_frames(plain)
    return playable_ts(plain, enc)


def whole_adts_frames(plain: bytes) -> bytes:
    """A voice note is AAC in ADTS frames (a 7- or 9-byte header giving the frame's length);
    cut back to its last whole authenticated chunk it ends inside a frame, which decoders
    report as an error: players get the frames before the first one that is not whole."""
    pos, n = 0, len(plain)
    # syncword 0xFFF and layer 00 (ISO/IEC 14496-3, 1.A.2.2.1), then the 13-bit frame length
    while pos + 7 <= n and plain[pos] == 0xFF and plain[pos + 1] & 0xF6 == 0xF0:
        length = ((plain[pos + 3] & 0x03) << 11) | (plain[pos + 4] << 3) | (plain[pos + 5] >> 5)
        if length < 7 or pos + length > n:
            break
        pos += length
    return plain[:pos]


def playable_ts(plain: bytes, enc: dict[str, Any] | None = None) -> bytes:
    """A salvaged segment's plaintext ends where its last whole chunk ended, perhaps inside a
    PES packet or a TS packet: for players, up to where its last whole PES ends (the device's
    ``encryption.media_size``, docs/evidence-format.md) or, in records without it, whole TS
    packets only. The attested plaintext (its hash) is the whole; this is only what is shown."""
    media = (enc or {}).get("media_size")
    if isinstance(media, int) and not isinstance(media, bool) and 0 <= media <= len(plain):
        return plain[:media]
    return plain[:len(plain) // TS_PACKET * TS_PACKET]
