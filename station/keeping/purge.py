"""Expiry (S11): recordings past retention and not held are purged, on an administrator's confirmation.

What a purge of one recording deletes: its attested files in the device mirror
(``<store>/devices/<device>/mirror/<path>``: every segment and any attachment its segment
records attest) and its human-readable view (``<store>/recordings/<name>/``). What it keeps:
the catalogue row (``status`` purged, ``purged_ns``; its segments ``present`` False) and a
``purges`` tombstone with what, why, who, who confirmed, when, the retention end it was
purged under, and the path, SHA-256 and size of every file (as the device journal attests
them) — all written by ONE audited action (``purge``) whose record lists the same hashes.

Order, and what a ``kill -9`` leaves (crash points ``purge-*``, common/crashpoints.py):

1. the action checks the state again in its transaction (stored, retention passed by the
   stored end AND a fresh computation, no active hold), writes the tombstone and the row
   changes, signs the record and commits (``purge-before-commit`` just before: nothing
   happened);
2. then the files are removed (``purge-after-commit``, ``purge-mid-delete``): a crash here
   leaves a committed purge with files still on disk. They are no longer evidence (the
   catalogue says purged; ``station verify --files`` skips purged segments); ``station
   purge list`` shows them as unfinished and the next ``station purge run --confirm``
   removes them (an audited ``purge-finished`` event). A docking of the same device in
   between never brings them back: the station's tombstones are passed to the ingest
   (``PurgedFiles``), which neither fetches nor keeps a purged file.

A held recording, one still in retention (or linked to an open case), or one already
purged is refused with Conflict (exit 6), even when named explicitly.

Each recording is purged holding its device's lock (``station.device_lock``, the one a docking
holds throughout), so a docking of that device never builds its new mirror meanwhile. A device
docking right now stops the run there with Unavailable (exit 7; what was purged before stays
purged): run it again when the docking has finished.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.crashpoints import crashpoint
from recorder import records
from recorder.journal import JOURNAL_NAME, fsync_dir, iter_records
from recorder.records import MalformedLine
from recorder.verify import SegmentMissing, VerificationFailure
from station.access.accounts import require_role
from station.app import Station
from station.db import models as m
from station.device_lock import DeviceLocked, device_lock
from station.errors import Conflict, InvalidInput, NotFound, Unavailable
from station.keeping.retention import active_holds_many, explain_many

log = logging.getLogger(__name__)

PURGE_ROLES = ("admin",)
MAX_REASON = 2000


# ---- what a purge deletes ------------------------------------------------------------------
@dataclass(frozen=True)
class PurgeFile:
    """One file of a recording: ``path`` relative to the store; ``role`` segment, attachment or view."""

    path: str
    sha256: str | None
    size: int
    role: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "role": self.role}


@dataclass
class Candidate:
    recording: int
    name: str
    device_id: str
    recording_id: str
    retention_end_ns: int | None
    files: list[PurgeFile] = field(default_factory=list)
    refused: str | None = None      # why it may not be purged (None: it may)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files if f.role != "view")

    def to_dict(self) -> dict[str, Any]:
        return {"recording": self.recording, "name": self.name, "device": self.device_id,
                "recording_id": self.recording_id, "retention_end_ns": self.retention_end_ns,
                "bytes": self.bytes, "files": [f.to_dict() for f in self.files], "refused": self.refused}


def _mirror(st: Station, device_id: str) -> Path:
    return st.store / "devices" / device_id / "mirror"


def _inside(root: Path, rel: str) -> Path:
    p = root / rel
    if not records.safe_relpath(rel) or not p.resolve().is_relative_to(root.resolve()):
        raise InvalidInput(f"unsafe path {rel!r} in the catalogue")
    return p


def _attested_by_seq(st: Station, device_id: str, seqs: set[int]) -> dict[int, list[dict[str, Any]]]:
    """The files (segment + attachments) the device records ``seqs`` attest, from the mirror journal."""
    out: dict[int, list[dict[str, Any]]] = {}
    path = _mirror(st, device_id) / JOURNAL_NAME
    if not seqs or not path.is_file():
        return out
    try:
        for rec in iter_records(path):
            if rec.seq in seqs:
                out[rec.seq] = records.attested_files(rec)
    except (MalformedLine, OSError) as exc:
        log.warning("mirror journal %s unreadable (%s): purging the catalogued segments only", path, exc)
    return out


def recording_files(st: Station, s: Session, rec: m.Recording) -> list[PurgeFile]:
    """Every file of ``rec``: its attested files (segment rows, plus the attachments their journal
    records attest) in the mirror, as attested, and what is in its named view."""
    segs = s.scalars(select(m.Segment).where(m.Segment.recording == rec.id).order_by(m.Segment.index)).all()
    attested = _attested_by_seq(st, rec.device_id, {g.journal_seq for g in segs})
    mirror_rel = Path("devices") / rec.device_id / "mirror"
    files: list[PurgeFile] = []
    seen: set[str] = set()
    for g in segs:
        entries = attested.get(g.journal_seq) or [{"path": g.path, "sha256": g.sha256, "size": g.size,
                                                   "role": "segment"}]
        for f in entries:
            if f["path"] in seen:
                continue
            seen.add(f["path"])
            role = "segment" if f["path"] == g.path else "attachment"
            files.append(PurgeFile((mirror_rel / f["path"]).as_posix(), f["sha256"], int(f["size"]), role))
    by_inode: dict[tuple[int, int], str | None] = {}
    for pf in files:
        try:
            sst = (st.store / pf.path).stat()
            by_inode[(sst.st_dev, sst.st_ino)] = pf.sha256
        except OSError:
            pass
    view = st.store / "recordings" / rec.name
    if view.is_dir():
        for p in sorted(view.rglob("*")):
            if not p.is_file() or p.is_symlink():
                continue
            vst = p.stat()
            digest = by_inode.get((vst.st_dev, vst.st_ino)) or _sha256(p)
            files.append(PurgeFile(p.relative_to(st.store).as_posix(), digest, vst.st_size, "view"))
    return files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ---- may it be purged? --------------------------------------------------------------------------
def refusal(st: Station, s: Session, rec: m.Recording, now_ns: int) -> str | None:
    """Why ``rec`` may not be purged now (Chinese and English for the clerk), or None."""
    return refusals(st, s, [rec], now_ns)[rec.id]


def refusals(st: Station, s: Session, recs: list[m.Recording], now_ns: int,
             holds: dict[int, list[m.Hold]] | None = None) -> dict[int, str | None]:
    """``refusal`` of many recordings, by id, with their holds (``holds``: already read by the
    caller, ``retention.active_holds_many``) and fresh retention ends read in a few queries for
    all of them (``retention.explain_many``)."""
    if holds is None:
        holds = active_holds_many(s, [r.id for r in recs])
    fresh = explain_many(st.cfg, s, recs)
    return {rec.id: _refusal(rec, holds[rec.id], fresh[rec.id].end_ns, now_ns) for rec in recs}


def _refusal(rec: m.Recording, holds: list[m.Hold], fresh: int | None, now_ns: int) -> str | None:
    if rec.status == "purged":
        return f"已销毁 already purged at {rec.purged_ns}"
    if holds:
        return "长期保存（封存）中 held: " + ", ".join(f"hold {h.id} ({h.kind})" for h in holds)
    ends = [rec.retention_end_ns, fresh]
    if any(e is None for e in ends):
        return "保存期限未确定（关联案件未结案）retention open: a linked case is not closed"
    end = max(e for e in ends if e is not None)
    if end > now_ns:
        return f"保存期限未届满 still in retention until {end}"
    return None


def candidates(st: Station, *, include_files: bool = True) -> list[Candidate]:
    """Recordings past retention, not held, not purged: what ``purge run --confirm`` would purge."""
    now = st.now_ns()
    out = []
    with st.db.session() as s:
        q = select(m.Recording).where(m.Recording.status == "stored", m.Recording.retention_end_ns.is_not(None),
                                      m.Recording.retention_end_ns <= now).order_by(m.Recording.id)
        recs = list(s.scalars(q))
        refused = refusals(st, s, recs, now)
        for rec in recs:
            if refused[rec.id] is not None:
                continue
            c = Candidate(rec.id, rec.name, rec.device_id, rec.recording_id, rec.retention_end_ns)
            if include_files:
                c.files = recording_files(st, s, rec)
            out.append(c)
    return out


def examine(st: Station, refs: list[str]) -> list[Candidate]:
    """The named recordings with their files and, for each, why it would be refused (or None)."""
    from station.recordings import find_recording
    now = st.now_ns()
    out = []
    with st.db.session() as s:
        for ref in refs:
            rec = find_recording(s, ref)
            c = Candidate(rec.id, rec.name, rec.device_id, rec.recording_id, rec.retention_end_ns,
                          refused=refusal(st, s, rec, now))
            if rec.status != "purged":
                c.files = recording_files(st, s, rec)
            out.append(c)
    return out


# ---- purging -------------------------------------------------------------------------------------
@dataclass
class PurgeOutcome:
    recording: int
    name: str
    purge_id: int
    files: list[PurgeFile]
    removed: int = 0
    audit_seq: int | None = None

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files if f.role != "view")

    def to_dict(self) -> dict[str, Any]:
        return {"recording": self.recording, "name": self.name, "purge": self.purge_id, "bytes": self.bytes,
                "files_removed": self.removed, "audit_seq": self.audit_seq,
                "files": [f.to_dict() for f in self.files]}


def _check_reason(reason: str | None) -> str:
    why = (reason or "").strip()
    if not why:
        raise InvalidInput("a purge needs a reason (--reason)")
    if len(why) > MAX_REASON:
        raise InvalidInput(f"the reason is longer than {MAX_REASON} characters")
    return why


def purge(st: Station, user: m.User, refs: list[str] | None, *, reason: str) -> list[PurgeOutcome]:
    """Purge the named recordings (all current candidates when ``refs`` is None), confirmed by
    ``user`` (an administrator). Each is one audited ``purge`` action, then its files go.

    Named recordings are checked first, together: if one is refused (purged, held, in retention)
    the refusal is audited, Conflict is raised and nothing is purged. Unfinished purges of an
    earlier, interrupted run are finished first.
    """
    require_role(st, user, *PURGE_ROLES, what="purge recordings (S11)")
    why = _check_reason(reason)
    finish_unfinished(st, user)
    if refs is None:
        targets = [c.recording for c in candidates(st, include_files=False)]
    else:
        if not refs:
            raise InvalidInput("name at least one recording, or none for every candidate")
        examined = examine(st, refs)
        refused = [c for c in examined if c.refused]
        if refused:
            text = "; ".join(f"recording {c.recording} ({c.name}): {c.refused}" for c in refused)
            st.trail.event("purge-refused", actor=user.username,
                           subject=",".join(f"recording:{c.recording}" for c in refused), reason=why,
                           refused=[{"recording": c.recording, "why": c.refused} for c in refused])
            raise Conflict(f"not purged (nothing was): {text}")
        targets = list(dict.fromkeys(c.recording for c in examined))
    return [_purge_one(st, user, rid, why) for rid in targets]


def _purge_one(st: Station, user: m.User, rec_id: int, why: str) -> PurgeOutcome:
    """One recording, under its device's lock (``station.device_lock``): a docking of the same
    device never runs meanwhile, so it cannot swap a purged file back into the mirror."""
    with st.db.session() as s:
        device = s.scalars(select(m.Recording.device_id).where(m.Recording.id == rec_id)).first()
    if device is None:
        raise NotFound(f"no recording {rec_id}")
    try:
        with device_lock(st.store / "devices" / device):
            return _purge_locked(st, user, rec_id, why)
    except DeviceLocked:
        raise Unavailable(f"recording {rec_id} not purged: its device {device} is docking at this station "
                          "right now; run the purge again when the docking has finished") from None


def _purge_locked(st: Station, user: m.User, rec_id: int, why: str) -> PurgeOutcome:
    now = st.now_ns()
    with st.trail.action("purge", actor=user.username, subject=f"recording:{rec_id}", reason=why) as ch:
        s = ch.session
        rec = s.get(m.Recording, rec_id)
        if rec is None:
            raise NotFound(f"no recording {rec_id}")
        refused = refusal(st, s, rec, now)
        if refused is not None:     # changed since it was listed: nothing is written
            raise Conflict(f"recording {rec.id} ({rec.name}) not purged: {refused}")
        files = recording_files(st, s, rec)
        assert rec.retention_end_ns is not None
        tomb = m.Purge(recording=rec.id, purged_by=user.username, confirmed_by=user.username, purged_ns=now,
                       reason=why, retention_end_ns=rec.retention_end_ns,
                       files=json.dumps([f.to_dict() for f in files], ensure_ascii=False, sort_keys=True))
        ch.add(tomb)
        rec.status, rec.purged_ns = "purged", now
        ch.touch(rec)
        for seg in s.scalars(select(m.Segment).where(m.Segment.recording == rec.id)):
            if seg.present:
                seg.present = False
                ch.touch(seg)
        s.flush()
        ch.details.update(recording=rec.id, name=rec.name, device=rec.device_id, recording_id=rec.recording_id,
                          retention_end_ns=rec.retention_end_ns, confirmed_by=user.username, purge=tomb.id,
                          bytes=sum(f.size for f in files if f.role != "view"),
                          files=[f.to_dict() for f in files])
        outcome = PurgeOutcome(rec.id, rec.name, tomb.id, files)
        crashpoint("purge-before-commit")
    assert ch.record is not None
    outcome.audit_seq = ch.record.seq
    crashpoint("purge-after-commit")
    outcome.removed = remove_files(st, files)
    log.info("purged recording %s (%s): %d files removed", outcome.recording, outcome.name, outcome.removed)
    return outcome


def _unlink(path: Path) -> bool:
    """Remove one file of a purged recording (read-only in the store: made writable first)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISLNK(mode):
        os.chmod(path, stat.S_IMODE(mode) | stat.S_IWUSR)
    parent_mode = path.parent.stat().st_mode
    if not parent_mode & stat.S_IWUSR:
        os.chmod(path.parent, stat.S_IMODE(parent_mode) | stat.S_IWUSR)
    path.unlink()
    return True


