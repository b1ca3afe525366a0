"""Checking a pooled device out to an officer and in again (S9, D12), over the dock link.

Check-out (a clerk, the device docked): the station connects to the device like ``station
dock`` does (``[dock] device_address``/``port``, the dock's TLS identity, the device key
pinned), takes a one-time nonce from the manifest, and sends an assignment signed with the
dock's key (``recorder.assignment``: device, 警号, name, unit, station, issued time, counter,
nonce, assignment id). The device checks it and journals it (``firmware.handover``); from
then on its recordings name that officer (``station.handover.attribution`` reads them from
the device's signed journal at the next docking).

Two audited actions bracket the exchange, so a cut in the middle is never lost:

1. ``device-checkout``: the ``assignments`` row with the signed assignment, *before* the device
   sees it (``device_ack`` empty: unconfirmed);
2. ``device-checkout-confirmed`` (the device's answer in ``device_ack``) or
   ``device-checkout-refused`` (the answer, and the row closed at once).

If the answer never arrives the row stays open and unconfirmed: ``station device checkin``
sends the release (the device takes it, or answers that it has no such assignment in force)
and closes it. Check-in is the same exchange with a signed release of the assignment in
force (``device-checkin``; a refusal other than "not in force" is ``device-checkin-refused``
and leaves the row open).

``device_ack`` holds JSON: ``{"checkout": {"status", "answer"}, "checkin": {"status",
"answer", "release"}}`` (``release``: the signed release as sent).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recorder import assignment as asg
from recorder import dock_protocol as protocol
from recorder import receipt
from station.access.accounts import require_role, roles_of
from station.app import Station
from station.db import models as m
from station.dock import pki
from station.dock.ledger import Ledger
from station.dock.link import DeviceClient, DeviceProtocolError, DeviceRefused, LinkError, LinkInterrupted
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound, Unavailable

NOT_IN_FORCE = asg.AssignmentNotInForce.__name__


# ---- reading the rows ------------------------------------------------------------------------
def open_assignment(s: Session, device_id: str) -> m.Assignment | None:
    return s.scalars(select(m.Assignment).where(m.Assignment.device_id == device_id,
                                                m.Assignment.checked_in_ns.is_(None))
                     .order_by(m.Assignment.id.desc())).first()


def document(row: m.Assignment) -> dict[str, Any]:
    """The signed assignment's fields (``assignment`` of the wire form as sent)."""
    try:
        doc = json.loads(row.assignment)["assignment"]
    except (ValueError, KeyError, TypeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def acks(row: m.Assignment) -> dict[str, Any]:
    try:
        doc = json.loads(row.device_ack) if row.device_ack else {}
    except ValueError:
        doc = {"unreadable": row.device_ack}
    return doc if isinstance(doc, dict) else {}


def state(row: m.Assignment) -> str:
    """open (the device took it) | unconfirmed (no answer yet) | refused | closed."""
    checkout = acks(row).get("checkout") or {}
    answer = checkout.get("answer") or {}
    if row.checked_in_ns is None:
        return "open" if answer.get("accepted") is True else "unconfirmed"
    return "closed" if answer.get("accepted") is True or not checkout else "refused"


def _counter(s: Session, device_id: str) -> int:
    """The counter of a new assignment of the device: 2n for its row n (0-based), the release 2n+1."""
    n = s.scalar(select(func.count()).select_from(m.Assignment).where(m.Assignment.device_id == device_id))
    return 2 * (n or 0)


def resolve_device(s: Session, text: str) -> m.Device:
    """A registered device by its id, its label, or a unique id prefix (at least 6 characters)."""
    row = s.get(m.Device, text)
    if row is not None:
        return row
    by_label = list(s.scalars(select(m.Device).where(m.Device.label == text)))
    if len(by_label) == 1:
        return by_label[0]
    if len(text) >= 6:
        by_prefix = list(s.scalars(select(m.Device).where(m.Device.device_id.startswith(text, autoescape=True))))
        if len(by_prefix) == 1:
            return by_prefix[0]
        if len(by_prefix) > 1:
            raise InvalidInput(f"{text!r} matches {len(by_prefix)} devices; give more of the id")
    raise NotFound(f"no registered device {text!r} (station register --pubkey ...)")


def officer_account(s: Session, officer_no: str) -> m.User:
    user = s.scalars(select(m.User).where(m.User.officer_no == officer_no)).first()
    if user is None or not user.active or "officer" not in roles_of(user):
        raise NotFound(f"no active officer account with 警号 {officer_no}")
    return user


# ---- the link --------------------------------------------------------------------------------
@dataclass
class _Link:
    client: DeviceClient
    dock_id: str
    key: Ed25519PrivateKey
    cert_pem: bytes

    def close(self) -> None:
        self.client.close()


def _connect(st: Station, device_id: str, wait_s: float) -> _Link:
    d = st.cfg.dock
    try:
        cert_pem = Path(d.cert_file).read_bytes()
        link = _Link(DeviceClient(d.device_address, d.port, d.ca_file, d.cert_file, d.key_file,
                                  Ledger(st).pubkey, d.timeout_s),
                     receipt.dock_id_for_cert(pki.load_cert(Path(d.cert_file))), pki.load_key(Path(d.key_file)),
                     cert_pem)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"the dock's TLS identity ([dock] cert_file/key_file/ca_file) is not usable: {exc}") \
            from None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            docked = link.client.connect()
            break
        except LinkInterrupted as exc:
            if time.monotonic() >= deadline:
                raise Unavailable(f"no device at {d.device_address}:{d.port}: {exc} (is it docked? --wait)") from None
            time.sleep(0.5)
        except DeviceRefused as exc:
            raise NotAllowed(f"the docked device refused this dock, or is not registered here: {exc}") from None
    if docked != device_id:
        link.close()
        raise Conflict(f"the docked device is {docked}, not {device_id}")
    return link


