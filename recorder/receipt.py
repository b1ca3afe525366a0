"""Dock receipts: the only thing that lets the device free space (D9, D10, D11, S1).

A receipt is the dock station's signed statement "I have verified and stored
these files of device D, whose journal I verified up to record (seq, hash)".
It answers a one-time challenge (``nonce``) that the device handed out in this
docking session, so an old receipt cannot be replayed and a receipt for
another device or another journal cannot be used.

Wire form (UTF-8 JSON)::

    {"receipt": {...canonical fields...}, "signature": "<base64>", "dock_cert": "<PEM>"}

``signature`` is Ed25519 by the key of ``dock_cert`` over ``canonical_json(receipt)``
(the same canonical JSON as journal records). ``dock_cert`` must be issued by
the agency CA configured on the device at provisioning and be a TLS client
(dock) certificate.

What the device does with one (``EvidenceStore.reclaim``): validate it with
``ReceiptValidator``; a refused receipt purges nothing and leaves a
``dock-receipt-refused`` record naming the reason. An accepted one leaves a
``dock-receipt`` record (the signed receipt, so an auditor can check the
dock's signature later) and then a ``purge`` record listing every file about to
be removed, written *before* the files are unlinked. Each file named must be on the
device as attested: it is hashed again, unless the dock link served it in full in the
receipt's session and it is still the inode it was served from (``ServedIdentity``).

``ReleasedFiles`` is the verifier's side of this: a file attested by a record
and later named, with the same SHA-256 and size, by a ``purge`` record that
points at an earlier ``dock-receipt`` record naming it too, may be absent.
"""
from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import secrets
import stat as stat_mod
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from recorder import records
from recorder.failures import NamedFailure
from recorder.records import MalformedLine, Record

if TYPE_CHECKING:   # x509 (~7 MB of RSS) is imported only where a certificate is read: not while recording
    from cryptography import x509

log = logging.getLogger(__name__)

RECEIPT_VERSION = 1
DOCK_RECEIPT = "dock-receipt"
DOCK_RECEIPT_REFUSED = "dock-receipt-refused"
PURGE = "purge"
PURGE_FAILED = "purge-failed"
MAX_RECEIPT_FILES = 2048          # keeps the dock-receipt and purge records well under MAX_LINE_BYTES
MAX_WIRE_BYTES = 900_000
RECEIPT_KEYS = frozenset({"v", "device", "dock", "nonce", "counter", "issued_wall_ns",
                          "journal_head", "files", "verified", "stored"})
FILE_KEYS = frozenset({"path", "sha256", "size"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 1 << 20


# ---- named refusals ---------------------------------------------------------------
class ReceiptRefused(NamedFailure):
    """A receipt that frees nothing. ``reason`` is the class name (journaled)."""


class ReceiptMalformed(ReceiptRefused):
    """Not a receipt: bad JSON, missing or extra fields, wrong types, unsafe paths."""


class UntrustedDock(ReceiptRefused):
    """The signing certificate is not an agency-issued dock certificate (or not this session's dock)."""


class RevokedDock(UntrustedDock):
    """The dock certificate is on the agency's certificate revocation list installed on the device."""


class BadReceiptSignature(ReceiptRefused):
    """The signature does not verify with the dock certificate's key (forged or altered)."""


class WrongDevice(ReceiptRefused):
    """The receipt is for another device."""


class ReplayedReceipt(ReceiptRefused):
    """The nonce was never issued here, or was already used."""


class StaleReceipt(ReceiptRefused):
    """The nonce was issued too long ago."""


class IncompleteReceipt(ReceiptRefused):
    """The dock does not say it verified *and* stored everything it names."""


class HeadMismatch(ReceiptRefused):
    """The journal head the dock verified is not a record of this journal."""


class FileMismatch(ReceiptRefused):
    """A named file is not attested (before the head) as named, or differs on disk, or is gone."""


class NotServedInSession(ReceiptRefused):
    """None of the named files was served in full to this dock in the TLS session of the receipt.

    (A receipt naming some files served in full and some not purges the former only;
    the rest is refused by name in the answer and the ``purge`` record.)
    """


# ---- the receipt itself ------------------------------------------------------------
@dataclass(frozen=True)
class ReceiptFile:
    path: str
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Receipt:
    device: str
    dock: str
    nonce: str
    counter: int
    issued_wall_ns: int
    head_seq: int
    head_hash: str
    files: tuple[ReceiptFile, ...]
    verified: bool = True
    stored: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"v": RECEIPT_VERSION, "device": self.device, "dock": self.dock,
                "nonce": self.nonce, "counter": self.counter,
                "issued_wall_ns": self.issued_wall_ns,
                "journal_head": {"seq": self.head_seq, "hash": self.head_hash},
                "files": [f.as_dict() for f in self.files],
                "verified": self.verified, "stored": self.stored}

    def message(self) -> bytes:
        return records.canonical_json(self.as_dict())


@dataclass(frozen=True)
class SignedReceipt:
    receipt: Receipt
    message: bytes          # the exact canonical bytes that were signed
    signature: bytes
    dock_cert_pem: bytes
    wire: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.wire).hexdigest()


