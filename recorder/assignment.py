"""Device assignments (D12, S9): the dock's signed statement "from now, device D is worn by officer O".

Pooled devices are checked out at the station: the dock station signs an *assignment*
naming the device and the officer (警号, name, unit) and hands it to the device over
the mutually authenticated dock link; checking the device in is a signed *release* of
that assignment. The device verifies either one and journals it, so every later
recording is attributable, from the device's own signed journal, to the officer who
wore it.

Wire form (UTF-8 JSON), the envelope of a dock receipt (``recorder.receipt``)::

    {"assignment": {...canonical fields...}, "signature": "<base64>", "dock_cert": "<PEM>"}

``signature`` is Ed25519 by the key of ``dock_cert`` over ``canonical_json(assignment)``
(the journal's canonical JSON, integers only). ``dock_cert`` must be a current dock
(clientAuth) certificate of the agency CA, not revoked, and the certificate of the TLS
session it arrives in: the device trusts it exactly as it trusts a receipt.

Fields (``kind`` ``assign``)::

    v 1, kind, assignment_id (32 hex), device, dock (sha256(dock SPKI)[:32]), station,
    nonce (this TLS session's, from the manifest), counter, issued_wall_ns,
    officer_id (警号), officer_name, unit

A ``release`` has the same fields without ``officer_id``, ``officer_name``, ``unit``; its
``assignment_id`` names the assignment it ends.

What the device does (``AssignmentValidator.validate``): well-formed [``AssignmentMalformed``];
an agency dock certificate of this session [``AssignmentUntrustedDock``], not revoked
[``AssignmentRevokedDock``]; the signature verifies [``BadAssignmentSignature``]; for
this device [``AssignmentWrongDevice``]; a nonce issued in this session, unused
[``AssignmentReplayed``] and fresh [``AssignmentStale``]; an assignment only when none
is in force and with an id never journaled before [``AssignmentInForce``,
``AssignmentReplayed``]; a release only of the assignment in force [``AssignmentNotInForce``].
Accepted: an ``assignment`` or ``assignment-end`` record holding the signed document
verbatim (an auditor, and the station, re-check the dock's signature from the journal);
refused: an ``assignment-refused`` record (``reason``, ``detail``, ``wire_sha256``).
"""
from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeGuard

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from recorder import receipt, records
from recorder.failures import NamedFailure
from recorder.journal import iter_records
from recorder.records import Record

ASSIGNMENT_VERSION = 1
KIND_ASSIGN = "assign"
KIND_RELEASE = "release"
KINDS = (KIND_ASSIGN, KIND_RELEASE)

# journal record types (device side)
ASSIGNMENT = "assignment"
ASSIGNMENT_END = "assignment-end"
ASSIGNMENT_REFUSED = "assignment-refused"

MAX_WIRE_BYTES = 64 * 1024
MAX_OFFICER_ID = 32
MAX_NAME = 128
MAX_UNIT = 256
MAX_STATION = 64
COMMON_KEYS = frozenset({"v", "kind", "assignment_id", "device", "dock", "station", "nonce", "counter",
                         "issued_wall_ns"})
