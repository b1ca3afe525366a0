"""Who wears the device (D12): the dock's signed assignments, taken and journaled here.

A pooled device is checked out at the station: the dock sends a signed assignment
(``recorder.assignment``) over the dock link (``POST /v1/assignment``); the device checks it
(``AssignmentValidator``: agency dock of this TLS session, signature, this device, this
session's one-time nonce, none in force) and journals an ``assignment`` record holding the
signed document. From then on every recording of the device is attributable to that
officer, until a signed release of that assignment is journaled (``assignment-end``) at
check-in. The state is the journal itself (read again for every request, under a lock),
so it survives restarts and power cuts: nothing else is kept.

A refused document leaves an ``assignment-refused`` record (``reason``, ``detail``,
``wire_sha256``, and what it claimed to be when it parsed) and changes nothing.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from recorder import assignment as asg
from recorder import dock_protocol as protocol
from recorder.journal import Journal, JournalError
from recorder.records import MalformedLine

log = logging.getLogger(__name__)

MAX_DETAIL = 500


class Handover:
    """The device's assignments, over its journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._lock = threading.Lock()

    def current(self) -> asg.InForce | None:
        """The assignment in force (None: nobody is checked out on this device)."""
        return asg.AssignmentTrack.read(self.journal.path).in_force

    def officer_id(self, issued_to: str | None = None) -> str | None:
        """The officer wearing the device: the assignment in force, else the one it is issued to."""
        now = self.current()
        return now.assignment.officer_id if now is not None else issued_to

    def accept(self, wire: bytes, validator: asg.AssignmentValidator, peer_dock_id: str | None
               ) -> tuple[int, protocol.AssignmentAccepted | protocol.AssignmentRefusal]:
        with self._lock:
            try:
                track = asg.AssignmentTrack.read(self.journal.path)
            except (OSError, MalformedLine, JournalError) as exc:
                log.error("handover: cannot read the journal: %s", exc)
                return 500, protocol.AssignmentRefusal(protocol.DEVICE_ERROR, f"journal unreadable: {exc}")
            try:
                signed = validator.validate(wire, track, peer_dock_id)
            except asg.AssignmentRefused as exc:
                return 403, self._refused(wire, exc)
            a = signed.assignment
            payload = signed.record_payload()
            if a.kind == asg.KIND_RELEASE:
                assert track.in_force is not None          # checked by the validator
                payload.update(assignment_seq=track.in_force.seq, officer_id=track.in_force.assignment.officer_id)
                rtype = asg.ASSIGNMENT_END
            else:
                rtype = asg.ASSIGNMENT
            try:
                rec = self.journal.append(rtype, payload)
            except (JournalError, ValueError, OSError) as exc:
                log.error("handover: could not journal the %s: %s", a.kind, exc)
                return 500, protocol.AssignmentRefusal(protocol.DEVICE_ERROR, f"could not journal it: {exc}")
        log.info("handover: %s %s journaled (record %d, officer %s)", a.kind, a.assignment_id, rec.seq,
                 payload.get("officer_id") or a.officer_id)
        return 200, protocol.AssignmentAccepted(a.kind, a.assignment_id, rec.seq, rec.hash)

    def _refused(self, wire: bytes, exc: asg.AssignmentRefused) -> protocol.AssignmentRefusal:
        digest = hashlib.sha256(wire if isinstance(wire, (bytes, bytearray)) else b"").hexdigest()
        payload: dict[str, Any] = {"reason": exc.reason, "detail": str(exc)[:MAX_DETAIL], "wire_sha256": digest}
        try:   # what it claimed to be, for the record (untrusted: it was refused)
            claimed = asg.parse_signed(wire).assignment
            payload.update(kind=claimed.kind, assignment_id=claimed.assignment_id, claimed_device=claimed.device)
            if claimed.kind == asg.KIND_ASSIGN:
                payload["officer_id"] = claimed.officer_id
        except asg.AssignmentMalformed:
            pass
        log.warning("handover: %s refused: %s: %s", digest[:16], exc.reason, exc)
        seq = None
        try:
            seq = self.journal.append(asg.ASSIGNMENT_REFUSED, payload).seq
        except (JournalError, ValueError, OSError) as jexc:
            log.error("handover: could not journal the refused assignment: %s", jexc)
        return protocol.AssignmentRefusal(exc.reason, str(exc)[:MAX_DETAIL], seq)