def dock_id_for_cert(cert: x509.Certificate) -> str:
    """The dock's id: first 32 hex digits of SHA-256 over its certificate's SubjectPublicKeyInfo."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()[:32]


def sign_receipt(receipt: Receipt, dock_key: Ed25519PrivateKey, dock_cert_pem: bytes) -> bytes:
    """The wire bytes of ``receipt`` signed by the dock (dock station side)."""
    if not isinstance(dock_key, Ed25519PrivateKey):
        raise TypeError("a dock receipt is signed with the dock's Ed25519 key")
    message = receipt.message()
    return json.dumps({"receipt": receipt.as_dict(),
                       "signature": base64.b64encode(dock_key.sign(message)).decode("ascii"),
                       "dock_cert": dock_cert_pem.decode("ascii")},
                      sort_keys=True).encode("utf-8")


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_receipt_fields(r: Any) -> Receipt:
    if not isinstance(r, dict) or set(r) != RECEIPT_KEYS:
        got = sorted(r) if isinstance(r, dict) else type(r).__name__
        raise ReceiptMalformed(f"receipt fields must be {sorted(RECEIPT_KEYS)}, got {got}")
    if r["v"] != RECEIPT_VERSION:
        raise ReceiptMalformed(f"receipt version {r['v']!r}, expected {RECEIPT_VERSION}")
    for k in ("device", "dock"):
        if not isinstance(r[k], str) or not r[k]:
            raise ReceiptMalformed(f"{k} is not a non-empty string")
    if not isinstance(r["nonce"], str) or not _NONCE.match(r["nonce"]):
        raise ReceiptMalformed("nonce is not 32 lower-case hex digits")
    for k in ("counter", "issued_wall_ns"):
        if not _is_int(r[k]) or r[k] < 0:
            raise ReceiptMalformed(f"{k} is not a non-negative integer")
    head = r["journal_head"]
    if (not isinstance(head, dict) or set(head) != {"seq", "hash"} or not _is_int(head["seq"])
            or head["seq"] < 0 or not isinstance(head["hash"], str) or not _HEX64.match(head["hash"])):
        raise ReceiptMalformed("journal_head must be {seq: int >= 0, hash: 64 hex}")
    for k in ("verified", "stored"):
        if not isinstance(r[k], bool):
            raise ReceiptMalformed(f"{k} is not true/false")
    files = r["files"]
    if not isinstance(files, list) or not files:
        raise ReceiptMalformed("files must be a non-empty list")
    if len(files) > MAX_RECEIPT_FILES:
        raise ReceiptMalformed(f"more than {MAX_RECEIPT_FILES} files in one receipt")
    out, seen = [], set()
    for f in files:
        if not isinstance(f, dict) or set(f) != FILE_KEYS:
            raise ReceiptMalformed(f"a file entry must have exactly {sorted(FILE_KEYS)}")
        if not records.safe_relpath(f["path"]) or f["path"] == "journal.log":
            raise ReceiptMalformed(f"file path {f['path']!r} is not a releasable relative path")
        if not isinstance(f["sha256"], str) or not _HEX64.match(f["sha256"]):
            raise ReceiptMalformed(f"{f['path']}: sha256 is not 64 hex digits")
        if not _is_int(f["size"]) or f["size"] < 0:
            raise ReceiptMalformed(f"{f['path']}: size is not a non-negative integer")
        if f["path"] in seen:
            raise ReceiptMalformed(f"{f['path']} named twice")
        seen.add(f["path"])
        out.append(ReceiptFile(f["path"], f["sha256"], f["size"]))
    return Receipt(r["device"], r["dock"], r["nonce"], r["counter"], r["issued_wall_ns"],
                   head["seq"], head["hash"], tuple(out), r["verified"], r["stored"])


def parse_signed(wire: bytes) -> SignedReceipt:
    """Structure only (no trust yet). Raises ReceiptMalformed."""
    if not isinstance(wire, (bytes, bytearray)) or len(wire) > MAX_WIRE_BYTES:
        raise ReceiptMalformed(f"a receipt is bytes of at most {MAX_WIRE_BYTES}")
    try:
        doc = json.loads(bytes(wire).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReceiptMalformed(f"not JSON: {exc}") from None
    except RecursionError:
        raise ReceiptMalformed("not a receipt: JSON nested too deeply") from None
    if not isinstance(doc, dict) or set(doc) != {"receipt", "signature", "dock_cert"}:
        raise ReceiptMalformed("expected exactly receipt, signature, dock_cert")
    receipt = _parse_receipt_fields(doc["receipt"])
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ReceiptMalformed("signature is not base64") from None
    if len(signature) != 64:
        raise ReceiptMalformed("signature is not 64 bytes")
    if not isinstance(doc["dock_cert"], str) or not doc["dock_cert"].isascii():
        raise ReceiptMalformed("dock_cert is not a PEM string")
    return SignedReceipt(receipt, receipt.message(), signature,
                         doc["dock_cert"].encode("ascii"), bytes(wire))


# ---- one-time challenges -------------------------------------------------------------
class NonceBook:
    """Challenges handed to the dock in this session; each may be redeemed once, while fresh.

    Kept in memory on purpose: a restart of the link forgets them, so no
    receipt made before it can ever be presented again. The dock link keeps one
    book per TLS session (connection), so a nonce can only be redeemed in the
    session that was given it, and another client (even one holding a dock
    certificate) can neither redeem nor evict it. ``max_outstanding`` bounds
    the memory of one session: past it, that session's own oldest nonce is forgotten.
    A nonce is used up by the first receipt that reaches the nonce check (well
    formed, valid dock certificate of this session, good signature, this device),
    whatever happens to it afterwards; a receipt refused before that leaves it outstanding.
    """

    def __init__(self, ttl_s: float = 900.0, monotonic: Callable[[], float] = time.monotonic,
                 max_outstanding: int = 64) -> None:
        self.ttl_s = ttl_s
        self._now = monotonic
        self._issued: dict[str, float] = {}
        self._max = max_outstanding
        self._lock = threading.Lock()

    def issue(self) -> str:
        nonce = secrets.token_hex(16)
        with self._lock:
            if len(self._issued) >= self._max:   # forget the oldest: a dock cannot grow memory
                del self._issued[min(self._issued, key=self._issued.__getitem__)]
            self._issued[nonce] = self._now()
        return nonce

    def redeem(self, nonce: str) -> None:
        """Use up ``nonce`` (whatever the outcome of the receipt), or raise Replayed/Stale."""
        with self._lock:
            issued = self._issued.pop(nonce, None)
        if issued is None:
            raise ReplayedReceipt("nonce was not issued in this docking session or was already used")
        if self._now() - issued > self.ttl_s:
            raise StaleReceipt(f"nonce is older than {self.ttl_s:.0f} s")


# ---- trust in docks --------------------------------------------------------------------
def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def check_dock_certificate(cert: x509.Certificate, ca_cert: x509.Certificate,
                           now: _dt.datetime | None = None) -> None:
    """Raise UntrustedDock unless ``cert`` is a current dock (TLS client) certificate issued by the CA."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise UntrustedDock(f"certificate is not issued by the agency CA: {exc or 'bad signature'}") from None
    now = now or _utcnow()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise UntrustedDock(f"certificate not valid now ({cert.not_valid_before_utc:%Y-%m-%d} .. "
                            f"{cert.not_valid_after_utc:%Y-%m-%d})")
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise UntrustedDock("certificate has no extended key usage; a dock certificate is clientAuth") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise UntrustedDock("certificate is not a dock (clientAuth) certificate")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise UntrustedDock("a CA certificate is not a dock")
    except x509.ExtensionNotFound:
        pass


