"""Access requests (S8): ask with a reason, an approver other than the requester decides, time-boxed.

* ``request_access``: any signed-in, active user asks to view or copy one recording, with a
  reason (why). A second pending request for the same recording and action is a Conflict.
* ``approve``: a user with the approver role who is not the requester; the grant is valid for
  ``[access] grant_hours`` (or the hours given), never more than ``MAX_GRANT_HOURS``.
* ``refuse``: the same people, with a note saying why.
* ``revoke``: the same people withdraw an approval still in force (granted by mistake, or no
  longer needed), with a note saying why; the grant ends at once, and so does a web playback
  opened under it (``station.web.playback``).
* ``requests`` / ``access_log``: the lists, and the register of a recording (every request,
  decision and attempt with who, why, when and approver).

Each decision is one audited action; a refused attempt to decide (wrong role, own request,
already decided) is audited too (``not-allowed`` / ``approval-refused``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from recorder import records
from station.access.accounts import has_role, require_role
from station.access.policy import ACTIONS
from station.app import Station
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound

MAX_GRANT_HOURS = 7 * 24
DECIDERS = ("approver",)
REGISTER_READERS = ("auditor", "approver")
ACCESS_TYPES = ("view", "copy", "view-refused", "copy-refused")
STATUS_ZH = {"pending": "待审批", "approved": "已批准", "refused": "不予批准", "expired": "已过期",
             "revoked": "已撤销"}
AUDIT_TYPES = {"approve": "access-approve", "refuse": "access-refuse", "revoke": "access-revoke"}


def _reason(text: str | None, what: str) -> str:
    text = (text or "").strip()
    if not text:
        raise InvalidInput(f"{what} is required")
    return text


def request_access(st: Station, user: m.User, recording_id: int, action: str, reason: str) -> m.AccessRequest:
    if action not in ACTIONS:
        raise InvalidInput(f"--action must be one of {', '.join(ACTIONS)}, not {action!r}")
    why = _reason(reason, "a reason (--reason, 事由)")
    with st.trail.action("access-request", actor=user.username, subject=f"recording:{recording_id}",
                         reason=why, action=action) as ch:
        s = ch.session
        rec = s.get(m.Recording, recording_id)
        if rec is None:
            raise NotFound(f"no recording number {recording_id}")
        if rec.status != "stored":
            raise Conflict(f"recording {recording_id} is {rec.status}: nothing to {action}")
        me = s.get(m.User, user.username)
        if me is None or not me.active:
            raise NotAllowed(f"{user.username} is not an active account")
        dup = s.scalars(select(m.AccessRequest).where(
            m.AccessRequest.recording == rec.id, m.AccessRequest.requester == me.username,
            m.AccessRequest.action == action, m.AccessRequest.status == "pending")).first()
        if dup is not None:
            raise Conflict(f"request {dup.id} for the same is still pending")
        req = m.AccessRequest(recording=rec.id, requester=me.username, action=action, reason=why,
                              requested_ns=st.now_ns(), status="pending")
        ch.add(req)
        ch.details["recording"] = rec.name
    return req


def _decide(st: Station, user: m.User, request_id: int, verb: str, note: str | None,
            hours: int | None = None) -> m.AccessRequest:
    what = f"{verb} access request {request_id}"
    require_role(st, user, *DECIDERS, what=what)
    with st.db.session() as s:
        req = s.get(m.AccessRequest, request_id)
    if req is None:
        raise NotFound(f"no access request {request_id}")
    if req.requester == user.username:
        st.trail.event("approval-refused", actor=user.username, subject=f"access-request:{request_id}",
                       reason="an approver may not decide their own request", decision=verb,
                       recording=req.recording)
        raise NotAllowed(f"{user.username} may not {verb} their own request {request_id}: "
                         "another approver must decide it")
    with st.trail.action(AUDIT_TYPES[verb], actor=user.username, subject=f"access-request:{request_id}",
                         reason=note) as ch:
        s = ch.session
        req = s.get(m.AccessRequest, request_id, with_for_update=True)
        me = s.get(m.User, user.username)
        if req is None:
            raise NotFound(f"no access request {request_id}")
        if me is None or not me.active or not has_role(me, *DECIDERS):
            raise NotAllowed(f"{user.username} may not {verb} requests")
        now = st.now_ns()
        if verb == "revoke":
            state = request_state(req, now)
            if state != "approved":
                raise Conflict(f"request {request_id} is {state}: only an approval still in force can be revoked")
            req.status, req.revoked_by, req.revoked_ns, req.revoke_note = "revoked", me.username, now, note
            ch.touch(req)
            ch.details.update(recording=req.recording, requester=req.requester, action=req.action,
                              approved_by=req.decided_by, valid_until_ns=req.valid_until_ns)
            return req
        if req.status != "pending":
            raise Conflict(f"request {request_id} was already {req.status} by {req.decided_by}")
        rec = s.get(m.Recording, req.recording)
        if verb == "approve" and (rec is None or rec.status != "stored"):
            raise Conflict(f"recording {req.recording} is {rec.status if rec else 'gone'}: nothing to approve")
        req.decided_by, req.decided_ns, req.decision_note = me.username, now, note
        if verb == "approve":
            req.status = "approved"
            req.valid_until_ns = now + (hours or 0) * NS_PER_HOUR
            ch.details.update(hours=hours, valid_until_ns=req.valid_until_ns)
        else:
            req.status = "refused"
        ch.touch(req)
        ch.details.update(recording=req.recording, requester=req.requester, action=req.action,
                          request_reason=req.reason)
    return req


def grant_hours(st: Station, hours: int | None) -> int:
    """The validity of a new approval: the hours asked, or ``[access] grant_hours``; at most
    ``MAX_GRANT_HOURS`` (a longer configured default is cut to it)."""
    if hours is None:
        return min(st.cfg.access.grant_hours, MAX_GRANT_HOURS)
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= MAX_GRANT_HOURS:
        raise InvalidInput(f"--hours must be 1..{MAX_GRANT_HOURS} (at most 7 days), got {hours!r}")
    return hours


def approve(st: Station, user: m.User, request_id: int, *, hours: int | None = None,
            note: str | None = None) -> m.AccessRequest:
    return _decide(st, user, request_id, "approve", (note or "").strip() or None, grant_hours(st, hours))


def refuse(st: Station, user: m.User, request_id: int, note: str) -> m.AccessRequest:
    return _decide(st, user, request_id, "refuse", _reason(note, "a note saying why (--note)"))


def revoke(st: Station, user: m.User, request_id: int, note: str) -> m.AccessRequest:
    return _decide(st, user, request_id, "revoke", _reason(note, "a note saying why (--note)"))


def request_state(req: m.AccessRequest, now_ns: int) -> str:
    """pending, refused, revoked, approved (valid now) or expired."""
    if req.status == "approved" and req.valid_until_ns is not None and req.valid_until_ns <= now_ns:
        return "expired"
    return req.status


def requests(st: Station, user: m.User, *, pending: bool = False, mine: bool = False,
             recording: int | None = None) -> list[dict[str, Any]]:
    """Requests, newest first. Approvers, auditors and admins see all; others only their own."""
    own_only = mine or not has_role(user, "approver", "auditor", "admin")
    now = st.now_ns()
    with st.db.session() as s:
        q = select(m.AccessRequest, m.Recording).join(m.Recording, m.AccessRequest.recording == m.Recording.id)
        if own_only:
            q = q.where(m.AccessRequest.requester == user.username)
        if pending:
            q = q.where(m.AccessRequest.status == "pending")
        if recording is not None:
            q = q.where(m.AccessRequest.recording == recording)
        rows = s.execute(q.order_by(m.AccessRequest.id.desc())).all()
    return [{**request_dict(r, now), "recording_name": rec.name} for r, rec in rows]


def request_dict(r: m.AccessRequest, now_ns: int) -> dict[str, Any]:
    """One request as the lists, the register and the decision commands show it (state at ``now_ns``)."""
    return {"id": r.id, "recording": r.recording, "requester": r.requester, "action": r.action,
            "reason": r.reason, "requested_ns": r.requested_ns, "status": request_state(r, now_ns),
            "decided_by": r.decided_by, "decided_ns": r.decided_ns, "note": r.decision_note,
            "valid_until_ns": r.valid_until_ns, "revoked_by": r.revoked_by, "revoked_ns": r.revoked_ns,
            "revoke_note": r.revoke_note}


@dataclass(frozen=True)
class Register:
    recording: dict[str, Any]
    requests: list[dict[str, Any]]
    attempts: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"recording": self.recording, "requests": self.requests, "attempts": self.attempts}


def access_log(st: Station, user: m.User, recording_id: int) -> Register:
    """The S8 register of one recording: every request with its decision, and every attempt to
    view or copy (granted or refused) with who, why, when, approver, request and the audit
    record (seq) that attests it. Auditors and approvers only."""
    require_role(st, user, *REGISTER_READERS, what=f"read the access register of recording {recording_id}")
    with st.db.session() as s:
        rec = s.get(m.Recording, recording_id)
        if rec is None:
            raise NotFound(f"no recording number {recording_id}")
        accesses = s.scalars(select(m.Access).where(m.Access.recording == rec.id).order_by(m.Access.id)).all()
        # the audit record of each attempt: its seq and the rule that decided
        audit: dict[int, tuple[int, str]] = {}
        for e in s.scalars(select(m.AuditEntry).where(m.AuditEntry.subject == f"recording:{rec.id}",
                                                      m.AuditEntry.type.in_(ACCESS_TYPES))):
            payload = records.parse_line(e.line.encode("ascii")).payload
            for key in (payload.get("rows") or {}).get("accesses", {}):
                audit[int(key)] = (e.seq, str((payload.get("details") or {}).get("rule", "")))
    reqs = requests(st, user, recording=rec.id)    # (SQLite: one transaction at a time, never nested)
    attempts = []
    for a in accesses:
        seq, rule = audit.get(a.id, (None, ""))
        attempts.append({"id": a.id, "at_ns": a.at_ns, "username": a.username, "action": a.action,
                         "granted": a.granted, "reason": a.reason, "approver": a.approver,
                         "request_id": a.request_id, "rule": rule, "audit_seq": seq})
    info = {"id": rec.id, "name": rec.name, "device_id": rec.device_id, "recording_id": rec.recording_id,
            "officer_id": rec.officer_id, "status": rec.status}
    return Register(info, list(reversed(reqs)), attempts)
