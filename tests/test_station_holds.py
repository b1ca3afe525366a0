"""S6 holds: ``station hold place|release|list`` — who may, the reason, the kinds, the audit record,
and that a hold keeps a recording beyond its retention until released. Both backends."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from recorder.journal import iter_records
from station.audit.integrity import verify_station
from station.clock import NS_PER_DAY
from station.db import models as m
from station.errors import InvalidInput, NotAllowed, NotFound
from station.keeping import holds, purge
from tests.station_fixture import station_world  # noqa: F401


def test_hold_place_release_and_list_with_roles_reasons_and_audit(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 1, "r2": 1})
    with w.st.db.session() as s:
        r1, r2 = s.scalars(select(m.Recording.id).order_by(m.Recording.recording_id)).all()

    assert w.cli("hold", "place", str(r1), "--kind", "assault", "--reason", "x", user="wang").returncode == 3
    assert w.cli("hold", "place", str(r1), "--kind", "other", "--reason", "需长期保存", user="clerk").returncode == 2
    with pytest.raises(InvalidInput):
        holds.place(w.st, w.user("clerk"), r1, "dispute", reason=" ")
    with pytest.raises(NotFound):
        holds.place(w.st, w.user("clerk"), 999, "dispute", reason="x")
    h1 = w.cli_json("hold", "place", str(r1), "--kind", "assault", "--reason", "当事人推搡执法人员", user="clerk")
    assert (h1["kind_zh"], h1["placed_by"], h1["active"]) == ("妨碍/袭击执法人员", "clerk", True)
    h2 = holds.place(w.st, w.user("chief"), f"{w.reports[0].device_id}/r2", "other", text="媒体关注", reason="舆情")
    assert h2.recording == r2

    listed = w.cli("hold", "list", user="auditor", check=True).stdout
    assert "妨碍/袭击执法人员" in listed and "其他：媒体关注" in listed and "当事人推搡执法人员" in listed

    with pytest.raises(NotAllowed):
        holds.release(w.st, w.user("clerk"), h1["id"], reason="已处理")
    rel = w.cli_json("hold", "release", str(h1["id"]), "--reason", "案件办结，无争议", user="chief")
    assert (rel["released_by"], rel["release_reason"], rel["active"]) == ("chief", "案件办结，无争议", False)
    assert w.cli("hold", "release", str(h1["id"]), "--reason", "again", user="admin").returncode == 6
    with pytest.raises(NotFound):
        holds.release(w.st, w.user("admin"), 999, reason="x")
    assert [h["id"] for h in w.cli_json("hold", "list", user="clerk")] == [h2.id]
    assert [h.id for h in holds.list_holds(w.st)] == [h1["id"], h2.id]

    recs = {r.type: r.payload for r in iter_records(w.st.trail.journal_dir / "journal.log")
            if r.type in ("hold-place", "hold-release")}
    assert recs["hold-place"]["reason"] == "舆情" and recs["hold-place"]["subject"] == f"recording:{r2}"
    assert recs["hold-release"]["actor"] == "chief" and recs["hold-release"]["reason"] == "案件办结，无争议"
    assert verify_station(w.st).ok


def test_a_hold_keeps_a_recording_beyond_retention_until_released(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 1})
    with w.st.db.session() as s:
        rec = s.scalars(select(m.Recording)).one()
    h = holds.place(w.st, w.user("admin"), rec.name, "mass-incident", reason="群体性事件现场")
    w.clock.advance(5 * 365 * NS_PER_DAY)
    assert purge.candidates(w.st) == []
    holds.release(w.st, w.user("deputy"), h.id, reason="事件处置完毕")
    assert [c.recording for c in purge.candidates(w.st)] == [rec.id]