OFFICER_KEYS = frozenset({"officer_id", "officer_name", "unit"})
_ID = re.compile(r"^[0-9a-f]{32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---- named refusals -------------------------------------------------------------------
class AssignmentRefused(NamedFailure):
    """An assignment or release the device did not take. ``reason`` is the class name (journaled)."""


class AssignmentMalformed(AssignmentRefused):
    """Not an assignment: bad JSON, missing or extra fields, wrong types or values."""


class AssignmentUntrustedDock(AssignmentRefused):
    """The signing certificate is not a current agency dock certificate, or not this session's dock."""


class AssignmentRevokedDock(AssignmentUntrustedDock):
    """The dock certificate is on the agency CRL installed on the device."""


class BadAssignmentSignature(AssignmentRefused):
    """The signature does not verify with the dock certificate's key (forged or altered)."""


class AssignmentWrongDevice(AssignmentRefused):
    """The assignment is for another device."""


class AssignmentReplayed(AssignmentRefused):
    """The nonce was not issued in this session or was already used, or the assignment id was
    journaled before."""


class AssignmentStale(AssignmentRefused):
    """The nonce was issued too long ago."""


class AssignmentInForce(AssignmentRefused):
    """Another assignment is in force: the device must be checked in first."""


class AssignmentNotInForce(AssignmentRefused):
    """A release of an assignment that is not the one in force (or none is)."""


# ---- the document -------------------------------------------------------------------------
@dataclass(frozen=True)
class Assignment:
    kind: str
    assignment_id: str
    device: str
    dock: str
    station: str
    nonce: str
    counter: int
    issued_wall_ns: int
    officer_id: str = ""
    officer_name: str = ""
    unit: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": ASSIGNMENT_VERSION, "kind": self.kind, "assignment_id": self.assignment_id,
                               "device": self.device, "dock": self.dock, "station": self.station,
                               "nonce": self.nonce, "counter": self.counter, "issued_wall_ns": self.issued_wall_ns}
        if self.kind == KIND_ASSIGN:
            out.update(officer_id=self.officer_id, officer_name=self.officer_name, unit=self.unit)
        return out

    def message(self) -> bytes:
        return records.canonical_json(self.as_dict())


@dataclass(frozen=True)
class SignedAssignment:
    assignment: Assignment
    message: bytes          # the exact canonical bytes that were signed
    signature: bytes
    dock_cert_pem: bytes
    wire: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.wire).hexdigest()

    def record_payload(self) -> dict[str, Any]:
        """What the device journals: the document verbatim, so its signature can be checked later."""
        return {"assignment": self.assignment.as_dict(),
                "assignment_sha256": hashlib.sha256(self.message).hexdigest(),
                "signature": base64.b64encode(self.signature).decode("ascii"),
                "dock_cert": self.dock_cert_pem.decode("ascii")}


def sign_assignment(a: Assignment, dock_key: Ed25519PrivateKey, dock_cert_pem: bytes) -> bytes:
    """The wire bytes of ``a`` signed by the dock (station side)."""
    if not isinstance(dock_key, Ed25519PrivateKey):
        raise TypeError("an assignment is signed with the dock's Ed25519 key")
    parse_fields(a.as_dict())   # never sign what the device would refuse as malformed
    return json.dumps({"assignment": a.as_dict(),
                       "signature": base64.b64encode(dock_key.sign(a.message())).decode("ascii"),
                       "dock_cert": dock_cert_pem.decode("ascii")}, sort_keys=True).encode("utf-8")


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(d: dict[str, Any], key: str, limit: int, *, empty: bool = False) -> str:
    v = d[key]
    if not isinstance(v, str) or (not empty and not v) or len(v) > limit or _CONTROL.search(v):
        raise AssignmentMalformed(f"{key} is not a {'' if empty else 'non-empty '}string of at most "
                                  f"{limit} characters without control characters")
    return v


