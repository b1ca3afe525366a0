"""Labelling (S2) and the S3 name that follows it.

A label links a recording, or a time range of it, to a case (its number) or an activity, with
the enforcement category (执法类别, from ``[labels] categories``), the counterpart
(行政执法相对人), the content (检查内容) and the place. Rules:

* who: an evidence clerk, or an officer for his own recordings (``officer_id`` is his 警号);
  anyone else is refused (NotAllowed, audited as ``not-allowed``);
* never silently overwritten: a second label whose range overlaps a current label of the
  recording is refused (Conflict, naming the label to correct); ``correct`` adds a new
  version (``version`` + 1) with a reason and retires the old one (``current`` False,
  ``superseded_by``); only the current version can be corrected. Ranges that do not overlap
  (two cases in one long recording) are separate labels;
* a purged recording cannot be labelled (Conflict); a closed case takes no new label
  (Conflict: reopen it); an unknown case number is NotFound; a range outside the recording
  is InvalidInput;
* the S3 name (``unit_counterpart_date_content_recordingid``) follows the current label that
  starts first (a whole-recording label starts with the recording); the view directory and
  its files are renamed in the same action (``station.casework.view``); the retention end is
  recomputed (``station.keeping.retention.refresh``).

Recordings are named on the command line by ``#N`` or ``N`` (catalogue id), ``DEVICE/RID``
(device id and the device's recording id) or ``RID`` alone: a bare number that is also some
recording's device id, or a RID two devices share, is refused as ambiguous (InvalidInput)
with the unambiguous forms listed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.crashpoints import crashpoint
from station.access.accounts import has_role
from station.app import Station
from station.casework import view
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound
from station.keeping import retention
from station.recordings import find_recording, free_name

MAX_TEXT = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
READ_ROLES = ("clerk", "approver", "auditor", "admin")


@dataclass(frozen=True)
class LabelInput:
    """What a label says; in a correction, None keeps the old version's value."""

    case_no: str | None = None
    activity: str | None = None
    category: str | None = None
    counterpart: str | None = None
    content: str | None = None
    place: str | None = None
    range_from_ns: int | None = None
    range_to_ns: int | None = None
    whole: bool = False          # correction: the whole recording again (drops a range)


def clean_text(what: str, value: str | None, *, required: bool = True) -> str | None:
    if value is None:
        if required:
            raise InvalidInput(f"{what} is required")
        return None
    value = value.strip()
    if not value:
        if required:
            raise InvalidInput(f"{what} must not be empty")
        return None
    if len(value) > MAX_TEXT or _CONTROL.search(value):
        raise InvalidInput(f"{what}: at most {MAX_TEXT} characters, no control characters")
    return value


def check_category(st: Station, category: str) -> str:
    allowed = st.cfg.labels.categories
    if category not in allowed:
        raise InvalidInput(f"执法类别 (category) {category!r} is not one of the configured ones: "
                           f"{', '.join(allowed)} ([labels] categories)")
    return category


# ---- which recording --------------------------------------------------------------------------
def may_label(user: m.User, rec: m.Recording) -> bool:
    if has_role(user, "clerk"):
        return True
    return has_role(user, "officer") and bool(user.officer_no) and rec.officer_id == user.officer_no


def may_read(user: m.User, rec: m.Recording) -> bool:
    return has_role(user, *READ_ROLES) or may_label(user, rec)


def _refuse(st: Station, user: m.User, rec_id: int, what: str) -> NotAllowed:
    st.trail.event("not-allowed", actor=user.username, subject=f"recording:{rec_id}",
                   reason=f"{what}: only an evidence clerk, or the officer whose recording it is")
    return NotAllowed(f"{user.username} may not {what} recording #{rec_id}: only an evidence clerk (clerk), "
                      "or the officer whose recording it is")


# ---- the label's data -------------------------------------------------------------------------
def _bounds(rec: m.Recording) -> tuple[int, int]:
    start = rec.start_wall_ns or 0
    return start, max(rec.end_wall_ns or start, start)


def _span(lab: m.Label, rec: m.Recording) -> tuple[int, int]:
    lo, hi = _bounds(rec)
    return (lab.range_start_ns if lab.range_start_ns is not None else lo,
            lab.range_end_ns if lab.range_end_ns is not None else hi)