def remove_files(st: Station, files: list[PurgeFile]) -> int:
    """Delete what a committed purge names (idempotent: what is already gone is skipped)."""
    removed, dirs = 0, set()
    for f in files:
        path = _inside(st.store, f.path)
        if _unlink(path):
            removed += 1
            dirs.add(path.parent)
            crashpoint("purge-mid-delete")
    for f in files:
        if f.role == "view":
            view = st.store / Path(f.path).parts[0] / Path(f.path).parts[1]
            if view.is_dir():
                shutil.rmtree(view, ignore_errors=True)
                dirs.add(view.parent)
    for d in sorted(dirs, key=lambda x: len(x.parts), reverse=True):
        rel = d.relative_to(st.store).parts
        if len(rel) > 3 and rel[0] == "devices" and rel[2] == "mirror" and d.is_dir() and not any(d.iterdir()):
            d.rmdir()          # a recording's directory in the mirror, now empty (never the mirror itself)
            d = d.parent
        if d.is_dir():
            fsync_dir(d)
    return removed


# ---- finishing an interrupted purge ------------------------------------------------------------
def tombstone_files(tomb: m.Purge) -> list[PurgeFile]:
    return [PurgeFile(f["path"], f.get("sha256"), int(f["size"]), f.get("role", "segment"))
            for f in json.loads(tomb.files)]


