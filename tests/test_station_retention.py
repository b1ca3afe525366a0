"""S5 retention: every recording's end computed at ingest and recomputed when a label or its case
changes; ``station retention show|list``. Time rules on the injected clock; both backends.

Labels and cases are written here by small audited actions (the casework commands are another
area's); they call ``retention.refresh`` / ``refresh_case`` as casework does.
"""
from __future__ import annotations

import pytest
from sqlalchemy import select

from recorder.journal import iter_records
from station.audit.integrity import verify_station
from station.clock import NS_PER_DAY
from station.db import models as m
from station.errors import Conflict, NotFound
from station.keeping import purge, retention
from station.recordings import find_recording
from tests.station_fixture import station_world  # noqa: F401

YEAR = 365 * NS_PER_DAY


def label(w, rec_id: int, category: str, case_no: str | None = None) -> None:
    """Label a recording (and open its case), as one audited action that refreshes the retention end."""
    now = w.clock.now_ns()
    with w.st.trail.action("label", actor="clerk", subject=f"recording:{rec_id}") as ch:
        s = ch.session
        case_id = None
        if case_no:
            case = s.scalars(select(m.Case).where(m.Case.case_no == case_no)).first()
            if case is None:
                case = m.Case(case_no=case_no, name="占道经营案", category=category, department="一中队",
                              status="open", opened_ns=now, opened_by="clerk")
                ch.add(case)
                s.flush()
            case_id = case.id
        for old in s.scalars(select(m.Label).where(m.Label.recording == rec_id, m.Label.current.is_(True))):
            old.current = False
            ch.touch(old)
        ch.add(m.Label(recording=rec_id, version=1, current=True, case_id=case_id, category=category,
                       counterpart="张三", content="占道经营检查", place="中山路", labelled_by="clerk",
                       labelled_ns=now))
        s.flush()
        retention.refresh(ch, w.cfg, s.get(m.Recording, rec_id))


def close_case(w, case_no: str) -> None:
    with w.st.trail.action("case-close", actor="clerk", subject=f"case:{case_no}") as ch:
        case = ch.session.scalars(select(m.Case).where(m.Case.case_no == case_no)).one()
        case.status, case.closed_ns = "closed", w.clock.now_ns()
        ch.touch(case)
        assert retention.refresh_case(ch, w.cfg, case.id) == 1


def recording(w, rid: str) -> m.Recording:
    with w.st.db.session() as s:
        return s.scalars(select(m.Recording).where(m.Recording.recording_id == rid)).one()


def test_ingest_sets_the_default_end_and_the_commands_show_it(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 1, "r2": 1})
    r1 = recording(w, "r1")
    assert r1.retention_end_ns == r1.end_wall_ns + YEAR
    # the end is attested by the ingest action that set it
    ingest = [r for r in iter_records(w.st.trail.journal_dir / "journal.log") if r.type == "ingest"][-1]
    assert {"recording": r1.id, "from_ns": None, "to_ns": r1.retention_end_ns} in \
        ingest.payload["details"]["retention_refreshed"]
    assert verify_station(w.st).ok

    shown = w.cli_json("retention", "show", str(r1.id), user="clerk")
    assert shown["rule"] == "default" and shown["retention_end_ns"] == r1.retention_end_ns
    assert shown["retention_end"].endswith("+08:00") and shown["held"] is False and shown["current"]
    human = w.cli("retention", "show", r1.name, user="wang", check=True).stdout   # an officer: own recording
    assert "默认保存期限：录制结束后 365 天" in human and shown["retention_end"] in human
    with w.st.db.session() as s, pytest.raises(NotFound):
        find_recording(s, "dev/nope")

    rows = w.cli_json("retention", "list", user="auditor")
    assert [r["recording_id"] for r in rows] == ["r1", "r2"]
    end_day = shown["retention_end"][:10]
    assert w.cli_json("retention", "list", "--before", end_day, user="auditor") == []   # ends later that day
    assert len(w.cli_json("retention", "list", "--before", end_day + "T23:59:59", user="auditor")) == 2
    assert w.cli("retention", "list", user="wang").returncode == 3


def test_category_period_and_a_case_keep_a_recording_until_the_case_closes(station_world):
    w = station_world
    cfg = w.config_path.read_text(encoding="utf-8")
    w.config_path.write_text(cfg + '\n[retention]\nby_category = { "行政处罚" = 730 }\n', encoding="utf-8")
    w.reopen()
    w.dock_device("dev", {"r1": 1})
    rec = recording(w, "r1")
    admin = w.user("admin")

    label(w, rec.id, "行政处罚")
    rec = recording(w, "r1")
    assert rec.retention_end_ns == rec.end_wall_ns + 2 * YEAR
    with w.st.db.session() as s:
        d = retention.explain(w.cfg, s, rec)
    assert (d.rule, d.category, d.days) == ("category", "行政处罚", 730)

    label(w, rec.id, "行政检查", case_no="厦城执罚〔2026〕17号")    # linked to an open case: no end
    assert recording(w, "r1").retention_end_ns is None
    w.clock.advance(3 * YEAR)
    assert purge.candidates(w.st) == []
    with pytest.raises(Conflict, match="case"):
        purge.purge(w.st, admin, [str(rec.id)], reason="到期")

    close_case(w, "厦城执罚〔2026〕17号")                         # kept a year after closing
    closed_at = w.clock.now_ns()
    rec = recording(w, "r1")
    assert rec.retention_end_ns == closed_at + YEAR
    with w.st.db.session() as s:
        d = retention.explain(w.cfg, s, rec)
    assert (d.rule, d.case_no, d.case_closed_ns) == ("case-closed", "厦城执罚〔2026〕17号", closed_at)
    w.clock.advance(YEAR - NS_PER_DAY)
    with pytest.raises(Conflict, match="retention"):
        purge.purge(w.st, admin, [str(rec.id)], reason="到期")
    w.clock.advance(2 * NS_PER_DAY)
    assert [c.recording for c in purge.candidates(w.st)] == [rec.id]
    assert [o.recording for o in purge.purge(w.st, admin, None, reason="结案满一年")] == [rec.id]
    assert recording(w, "r1").status == "purged"
    report = verify_station(w.st, files=True)
    assert report.ok, report.findings
