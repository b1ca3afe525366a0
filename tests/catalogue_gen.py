"""A generated catalogue for the list/search tests and bench/bench_web.py: many recordings, quickly.

Rows (officer accounts, devices, dockings, recordings with their segments, cases, labels, holds,
interruptions) are bulk-inserted with SQLAlchemy straight into the catalogue, **bypassing the
audit trail**: ``station verify`` would flag them, which is acceptable for a generated catalogue
that only measures and checks the list pages. No media files exist behind these rows (a
generated recording is listed and opened, never played); real recordings still come from a real
docking (tests/station_fixture.py). Deterministic for a seed.
"""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select

from station.app import Station
from station.clock import NS_PER_HOUR
from station.db import models as m

NS_PER_S = 10**9
SEGMENT_S = 60
NEEDLE_CASE = "GEN-NEEDLE-0001"


@dataclass
class Generated:
    recordings: int = 0
    segments: int = 0
    labels: int = 0
    holds: int = 0
    cases: int = 0
    officers: list[str] = field(default_factory=list)
    first_id: int = 0
    needle_id: int | None = None       # the oldest recording, the only one labelled with ``needle_case``
    needle_case: str = ""


def generate(st: Station, recordings: int, *, seed: int = 13, officers: int = 40, devices: int = 60,
             cases: int = 200, end_ns: int | None = None, batch: int = 2000) -> Generated:
    """Add ``recordings`` recordings over the ``recordings // 20`` days before ``end_ns`` (the
    station's now by default): 1-20 segments of 60 s each, about 70 % labelled (a third of those
    with a case), 5 % held, 2 % purged, one interruption per 10. The oldest one is labelled
    with a case of its own (``needle_case``): a filtered search must find it however
    far down the list it is."""
    rnd = random.Random(seed)
    end_ns = st.now_ns() if end_ns is None else end_ns
    now = st.now_ns()
    out = Generated()
    categories = list(st.cfg.labels.categories)
    with st.db.session(write=True) as s:
        pw_hash = s.scalar(select(m.User.password_hash).limit(1)) or "x"
        have = set(s.scalars(select(m.User.officer_no).where(m.User.officer_no.is_not(None))))
        start_user = s.scalar(select(func.count()).select_from(m.User)) or 0
        users = []
        for k in range(officers):
            no = f"9{start_user:02d}{k:03d}"
            if no in have:
                continue
            users.append({"username": f"gen{start_user:02d}o{k:03d}", "display_name": f"民警{k:03d}", "officer_no": no,
                          "unit": st.cfg.unit, "roles": "officer", "supervisor": None, "password_hash": pw_hash,
                          "active": True, "created_ns": now})
        if users:
            s.execute(insert(m.User), users)
        out.officers = [u["officer_no"] for u in users] or sorted(have)
        tag = f"{start_user:02d}"
        devs = [f"gen{tag}{k:04d}" + "0" * 52 for k in range(devices)]
        s.execute(insert(m.Device), [{"device_id": d, "pubkey_pem": "generated", "officer_id": None, "label": None,
                                      "registered_at_ns": now} for d in devs])
        case_base = s.scalar(select(func.count()).select_from(m.Case)) or 0
        case_rows = [{"case_no": f"GEN{tag}-{case_base + k:05d}", "name": f"案件{k}",
                      "category": rnd.choice(categories), "department": "", "status": "open", "opened_ns": now,
                      "opened_by": "admin", "closed_ns": None}
                     for k in range(cases)]
        case_rows.append({"case_no": f"{NEEDLE_CASE}-{tag}", "name": "远处的案件",
                          "category": categories[0], "department": "", "status": "open", "opened_ns": now,
                          "opened_by": "admin", "closed_ns": None})
        s.execute(insert(m.Case), case_rows)
        case_ids = list(s.scalars(select(m.Case.id).where(m.Case.case_no.like(f"GEN{tag}-%"))))
        needle_case = s.scalar(select(m.Case.id).where(m.Case.case_no == case_rows[-1]["case_no"]))
        out.cases, out.needle_case = len(case_rows), case_rows[-1]["case_no"]
        docking = s.execute(insert(m.Docking).values(station=st.name, device_id=devs[0], officer_id=None,
                                                     checked_in_ns=now, status="ok", detail="generated")
                            ).inserted_primary_key
        docking_id = docking[0] if docking else None
        first = (s.scalar(select(func.max(m.Recording.id))) or 0) + 1
        out.first_id = first
        span = max(1, recordings // 20) * 24 * NS_PER_HOUR
        # ended, transferred (within 30 h) and so ingested before end_ns
        starts = sorted(end_ns - 31 * NS_PER_HOUR - 20 * SEGMENT_S * NS_PER_S - rnd.randrange(span)
                        for _ in range(recordings))
        zone = ZoneInfo(st.cfg.timezone)
        rid = first
        for chunk in range(0, recordings, batch):
            recs, segs, labels, holds, stops = [], [], [], [], []
            for start in starts[chunk:chunk + batch]:
                n = rnd.randint(1, 20)
                dev = rnd.choice(devs)
                officer = rnd.choice(out.officers)
                end = start + n * SEGMENT_S * NS_PER_S
                ingested = end + rnd.randrange(1, 30) * NS_PER_HOUR
                purged = rnd.random() < 0.02
                labelled = rnd.random() < 0.7 or rid == first
                day = dt.datetime.fromtimestamp(start // NS_PER_S, zone).strftime("%Y%m%d")
                recs.append({"id": rid, "device_id": dev, "recording_id": f"r{rid}", "station": st.name,
                             "name": f"{day}_{st.cfg.unit}_{officer}_生成录像{rid}", "unit": st.cfg.unit,
                             "counterpart": "", "content": "", "date": day, "officer_id": officer,
                             "start_wall_ns": start, "end_wall_ns": end,
                             "time_quality": rnd.choice(["ntp", "ntp", "ntp", "gps", "rtc"]), "segments": n,
                             "bytes": n * 30_000_000, "docking_id": docking_id, "ingested_ns": ingested,
                             "status": "purged" if purged else "stored",
                             "retention_end_ns": ingested + rnd.choice([180, 365, 730]) * 24 * NS_PER_HOUR,
                             "purged_ns": now if purged else None})
                for k in range(n):
                    segs.append({"recording": rid, "index": k, "path": f"gen/r{rid}_{k:05d}.ts", "sha256": "0" * 64,
                                 "size": 30_000_000, "start_wall_ns": start + k * SEGMENT_S * NS_PER_S,
                                 "end_wall_ns": start + (k + 1) * SEGMENT_S * NS_PER_S, "time_quality": "ntp",
                                 "journal_seq": k + 1, "present": not purged})
                if labelled:
                    case = needle_case if rid == first else (rnd.choice(case_ids) if rnd.random() < 0.33 else None)
                    labels.append({"recording": rid, "version": 1, "current": True, "case_id": case,
                                   "activity": None if case else "日常巡查", "category": rnd.choice(categories),
                                   "counterpart": "某商户", "content": "检查", "place": "某路",
                                   "range_start_ns": None, "range_end_ns": None, "labelled_by": "clerk",
                                   "labelled_ns": ingested + NS_PER_HOUR, "correction_reason": None,
                                   "superseded_by": None})
                if rnd.random() < 0.05:
                    holds.append({"recording": rid, "kind": "dispute", "text": "争议", "reason": "投诉",
                                  "placed_by": "clerk", "placed_ns": ingested + 2 * NS_PER_HOUR,
                                  "released_by": None, "released_ns": None, "release_reason": None})
                if rnd.random() < 0.1:
                    stops.append({"device_id": dev, "journal_seq": 10_000_000 + rid, "recording_id": f"r{rid}",
                                  "officer_id": officer, "kind": "interruption", "cause": "battery",
                                  "reason": None, "wall_ns": end, "needs_signoff": False, "late": False})
                rid += 1
            s.execute(insert(m.Recording), recs)
            s.execute(insert(m.Segment), segs)
            if labels:
                s.execute(insert(m.Label), labels)
            if holds:
                s.execute(insert(m.Hold), holds)
            if stops:
                s.execute(insert(m.Interruption), stops)
            out.recordings += len(recs)
            out.segments += len(segs)
            out.labels += len(labels)
            out.holds += len(holds)
    out.needle_id = first
    return out