def _exchange(link: _Link, a: asg.Assignment) -> tuple[bytes, int, protocol.AssignmentAnswer]:
    """Sign ``a`` (its nonce from this session's manifest) and hand it over; the device's answer."""
    wire = asg.sign_assignment(a, link.key, link.cert_pem)
    status, answer = link.client.send_assignment(wire)
    return wire, status, answer


def _nonce(link: _Link) -> str:
    try:
        return link.client.manifest().nonce
    except LinkError as exc:
        link.close()
        raise Unavailable(f"the device did not hand out a manifest: {exc}") from None


def _accepted(answer: protocol.AssignmentAnswer, kind: str, assignment_id: str) -> bool:
    return (isinstance(answer, protocol.AssignmentAccepted) and answer.kind == kind
            and answer.assignment_id == assignment_id)


def _answer(status: int, answer: protocol.AssignmentAnswer) -> dict[str, Any]:
    return {"status": status, "answer": answer.to_dict()}


def _refusal_text(answer: protocol.AssignmentAnswer) -> str:
    if isinstance(answer, protocol.Refusal):
        return f"{answer.refused}: {answer.detail}"
    return json.dumps(answer.to_dict(), ensure_ascii=False)


# ---- actions -----------------------------------------------------------------------------------
def checkout(st: Station, actor: m.User, device: str, officer_no: str, wait_s: float = 0.0) -> dict[str, Any]:
    """Check ``device`` out to the officer with 警号 ``officer_no`` (the device must be docked)."""
    require_role(st, actor, "clerk", "admin", what="check devices out")
    with st.db.session() as s:
        officer = officer_account(s, officer_no)
        dev = resolve_device(s, device)
        device_id = dev.device_id
        busy = open_assignment(s, device_id)
        if busy is not None:
            raise Conflict(f"device {device_id} is checked out to {busy.officer_id} (assignment {busy.id}, "
                           f"{state(busy)}): check it in first (station device checkin)")
        counter = _counter(s, device_id)
        name, unit = officer.display_name, officer.unit or st.cfg.unit
    link = _connect(st, device_id, wait_s)
    try:
        a = asg.Assignment(asg.KIND_ASSIGN, uuid.uuid4().hex, device_id, link.dock_id, st.name, _nonce(link),
                           counter, st.now_ns(), officer_no, name, unit)
        wire = asg.sign_assignment(a, link.key, link.cert_pem)
        # 1. the row, before the device sees the assignment: a cut leaves it open (unconfirmed)
        with st.trail.action("device-checkout", actor=actor.username, subject=f"device:{device_id}",
                             officer=officer_no, assignment_id=a.assignment_id) as ch:
            if open_assignment(ch.session, device_id) is not None:
                raise Conflict(f"device {device_id} was checked out meanwhile")
            row = m.Assignment(device_id=device_id, officer_id=officer_no, officer_unit=unit,
                               checked_out_ns=a.issued_wall_ns, checked_out_by=actor.username,
                               assignment=wire.decode("utf-8"), device_ack=None)
            ch.add(row)
            ch.session.flush()
            row_id = row.id
            ch.details["assignment"] = row_id
        try:
            status, answer = link.client.send_assignment(wire)
        except (LinkInterrupted, DeviceProtocolError, LinkError) as exc:
            raise Unavailable(f"the device's answer to assignment {row_id} did not arrive ({exc}); it stays "
                              "open, unconfirmed: dock the device and run `station device checkin` "
                              f"{device_id}, then check it out again") from None
    finally:
        link.close()
    # 2. the device's answer
    ok = _accepted(answer, asg.KIND_ASSIGN, a.assignment_id)
    with st.trail.action("device-checkout-confirmed" if ok else "device-checkout-refused", actor=actor.username,
                         subject=f"device:{device_id}", assignment=row_id, officer=officer_no,
                         answer=_answer(status, answer)["answer"]) as ch:
        row2 = ch.session.get(m.Assignment, row_id)
        assert row2 is not None
        row2.device_ack = json.dumps({"checkout": _answer(status, answer)}, ensure_ascii=False, sort_keys=True)
        if not ok:
            row2.checked_in_ns, row2.checked_in_by = st.now_ns(), actor.username
        ch.touch(row2)
    if not ok:
        raise NotAllowed(f"the device refused the assignment: {_refusal_text(answer)}")
    assert isinstance(answer, protocol.AssignmentAccepted)
    return {"assignment": row_id, "assignment_id": a.assignment_id, "device": device_id, "officer_id": officer_no,
            "officer_name": name, "unit": unit, "checked_out_ns": a.issued_wall_ns,
            "record_seq": answer.record_seq, "record_hash": answer.record_hash}


