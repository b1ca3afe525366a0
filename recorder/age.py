"""The age v1 file format (age-encryption.org/v1), X25519 recipients only: keys, header, STREAM.

Why our own code and not ``pyrage`` (locked, 1.4.0): pyrage encrypts a whole buffer or
pulls a file-like object to its end (``encrypt_io``); a segment grows for ten seconds and
must become durable, in whole authenticated chunks, once a second (salvage after a power
cut), with its ciphertext hashed as it is written. That needs a *push* writer that can be
told "complete this chunk now", which pyrage does not offer. The format is a short
published specification (https://age-encryption.org/v1) built from primitives in the locked
``cryptography`` (X25519, HKDF-SHA-256, HMAC-SHA-256, ChaCha20-Poly1305); interoperability
is proven in the tests by Debian's ``age -d`` and ``pyrage.decrypt`` reading our files and
by this module reading theirs.

Layout of a file::

    age-encryption.org/v1
    -> X25519 <ephemeral share, base64>        one stanza per recipient
    <file key wrapped for that recipient, base64>
    --- <HMAC-SHA-256 of the header up to "---", base64>
    <16-byte nonce> <chunk 0> <chunk 1> ... <last chunk>

Each chunk is 64 KiB of plaintext (the last one shorter, never empty unless the whole
payload is) sealed with ChaCha20-Poly1305 (+16 bytes) under a key derived from the file key
and the nonce; the AEAD nonce is the chunk counter (11 bytes, big-endian) and a last-chunk
flag byte. A file cut short has no chunk with the flag: every whole chunk before the cut
still authenticates (:func:`decrypt_prefix`), but the file as a whole is not a valid age
file, which is exactly what ``age -d`` says of it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INTRO = b"age-encryption.org/v1\n"
CHUNK = 64 * 1024
TAG = 16
SEALED_CHUNK = CHUNK + TAG
NONCE = 16
FORMAT = "age-v1"
_X25519_INFO = b"age-encryption.org/v1/X25519"
_RECIPIENT_HRP = "age"
_IDENTITY_HRP = "age-secret-key-"


class AgeError(ValueError):
    """Not an age file we can read, a bad key, or a chunk that does not authenticate."""


class NoIdentity(AgeError):
    """None of the identities given opens any recipient stanza of the file."""


class Truncated(AgeError):
    """The file ends without its last chunk (cut short: a crash, or a partial copy)."""


# ---- bech32 (BIP 173), as age encodes its keys ------------------------------
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: Sequence[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        b = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (b >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _convert(data: Sequence[int], frm: int, to: int, pad: bool) -> list[int]:
    acc, bits, out, maxv = 0, 0, [], (1 << to) - 1
    for v in data:
        acc = (acc << frm) | v
        bits += frm
        while bits >= to:
            bits -= to
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (to - bits)) & maxv)
    elif not pad and (bits >= frm or (acc << (to - bits)) & maxv):
        raise AgeError("bech32: bad padding")
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    words = _convert(data, 8, 5, True)
    chk = _polymod(_hrp_expand(hrp) + words + [0] * 6) ^ 1
    words += [(chk >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[w] for w in words)


def bech32_decode(text: str, hrp: str) -> bytes:
    if text.lower() != text and text.upper() != text:
        raise AgeError("bech32: mixed case")
    s = text.lower()
    pos = s.rfind("1")
    if s[:pos] != hrp or pos < 1 or len(s) - pos < 7:
        raise AgeError(f"not an age key of type {hrp!r}")
    try:
        words = [_CHARSET.index(c) for c in s[pos + 1:]]
    except ValueError:
        raise AgeError("bech32: bad character") from None
    if _polymod(_hrp_expand(hrp) + words) != 1:
        raise AgeError("bech32: bad checksum (a typo in the key?)")
    return bytes(_convert(words[:-6], 5, 8, False))


# ---- keys -------------------------------------------------------------------
def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def parse_recipient(text: str) -> X25519PublicKey:
    """An ``age1...`` recipient string to its X25519 public key (AgeError if it is not one)."""
    raw = bech32_decode(text.strip(), _RECIPIENT_HRP)
    if len(raw) != 32:
        raise AgeError("an age X25519 recipient holds 32 bytes")
    return X25519PublicKey.from_public_bytes(raw)


def recipient_string(key: X25519PublicKey) -> str:
    return bech32_encode(_RECIPIENT_HRP, _raw_public(key))


@dataclass(frozen=True)
class Identity:
    """An X25519 age identity (private key) and its recipient string."""

    key: X25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> Identity:
        raw = bech32_decode(text.strip(), _IDENTITY_HRP)
        if len(raw) != 32:
            raise AgeError("an age X25519 identity holds 32 bytes")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def __str__(self) -> str:
        raw = self.key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
        return bech32_encode(_IDENTITY_HRP, raw).upper()

    @property
    def recipient(self) -> str:
        return recipient_string(self.key.public_key())


def parse_identities(text: str) -> list[Identity]:
    """An age identity file: ``AGE-SECRET-KEY-1...`` lines; ``#`` comments and blanks ignored."""
    out = [Identity.parse(line) for line in text.splitlines()
           if line.strip() and not line.lstrip().startswith("#")]
    if not out:
        raise AgeError("no identity in the identity file")
    return out