def parse_fields(d: Any) -> Assignment:
    """The fields of an assignment or release, checked strictly. Raises AssignmentMalformed."""
    if not isinstance(d, dict):
        raise AssignmentMalformed("assignment is not an object")
    kind = d.get("kind")
    if kind not in KINDS:
        raise AssignmentMalformed(f"kind must be one of {', '.join(KINDS)}")
    want = COMMON_KEYS | (OFFICER_KEYS if kind == KIND_ASSIGN else frozenset())
    if set(d) != want:
        raise AssignmentMalformed(f"{kind} fields must be {sorted(want)}, got {sorted(d)}")
    if not _is_int(d["v"]) or d["v"] != ASSIGNMENT_VERSION:
        raise AssignmentMalformed(f"assignment version {d['v']!r}, expected {ASSIGNMENT_VERSION}")
    for k in ("assignment_id", "nonce"):
        if not isinstance(d[k], str) or not _ID.match(d[k]):
            raise AssignmentMalformed(f"{k} is not 32 lower-case hex digits")
    for k in ("counter", "issued_wall_ns"):
        if not _is_int(d[k]) or d[k] < 0:
            raise AssignmentMalformed(f"{k} is not a non-negative integer")
    device, dock = _text(d, "device", 64), _text(d, "dock", 64)
    station = _text(d, "station", MAX_STATION)
    officer = ("", "", "")
    if kind == KIND_ASSIGN:
        officer = (_text(d, "officer_id", MAX_OFFICER_ID), _text(d, "officer_name", MAX_NAME, empty=True),
                   _text(d, "unit", MAX_UNIT, empty=True))
    return Assignment(kind, d["assignment_id"], device, dock, station, d["nonce"], d["counter"],
                      d["issued_wall_ns"], *officer)


def _signed(doc: Any, wire: bytes) -> SignedAssignment:
    if not isinstance(doc, dict) or set(doc) != {"assignment", "signature", "dock_cert"}:
        raise AssignmentMalformed("expected exactly assignment, signature, dock_cert")
    a = parse_fields(doc["assignment"])
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise AssignmentMalformed("signature is not base64") from None
    if len(signature) != 64:
        raise AssignmentMalformed("signature is not 64 bytes")
    if not isinstance(doc["dock_cert"], str) or not doc["dock_cert"].isascii():
        raise AssignmentMalformed("dock_cert is not a PEM string")
    return SignedAssignment(a, a.message(), signature, doc["dock_cert"].encode("ascii"), wire)


