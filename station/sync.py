"""``station sync``: push this station's verified evidence and audit journal to the agency store.

The outbox is the catalogue itself: what is committed locally (device mirrors verified at
docking, audit lines) and not yet in ``agency_objects`` is what is owed to the store. So a
docking never waits for the store — while the store or the network is down the station
keeps ingesting — and the next sync catches up, in order (per device, journal order; audit
lines by sequence), with nothing lost (nothing leaves the outbox before the store has it)
and nothing twice (an object is written once; a repeated push of the same bytes is a no-op,
of other bytes is refused and raises an ``integrity-alert``).

Each sync, in this order:

0. dockings spooled while the shared catalogue was unreachable are replayed into it, in order
   (station.dock.spool); with the catalogue still away the run ends there (exit 7);
1. every attested file of each device mirror not yet pushed, with COMPLIANCE retention until
   its recording's retention end and a legal hold while the recording is held (S6) or linked
   to an open case (its end is then unknown); then the device journal as of that docking
   (``devices/<id>/journal/<head seq>.jsonl``), without which nothing verifies;
2. the audit journal lines not yet pushed, in chunks (``stations/<name>/audit/<first>-<last>.log``);
3. reconcile: a recording whose retention end moved later (a label, a case closed) gets it
   extended in the store; holds placed or released follow as legal holds;
4. recordings purged here (S11) are deleted from the store — which refuses while its own
   clock says the retention is not over or a legal hold is on (counted as ``refused``;
   tried again next time).

A store that stops answering ends the run (exit 7) with what was done kept; run again.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recorder import records
from recorder.journal import JOURNAL_NAME, iter_records
from recorder.records import MalformedLine
from station.app import Station
from station.clock import NS_PER_DAY
from station.db import models as m
from station.dock import spool
from station.storage import EvidenceStore, IntegrityConflict, StoreRefused, StoreUnavailable, open_store

log = logging.getLogger(__name__)

STATION_ACTOR = "station"
AUDIT_CHUNK = 500                     # audit lines per object
AUDIT_RETENTION_DAYS = 3650           # the audit journal is kept ten years in the store
LOCK_NAME = "agency-sync.lock"


@dataclass
class SyncReport:
    store: str
    pushed: int = 0                   # objects written now
    already: int = 0                  # found in the store with the same bytes (a push repeated)
    bytes: int = 0
    audit_lines: int = 0
    extended: int = 0                 # retention ends moved later
    holds_changed: int = 0
    deleted: int = 0                  # purged recordings removed from the store
    refused: list[dict[str, Any]] = field(default_factory=list)     # deletes the store refused
    conflicts: list[dict[str, Any]] = field(default_factory=list)   # other bytes under the key
    unavailable: str | None = None
    spool: dict[str, Any] = field(default_factory=dict)   # dockings spooled while the catalogue was away

    @property
    def ok(self) -> bool:
        return self.unavailable is None and not self.conflicts

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "pushed": self.pushed, "already": self.already, "bytes": self.bytes,
                "audit_lines": self.audit_lines, "extended": self.extended, "holds_changed": self.holds_changed,
                "deleted": self.deleted, "refused": self.refused, "conflicts": self.conflicts,
                "unavailable": self.unavailable, "spool": self.spool, "ok": self.ok}


def file_key(device_id: str, path: str) -> str:
    return f"devices/{device_id}/mirror/{path}"


def journal_key(device_id: str, head_seq: int) -> str:
    return f"devices/{device_id}/journal/{head_seq:012d}.jsonl"


def audit_key(station: str, first: int, last: int) -> str:
    return f"stations/{station}/audit/{first:012d}-{last:012d}.log"


@contextlib.contextmanager
def _sync_lock(st: Station) -> Iterator[None]:
    """One sync of this store at a time (a timer and a clerk may start one together)."""
    st.store.mkdir(parents=True, exist_ok=True)
    fd = os.open(st.store / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---- what the catalogue says each recording needs ------------------------------------------------------
@dataclass(frozen=True)
class Keeping:
    until_ns: int          # the retention end to give the store
    hold: bool             # a legal hold: held (S6) or linked to an open case


def keeping(st: Station, s: Session, rec: m.Recording | None, pushed_until: int | None = None) -> Keeping:
    """Retention and legal hold for the objects of ``rec`` (None: a device journal or no recording).

    The end is the catalogue's (the recording's own end plus the rules), never the station's
    clock. While a case is open the end is unknown: the store gets the default period from the
    recording's end (or what it already has, if later) and a legal hold until the case closes.
    """
    default = st.cfg.retention.default_days * NS_PER_DAY
    if rec is None:
        return Keeping(max(pushed_until or 0, st.now_ns() + default), False)
    held = s.scalar(select(func.count()).select_from(m.Hold).where(m.Hold.recording == rec.id,
                                                                    m.Hold.released_ns.is_(None))) or 0
    base = rec.end_wall_ns or rec.start_wall_ns or rec.ingested_ns or 0
    if rec.retention_end_ns is None:
        return Keeping(max(pushed_until or 0, base + default), True)
    return Keeping(max(pushed_until or 0, rec.retention_end_ns), held > 0)


def _alert(st: Station, exc: IntegrityConflict, key: str, rec: int | None, report: SyncReport) -> None:
    report.conflicts.append({"key": key, "recording": rec, "detail": str(exc)})
    st.trail.event("integrity-alert", actor=STATION_ACTOR, subject=f"recording:{rec}" if rec else f"store:{key}",
                   where="agency-store", key=key, detail=str(exc))


def _remember(st: Station, obj: Any, *, kind: str, device_id: str | None, recording: int | None,
              state: str = "stored", last_seq: int | None = None) -> None:
    with st.db.session(write=True) as s:
        s.merge(m.AgencyObject(key=obj.key, station=st.name, kind=kind, device_id=device_id, recording=recording,
                               sha256=obj.sha256, size=obj.size, version=obj.version,
                               retain_until_ns=obj.retain_until_ns, legal_hold=obj.legal_hold, state=state,
                               last_seq=last_seq, pushed_ns=st.now_ns()))


def _known(st: Station) -> dict[str, m.AgencyObject]:
    with st.db.session() as s:
        return {o.key: o for o in s.scalars(select(m.AgencyObject))}


# ---- 1. device evidence ----------------------------------------------------------------------------------
def _device_ids(st: Station) -> list[str]:
    root = st.store / "devices"
    return sorted(p.name for p in root.iterdir() if (p / "mirror" / JOURNAL_NAME).is_file()) if root.is_dir() else []


def _push_device(st: Station, store: EvidenceStore, device_id: str, known: dict[str, m.AgencyObject],
                 report: SyncReport) -> None:
    mirror = st.store / "devices" / device_id / "mirror"
    with st.db.session() as s:
        segs = {g.journal_seq: g.recording for g in s.scalars(
            select(m.Segment).join(m.Recording, m.Recording.id == m.Segment.recording)
            .where(m.Recording.device_id == device_id))}
        recs = {r.id: r for r in s.scalars(select(m.Recording).where(m.Recording.device_id == device_id))}
        plan: list[tuple[str, Path, dict[str, Any], int | None, Keeping]] = []
        head_seq = -1
        try:
            for rec in iter_records(mirror / JOURNAL_NAME):
                head_seq = rec.seq
                for f in records.attested_files(rec):
                    key = file_key(device_id, f["path"])
                    rid = segs.get(rec.seq)
                    row = recs.get(rid) if rid is not None else None
                    if key in known or (row is not None and row.status == "purged"):
                        continue
                    path = mirror / f["path"]
                    if path.is_file():
                        plan.append((key, path, f, rid, keeping(st, s, row)))
        except (MalformedLine, OSError) as exc:   # the mirror was verified at docking: this is damage
            raise StoreRefused(f"device {device_id}: the mirror journal cannot be read ({exc})") from exc
        dev_keep = keeping(st, s, None)
        if recs:
            ends = [keeping(st, s, r) for r in recs.values() if r.status != "purged"]
            if ends:
                dev_keep = Keeping(max(k.until_ns for k in ends), any(k.hold for k in ends))
    for key, path, f, rid, keep in plan:
        try:
            obj, wrote = store.put_file(key, path, f["sha256"], keep.until_ns, keep.hold)
        except IntegrityConflict as exc:
            _alert(st, exc, key, rid, report)
            _remember(st, _Placeholder(key, f["sha256"], f["size"]), kind="file", device_id=device_id,
                      recording=rid, state="conflict")
            continue
        _remember(st, obj, kind="file", device_id=device_id, recording=rid)
        report.pushed += wrote
        report.already += not wrote
        report.bytes += obj.size if wrote else 0
    if head_seq >= 0:
        key = journal_key(device_id, head_seq)
        if key not in known:
            data = (mirror / JOURNAL_NAME).read_bytes()
            try:
                obj, wrote = _put_bytes(store, key, data, dev_keep)
            except IntegrityConflict as exc:    # another journal with the same head: alerted, kept apart
                _alert(st, exc, key, None, report)
                _remember(st, _Placeholder(key, hashlib.sha256(data).hexdigest(), len(data)), kind="journal",
                          device_id=device_id, recording=None, state="conflict", last_seq=head_seq)
                return
            _remember(st, obj, kind="journal", device_id=device_id, recording=None, last_seq=head_seq)
            report.pushed += wrote
            report.bytes += len(data) if wrote else 0


@dataclass(frozen=True)
class _Placeholder:
    key: str
    sha256: str
    size: int
    version: str = ""
    retain_until_ns: int | None = None
    legal_hold: bool = False


def _put_bytes(store: EvidenceStore, key: str, data: bytes, keep: Keeping) -> tuple[Any, bool]:
    with tempfile.NamedTemporaryFile(prefix="agency-") as tmp:
        tmp.write(data)
        tmp.flush()
        return store.put_file(key, Path(tmp.name), hashlib.sha256(data).hexdigest(), keep.until_ns, keep.hold)


# ---- 2. the audit journal ------------------------------------------------------------------------------
def _push_audit(st: Station, store: EvidenceStore, report: SyncReport) -> None:
    with st.db.session() as s:
        done = s.scalar(select(func.max(m.AgencyObject.last_seq)).where(
            m.AgencyObject.station == st.name, m.AgencyObject.kind == "audit"))
    done = -1 if done is None else done
    keep = Keeping(st.now_ns() + AUDIT_RETENTION_DAYS * NS_PER_DAY, False)
    while True:
        with st.db.session() as s:
            rows = s.execute(select(m.AuditEntry.seq, m.AuditEntry.line).where(
                m.AuditEntry.station == st.name, m.AuditEntry.seq > done).order_by(m.AuditEntry.seq)
                .limit(AUDIT_CHUNK)).all()
        if not rows:
            return
        first, last = rows[0][0], rows[-1][0]
        data = "".join(line if line.endswith("\n") else line + "\n" for _, line in rows).encode("ascii")
        key = audit_key(st.name, first, last)
        try:
            obj, wrote = _put_bytes(store, key, data, keep)
        except IntegrityConflict as exc:
            _alert(st, exc, key, None, report)
            return
        _remember(st, obj, kind="audit", device_id=None, recording=None, last_seq=last)
        report.audit_lines += len(rows)
        report.pushed += wrote
        done = last


# ---- 3. and 4. retention, holds, purges ------------------------------------------------------------------
def _reconcile(st: Station, store: EvidenceStore, report: SyncReport) -> None:
    with st.db.session() as s:
        rows = s.execute(select(m.AgencyObject, m.Recording)
                         .join(m.Recording, m.Recording.id == m.AgencyObject.recording)
                         .where(m.AgencyObject.state == "stored", m.AgencyObject.kind == "file")
                         .order_by(m.AgencyObject.recording, m.AgencyObject.key)).all()
        todo: list[tuple[str, int | None, bool, Keeping | None, int]] = []
        for obj, rec in rows:
            if rec.status == "purged":
                todo.append((obj.key, obj.retain_until_ns, obj.legal_hold, None, rec.id))
            else:
                todo.append((obj.key, obj.retain_until_ns, obj.legal_hold, keeping(st, s, rec, obj.retain_until_ns),
                             rec.id))
    for key, until, hold, keep, rid in todo:
        if keep is None:
            try:
                store.delete(key)
            except StoreRefused as exc:
                report.refused.append({"key": key, "recording": rid, "detail": str(exc)})
                continue
            with st.db.session(write=True) as s:
                row = s.get(m.AgencyObject, key)
                if row is not None:
                    row.state, row.deleted_ns = "deleted", st.now_ns()
            report.deleted += 1
            continue
        changed = False
        if until is None or keep.until_ns > until:
            stored = store.extend_retention(key, keep.until_ns)
            until, changed = stored.retain_until_ns, True
            report.extended += 1
        if keep.hold != hold:
            store.set_legal_hold(key, keep.hold)
            hold, changed = keep.hold, True
            report.holds_changed += 1
        if changed:
            with st.db.session(write=True) as s:
                row = s.get(m.AgencyObject, key)
                if row is not None:
                    row.retain_until_ns, row.legal_hold = until, hold


def replay_spool(st: Station) -> tuple[dict[str, Any], str | None]:
    """Step 0: dockings spooled while the catalogue was unreachable go into it first, in order
    (station.dock.spool). Returns the replay's figures and why the catalogue is unavailable."""
    from station.dock.offline import unreachable
    try:
        return spool.replay(st).to_dict(), None
    except Exception as exc:
        if not unreachable(exc, st.db):
            raise
        log.warning("the catalogue cannot be reached: the spool waits (%s)", exc)
        return {"waiting": len(spool.waiting(st.store))}, f"the catalogue cannot be reached: {exc}"