def parse_recipients(text: str) -> list[str]:
    """An age recipients file: ``age1...`` lines; ``#`` comments and blanks ignored. Each is
    checked; returned normalised (lower case)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s and not s.startswith("#"):
            try:
                parse_recipient(s)
            except AgeError as exc:
                raise AgeError(f"line {n}: {exc}") from None
            out.append(s.lower())
    return out


# ---- header -------------------------------------------------------------------
def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    if not re.fullmatch(rb"[A-Za-z0-9+/]*", text):
        raise AgeError("bad base64 in header")
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise AgeError("bad base64 in header") from None


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(ikm)


def _wrap_lines(body: bytes) -> bytes:
    enc = _b64(body)
    lines = [enc[i:i + 64] for i in range(0, len(enc), 64)]
    if not lines or len(lines[-1]) == 64:
        lines.append(b"")
    return b"\n".join(lines) + b"\n"


def header(file_key: bytes, recipients: Sequence[str]) -> bytes:
    """The header wrapping ``file_key`` to every recipient, MAC included (ends in LF)."""
    if not recipients:
        raise AgeError("at least one recipient is needed")
    out = INTRO
    for r in recipients:
        them = _raw_public(parse_recipient(r))
        eph = X25519PrivateKey.generate()
        share = _raw_public(eph.public_key())
        wrap = _hkdf(eph.exchange(X25519PublicKey.from_public_bytes(them)), share + them, _X25519_INFO)
        body = ChaCha20Poly1305(wrap).encrypt(bytes(12), file_key, None)
        out += b"-> X25519 " + _b64(share) + b"\n" + _wrap_lines(body)
    out += b"---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), out, hashlib.sha256).digest()
    return out + b" " + _b64(mac) + b"\n"


@dataclass(frozen=True)
class Header:
    stanzas: tuple[tuple[bytes, bytes], ...]   # (X25519 share, wrapped key); others are skipped
    mac_input: bytes
    mac: bytes
    length: int                                 # bytes up to and including the MAC line


def parse_header(data: bytes) -> Header:
    if not data.startswith(INTRO):
        raise AgeError("not an age v1 file")
    pos, stanzas = len(INTRO), list[tuple[bytes, bytes]]()
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise AgeError("the header is cut short")
        line = data[pos:end]
        if line.startswith(b"--- "):
            return Header(tuple(stanzas), data[:pos + 3], _unb64(line[4:]), end + 1)
        if not line.startswith(b"-> "):
            raise AgeError("malformed header line")
        args = line[3:].split(b" ")
        pos, body = end + 1, b""
        while True:   # body lines: full 64-column lines, then one shorter line
            end = data.find(b"\n", pos)
            if end < 0:
                raise AgeError("the header is cut short")
            chunk, pos = data[pos:end], end + 1
            body += chunk
            if len(chunk) < 64:
                break
        if args[0] == b"X25519" and len(args) == 2:
            stanzas.append((_unb64(args[1]), _unb64(body)))


def unwrap(hdr: Header, identities: Sequence[Identity]) -> bytes:
    """The file key, from the first stanza one of ``identities`` opens (header MAC checked)."""
    for ident in identities:
        mine = _raw_public(ident.key.public_key())
        for share, body in hdr.stanzas:
            if len(share) != 32 or len(body) != 32:
                continue
            shared = ident.key.exchange(X25519PublicKey.from_public_bytes(share))
            try:
                key = ChaCha20Poly1305(_hkdf(shared, share + mine, _X25519_INFO)).decrypt(
                    bytes(12), body, None)
            except InvalidTag:
                continue
            want = hmac.new(_hkdf(key, b"", b"header"), hdr.mac_input, hashlib.sha256).digest()
            if not hmac.compare_digest(want, hdr.mac):
                raise AgeError("header MAC does not verify (the header was altered)")
            return key
    raise NoIdentity("no identity given opens this file (wrong agency key?)")


# ---- payload (STREAM) ----------------------------------------------------------
def payload_key(file_key: bytes, nonce: bytes) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))


def chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def payload_start(data: bytes) -> int:
    """Offset of the first chunk (header and 16-byte nonce skipped)."""
    return parse_header(data).length + NONCE


Opener = Callable[[Header], bytes]
"""Gives the file key of a header (``unwrap`` with identities held in memory, or a token)."""


def _opener(identities: Sequence[Identity] | Opener) -> Opener:
    if callable(identities):
        return identities
    ids = list(identities)
    return lambda hdr: unwrap(hdr, ids)


def _chunks(data: bytes, identities: Sequence[Identity] | Opener) -> Iterator[bytes]:
    """Yield each chunk's plaintext once it authenticates; Truncated when the file ends
    without a chunk carrying the last flag (after yielding every whole chunk before)."""
    hdr = parse_header(data)
    key = _opener(identities)(hdr)
    if len(data) < hdr.length + NONCE:
        raise Truncated("the file ends inside its nonce")
    aead = payload_key(key, data[hdr.length:hdr.length + NONCE])
    pos, n = hdr.length + NONCE, 0
    while True:
        rest = len(data) - pos
        if rest == 0:
            raise Truncated(f"the file ends after {n} whole chunks, without its last chunk")
        sealed = data[pos:pos + SEALED_CHUNK]
        if rest > SEALED_CHUNK:            # more follows: a full chunk without the last flag
            try:
                yield aead.decrypt(chunk_nonce(n, False), sealed, None)
            except InvalidTag:
                raise AgeError(f"chunk {n} does not authenticate (altered or damaged)") from None
            pos, n = pos + SEALED_CHUNK, n + 1
            continue
        try:
            plain = aead.decrypt(chunk_nonce(n, True), sealed, None)
        except InvalidTag:
            plain = None
        if plain is not None:
            if not plain and n > 0:
                raise AgeError("the last chunk is empty (not a valid age file)")
            yield plain
            return
        if rest == SEALED_CHUNK:           # a whole chunk, but not the last one: cut here
            try:
                yield aead.decrypt(chunk_nonce(n, False), sealed, None)
            except InvalidTag:
                raise AgeError(f"chunk {n} does not authenticate (altered or damaged)") from None
            raise Truncated(f"the file ends after {n + 1} whole chunks, without its last chunk")
        raise Truncated(f"chunk {n} does not authenticate: altered, or the file was cut inside it")


def decrypt(data: bytes, identities: Sequence[Identity] | Opener) -> bytes:
    """The plaintext of a whole age file; AgeError for any altered byte or a cut-short file."""
    return b"".join(_chunks(data, identities))


def decrypt_prefix(data: bytes, identities: Sequence[Identity] | Opener) -> tuple[bytes, bool]:
    """(plaintext of every whole authenticated chunk, complete?). A file cut short (a salvaged
    segment) gives the plaintext of its whole chunks and ``False``. The caller compares the
    result with the journal's plaintext hash, which also catches an altered last chunk."""
    out: list[bytes] = []
    try:
        for chunk in _chunks(data, identities):
            out.append(chunk)
    except Truncated:
        return b"".join(out), False
    return b"".join(out), True


def encrypt(plaintext: bytes, recipients: Sequence[str]) -> bytes:
    """Whole-buffer encryption (voice notes); same output format as the streaming writer."""
    file_key = os.urandom(16)
    nonce = os.urandom(NONCE)
    aead = payload_key(file_key, nonce)
    parts = [header(file_key, recipients), nonce]
    n = max(1, -(-len(plaintext) // CHUNK))
    for i in range(n):
        parts.append(aead.encrypt(chunk_nonce(i, i == n - 1), plaintext[i * CHUNK:(i + 1) * CHUNK], None))
    return b"".join(parts)