def _range(rec: m.Recording, start: int | None, end: int | None) -> tuple[int | None, int | None]:
    """The range asked for, checked against the recording; (None, None) for the whole."""
    if start is None and end is None:
        return None, None
    lo, hi = _bounds(rec)
    s_ns = lo if start is None else start
    e_ns = hi if end is None else end
    if not lo <= s_ns < e_ns <= hi:
        raise InvalidInput(f"the time range must lie within recording #{rec.id} (its start and end) and "
                           "start before it ends")
    return s_ns, e_ns


def current_labels(s: Session, rec_id: int) -> list[m.Label]:
    return list(s.scalars(select(m.Label).where(m.Label.recording == rec_id, m.Label.current.is_(True))
                          .order_by(m.Label.id)))


def _overlapping(s: Session, rec: m.Recording, span: tuple[int, int], except_id: int | None = None) -> m.Label | None:
    for lab in current_labels(s, rec.id):
        if lab.id == except_id:
            continue
        a, b = _span(lab, rec)
        if max(a, span[0]) < min(b, span[1]) or (a == b == span[0] == span[1]):
            return lab
    return None


def _case(s: Session, case_no: str) -> m.Case:
    case = s.scalars(select(m.Case).where(m.Case.case_no == case_no)).first()
    if case is None:
        raise NotFound(f"no case {case_no} (open it first: station case open)")
    if case.status == "closed":
        raise Conflict(f"case {case_no} is closed: reopen it (station case reopen) before labelling to it")
    return case


def _naming_label(s: Session, rec: m.Recording) -> m.Label | None:
    labs = current_labels(s, rec.id)
    return min(labs, key=lambda lab: (_span(lab, rec)[0], lab.id)) if labs else None


def _new_name(st: Station, s: Session, rec: m.Recording, lab: m.Label | None) -> tuple[str, str, str]:
    """(name, counterpart, content) the recording is to carry."""
    counterpart = lab.counterpart if lab else st.cfg.naming.counterpart_placeholder
    content = lab.content if lab else st.cfg.naming.content_placeholder
    name = free_name(s, rec.unit, counterpart, rec.date, content, rec.recording_id, rec.device_id, rec.id)
    return name, counterpart, content


def label_dict(lab: m.Label, case_no: str | None) -> dict[str, Any]:
    return {"id": lab.id, "recording": lab.recording, "version": lab.version, "current": lab.current,
            "case_no": case_no, "activity": lab.activity, "category": lab.category,
            "counterpart": lab.counterpart, "content": lab.content, "place": lab.place,
            "range_start_ns": lab.range_start_ns, "range_end_ns": lab.range_end_ns,
            "labelled_by": lab.labelled_by, "labelled_ns": lab.labelled_ns,
            "correction_reason": lab.correction_reason, "superseded_by": lab.superseded_by}


@dataclass
class LabelResult:
    label: dict[str, Any]
    recording: int
    old_name: str
    name: str
    retention_end_ns: int | None
    retired: int | None = None


def _apply(st: Station, ch: Any, rec: m.Recording, lab: m.Label) -> tuple[str, view.Rename | None]:
    """After the label rows changed: retention, name, the view's rename (published, not finished)."""
    s = ch.session
    retention.refresh(ch, st.cfg, rec)
    old = rec.name
    name, counterpart, content = _new_name(st, s, rec, _naming_label(s, rec))
    if (name, counterpart, content) != (rec.name, rec.counterpart, rec.content):
        rec.name, rec.counterpart, rec.content = name, counterpart, content
        ch.touch(rec)
    ch.details.update(name_old=old, name=name)
    return old, view.rename_view(st.store, s, rec, old, name)


