"""The dock link's wire protocol, defined once for both ends (D10, D11).

The device's link service (``firmware/dock_link.py``) builds its answers from these types
and sends ``to_json()``; the dock station's client (``station/dock/link.py``)
reads them back with the ``parse_*`` functions and hands the typed values to the
docking (``ingest.py``). Nothing else on either side spells a path or a field name.

Endpoints (HTTPS, TLS 1.3 with client certificates; see docs/docking.md)::

    GET  /v1/manifest          -> 200 Manifest (or 200 ManifestUnavailable)
    GET  /v1/files/<path>      -> 200/206 the bytes (Range: bytes=N- or N-M), or a Refusal
    POST /v1/receipt  <wire>   -> 200 ReceiptAccepted | 403/500 ReceiptRefusal | 411/413 Refusal
    POST /v1/crl      <CRL>    -> 200 CrlInstalled | 409/422/500 CrlRefusal | 411/413 Refusal
    POST /v1/assignment <wire> -> 200 AssignmentAccepted | 403/500 AssignmentRefusal | 411/413 Refusal
    anything else              -> 404/405 Refusal

The receipt itself (the body of ``POST /v1/receipt``) is ``recorder.receipt``'s signed
wire form (``sign_receipt`` / ``ReceiptValidator``), at most ``MAX_RECEIPT_BYTES``; the
CRL is the agency CA's CRL in PEM or DER, at most ``MAX_CRL_BYTES``. The body of
``POST /v1/assignment`` is ``recorder.assignment``'s signed wire form (an officer's
check-out or its release, D12), at most ``MAX_ASSIGNMENT_BYTES``.

JSON bodies are UTF-8 objects with sorted keys. Parsing is strict: a body that is not a
JSON object, lacks a field, has one more, or has a field of the wrong type or value is
refused with a named failure (``ProtocolViolation`` and its subclasses; ``reason`` is the
class name), never read around.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Union
from urllib.parse import quote, unquote

from recorder import assignment, receipt, records
from recorder.failures import NamedFailure
from recorder.journal import JOURNAL_NAME

VERSION = 1                                  # the manifest's "v"

# ---- paths -------------------------------------------------------------------------------
API = "/v1"
MANIFEST_PATH = f"{API}/manifest"
FILES_PREFIX = f"{API}/files/"
RECEIPT_PATH = f"{API}/receipt"
CRL_PATH = f"{API}/crl"
ASSIGNMENT_PATH = f"{API}/assignment"

# ---- bodies sent to the device -----------------------------------------------------------
MAX_RECEIPT_BYTES = receipt.MAX_WIRE_BYTES
MAX_CRL_BYTES = 256 * 1024
MAX_ASSIGNMENT_BYTES = assignment.MAX_WIRE_BYTES
JSON_CONTENT_TYPE = "application/json"

# ---- refusal names the device answers with (``Refusal.refused``) --------------------------
# a refused receipt is named by its ReceiptRefused class (ReplayedReceipt, ...) instead
NOT_FOUND = "not-found"
LENGTH_REQUIRED = "length-required"
TOO_LARGE = "too-large"
READ_ONLY = "read-only"
OUTSIDE_EVIDENCE = "outside-evidence"
NOT_ATTESTED = "not-attested"
BAD_RANGE = "bad-range"
BAD_CRL = "bad-crl"
STALE_CRL = "stale-crl"
DEVICE_ERROR = "device-error"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NONCE = re.compile(r"[0-9a-f]{32}")


def file_path(rel: str, *, quoted: bool = True) -> str:
    """The request path for an evidence file (``quoted=False``: as given, for attack tests)."""
    return FILES_PREFIX + (quote(rel) if quoted else rel)


def file_rel(path: str) -> str | None:
    """The evidence path a request path names (unquoted), or None if it is not a file path."""
    return unquote(path[len(FILES_PREFIX):]) if path.startswith(FILES_PREFIX) else None


# ---- named failures ----------------------------------------------------------------------
class ProtocolViolation(NamedFailure):
    """Base class: a body that is not the dock protocol. ``reason`` is the class name."""


class NotJson(ProtocolViolation):
    """The body is not a UTF-8 JSON object."""


class MissingFields(ProtocolViolation):
    """An object lacks a field the protocol requires (``details["missing"]``)."""


class UnknownFields(ProtocolViolation):
    """An object has a field the protocol does not define (``details["unknown"]``)."""


class BadField(ProtocolViolation):
    """A field has the wrong type or an impossible value (``details["field"]``)."""


class UnsupportedVersion(ProtocolViolation):
    """The manifest's ``v`` is not this protocol's version."""


class UnexpectedStatus(ProtocolViolation):
    """The HTTP status does not go with the body (an acceptance that is not a 200, ...)."""


# ---- strict reading ------------------------------------------------------------------------
def _load(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise NotJson(f"{what}: not JSON") from None
    if not isinstance(doc, dict):
        raise NotJson(f"{what}: not a JSON object", found=type(doc).__name__)
    return doc


def _fields(doc: Any, what: str, required: frozenset[str], optional: frozenset[str] = frozenset()
            ) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise BadField(f"{what} is not an object", field=what)
    missing = sorted(required - doc.keys())
    if missing:
        raise MissingFields(f"{what} lacks {', '.join(missing)}", where=what, missing=missing)
    unknown = sorted(doc.keys() - required - optional)
    if unknown:
        shown = ", ".join(repr(k)[:60] for k in unknown[:8])
        raise UnknownFields(f"{what} has fields the protocol does not define: {shown}",
                            where=what, unknown=unknown)
    return doc


def _int(doc: dict[str, Any], key: str, what: str, minimum: int = 0) -> int:
    v = doc[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise BadField(f"{what}.{key} is not an integer >= {minimum}", field=f"{what}.{key}", found=v)
    return v


def _str(doc: dict[str, Any], key: str, what: str, *, empty: bool = False) -> str:
    v = doc[key]
    if not isinstance(v, str) or (not empty and not v):
        raise BadField(f"{what}.{key} is not a {'' if empty else 'non-empty '}string",
                       field=f"{what}.{key}", found=v)
    return v


def _bool(doc: dict[str, Any], key: str, what: str) -> bool:
    v = doc[key]
    if not isinstance(v, bool):
        raise BadField(f"{what}.{key} is not true/false", field=f"{what}.{key}", found=v)
    return v


def _paths(doc: dict[str, Any], key: str, what: str) -> tuple[str, ...]:
    v = doc[key]
    if not isinstance(v, list) or not all(records.safe_relpath(p) for p in v):
        raise BadField(f"{what}.{key} is not a list of evidence paths", field=f"{what}.{key}")
    return tuple(v)


class _Body:
    """A JSON body: ``to_dict()`` is its wire object, ``to_json()`` its bytes."""

    def to_dict(self) -> dict[str, Any]:   # pragma: no cover - every body defines it
        raise NotImplementedError

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")


# ---- GET /v1/manifest ------------------------------------------------------------------------
@dataclass(frozen=True)
class ManifestFile(_Body):
    """An attested file present on the device, and its size there."""

    path: str
    size: int

    KEYS = frozenset({"path", "size"})

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size}

    @classmethod
    def from_dict(cls, doc: Any, what: str = "manifest.files[]") -> ManifestFile:
        d = _fields(doc, what, cls.KEYS)
        if not records.safe_relpath(d["path"]):
            raise BadField(f"{what}.path {str(d['path'])[:100]!r} is not a path inside the evidence "
                           "directory", field=f"{what}.path", found=d["path"])
        return cls(d["path"], _int(d, "size", what))


@dataclass(frozen=True)
class JournalHead(_Body):
    """The last whole record of the journal (seq -1 and no hash: the journal is empty)."""

    seq: int
    hash: str | None

    KEYS = frozenset({"seq", "hash"})

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}

    @classmethod
    def from_dict(cls, doc: Any, what: str = "manifest.journal.head") -> JournalHead:
        d = _fields(doc, what, cls.KEYS)
        seq, h = _int(d, "seq", what, minimum=-1), d["hash"]
        if (seq == -1) != (h is None) or not (h is None or (isinstance(h, str) and _HEX64.fullmatch(h))):
            raise BadField(f"{what} is not (seq >= 0, 64 hex) or (-1, null)", field=what, found=d)
        return cls(seq, h)


@dataclass(frozen=True)
class ManifestJournal(_Body):
    """The journal as the device offers it: whole lines only (``size``) and its head."""

    size: int
    head: JournalHead
    path: str = JOURNAL_NAME

    KEYS = frozenset({"path", "size", "head"})

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "head": self.head.to_dict()}

    @classmethod
    def from_dict(cls, doc: Any, what: str = "manifest.journal") -> ManifestJournal:
        d = _fields(doc, what, cls.KEYS)
        if d["path"] != JOURNAL_NAME:
            raise BadField(f"{what}.path is not {JOURNAL_NAME}", field=f"{what}.path", found=d["path"])
        return cls(_int(d, "size", what), JournalHead.from_dict(d["head"]), JOURNAL_NAME)


@dataclass(frozen=True)
class Manifest(_Body):
    """What the device holds, and a one-time receipt nonce of this TLS session."""

    device: str
    journal: ManifestJournal
    files: tuple[ManifestFile, ...]
    nonce: str
    v: int = VERSION

    KEYS = frozenset({"v", "device", "journal", "files", "nonce"})

    def to_dict(self) -> dict[str, Any]:
        return {"v": self.v, "device": self.device, "journal": self.journal.to_dict(),
                "files": [f.to_dict() for f in self.files], "nonce": self.nonce}

    @classmethod
    def from_dict(cls, doc: Any, what: str = "manifest") -> Manifest:
        d = _fields(doc, what, cls.KEYS)
        if type(d["v"]) is not int or d["v"] != VERSION:
            raise UnsupportedVersion(f"{what} version {d['v']!r}, expected {VERSION}",
                                     expected=VERSION, found=d["v"])
        nonce = _str(d, "nonce", what)
        if not _NONCE.fullmatch(nonce):
            raise BadField(f"{what}.nonce is not 32 lower-case hex digits", field=f"{what}.nonce")
        if not isinstance(d["files"], list):
            raise BadField(f"{what}.files is not a list", field=f"{what}.files")
        files = tuple(ManifestFile.from_dict(f) for f in d["files"])
        if len({f.path for f in files}) != len(files):
            raise BadField(f"{what}.files names a path twice", field=f"{what}.files")
        return cls(_str(d, "device", what), ManifestJournal.from_dict(d["journal"]), files, nonce, VERSION)

    @classmethod
    def parse(cls, data: bytes | str) -> Manifest:
        return cls.from_dict(_load(data, "manifest"))


@dataclass(frozen=True)
class ManifestUnavailable(_Body):
    """The device cannot read its own journal: no manifest (and no nonce) this time."""

    error: str

    KEYS = frozenset({"error"})

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error}

    @classmethod
    def from_dict(cls, doc: Any, what: str = "manifest") -> ManifestUnavailable:
        return cls(_str(_fields(doc, what, cls.KEYS), "error", what, empty=True))


def parse_manifest_answer(status: int, data: bytes | str) -> Manifest | ManifestUnavailable:
    """The answer to ``GET /v1/manifest``: a manifest, or the device's "journal unreadable"."""
    if status != 200:
        raise UnexpectedStatus(f"manifest answered {status}", found=status)
    doc = _load(data, "manifest")
    if "error" in doc and "device" not in doc:
        return ManifestUnavailable.from_dict(doc)
    return Manifest.from_dict(doc)