def checkin(st: Station, actor: m.User, device: str, wait_s: float = 0.0) -> dict[str, Any]:
    """Close the device's open assignment with a signed release (the device must be docked)."""
    require_role(st, actor, "clerk", "admin", what="check devices in")
    with st.db.session() as s:
        device_id = resolve_device(s, device).device_id
        row = open_assignment(s, device_id)
        if row is None:
            raise Conflict(f"device {device_id} is not checked out")
        row_id, assignment_id, officer_no = row.id, document(row).get("assignment_id"), row.officer_id
        counter = _counter(s, device_id) - 1      # 2n+1 for row n (its assignment was 2n)
    if not isinstance(assignment_id, str):
        raise Conflict(f"assignment {row_id} holds no readable signed assignment")
    link = _connect(st, device_id, wait_s)
    try:
        rel = asg.Assignment(asg.KIND_RELEASE, assignment_id, device_id, link.dock_id, st.name, _nonce(link),
                             counter, st.now_ns())
        try:
            wire, status, answer = _exchange(link, rel)
        except (LinkInterrupted, DeviceProtocolError, LinkError) as exc:
            raise Unavailable(f"the device's answer to the release did not arrive ({exc}); the assignment "
                              "stays open: run the check-in again") from None
    finally:
        link.close()
    ok = _accepted(answer, asg.KIND_RELEASE, assignment_id)
    gone = isinstance(answer, protocol.AssignmentRefusal) and answer.refused == NOT_IN_FORCE
    entry = {**_answer(status, answer), "release": json.loads(wire)}
    if not (ok or gone):
        st.trail.event("device-checkin-refused", actor=actor.username, subject=f"device:{device_id}",
                       assignment=row_id, answer=entry["answer"])
        raise NotAllowed(f"the device refused the release: {_refusal_text(answer)}")
    with st.trail.action("device-checkin", actor=actor.username, subject=f"device:{device_id}",
                         assignment=row_id, officer=officer_no, answer=entry["answer"]) as ch:
        row2 = ch.session.get(m.Assignment, row_id)
        assert row2 is not None
        if row2.checked_in_ns is not None:
            raise Conflict(f"assignment {row_id} was checked in meanwhile")
        row2.checked_in_ns, row2.checked_in_by = rel.issued_wall_ns, actor.username
        row2.device_ack = json.dumps({**acks(row2), "checkin": entry}, ensure_ascii=False, sort_keys=True)
        ch.touch(row2)
    return {"assignment": row_id, "assignment_id": assignment_id, "device": device_id, "officer_id": officer_no,
            "checked_in_ns": rel.issued_wall_ns, "released_on_device": ok,
            "record_seq": answer.record_seq if isinstance(answer, protocol.AssignmentAccepted) else None,
            "note": None if ok else "the device had no such assignment in force; closed at the station"}