def _run(st: Station, rec_id: int, body: Callable[[list[view.Rename | None]], LabelResult]) -> LabelResult:
    """Run the action ``body`` (which leaves its published rename in ``pending``) and settle the
    view's rename: finished once committed, undone if not (``view.Rename.settle``)."""
    pending: list[view.Rename | None] = [None]
    try:
        result = body(pending)
    except BaseException:
        rename = pending[0]
        if rename is not None:
            try:
                with st.db.session() as s:
                    row = s.get(m.Recording, rec_id)
                    current = row.name if row else None
            except Exception:
                current = None
            rename.settle(current)
        raise
    if pending[0] is not None:
        crashpoint("label-rename-committed")      # committed; the old directory still there
        pending[0].finish()
    return result


def _authorised_recording(st: Station, user: m.User, ref: str, what: str) -> m.Recording:
    with st.db.session() as s:
        rec = find_recording(s, ref)
    if not may_label(user, rec):
        raise _refuse(st, user, rec.id, what)
    if rec.status != "stored":
        raise Conflict(f"recording #{rec.id} is {rec.status}: a {rec.status} recording cannot be labelled")
    return rec


def label_recording(st: Station, user: m.User, ref: str, inp: LabelInput) -> LabelResult:
    """A new label (version 1) on recording ``ref`` or a range of it."""
    if (inp.case_no is None) == (inp.activity is None):
        raise InvalidInput("a label names either a case (--case NO) or an activity (--activity TEXT), one of them")
    counterpart = clean_text("行政执法相对人 (--counterpart)", inp.counterpart)
    content = clean_text("检查内容 (--content)", inp.content)
    place = clean_text("地点 (--place)", inp.place)
    activity = clean_text("activity", inp.activity, required=False)
    category = clean_text("执法类别 (--category)", inp.category, required=inp.case_no is None)
    target = _authorised_recording(st, user, ref, "label")

    def body(pending: list[view.Rename | None]) -> LabelResult:
        with st.trail.action("label", actor=user.username, subject=f"recording:{target.id}") as ch:
            s = ch.session
            rec = s.get(m.Recording, target.id)
            assert rec is not None
            if rec.status != "stored":
                raise Conflict(f"recording #{rec.id} is {rec.status}: it cannot be labelled")
            view.repair_recording(st.store, s, rec)
            case = _case(s, inp.case_no) if inp.case_no is not None else None
            cat = check_category(st, category or (case.category if case else ""))
            r0, r1 = _range(rec, inp.range_from_ns, inp.range_to_ns)
            span = (r0 if r0 is not None else _bounds(rec)[0], r1 if r1 is not None else _bounds(rec)[1])
            clash = _overlapping(s, rec, span)
            if clash is not None:
                raise Conflict(f"recording #{rec.id} already has label {clash.id} over this time: a label is "
                               f"never overwritten; correct it (station label correct {clash.id} ... --reason) "
                               "or label a range that does not overlap")
            lab = m.Label(recording=rec.id, version=1, current=True, case_id=case.id if case else None,
                          activity=activity, category=cat, counterpart=counterpart, content=content,
                          place=place, range_start_ns=r0, range_end_ns=r1, labelled_by=user.username,
                          labelled_ns=st.now_ns())
            ch.add(lab)
            s.flush()
            ch.details.update(label=lab.id, version=1, case_no=inp.case_no, category=cat,
                              range_start_ns=r0, range_end_ns=r1,
                              overdue=_is_overdue(st, rec))
            old, pending[0] = _apply(st, ch, rec, lab)
            res = LabelResult(label_dict(lab, inp.case_no), rec.id, old, rec.name, rec.retention_end_ns)
        return res

    return _run(st, target.id, body)


def _is_overdue(st: Station, rec: m.Recording) -> bool:
    """Whether the recording was past its labelling deadline when labelled (kept in the record)."""
    if rec.ingested_ns is None:
        return False
    return st.now_ns() - rec.ingested_ns > st.cfg.labels.deadline_hours * 3600 * 10**9