# ---- refusals (any endpoint) ---------------------------------------------------------------
@dataclass(frozen=True)
class Refusal(_Body):
    """A request the device refused: ``refused`` names why, ``detail`` says it for people."""

    refused: str
    detail: str

    KEYS = frozenset({"refused", "detail"})

    def to_dict(self) -> dict[str, Any]:
        return {"refused": self.refused, "detail": self.detail}

    @classmethod
    def from_dict(cls, doc: Any, what: str = "refusal") -> Refusal:
        d = _fields(doc, what, cls.KEYS)
        return cls(_str(d, "refused", what), _str(d, "detail", what, empty=True))

    @classmethod
    def parse(cls, data: bytes | str) -> Refusal:
        return cls.from_dict(_load(data, "refusal"))


# ---- POST /v1/receipt -------------------------------------------------------------------
@dataclass(frozen=True)
class ReceiptAccepted(_Body):
    """The receipt was accepted: its record, the purge record, and what was freed."""

    receipt_seq: int
    purge_seq: int
    removed: tuple[str, ...]
    not_removed: tuple[str, ...] = ()
    not_served: tuple[str, ...] = ()       # named, but not served in full in this TLS session
    bytes_freed: int = 0
    accepted: bool = True

    KEYS = frozenset({"accepted", "receipt_seq", "purge_seq", "removed", "not_removed", "not_served",
                      "bytes_freed"})

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "receipt_seq": self.receipt_seq, "purge_seq": self.purge_seq,
                "removed": list(self.removed), "not_removed": list(self.not_removed),
                "not_served": list(self.not_served), "bytes_freed": self.bytes_freed}

    @classmethod
    def from_dict(cls, doc: Any, what: str = "receipt answer") -> ReceiptAccepted:
        d = _fields(doc, what, cls.KEYS)
        if _bool(d, "accepted", what) is not True:
            raise BadField(f"{what}.accepted is not true", field=f"{what}.accepted")
        return cls(_int(d, "receipt_seq", what), _int(d, "purge_seq", what), _paths(d, "removed", what),
                   _paths(d, "not_removed", what), _paths(d, "not_served", what),
                   _int(d, "bytes_freed", what), True)


