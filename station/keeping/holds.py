"""Long-term holds (S6): a recording of a dispute, complaint, obstruction or assault of officers,
mass incident (or other, with text) is kept beyond its retention until the hold is released.

A hold does not move the retention end (``station.keeping.retention``); it stops the purge
(``station.keeping.purge`` refuses a held recording, even named explicitly). Placing
(clerk, approver, admin) and releasing (approver, admin) each need a reason and are one
audited action (``hold-place`` / ``hold-release``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from station.access.accounts import require_role
from station.app import Station
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotFound
from station.recordings import find_recording

KINDS_ZH = {"dispute": "争议", "complaint": "投诉", "assault": "妨碍/袭击执法人员",
            "mass-incident": "群体性事件", "other": "其他"}
PLACE_ROLES = ("clerk", "approver", "admin")
RELEASE_ROLES = ("approver", "admin")
MAX_TEXT = 2000


def _text(value: str | None, what: str, *, required: bool) -> str:
    v = (value or "").strip()
    if required and not v:
        raise InvalidInput(f"{what} is required")
    if len(v) > MAX_TEXT:
        raise InvalidInput(f"{what} is longer than {MAX_TEXT} characters")
    return v


@dataclass(frozen=True)
class HoldView:
    id: int
    recording: int
    recording_name: str
    kind: str
    text: str
    reason: str
    placed_by: str
    placed_ns: int
    released_by: str | None
    released_ns: int | None
    release_reason: str | None

    @property
    def active(self) -> bool:
        return self.released_ns is None

    @property
    def kind_zh(self) -> str:
        zh = KINDS_ZH.get(self.kind, self.kind)
        return f"{zh}：{self.text}" if self.text else zh

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "recording": self.recording, "recording_name": self.recording_name,
                "kind": self.kind, "kind_zh": KINDS_ZH.get(self.kind, self.kind), "text": self.text,
                "reason": self.reason, "placed_by": self.placed_by, "placed_ns": self.placed_ns,
                "released_by": self.released_by, "released_ns": self.released_ns,
                "release_reason": self.release_reason, "active": self.active}


def _view(h: m.Hold, rec: m.Recording) -> HoldView:
    return HoldView(h.id, h.recording, rec.name, h.kind, h.text, h.reason, h.placed_by, h.placed_ns,
                    h.released_by, h.released_ns, h.release_reason)


def place(st: Station, user: m.User, recording: str | int, kind: str, *, reason: str,
          text: str | None = None) -> HoldView:
    """Place a hold on a recording (S6). ``other`` needs ``text``; a purged recording cannot be held."""
    require_role(st, user, *PLACE_ROLES, what="place a hold (S6)")
    if kind not in KINDS_ZH:
        raise InvalidInput(f"hold kind must be one of {', '.join(KINDS_ZH)}; got {kind!r}")
    why = _text(reason, "a reason (--reason)", required=True)
    body = _text(text, "the text (--text) of a hold of kind other", required=kind == "other")
    with st.trail.action("hold-place", actor=user.username, reason=why, kind=kind) as ch:
        s = ch.session
        rec = find_recording(s, recording)
        ch.subject = f"recording:{rec.id}"
        if rec.status == "purged":
            raise Conflict(f"recording {rec.id} ({rec.name}) was purged: there is nothing left to hold")
        hold = m.Hold(recording=rec.id, kind=kind, text=body, reason=why, placed_by=user.username,
                      placed_ns=st.now_ns())
        ch.add(hold)
        s.flush()
        ch.details["hold"] = hold.id
        view = _view(hold, rec)
    return view


def release(st: Station, user: m.User, hold_id: int, *, reason: str) -> HoldView:
    """Release a hold (approver or admin, with a reason): the recording may expire again."""
    require_role(st, user, *RELEASE_ROLES, what="release a hold (S6)")
    why = _text(reason, "a reason (--reason)", required=True)
    with st.trail.action("hold-release", actor=user.username, subject=f"hold:{hold_id}", reason=why) as ch:
        s = ch.session
        hold = s.get(m.Hold, hold_id)
        if hold is None:
            raise NotFound(f"no hold {hold_id}")
        if hold.released_ns is not None:
            raise Conflict(f"hold {hold_id} was already released by {hold.released_by}")
        hold.released_by, hold.released_ns, hold.release_reason = user.username, st.now_ns(), why
        ch.touch(hold)
        ch.details["recording"] = hold.recording
        rec = s.get(m.Recording, hold.recording)
        assert rec is not None
        view = _view(hold, rec)
    return view


def list_holds(st: Station, *, active_only: bool = False, recording: str | int | None = None) -> list[HoldView]:
    with st.db.session() as s:
        q = select(m.Hold, m.Recording).join(m.Recording, m.Hold.recording == m.Recording.id).order_by(m.Hold.id)
        if active_only:
            q = q.where(m.Hold.released_ns.is_(None))
        if recording is not None:
            q = q.where(m.Hold.recording == find_recording(s, recording).id)
        return [_view(h, r) for h, r in s.execute(q)]
