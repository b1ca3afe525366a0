"""The supervisor's sign-off (签批) of not-recording reasons (D6) and missing interruption reasons (D5).

Items come from verified device journals at ingest (``interruptions`` rows):

* a ``not-recording`` record that asks for sign-off (D6: "写明无法使用的原因和依据，报局分管领导签批");
* a ``reason-missing`` record (D5: the officer did not state why recording was interrupted),
  which a supervisor reviews and closes with a note.

Who decides: the officer's supervisor as recorded on the officer's account
(``users.supervisor``), who must hold the approver role. When the officer has no account or
no supervisor on record, any approver may. Never the officer himself, whatever his roles.
Each decision (approved or rejected, with a note) is one audited action and sets
``signed_off_by``, ``signed_off_ns``, ``signoff_note`` and ``signoff_decision``; it is final
(a second decision is a conflict). A rejection stays in the catalogue and in the statistics
as "rejected"; every refused attempt is audited too.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from station.access.accounts import require_role
from station.app import Station
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound
from station.supervision.stats import (
    cause_zh,
    is_signoff_item,
    iso_s,
    officer_names,
    resolve_device,
    scope_for,
    signoff_state,
)

DECISIONS = ("approved", "rejected")
KIND_ZH = {"not-recording": "不录像说明(D6)", "reason-missing": "中断原因未说明(D5)"}
STATE_ZH = {"pending": "待签批", "approved": "已批准", "rejected": "已驳回"}


def item_dict(row: m.Interruption, names: dict[str, str], tz: str) -> dict[str, Any]:
    state = signoff_state(row) or ""
    return {"item": row.id, "kind": row.kind, "kind_zh": KIND_ZH.get(row.kind, row.kind),
            "device_id": row.device_id, "journal_seq": row.journal_seq, "officer_id": row.officer_id,
            "officer": f"{row.officer_id} {names.get(row.officer_id, '')}".strip() if row.officer_id else "",
            "cause": row.cause, "cause_zh": cause_zh(row.cause), "reason": row.reason, "at": iso_s(row.wall_ns, tz),
            "wall_ns": row.wall_ns, "state": state, "state_zh": STATE_ZH.get(state, state),
            "signed_off_by": row.signed_off_by, "signed_off_at": iso_s(row.signed_off_ns, tz),
            "signoff_note": row.signoff_note}


def list_items(st: Station, viewer: m.User, *, pending_only: bool = False, officer: str | None = None,
               device: str | None = None) -> list[dict[str, Any]]:
    """The sign-off items (oldest first). Officers see their own only."""
    officer = scope_for(st, viewer, officer, "list sign-off items")
    with st.db.session() as s:
        device = resolve_device(s, device)
        names = officer_names(s)
        q = select(m.Interruption).where(m.Interruption.kind.in_(("not-recording", "reason-missing")))
        if officer is not None:
            q = q.where(m.Interruption.officer_id == officer)
        if device is not None:
            q = q.where(m.Interruption.device_id == device)
        rows = [r for r in s.scalars(q.order_by(m.Interruption.wall_ns, m.Interruption.id)) if is_signoff_item(r)]
        return [item_dict(r, names, st.cfg.timezone) for r in rows
                if not pending_only or signoff_state(r) == "pending"]


def decide(st: Station, user: m.User, item: int, decision: str, note: str) -> dict[str, Any]:
    """Approve or reject one item as ``user``; see the module doc for who may."""
    if decision not in DECISIONS:
        raise InvalidInput(f"decision must be one of {', '.join(DECISIONS)}")
    note = (note or "").strip()
    if not note:
        raise InvalidInput("a sign-off needs a note (--note): what was checked, why approved or rejected")
    subject = f"interruption:{item}"
    with st.db.session() as s:
        row = s.get(m.Interruption, item)
        if row is None or not is_signoff_item(row):
            raise NotFound(f"no sign-off item {item} (see `station signoff list`)")
        officer_user = (s.scalars(select(m.User).where(m.User.officer_no == row.officer_id)).first()
                        if row.officer_id else None)
    if row.officer_id is not None and user.officer_no == row.officer_id:
        st.trail.event("signoff-refused", actor=user.username, subject=subject,
                       reason="an officer may not sign off his own reasons")
        raise NotAllowed(f"{user.username} may not sign off his own reason (item {item}, 警号 {row.officer_id})")
    require_role(st, user, "approver", what=f"sign off item {item}")
    supervisor = officer_user.supervisor if officer_user is not None else None
    if supervisor is not None and supervisor != user.username:
        st.trail.event("signoff-refused", actor=user.username, subject=subject,
                       reason=f"item of officer {row.officer_id}, whose supervisor is {supervisor}")
        raise NotAllowed(f"item {item} is for officer {row.officer_id}'s supervisor ({supervisor}) to sign off")
    with st.trail.action("signoff", actor=user.username, subject=subject, reason=note, decision=decision,
                         kind=row.kind, device=row.device_id, journal_seq=row.journal_seq,
                         officer=row.officer_id) as ch:
        fresh = ch.session.get(m.Interruption, item)
        assert fresh is not None
        if fresh.signoff_decision is not None:
            raise Conflict(f"item {item} was already {fresh.signoff_decision} by {fresh.signed_off_by}")
        fresh.signed_off_by, fresh.signed_off_ns = user.username, st.now_ns()
        fresh.signoff_note, fresh.signoff_decision = note, decision
        ch.touch(fresh)
    with st.db.session() as s:
        done = s.get(m.Interruption, item)
        assert done is not None
        return item_dict(done, officer_names(s), st.cfg.timezone)