# ---- who has what, and the usage ledger (S9) ------------------------------------------------------
def devices(st: Station) -> list[dict[str, Any]]:
    """Every registered device and who has it now."""
    out = []
    with st.db.session() as s:
        names = {u.officer_no: u.display_name for u in s.scalars(select(m.User).where(m.User.officer_no.is_not(None)))}
        for dev in s.scalars(select(m.Device).order_by(m.Device.device_id)):
            row = open_assignment(s, dev.device_id)
            item: dict[str, Any] = {"device": dev.device_id, "label": dev.label, "issued_to": dev.officer_id,
                                    "status": "available", "officer_id": None, "officer_name": None,
                                    "unit": None, "since_ns": None, "assignment": None}
            if row is not None:
                item.update(status="checked-out" if state(row) == "open" else "unconfirmed",
                            officer_id=row.officer_id,
                            officer_name=document(row).get("officer_name") or names.get(row.officer_id),
                            unit=row.officer_unit, since_ns=row.checked_out_ns, assignment=row.id)
            out.append(item)
    return out


def history(st: Station, device: str | None = None, officer_no: str | None = None) -> list[dict[str, Any]]:
    """The handovers (oldest first) with what was recorded under each: the device's recordings
    attributed to that officer whose first segment the device journaled between the
    assignment's record and its release's (device journal order, not clocks)."""
    out = []
    with st.db.session() as s:
        q = select(m.Assignment)
        if device is not None:
            q = q.where(m.Assignment.device_id == resolve_device(s, device).device_id)
        if officer_no is not None:
            q = q.where(m.Assignment.officer_id == officer_no)
        for row in s.scalars(q.order_by(m.Assignment.checked_out_ns, m.Assignment.id)):
            item = summary(row)
            first, until = item["device_record"], item["device_release_record"]
            n = secs = 0
            if first is not None:
                rq = (select(m.Recording, func.min(m.Segment.journal_seq))
                      .join(m.Segment, m.Segment.recording == m.Recording.id)
                      .where(m.Recording.device_id == row.device_id, m.Recording.officer_id == row.officer_id)
                      .group_by(m.Recording.id))
                for rec, seq in s.execute(rq).all():
                    if seq > first and (until is None or seq < until):
                        n += 1
                        secs += ((rec.end_wall_ns or 0) - (rec.start_wall_ns or 0)) // 10**9
            out.append(item | {"recordings": n, "recorded_s": secs})
    return out


def summary(row: m.Assignment) -> dict[str, Any]:
    """One handover for people and scripts: the signed documents summed up, times as ``*_ns``."""
    doc, ack = document(row), acks(row)
    out_ans = (ack.get("checkout") or {}).get("answer") or {}
    in_ans = (ack.get("checkin") or {}).get("answer") or {}
    return {"assignment": row.id, "assignment_id": doc.get("assignment_id"), "device": row.device_id,
            "officer_id": row.officer_id, "officer_name": doc.get("officer_name"), "unit": row.officer_unit,
            "checked_out_ns": row.checked_out_ns, "checked_out_by": row.checked_out_by,
            "checked_in_ns": row.checked_in_ns, "checked_in_by": row.checked_in_by, "state": state(row),
            "station": doc.get("station"), "counter": doc.get("counter"),
            "device_record": out_ans.get("record_seq") if out_ans.get("accepted") else None,
            "device_release_record": in_ans.get("record_seq") if in_ans.get("accepted") else None,
            "device_refused": out_ans.get("refused") or in_ans.get("refused")}


def ledger_row(row: dict[str, Any]) -> dict[str, Any]:
    """A raw ``assignments`` row (column -> value, as ``station ledger`` reads it) summed up:
    the signed documents and answers (JSON with the dock certificate) become a few fields."""
    obj = m.Assignment(**row)
    return summary(obj)
