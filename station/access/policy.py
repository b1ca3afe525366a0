"""The S8 access check every viewer and copier goes through: ``authorize``.

Nothing serves the bytes of a recording (the ``station view`` / ``station copy`` commands, an
export, the web interface) without calling ``authorize(st, user, recording_id, action,
reason)`` first and getting an ``Access`` back. The rules (station/docs/access.md):

* **granted** when the user holds an approved, unexpired request (``AccessRequest``) for
  that recording and action. A *copy* grant also covers *view* (whoever may take the bytes
  away may look at them); a *view* grant never covers *copy*;
* an **officer** may *view* (never copy) a recording made under their own officer number
  (警号) without a request when ``[access] officer_views_own`` is true;
* otherwise **refused** (``NotAllowed``, exit 3): no request, still pending, refused,
  expired, revoked, or a disabled account. A purged recording is a ``Conflict`` (exit 6).

Every attempt, granted or refused, is one audited action that writes an ``Access`` row
(who, what, why, when, under which request and approver) and its signed audit record
(type ``view`` / ``copy`` when granted, ``view-refused`` / ``copy-refused`` when not); the
refusal is raised only after it is recorded.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from station.access.accounts import has_role
from station.app import Station
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound

ACTIONS = ("view", "copy")
ACTION_ZH = {"view": "查看", "copy": "复制"}
OWN_VIEW_REASON = "本人查看本人执法记录 (officer_views_own)"


def covering_actions(action: str) -> tuple[str, ...]:
    """The request actions whose approval allows ``action`` (copy implies view)."""
    return ("view", "copy") if action == "view" else ("copy",)


def live_grant(s: Session, username: str, recording: int, action: str, now_ns: int) -> m.AccessRequest | None:
    """The user's approved request allowing ``action`` on ``recording`` at ``now_ns`` (the one
    valid longest), or None."""
    return s.scalars(select(m.AccessRequest).where(
        m.AccessRequest.recording == recording, m.AccessRequest.requester == username,
        m.AccessRequest.status == "approved", m.AccessRequest.action.in_(covering_actions(action)),
        m.AccessRequest.valid_until_ns > now_ns).order_by(m.AccessRequest.valid_until_ns.desc())).first()


@dataclass(frozen=True)
class Decision:
    granted: bool
    why: str                      # the rule that decided, for the audit record and the refusal
    request: m.AccessRequest | None = None


def decide(st: Station, s: Session, user: m.User | None, rec: m.Recording, action: str) -> Decision:
    if user is None or not user.active:
        return Decision(False, "the account is disabled")
    now = st.now_ns()
    grant = live_grant(s, user.username, rec.id, action, now)
    if grant is not None:
        return Decision(True, f"request {grant.id} approved by {grant.decided_by}", grant)
    if (action == "view" and st.cfg.access.officer_views_own and has_role(user, "officer")
            and user.officer_no and rec.officer_id == user.officer_no):
        return Decision(True, "own recording (officer_views_own)")
    mine = s.scalars(select(m.AccessRequest).where(
        m.AccessRequest.recording == rec.id, m.AccessRequest.requester == user.username,
        m.AccessRequest.action.in_(covering_actions(action))).order_by(m.AccessRequest.id.desc())).all()
    last = mine[0] if mine else None      # the newest request decides what the refusal says
    if last is not None and last.status == "approved":
        return Decision(False, f"the approval has expired (request {last.id}); ask again")
    if last is not None and last.status == "pending":
        return Decision(False, f"the request is not approved yet (request {last.id})")
    if last is not None and last.status == "revoked":
        return Decision(False, f"the approval was revoked by {last.revoked_by} (request {last.id}: {last.revoke_note})")
    if last is not None and last.status == "refused":
        return Decision(False, f"the request was refused (request {last.id}: {last.decision_note})")
    return Decision(False, f"no approved request to {action} this recording")


class _Changed(Exception):
    """The decision changed between the look and the audited action (a concurrent approval)."""


def _decide(st: Station, s: Session, username: str, recording_id: int, action: str) -> tuple[m.Recording,
                                                                                               Decision]:
    rec = s.get(m.Recording, recording_id)
    if rec is None:
        raise NotFound(f"no recording number {recording_id}")
    if rec.status != "stored":
        return rec, Decision(False, f"the recording is {rec.status}")
    return rec, decide(st, s, s.get(m.User, username), rec, action)


def authorize(st: Station, user: m.User | str, recording_id: int, action: str,
              reason: str | None = None) -> m.Access:
    """Record the attempt and return the granted ``Access``; raise (after recording it)
    ``NotAllowed`` when refused, ``Conflict`` when the recording is purged; ``NotFound`` when
    there is no such recording and ``InvalidInput`` for an unknown action (nothing to record).

    ``reason`` (why now) defaults to the approved request's reason.
    """
    if action not in ACTIONS:
        raise InvalidInput(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    username = user if isinstance(user, str) else user.username
    given = (reason or "").strip()
    for _attempt in range(3):
        with st.db.session() as s:
            _, first = _decide(st, s, username, recording_id, action)
        kind = action if first.granted else f"{action}-refused"
        try:
            with st.trail.action(kind, actor=username, subject=f"recording:{recording_id}") as ch:
                rec, decision = _decide(st, ch.session, username, recording_id, action)
                if decision.granted != first.granted:
                    raise _Changed
                grant = decision.request
                why = given or (grant.reason if grant is not None else OWN_VIEW_REASON if decision.granted
                                else "")
                access = m.Access(recording=rec.id, username=username, action=action, granted=decision.granted,
                                  request_id=grant.id if grant is not None else None,
                                  approver=grant.decided_by if grant is not None else None,
                                  reason=why, at_ns=st.now_ns())
                ch.add(access)
                ch.details.update(action=action, granted=decision.granted, rule=decision.why,
                                  recording=rec.name, reason=why)
                if grant is not None:
                    ch.details.update(request=grant.id, approver=grant.decided_by,
                                      valid_until_ns=grant.valid_until_ns)
                status = rec.status
        except _Changed:
            continue
        break
    else:
        raise Conflict("the access rules for this recording kept changing while checking; try again")
    if not access.granted:
        if status != "stored":
            raise Conflict(f"recording {recording_id} is {status}: nothing to {action} "
                           "(the attempt is registered)")
        raise NotAllowed(f"{username} may not {ACTION_ZH[action]} ({action}) recording {recording_id}: "
                         f"{decision.why} (the attempt is registered)")
    return access
