"""What a verified journal adds to the catalogue: recordings, segments, interruptions and reasons.

Called inside the docking's one ``ingest`` action (one transaction, one audit record), after
the journal verified: everything here comes from signed device records, nothing from the
device's word alone. The S3-named view (hard links under ``recordings/<name>/``) is made
here too; a label renames it later (``station.casework``), the mirror is never touched.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import select

from recorder import records
from station import naming
from station.audit.trail import Change
from station.config import StationConfig
from station.db import models as m
from station.handover.attribution import OfficerTrack
from station.keeping import retention
from station.recordings import free_name

# device record types that S4 (completeness) and S10 (supervision) count
INTERRUPTION_TYPES = ("interruption", "reason-given", "reason-missing", "not-recording")
_QUALITY_ORDER = ("GPS", "NTP", "RTC", "UNSYNCED")


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def worst_quality(qualities: list[str]) -> str:
    known = [q for q in qualities if q in _QUALITY_ORDER]
    return max(known, key=_QUALITY_ORDER.index) if known else "UNSYNCED"


def _interruption(rec: records.Record) -> dict[str, Any]:
    p = rec.payload
    reason = p.get("reason")
    reason_text = None
    if isinstance(reason, dict):
        reason_text = str(reason.get("zh") or reason.get("code") or "")
    elif isinstance(reason, str):
        reason_text = reason
    cause = p.get("cause") or (reason.get("code") if isinstance(reason, dict) else None) or rec.type
    if rec.type == "reason-missing":
        reason_text = None
    elif rec.type == "interruption" and reason_text is None:
        reason_text = p.get("detail") if isinstance(p.get("detail"), str) else None
    # firmware.states: a reason-given may carry only a voice note (reason None), which is an answer,
    # not a missing reason; a not-recording reason carries its basis (D6: 原因和依据); keep both
    note, basis = p.get("note_id"), p.get("basis")
    if rec.type in ("reason-given", "not-recording") and isinstance(note, str) and note:
        reason_text = f"{reason_text}（语音说明 {note}）" if reason_text else f"语音说明 {note}"
    if rec.type == "not-recording" and isinstance(basis, str) and basis.strip():
        reason_text = f"{reason_text or ''}；依据：{basis.strip()}"
    return {"kind": rec.type, "cause": str(cause), "reason": reason_text,
            "recording_id": p.get("recording_id") if isinstance(p.get("recording_id"), str) else None,
            "needs_signoff": rec.type == "not-recording" and bool(p.get("needs_signoff", True)),
            "late": rec.type == "reason-given" and p.get("late") is True}


def catalogue(ch: Change, cfg: StationConfig, *, device_id: str, docking: m.Docking, mirror: Path,
              recs: list[records.Record], officer: str | None, damaged: dict[str, dict[str, Any]],
              quarantine_dir: Path | None, now_ns: int) -> list[str]:
    """Add or extend the recordings of ``recs``; returns their S3 names."""
    s = ch.session
    segs: dict[str, list[tuple[records.Record, dict[str, Any]]]] = {}
    who = OfficerTrack.for_docking(s, cfg, device_id, officer)   # D12: from the signed journal
    for rec in recs:
        officer = who.feed(rec)
        if rec.type == records.SEGMENT:
            segs.setdefault(rec.payload["recording_id"], []).append((rec, rec.payload))
        elif rec.type in INTERRUPTION_TYPES:
            exists = s.scalars(select(m.Interruption).where(m.Interruption.device_id == device_id,
                                                            m.Interruption.journal_seq == rec.seq)).first()
            if exists is None:
                ch.add(m.Interruption(device_id=device_id, journal_seq=rec.seq, officer_id=officer,
                                      wall_ns=rec.message["wall_ns"], **_interruption(rec)))
    if recs:
        docking.officer_id = officer
        docking.used_from_ns = recs[0].message["wall_ns"]
        docking.used_until_ns = recs[-1].message["wall_ns"]
    names = []
    for rid, items in segs.items():
        payloads = [p for _, p in items]
        start = payloads[0]["wall_start"]["wall_ns"]
        row = s.scalars(select(m.Recording).where(m.Recording.device_id == device_id,
                                                  m.Recording.recording_id == rid)).first()
        if row is None:
            date = naming.evidence_date(start, cfg.timezone)
            name = free_name(s, cfg.unit, cfg.naming.counterpart_placeholder, date, cfg.naming.content_placeholder,
                             rid, device_id)
            row = m.Recording(device_id=device_id, recording_id=rid, station=docking.station, name=name,
                              unit=cfg.unit, counterpart=cfg.naming.counterpart_placeholder,
                              content=cfg.naming.content_placeholder, date=date,
                              officer_id=who.recording(rid), start_wall_ns=start, docking_id=docking.id,
                              ingested_ns=now_ns, status="stored")
            s.add(row)
            s.flush()
        known = {seg.index: seg for seg in s.scalars(select(m.Segment).where(m.Segment.recording == row.id))}
        ndir = cfg.store / "recordings" / row.name
        for rec, p in items:
            present = (mirror / p["path"]).is_file()
            seg = known.get(p["index"])
            if seg is None:
                seg = m.Segment(recording=row.id, index=p["index"], path=p["path"], sha256=p["sha256"],
                                size=p["size"], start_wall_ns=p["wall_start"]["wall_ns"],
                                end_wall_ns=p["wall_end"]["wall_ns"],
                                time_quality=str(p["wall_start"].get("time_quality", "UNSYNCED")),
                                journal_seq=rec.seq, present=present)
                ch.add(seg)
                known[p["index"]] = seg
            elif seg.present != present:
                seg.present = present
                ch.touch(seg)
            dst = ndir / f"{row.name}_{p['index']:05d}.ts"
            note = dst.with_name(dst.name.removesuffix(".ts") + ".DAMAGED.txt")
            if not dst.exists() and present:
                link_or_copy(mirror / p["path"], dst)
                note.unlink(missing_ok=True)          # a re-docking brought it intact
            elif p["path"] in damaged:
                note.parent.mkdir(parents=True, exist_ok=True)
                note.write_text(f"segment {p['index']} ({p['path']}) failed verification at docking "
                                f"{docking.id}: {damaged[p['path']]['reason']}; see "
                                f"{quarantine_dir}/REPORT.txt. It stays on the device.\n", encoding="utf-8")
        all_segs = sorted(known.values(), key=lambda x: x.index)
        row.end_wall_ns = max(x.end_wall_ns for x in all_segs)
        row.segments = len(all_segs)
        row.bytes = sum(x.size for x in all_segs)
        row.time_quality = worst_quality([x.time_quality for x in all_segs])
        if row.officer_id is None:
            row.officer_id = who.recording(rid)
        ch.touch(row)
        retention.refresh(ch, cfg, row)   # S5: the new end is attested by this ingest
        names.append(row.name)
    return names


def ingest_rows(ch: Change, cfg: StationConfig, *, device_id: str, docking: m.Docking, mirror: Path,
                recs: list[records.Record], damaged: list[dict[str, Any]], stored: set[str],
                quarantine_dir: Path | None, now_ns: int) -> list[str]:
    """Everything one verified docking writes into the catalogue, inside its ``ingest`` action.

    The files quarantined now (``damaged``) and those an earlier docking quarantined that this
    one brought intact (``stored``), then the recordings (``catalogue``). Shared by the docking
    itself (station.dock.ingest) and the replay of a docking spooled while the catalogue was
    unreachable (station.dock.spool), so both write exactly the same rows.
    """
    s = ch.session
    for row in s.scalars(select(m.QuarantinedFile).where(m.QuarantinedFile.device_id == device_id,
                                                         m.QuarantinedFile.resolved_docking_id.is_(None))):
        if row.path in stored:
            row.resolved_docking_id = docking.id
            ch.touch(row)
    for d in damaged:
        ch.add(m.QuarantinedFile(
            device_id=device_id, docking_id=docking.id, quarantine_dir=d.get("quarantine_dir"),
            quarantined_ns=now_ns,
            **{k: d.get(k) for k in ("path", "recording_id", "seg_index", "reason", "expected_sha256",
                                     "expected_size", "found_sha256", "found_size", "detail")}))
    return catalogue(ch, cfg, device_id=device_id, docking=docking, mirror=mirror, recs=recs,
                     officer=docking.officer_id, damaged={d["path"]: d for d in damaged},
                     quarantine_dir=quarantine_dir, now_ns=now_ns)