# ---- the journal as the device sees it -------------------------------------------------
@dataclass
class JournalIndex:
    """What the journal attests, read with the structural parser (the device trusts its own journal)."""

    hashes: dict[int, str] = field(default_factory=dict)
    attested: dict[str, tuple[int, str, int]] = field(default_factory=dict)   # path -> (seq, sha, size)
    released: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, journal_path: Path) -> "JournalIndex":
        idx = cls()
        with open(journal_path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                rec = records.parse_line(line)
                idx.hashes[rec.seq] = rec.hash
                for a in records.attested_files(rec):
                    idx.attested.setdefault(a["path"], (rec.seq, a["sha256"], a["size"]))
                if rec.type == PURGE:
                    idx.released.update(_purge_entries(rec))
        return idx


class ServedIdentity(NamedTuple):
    """A file as the dock link served it: the inode, its size and both its times.

    The link takes it when a file is served (and again after its last byte went out); a
    receipt's file that was served in full in the receipt's own TLS session and is still
    this identity is not hashed again before it is purged: the dock has just hashed the very
    bytes the device read (TLS keeps them intact on the way) and signs that they are the
    attested SHA-256, and any write or chmod since would have moved ``ctime``, which no call
    sets back (only turning the system clock back could). Any other file (another identity,
    not served, no identity given) is hashed as before.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of_stat(cls, st: os.stat_result) -> "ServedIdentity":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


class ReceiptValidator:
    """Decides whether a signed receipt frees the files it names. Raises a ReceiptRefused subclass."""

    def __init__(self, device_id: str, ca_cert: x509.Certificate, nonces: NonceBook) -> None:
        self.device_id = device_id
        self.ca_cert = ca_cert
        self.nonces = nonces

    revoked: Callable[[x509.Certificate], bool] = staticmethod(lambda cert: False)

    def validate(self, wire: bytes, root: Path, journal_path: Path,
                 peer_dock_id: str | None = None, served: frozenset[str] | None = None,
                 served_as: Mapping[str, ServedIdentity] | None = None) -> SignedReceipt:
        """Raise a ReceiptRefused or return the receipt. ``served`` (the dock link passes it):
        paths served in full in this TLS session; files outside it are not purged
        (``unserved``), and if that is all of them the receipt is refused (NotServedInSession).
        ``served_as``: the identity each of those had when served (``ServedIdentity``); a file
        still that identity is not read again, every other one is hashed."""
        signed = parse_signed(wire)
        r = signed.receipt
        try:
            from cryptography import x509
            cert = x509.load_pem_x509_certificate(signed.dock_cert_pem)
        except ValueError as exc:
            raise ReceiptMalformed(f"dock_cert is not a PEM certificate: {exc}") from None
        check_dock_certificate(cert, self.ca_cert)
        if self.revoked(cert):
            raise RevokedDock(f"dock certificate serial {cert.serial_number:x} is revoked by the agency CRL")
        key = cert.public_key()
        if not isinstance(key, Ed25519PublicKey):
            raise UntrustedDock("dock certificate key is not Ed25519")
        try:
            key.verify(signed.signature, signed.message)
        except InvalidSignature:
            raise BadReceiptSignature("signature does not verify with the dock certificate") from None
        dock_id = dock_id_for_cert(cert)
        if r.dock != dock_id:
            raise UntrustedDock(f"receipt names dock {r.dock}, certificate is dock {dock_id}")
        if peer_dock_id is not None and peer_dock_id != dock_id:
            raise UntrustedDock(f"receipt signed by dock {dock_id}, but this session is with {peer_dock_id}")
        if r.device != self.device_id:
            raise WrongDevice(f"receipt is for device {r.device}, this is {self.device_id}")
        self.nonces.redeem(r.nonce)
        if not (r.verified and r.stored):
            raise IncompleteReceipt("the dock does not state that it verified and stored the files")
        try:
            idx = JournalIndex.read(journal_path)
        except (OSError, MalformedLine) as exc:
            raise HeadMismatch(f"cannot read the device journal: {exc}") from None
        if idx.hashes.get(r.head_seq) != r.head_hash:
            raise HeadMismatch(f"record #{r.head_seq} of this journal is not {r.head_hash[:16]}...")
        for f in r.files:
            self._check_file(f, idx, r.head_seq, root,
                             served_as.get(f.path) if served_as is not None and served is not None
                             and f.path in served else None)
        if served is not None:
            self.unserved = tuple(f.path for f in r.files if f.path not in served)
            if len(self.unserved) == len(r.files):
                raise NotServedInSession(f"none of the {len(r.files)} files named was served in full "
                                         "in this TLS session")
        return signed

    unserved: tuple[str, ...] = ()

    @staticmethod
    def _check_file(f: ReceiptFile, idx: JournalIndex, head_seq: int, root: Path,
                    served_as: ServedIdentity | None = None) -> None:
        att = idx.attested.get(f.path)
        if att is None or att[0] > head_seq:
            raise FileMismatch(f"{f.path} is not attested in the journal up to #{head_seq}")
        if (att[1], att[2]) != (f.sha256, f.size):
            raise FileMismatch(f"{f.path}: receipt says {f.sha256[:16]}.../{f.size}, "
                               f"journal says {att[1][:16]}.../{att[2]}")
        if f.path in idx.released:
            raise FileMismatch(f"{f.path} was already purged")
        path = root / f.path
        try:
            st = os.lstat(path)
            if not stat_mod.S_ISREG(st.st_mode):
                raise FileMismatch(f"{f.path} is not a regular file on the device")
            if st.st_size == f.size and served_as is not None and ServedIdentity.of_stat(st) == served_as:
                return   # the bytes the dock verified, unchanged since they were served (ServedIdentity)
            digest = sha256_file(path) if st.st_size == f.size else None
        except FileNotFoundError as exc:
            raise FileMismatch(f"{f.path} is not a regular file on the device") from exc
        except OSError as exc:
            raise FileMismatch(f"{f.path}: cannot read: {exc}") from None
        if st.st_size != f.size or digest != f.sha256:
            raise FileMismatch(f"{f.path} differs on the device from what the dock verified")


# ---- purge-awareness for the verifier ---------------------------------------------------------
def _entries(payload: Any, key: str) -> list[tuple[str, str, int]]:
    items = payload.get(key) if isinstance(payload, dict) else None
    out = []
    if isinstance(items, list):
        for f in items:
            if (isinstance(f, dict) and records.safe_relpath(f.get("path"))
                    and isinstance(f.get("sha256"), str) and _is_int(f.get("size"))):
                out.append((f["path"], f["sha256"], f["size"]))
    return out


def _purge_entries(rec: Record) -> set[str]:
    return {p for p, _, _ in _entries(rec.payload, "files")}


def _receipt_entries(rec: Record) -> set[tuple[str, str, int]]:
    receipt = rec.payload.get("receipt") if isinstance(rec.payload, dict) else None
    return set(_entries(receipt, "files"))


class ReleasedFiles:
    """Files that a ``purge`` record, backed by an earlier ``dock-receipt`` record, released.

    Read in a first pass over the journal with the structural parser only: every
    line it draws on is then checked (signature, chain, sequence) by the
    verifier's own walk, which fails if any of them is not genuine.
    """

    def __init__(self, released: dict[str, tuple[int, str, int]] | None = None) -> None:
        self._released = released or {}

    @classmethod
    def scan(cls, journal_path: Path | str) -> "ReleasedFiles":
        receipts: dict[int, set[tuple[str, str, int]]] = {}
        released: dict[str, tuple[int, str, int]] = {}
        try:
            with open(journal_path, "rb") as f:
                for line in f:
                    try:
                        rec = records.parse_line(line)
                    except MalformedLine:
                        continue          # the walk reports it
                    if rec.type == DOCK_RECEIPT:
                        receipts[rec.seq] = _receipt_entries(rec)
                    elif rec.type == PURGE:
                        rseq = rec.payload.get("receipt_seq")
                        named = receipts.get(rseq, set()) if _is_int(rseq) and rseq < rec.seq else set()
                        for entry in _entries(rec.payload, "files"):
                            if entry in named:
                                released.setdefault(entry[0], (rec.seq, entry[1], entry[2]))
        except OSError:
            pass                          # JournalMissing is the walk's to report
        return cls(released)

    def covers(self, path: str, sha256: str, size: int, attested_seq: int) -> bool:
        """True if ``path`` as attested at ``attested_seq`` was released by a later purge."""
        entry = self._released.get(path)
        return entry is not None and entry[0] > attested_seq and (entry[1], entry[2]) == (sha256, size)

    def __len__(self) -> int:
        return len(self._released)

    def paths(self) -> Iterable[str]:
        return self._released.keys()


@dataclass(frozen=True)
class PurgeResult:
    """What ``EvidenceStore.reclaim`` did: its two records and the files actually removed."""

    receipt_seq: int
    purge_seq: int
    removed: tuple[ReceiptFile, ...]
    not_removed: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()      # named by the receipt but not served in full in its session

    @property
    def bytes_freed(self) -> int:
        return sum(f.size for f in self.removed)