@dataclass(frozen=True)
class ReceiptRefusal(Refusal):
    """The receipt freed nothing: ``refused`` is the ReceiptRefused class name (or device-error)."""

    removed: tuple[str, ...] = ()

    KEYS = frozenset({"refused", "detail", "removed"})

    def to_dict(self) -> dict[str, Any]:
        return {"refused": self.refused, "detail": self.detail, "removed": list(self.removed)}

    @classmethod
    def from_dict(cls, doc: Any, what: str = "receipt answer") -> ReceiptRefusal:
        d = _fields(doc, what, cls.KEYS)
        removed = _paths(d, "removed", what)
        if removed:
            raise BadField(f"{what}: a refused receipt removed files", field=f"{what}.removed")
        return cls(_str(d, "refused", what), _str(d, "detail", what, empty=True), removed)


ReceiptAnswer = Union[ReceiptAccepted, ReceiptRefusal, Refusal]


def parse_receipt_answer(status: int, data: bytes | str) -> ReceiptAnswer:
    """The answer to ``POST /v1/receipt``: accepted (200 only), refused, or the body refused."""
    doc = _load(data, "receipt answer")
    if "accepted" in doc:
        if status != 200:
            raise UnexpectedStatus(f"an accepted receipt answered {status}", found=status)
        return ReceiptAccepted.from_dict(doc)
    if status == 200:
        raise UnexpectedStatus("a 200 answer to a receipt that does not accept it", found=status)
    if "removed" in doc:
        return ReceiptRefusal.from_dict(doc)
    return Refusal.from_dict(doc, "receipt answer")