def parse_signed(wire: bytes) -> SignedAssignment:
    """Structure only (no trust yet). Raises AssignmentMalformed."""
    if not isinstance(wire, (bytes, bytearray)) or not 0 < len(wire) <= MAX_WIRE_BYTES:
        raise AssignmentMalformed(f"an assignment is 1..{MAX_WIRE_BYTES} bytes")
    try:
        doc = json.loads(bytes(wire).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AssignmentMalformed("not UTF-8 JSON") from None
    except RecursionError:
        raise AssignmentMalformed("JSON nested too deeply") from None
    return _signed(doc, bytes(wire))


def from_record(rec: Record) -> SignedAssignment:
    """The signed document an ``assignment`` / ``assignment-end`` record holds. Raises AssignmentMalformed."""
    p = rec.payload
    if not isinstance(p, dict):
        raise AssignmentMalformed("record payload is not an object")
    doc = {k: p.get(k) for k in ("assignment", "signature", "dock_cert")}
    return _signed(doc, records.canonical_json(doc))


def check_signature(signed: SignedAssignment, ca_cert: x509.Certificate,
                    revoked: Callable[[x509.Certificate], bool] = lambda cert: False,
                    now: _dt.datetime | None = None) -> str:
    """Raise an AssignmentRefused unless an agency dock signed ``signed``; returns that dock's id.

    ``now``: when the certificate must have been valid (default: now; the station checking a
    journal record passes the assignment's ``issued_wall_ns``)."""
    try:
        cert = x509.load_pem_x509_certificate(signed.dock_cert_pem)
    except ValueError as exc:
        raise AssignmentMalformed(f"dock_cert is not a PEM certificate: {exc}") from None
    try:
        receipt.check_dock_certificate(cert, ca_cert, now)
    except receipt.UntrustedDock as exc:
        raise AssignmentUntrustedDock(str(exc)) from None
    if revoked(cert):
        raise AssignmentRevokedDock(f"dock certificate serial {cert.serial_number:x} is revoked by the agency CRL")
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise AssignmentUntrustedDock("dock certificate key is not Ed25519")
    try:
        key.verify(signed.signature, signed.message)
    except InvalidSignature:
        raise BadAssignmentSignature("signature does not verify with the dock certificate") from None
    dock_id = receipt.dock_id_for_cert(cert)
    if signed.assignment.dock != dock_id:
        raise AssignmentUntrustedDock(f"assignment names dock {signed.assignment.dock}, certificate is "
                                      f"dock {dock_id}")
    return dock_id


def issued_at(a: Assignment) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(a.issued_wall_ns // 10**9, _dt.timezone.utc)


# ---- what is in force, from a journal -------------------------------------------------------------
@dataclass
class InForce:
    """The assignment in force: its record's seq and the document."""

    seq: int
    assignment: Assignment


@dataclass
class AssignmentTrack:
    """Follows ``assignment`` / ``assignment-end`` records in journal order (structure only:
    the caller decides what it trusts; the device trusts its own journal)."""

    in_force: InForce | None = None
    seen: set[str] = field(default_factory=set)

    def feed(self, rec: Record) -> None:
        if rec.type not in (ASSIGNMENT, ASSIGNMENT_END):
            return
        try:
            a = parse_fields(rec.payload.get("assignment"))
        except AssignmentMalformed:
            return
        self.seen.add(a.assignment_id)
        if rec.type == ASSIGNMENT and a.kind == KIND_ASSIGN:
            self.in_force = InForce(rec.seq, a)
        elif (rec.type == ASSIGNMENT_END and a.kind == KIND_RELEASE and self.in_force is not None
              and self.in_force.assignment.assignment_id == a.assignment_id):
            self.in_force = None

    @classmethod
    def of(cls, recs: Iterable[Record]) -> "AssignmentTrack":
        track = cls()
        for rec in recs:
            track.feed(rec)
        return track

    @classmethod
    def read(cls, journal_path: Path | str) -> "AssignmentTrack":
        return cls.of(iter_records(journal_path))


# ---- the device's check ---------------------------------------------------------------------------
class AssignmentValidator:
    """Decides whether a signed assignment or release is taken. Raises an AssignmentRefused subclass."""

    def __init__(self, device_id: str, ca_cert: x509.Certificate, nonces: receipt.NonceBook,
                 revoked: Callable[[x509.Certificate], bool] = lambda cert: False) -> None:
        self.device_id = device_id
        self.ca_cert = ca_cert
        self.nonces = nonces
        self.revoked = revoked

    def validate(self, wire: bytes, track: AssignmentTrack,
                 peer_dock_id: str | None = None) -> SignedAssignment:
        """``track``: the device journal's assignments so far; ``peer_dock_id``: this TLS session's dock."""
        signed = parse_signed(wire)
        a = signed.assignment
        dock_id = check_signature(signed, self.ca_cert, self.revoked)
        if peer_dock_id is not None and peer_dock_id != dock_id:
            raise AssignmentUntrustedDock(f"signed by dock {dock_id}, but this session is with {peer_dock_id}")
        if a.device != self.device_id:
            raise AssignmentWrongDevice(f"{a.kind} is for device {a.device}, this is {self.device_id}")
        try:
            self.nonces.redeem(a.nonce)
        except receipt.StaleReceipt as exc:
            raise AssignmentStale(str(exc)) from None
        except receipt.ReplayedReceipt as exc:
            raise AssignmentReplayed(str(exc)) from None
        current = track.in_force
        if a.kind == KIND_ASSIGN:
            if a.assignment_id in track.seen:
                raise AssignmentReplayed(f"assignment {a.assignment_id} was journaled before")
            if current is not None:
                raise AssignmentInForce(f"assignment {current.assignment.assignment_id} (officer "
                                        f"{current.assignment.officer_id}) is in force since record "
                                        f"#{current.seq}: check the device in first",
                                        in_force=current.assignment.assignment_id)
        elif current is None or current.assignment.assignment_id != a.assignment_id:
            raise AssignmentNotInForce(f"assignment {a.assignment_id} is not in force on this device "
                                       f"(in force: {current.assignment.assignment_id if current else 'none'})")
        return signed