def correct_label(st: Station, user: m.User, label_id: int, inp: LabelInput, reason: str) -> LabelResult:
    """A new version of label ``label_id`` (fields not given carried over); the old one retired."""
    why = clean_text("the reason for the correction (--reason)", reason)
    if inp.case_no is not None and inp.activity is not None:
        raise InvalidInput("a label names either a case or an activity, not both")
    if inp.whole and (inp.range_from_ns is not None or inp.range_to_ns is not None):
        raise InvalidInput("--whole and --from/--to exclude each other")
    with st.db.session() as s:
        old0 = s.get(m.Label, label_id)
        if old0 is None:
            raise NotFound(f"no label {label_id}")
        rec_id = old0.recording
    target = _authorised_recording(st, user, f"#{rec_id}", "correct a label of")

    def body(pending: list[view.Rename | None]) -> LabelResult:
        with st.trail.action("label-correct", actor=user.username, subject=f"recording:{rec_id}",
                             reason=why) as ch:
            s = ch.session
            rec = s.get(m.Recording, target.id)
            old = s.get(m.Label, label_id)
            assert rec is not None and old is not None
            if rec.status != "stored":
                raise Conflict(f"recording #{rec.id} is {rec.status}: its labels cannot be corrected")
            if not old.current:
                raise Conflict(f"label {label_id} was corrected already (by label {old.superseded_by}); "
                               "correct the current version")
            view.repair_recording(st.store, s, rec)
            if inp.case_no is not None:
                case: m.Case | None = _case(s, inp.case_no)
                activity = None
            elif inp.activity is not None:
                case, activity = None, clean_text("activity", inp.activity)
            else:
                case = s.get(m.Case, old.case_id) if old.case_id is not None else None
                activity = old.activity
            case_no = case.case_no if case else None
            category = check_category(st, clean_text("执法类别 (--category)", inp.category, required=False)
                                      or (case.category if case and inp.case_no is not None else old.category))
            if inp.whole:
                r0, r1 = None, None
            elif inp.range_from_ns is None and inp.range_to_ns is None:
                r0, r1 = old.range_start_ns, old.range_end_ns
            else:
                r0, r1 = _range(rec, inp.range_from_ns if inp.range_from_ns is not None else old.range_start_ns,
                                inp.range_to_ns if inp.range_to_ns is not None else old.range_end_ns)
            lo, hi = _bounds(rec)
            clash = _overlapping(s, rec, (lo if r0 is None else r0, hi if r1 is None else r1), except_id=old.id)
            if clash is not None:
                raise Conflict(f"the corrected range overlaps label {clash.id} of recording #{rec.id}")
            new = m.Label(recording=rec.id, version=old.version + 1, current=True,
                          case_id=case.id if case else None, activity=activity, category=category,
                          counterpart=clean_text("行政执法相对人 (--counterpart)", inp.counterpart,
                                                 required=False) or old.counterpart,
                          content=clean_text("检查内容 (--content)", inp.content, required=False) or old.content,
                          place=clean_text("地点 (--place)", inp.place, required=False) or old.place,
                          range_start_ns=r0, range_end_ns=r1, labelled_by=user.username,
                          labelled_ns=st.now_ns(), correction_reason=why)
            old.current = False
            ch.add(new)
            s.flush()
            old.superseded_by = new.id
            ch.touch(old)
            ch.details.update(label=new.id, retired=old.id, version=new.version, case_no=case_no,
                              category=category, range_start_ns=r0, range_end_ns=r1)
            old_name, pending[0] = _apply(st, ch, rec, new)
            res = LabelResult(label_dict(new, case_no), rec.id, old_name, rec.name, rec.retention_end_ns,
                              retired=old.id)
        return res

    return _run(st, rec_id, body)


def history(st: Station, user: m.User, ref: str) -> dict[str, Any]:
    """Every label version of a recording, oldest first, retired ones included."""
    with st.db.session() as s:
        rec = find_recording(s, ref)
        if not may_read(user, rec):
            raise _refuse(st, user, rec.id, "read the labels of")
        labs = list(s.scalars(select(m.Label).where(m.Label.recording == rec.id).order_by(m.Label.id)))
        cases = {c.id: c.case_no for c in s.scalars(select(m.Case).where(
            m.Case.id.in_([lab.case_id for lab in labs if lab.case_id is not None])))}
        return {"recording": rec.id, "device_id": rec.device_id, "recording_id": rec.recording_id,
                "name": rec.name, "status": rec.status, "officer_id": rec.officer_id,
                "labels": [label_dict(lab, cases.get(lab.case_id) if lab.case_id else None) for lab in labs]}
