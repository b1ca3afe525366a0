"""The spool: dockings done while the shared catalogue was unreachable, and their replay into it.

``<store>/spool/journal.log`` is a journal in the device journal's format (recorder.journal:
each record signed with the station key, hash-chained, fsynced before ``append`` returns),
so what happened offline is as tamper-evident as the audit journal and in the order it
happened. A docking spools (station.dock.offline.Book):

* ``spool-ingest`` — once its files are verified and the mirror swapped, *before* any
  receipt: device, verified head (seq, hash), the counts, the quarantined files, officer and
  check-in time. With the mirror (which holds the verified journal up to that head) it is
  everything the ``ingest`` transaction would have written;
* ``spool-receipt`` — each receipt sent (counter, nonce, head, answer), after sending;
* ``spool-end`` — the check-out (status, detail, counts); also for a docking that stored
  nothing (quarantined, interrupted), so the usage ledger (S9) misses none.

Why a journal of its own and not lines in the audit journal: the audit journal's rule is
"catalogue first, then the file" (station.audit.trail); lines written while the catalogue
is away would put the file ahead of ``audit_entries``, and another process of the station
committing meanwhile would fork the chain. The replay writes the regular audited actions,
each naming the spool record it replays (``spooled``, ``spool_hash``): the two chains link.

``replay`` (``station sync``, every docking before it checks in) takes the records in
order: one ``ingest`` action per spooled docking (its ledger row, keyed by ``spool_ref``
= station:seq:hash, unique in the catalogue; recordings, segments, interruptions,
quarantined files and its receipts, all in that one transaction), or a ``docking-end`` for
one that stored nothing. A replay killed anywhere leaves each docking either wholly in
the catalogue or not at all; ``<store>/spool-replayed`` (the last record done) only saves
re-reading, the ``spool_ref`` decides, so a rerun writes nothing twice. A docking still
running (its device's dock lock held, no ``spool-end`` yet) stops the replay there: later
records wait, order is kept.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import select

from common.crashpoints import crashpoint
from recorder import records
from recorder.journal import JOURNAL_NAME, Journal, iter_records
from recorder.records import MalformedLine
from recorder.verify import verify_directory
from station.app import Station
from station.clock import AuditWallClock
from station.db import models as m
from station.dock.catalogue import ingest_rows
from station.errors import Conflict

log = logging.getLogger(__name__)

SPOOL_DIR = "spool"
LOCK = "spool.lock"                  # appends (one docking process at a time)
REPLAY_LOCK = "spool-replay.lock"    # one replay at a time
MARK = "spool-replayed"              # the last record the replay is done with
INGEST, RECEIPT, END = "spool-ingest", "spool-receipt", "spool-end"
RECEIPT_FIELDS = ("counter", "nonce", "head_seq", "head_hash", "files", "bytes", "sent_ns", "response")
END_FIELDS = ("bytes_new", "bytes_resumed", "files_new", "purged", "records")
STATION_ACTOR = "station"


class SpoolBroken(Conflict):
    """A spool record cannot be replayed as it stands (its mirror no longer holds its head): the
    replay stops there, nothing after it is replayed; an administrator must look."""


@contextlib.contextmanager
def _flock(path: Path, *, block: bool = True) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def append(st: Station, type: str, payload: dict[str, Any]) -> records.Record:
    """Sign and durably append one spool record (fsynced when this returns)."""
    with _flock(st.store / LOCK):
        journal = Journal.open(st.store / SPOOL_DIR, st.signer, AuditWallClock(st.clock))
        try:
            return journal.append(type, payload)
        finally:
            journal.close()


def read(store: Path) -> list[records.Record]:
    path = store / SPOOL_DIR / JOURNAL_NAME
    if not path.is_file():
        return []
    try:
        with _flock(store / LOCK):         # never half a line being appended
            return list(iter_records(path))
    except MalformedLine as exc:
        raise SpoolBroken(f"the spool {path} cannot be read: {exc}") from None


def replayed(store: Path) -> int:
    try:
        return int((store / MARK).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return -1


def _mark(store: Path, seq: int) -> None:
    tmp = store / (MARK + ".tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{seq}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, store / MARK)


def waiting(store: Path) -> list[dict[str, Any]]:
    """The spooled dockings not yet in the catalogue (readable without it: for a clerk's status)."""
    done = replayed(store)
    recs = read(store)
    ingested = {r.payload.get("ingest_seq") for r in recs if r.type == END}
    out = []
    for r in recs:
        if r.seq <= done:
            continue
        p = r.payload
        if r.type == INGEST or (r.type == END and p.get("ingest_seq") is None) or \
                (r.type == RECEIPT and p.get("ingest_seq") is None):
            out.append({"spool_seq": r.seq, "kind": r.type.removeprefix("spool-"), "device": p.get("device"),
                        "at_ns": r.message["wall_ns"], "head_seq": p.get("head_seq"),
                        "status": p.get("status"), "ended": r.type != INGEST or r.seq in ingested})
    return out


@dataclass
class ReplayReport:
    replayed: int = 0                 # dockings written into the catalogue now
    already: int = 0                  # found there already (a replay that died after its commit)
    waiting: int = 0                  # spooled dockings still not in the catalogue
    blocked: str | None = None        # why the replay stopped early

    def to_dict(self) -> dict[str, Any]:
        return {"replayed": self.replayed, "already": self.already, "waiting": self.waiting,
                "blocked": self.blocked}


def _device_idle(st: Station, device_id: str, held_device: str | None) -> bool:
    if device_id == held_device:
        return True
    with _flock(st.store / "devices" / device_id / "dock.lock", block=False) as free:
        return free


def replay(st: Station, held_device: str | None = None) -> ReplayReport:
    """Replay every spool record after the mark, in order (module docstring). ``held_device``: the
    caller is docking that device (holds its lock; its earlier dockings are over)."""
    report = ReplayReport()
    if not (st.store / SPOOL_DIR / JOURNAL_NAME).is_file():
        return report
    with _flock(st.store / REPLAY_LOCK):
        recs = _read_verified(st)
        done = replayed(st.store)
        receipts: dict[int, list[records.Record]] = {}
        ends: dict[int, records.Record] = {}
        for r in recs:
            at = r.payload.get("ingest_seq")
            if r.type == RECEIPT and at is not None:
                receipts.setdefault(at, []).append(r)
            elif r.type == END and at is not None:
                ends[at] = r
        todo = [r for r in recs if r.seq > done]
        for r in todo:
            p = r.payload
            if r.type == INGEST:
                if r.seq not in ends and not _device_idle(st, p["device"], held_device):
                    report.blocked = f"device {p['device']} is docking right now (spool record {r.seq})"
                    break
                wrote = _replay_docking(st, r, receipts.get(r.seq, []), ends.get(r.seq))
            elif r.type == END and p.get("ingest_seq") is None:
                wrote = (_replay_check_out(st, r) if p.get("docking_id") is not None
                         else _replay_docking(st, None, [], r))
            elif r.type == RECEIPT and p.get("ingest_seq") is None:
                wrote = _replay_receipt(st, r)
            else:
                wrote = None            # a receipt or the end of a docking replayed with its ingest
            if wrote is not None:
                report.replayed += wrote
                report.already += not wrote
            crashpoint("spool-replayed")       # committed, not marked: the rerun finds it by spool_ref
            _mark(st.store, r.seq)
        report.waiting = len(waiting(st.store))
    if report.replayed:
        log.info("replayed %d spooled docking(s) into the catalogue", report.replayed)
    return report


def _read_verified(st: Station) -> list[records.Record]:
    """The spool's records, once its signatures and chain verify against the station key: the
    spool is the only record of what happened offline, nothing unverified is replayed."""
    with _flock(st.store / LOCK):
        result = verify_directory(st.store / SPOOL_DIR, st.signer.public_key_pem())
        if result.failure is not None:
            raise SpoolBroken(f"the spool {st.store / SPOOL_DIR / JOURNAL_NAME} does not verify ({result.failure}): "
                              "nothing replayed; an administrator must look")
        return list(iter_records(st.store / SPOOL_DIR / JOURNAL_NAME))


def spool_ref(st: Station, r: records.Record) -> str:
    return f"{st.name}:{r.seq}:{r.hash[:16]}"


def _exists(st: Station, ref: str) -> bool:
    with st.db.session() as s:
        return s.scalar(select(m.Docking.id).where(m.Docking.spool_ref == ref)) is not None


def _mirror_records(st: Station, device_id: str, head_seq: int, head_hash: str) -> list[records.Record]:
    """The verified journal up to the spooled head, from the mirror (which only grows past it)."""
    path = st.store / "devices" / device_id / "mirror" / JOURNAL_NAME
    out: list[records.Record] = []
    try:
        for rec in iter_records(path):
            if rec.seq > head_seq:
                break
            out.append(rec)
    except (OSError, MalformedLine) as exc:
        raise SpoolBroken(f"device {device_id}: the mirror journal cannot be read ({exc})") from None
    if not out or out[-1].seq != head_seq or out[-1].hash != head_hash:
        raise SpoolBroken(f"device {device_id}: the mirror no longer holds the spooled head #{head_seq} "
                          f"{head_hash[:16]}…: not replayed")
    return out


def _replay_docking(st: Station, ingest: records.Record | None, rcpts: list[records.Record],
                    end: records.Record | None) -> bool:
    """One spooled docking as one audited action; False if the catalogue has it already."""
    first = ingest or end
    assert first is not None
    ref = spool_ref(st, first)
    if _exists(st, ref):
        return False
    p = ingest.payload if ingest is not None else {}
    e = end.payload if end is not None else {}
    device = first.payload["device"]
    mirror = st.store / "devices" / device / "mirror"
    recs = _mirror_records(st, device, p["head_seq"], p["head_hash"]) if ingest is not None else []
    damaged = list(p.get("damaged") or [])
    status = e.get("status") or ("partial" if damaged else "ok")
    detail = e.get("detail") or ("" if end is not None else "the docking process ended before its check-out")
    counts = {k: e.get(k, p.get(k)) for k in END_FIELDS}
    at_ns = first.message["wall_ns"]
    details: dict[str, Any] = {"device": device, "spooled": first.seq, "spool_hash": first.hash,
                               "offline_at_ns": at_ns}
    if ingest is not None:
        details.update(head_seq=p["head_seq"], head_hash=p["head_hash"], files_new=p.get("files_new"),
                       bytes_new=p.get("bytes_new"))
    with st.trail.action("ingest" if ingest is not None else "docking-end", actor=STATION_ACTOR,
                         subject=f"device:{device}", **details) as ch:
        s = ch.session
        for old in s.scalars(select(m.Docking).where(m.Docking.device_id == device, m.Docking.station == st.name,
                                                     m.Docking.status == "in-progress")):
            # the device's lock is free (or ours): whatever is still in progress died
            old.status, old.checked_out_ns = "interrupted", at_ns
            old.detail = "closed by the replay of a spooled docking: its process ended without closing it"
            ch.touch(old)
        row = m.Docking(station=st.name, device_id=device, officer_id=p.get("officer", e.get("officer")),
                        checked_in_ns=p.get("checked_in_ns", e.get("checked_in_ns", at_ns)),
                        checked_out_ns=e.get("checked_out_ns", at_ns), status=status, detail=detail,
                        head_seq=p.get("head_seq"), head_hash=p.get("head_hash"), spool_ref=ref, **counts)
        ch.add(row)
        s.flush()
        ch.subject = f"docking:{row.id}"
        if ingest is not None:
            qdir = p.get("quarantine_dir")
            stored = {f["path"] for rec in recs for f in records.attested_files(rec)
                      if (mirror / f["path"]).is_file()}
            names = ingest_rows(ch, st.cfg, device_id=device, docking=row, mirror=mirror, recs=recs,
                                damaged=damaged, stored=stored, quarantine_dir=Path(qdir) if qdir else None,
                                now_ns=at_ns)
            ch.details["recordings"] = len(names)
        for rc in rcpts:
            q = rc.payload
            if s.scalar(select(m.Receipt.id).where(m.Receipt.device_id == device,
                                                   m.Receipt.counter == q["counter"])) is None:
                ch.add(m.Receipt(device_id=device, docking_id=row.id, **{k: q[k] for k in RECEIPT_FIELDS}))
            else:    # the same device given the same counter elsewhere meanwhile: kept in the spool only
                log.error("device %s: receipt counter %d of spool record %d is already in the catalogue; "
                          "the spool keeps this receipt", device, q["counter"], rc.seq)
                ch.details.setdefault("receipt_counter_taken", []).append(rc.seq)
        ch.details["receipts"] = len(rcpts)
    return True


def _replay_receipt(st: Station, r: records.Record) -> bool:
    """A receipt of a docking that reached the catalogue but lost it before recording the receipt."""
    q = r.payload
    with st.db.session() as s:
        if s.scalar(select(m.Receipt.id).where(m.Receipt.device_id == q["device"],
                                               m.Receipt.counter == q["counter"])) is not None:
            return False
    with st.trail.action("receipt", actor=STATION_ACTOR, subject=f"docking:{q['docking_id']}",
                         counter=q["counter"], files=q["files"], spooled=r.seq, spool_hash=r.hash) as ch:
        ch.add(m.Receipt(device_id=q["device"], docking_id=q["docking_id"], **{k: q[k] for k in RECEIPT_FIELDS}))
    return True


def _replay_check_out(st: Station, r: records.Record) -> bool:
    """The check-out of a docking that reached the catalogue at check-in but not at its end."""
    q = r.payload
    try:
        with st.trail.action("docking-end", actor=STATION_ACTOR, subject=f"docking:{q['docking_id']}",
                             status=q["status"], spooled=r.seq, spool_hash=r.hash) as ch:
            row = ch.session.get(m.Docking, q["docking_id"])
            if row is None or row.status != "in-progress":
                raise _Done()           # abandons the action: nothing written
            for k in END_FIELDS:
                setattr(row, k, q.get(k))
            row.status, row.detail, row.checked_out_ns = q["status"], q["detail"], q["checked_out_ns"]
            ch.touch(row)
    except _Done:
        return False
    return True


class _Done(Exception):
    """Already closed: nothing to replay."""