def unfinished(st: Station, latest: int | None = None) -> list[tuple[m.Purge, list[PurgeFile]]]:
    """Committed purges whose files are (partly) still on disk (a run killed mid-way).

    ``latest``: check only the newest that many tombstones (one file test per file each, so a
    page does not test every file ever purged). Enough in practice: a run removes each
    recording's files right after its commit and starts by finishing what an earlier run left,
    so a kill leaves the run's last tombstone unfinished, never an older one."""
    out = []
    with st.db.session() as s:
        q = (select(m.Purge).order_by(m.Purge.id) if latest is None
             else select(m.Purge).order_by(m.Purge.id.desc()).limit(latest))
        for tomb in s.scalars(q):
            left = [f for f in tombstone_files(tomb) if os.path.lexists(st.store / f.path)]
            if left:
                out.append((tomb, left))
    return out


def finish_unfinished(st: Station, user: m.User) -> int:
    """Remove the files an interrupted purge left; each is an audited ``purge-finished`` event."""
    done = 0
    for tomb, left in unfinished(st):
        n = remove_files(st, left)
        st.trail.event("purge-finished", actor=user.username, subject=f"recording:{tomb.recording}",
                       purge=tomb.id, files_removed=n, files=[f.path for f in left])
        done += n
    return done


# ---- the ingest's side: what the station purged stays purged --------------------------------------
class PurgedFiles:
    """The files the station purged from one device's mirror (its tombstones), for the next docking.

    Like the device's own ``recorder.receipt.ReleasedFiles`` (a file the device purged against a
    dock receipt may be absent), but the station's: the ingest neither fetches such a file again
    (were the device still holding it) nor keeps it in the mirror, and a file the verifier finds
    missing is excused only if a tombstone names it with the SHA-256 and size the journal attests.
    Everything else the verifier checks (signatures, chain, anchor, continuity, other files)
    is untouched.
    """

    def __init__(self, entries: dict[str, tuple[str | None, int]] | None = None) -> None:
        self._entries = entries or {}

    @classmethod
    def load(cls, st: Station, device_id: str) -> "PurgedFiles":
        prefix = f"devices/{device_id}/mirror/"
        entries: dict[str, tuple[str | None, int]] = {}
        with st.db.session() as s:
            q = select(m.Purge).join(m.Recording, m.Purge.recording == m.Recording.id).where(
                m.Recording.device_id == device_id)
            for tomb in s.scalars(q):
                for f in tombstone_files(tomb):
                    if f.role != "view" and f.path.startswith(prefix):
                        entries[f.path.removeprefix(prefix)] = (f.sha256, f.size)
        return cls(entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def covers(self, path: str, sha256: str, size: int) -> bool:
        return self._entries.get(path) == (sha256, size)

    def excuse(self, failures: list[VerificationFailure],
               attested: dict[str, dict[str, Any]]) -> list[VerificationFailure]:
        """``failures`` without the SegmentMissing of files this station purged (same hash and size)."""
        keep = []
        for f in failures:
            att = attested.get(f.file or "")
            if (isinstance(f, SegmentMissing) and att is not None
                    and self.covers(f.file or "", att.get("sha256", ""), att.get("size", -1))):
                continue
            keep.append(f)
        return keep