# ---- POST /v1/crl ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CrlInstalled(_Body):
    """The CRL was taken (``installed``) or the device already had that one; its CRL number now."""

    installed: bool
    crl_number: int

    KEYS = frozenset({"installed", "crl_number"})

    def to_dict(self) -> dict[str, Any]:
        return {"installed": self.installed, "crl_number": self.crl_number}

    @classmethod
    def from_dict(cls, doc: Any, what: str = "CRL answer") -> CrlInstalled:
        d = _fields(doc, what, cls.KEYS)
        return cls(_bool(d, "installed", what), _int(d, "crl_number", what))


@dataclass(frozen=True)
class CrlRefusal(Refusal):
    """The CRL was not taken (bad-crl, stale-crl: then ``crl_number`` is the device's, device-error)."""

    crl_number: int | None = None

    KEYS = frozenset({"refused", "detail"})
    OPTIONAL = frozenset({"crl_number"})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"refused": self.refused, "detail": self.detail}
        if self.crl_number is not None:
            out["crl_number"] = self.crl_number
        return out

    @classmethod
    def from_dict(cls, doc: Any, what: str = "CRL answer") -> CrlRefusal:
        d = _fields(doc, what, cls.KEYS, cls.OPTIONAL)
        number = _int(d, "crl_number", what) if "crl_number" in d else None
        return cls(_str(d, "refused", what), _str(d, "detail", what, empty=True), number)