def sync(st: Station, store: EvidenceStore | None = None) -> SyncReport:
    """One sync run (see the module docstring). Raises nothing for a store that is down:
    ``report.unavailable`` says why and the next run continues where this one stopped."""
    store = store or open_store(st.cfg)
    report = SyncReport(store.describe())
    report.spool, report.unavailable = replay_spool(st)
    if report.unavailable is not None:
        return report
    with _sync_lock(st):
        try:
            store.check()
            st.trail.catch_up()
            known = _known(st)
            for device_id in _device_ids(st):
                _push_device(st, store, device_id, known, report)
            _reconcile(st, store, report)
            evidence_changed = (report.pushed or report.extended or report.holds_changed or report.deleted
                                or report.refused)
            if evidence_changed:
                st.trail.event("agency-sync", actor=STATION_ACTOR, subject=f"store:{store.kind}",
                               pushed=report.pushed, already=report.already, bytes=report.bytes,
                               extended=report.extended, holds_changed=report.holds_changed,
                               deleted=report.deleted, refused=len(report.refused))
            _push_audit(st, store, report)
        except StoreUnavailable as exc:
            report.unavailable = str(exc)
            log.warning("agency store unavailable: %s (the next sync catches up)", exc)
    return report


# ---- reading back ------------------------------------------------------------------------------------------
def verify_from_store(st: Station, store: EvidenceStore, recording: int, workdir: Path) -> Any:
    """Fetch one recording's files and its device journal from the store into ``workdir`` and verify
    them with ``recorder.verify`` against the device key in the catalogue. Returns the result."""
    from recorder.verify import verify_directory
    with st.db.session() as s:
        rec = s.get(m.Recording, recording)
        if rec is None:
            raise StoreRefused(f"no recording {recording}")
        dev = s.get(m.Device, rec.device_id)
        assert dev is not None
        journals = sorted(s.scalars(select(m.AgencyObject.key).where(m.AgencyObject.kind == "journal",
                                                                      m.AgencyObject.state == "stored",
                                                                      m.AgencyObject.device_id == rec.device_id)))
        files = list(s.scalars(select(m.AgencyObject.key).where(m.AgencyObject.recording == recording,
                                                                 m.AgencyObject.state == "stored")))
        pem = dev.pubkey_pem.encode("ascii")
    if not journals:
        raise StoreRefused(f"the store has no journal of device {rec.device_id}")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / JOURNAL_NAME).write_bytes(store.read(journals[-1]))
    prefix = f"devices/{rec.device_id}/mirror/"
    selection = []
    for key in files:
        rel = key[len(prefix):]
        dest = workdir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(store.read(key))
        selection.append(rel)
    return verify_directory(workdir, pem, selection=selection)


def after_docking(st: Station) -> SyncReport | None:
    """The sync a docking triggers once its receipt is out (``station dock``): only with an agency
    store configured; never raises — whatever it could not push waits for the next sync (the
    timer), and a failure is logged, not the docking's."""
    if st.cfg.agency.kind != "s3":
        return None
    try:
        report = sync(st)
    except Exception as exc:
        log.error("the sync after the docking failed (%s: %s); the timer's sync catches up",
                  type(exc).__name__, exc)
        return None
    if not report.ok:
        log.error("the sync after the docking did not finish (%s); the timer's sync catches up",
                  report.unavailable or f"{len(report.conflicts)} integrity conflict(s)")
    return report