CrlAnswer = Union[CrlInstalled, CrlRefusal]


def parse_crl_answer(status: int, data: bytes | str) -> CrlAnswer:
    """The answer to ``POST /v1/crl``: taken (200 only) or refused (a body refusal reads as one)."""
    doc = _load(data, "CRL answer")
    if status == 200:
        return CrlInstalled.from_dict(doc)
    return CrlRefusal.from_dict(doc)


# ---- POST /v1/assignment --------------------------------------------------------------------
_KIND_RECORD = {assignment.KIND_ASSIGN: assignment.ASSIGNMENT, assignment.KIND_RELEASE: assignment.ASSIGNMENT_END}


@dataclass(frozen=True)
class AssignmentAccepted(_Body):
    """The assignment (``kind`` assign) or its release was taken: the record that journals it."""

    kind: str
    assignment_id: str
    record_seq: int
    record_hash: str
    accepted: bool = True

    KEYS = frozenset({"accepted", "kind", "assignment_id", "record_seq", "record_hash"})

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "kind": self.kind, "assignment_id": self.assignment_id,
                "record_seq": self.record_seq, "record_hash": self.record_hash}

    @property
    def record_type(self) -> str:
        return _KIND_RECORD[self.kind]

    @classmethod
    def from_dict(cls, doc: Any, what: str = "assignment answer") -> AssignmentAccepted:
        d = _fields(doc, what, cls.KEYS)
        if _bool(d, "accepted", what) is not True:
            raise BadField(f"{what}.accepted is not true", field=f"{what}.accepted")
        kind = _str(d, "kind", what)
        if kind not in _KIND_RECORD:
            raise BadField(f"{what}.kind is not one of {sorted(_KIND_RECORD)}", field=f"{what}.kind", found=kind)
        aid = _str(d, "assignment_id", what)
        if not _NONCE.fullmatch(aid):
            raise BadField(f"{what}.assignment_id is not 32 lower-case hex digits", field=f"{what}.assignment_id")
        h = _str(d, "record_hash", what)
        if not _HEX64.fullmatch(h):
            raise BadField(f"{what}.record_hash is not 64 lower-case hex digits", field=f"{what}.record_hash")
        return cls(kind, aid, _int(d, "record_seq", what), h, True)


@dataclass(frozen=True)
class AssignmentRefusal(Refusal):
    """Not taken: ``refused`` is the AssignmentRefused class name (or device-error); journaled
    ``assignment-refused`` on the device (``record_seq``, when it could be written)."""

    record_seq: int | None = None
    accepted: bool = False

    KEYS = frozenset({"accepted", "refused", "detail", "record_seq"})

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "refused": self.refused, "detail": self.detail,
                "record_seq": self.record_seq}

    @classmethod
    def from_dict(cls, doc: Any, what: str = "assignment answer") -> AssignmentRefusal:
        d = _fields(doc, what, cls.KEYS)
        if _bool(d, "accepted", what) is not False:
            raise BadField(f"{what}.accepted is not false", field=f"{what}.accepted")
        seq = None if d["record_seq"] is None else _int(d, "record_seq", what)
        return cls(_str(d, "refused", what), _str(d, "detail", what, empty=True), seq, False)


AssignmentAnswer = Union[AssignmentAccepted, AssignmentRefusal, Refusal]


def parse_assignment_answer(status: int, data: bytes | str) -> AssignmentAnswer:
    """The answer to ``POST /v1/assignment``: taken (200 only), refused, or the body refused (411/413)."""
    doc = _load(data, "assignment answer")
    if "accepted" not in doc:
        if status == 200:
            raise UnexpectedStatus("a 200 answer to an assignment that does not accept it", found=status)
        return Refusal.from_dict(doc, "assignment answer")
    if doc.get("accepted") is True:
        if status != 200:
            raise UnexpectedStatus(f"an accepted assignment answered {status}", found=status)
        return AssignmentAccepted.from_dict(doc)
    if status == 200:
        raise UnexpectedStatus("a 200 answer to an assignment that does not accept it", found=status)
    return AssignmentRefusal.from_dict(doc)
