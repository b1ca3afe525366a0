"""The station's foundation: init, the catalogue on SQLite and PostgreSQL, the audit journal, verify.

Fed by real dockings of simulated recordings (tests/station_fixture.py); the audit journal is
checked with the same documented recipe as a device journal.
"""
import json
import subprocess
import sys

from sqlalchemy import select, text

from recorder.verify import verify_directory
from station.audit.integrity import verify_station
from station.db import models as m
from tests.station_fixture import OFFICER_NO, UNIT, sqlite_station_world, station_world  # noqa: F401
from tests.test_evidence_recipe import passes, recipe, run_recipe  # noqa: F401  (fixture)


def test_docked_recordings_are_catalogued_and_every_change_is_attested(station_world, recipe):
    w = station_world
    report = w.dock_device("dev", {"r1": 2, "r2": 1})
    assert report.status == "ok"
    with w.st.db.session() as s:
        recs = s.scalars(select(m.Recording).order_by(m.Recording.recording_id)).all()
        assert [(r.recording_id, r.segments, r.officer_id, r.status) for r in recs] == [
            ("r1", 2, OFFICER_NO, "stored"), ("r2", 1, OFFICER_NO, "stored")]
        assert recs[0].name.startswith(UNIT + "_未标注_")
        assert recs[0].ingested_ns == w.clock.now_ns()
        segs = s.scalars(select(m.Segment).where(m.Segment.recording == recs[0].id)).all()
        assert [g.index for g in segs] == [0, 1] and all(g.present for g in segs)
        types = [e.type for e in s.scalars(select(m.AuditEntry).order_by(m.AuditEntry.seq))]
    assert types[0] == "station-init" and "ingest" in types and types[-1] == "docking-end"
    r = verify_station(w.st, files=True)
    assert r.ok, r.findings
    assert r.files_checked == 3 and r.rows_checked > 10
    # the audit journal is a journal like a device's: the verifier and the shell recipe agree
    pem = w.st.signer.public_key_pem()
    assert verify_directory(w.st.trail.journal_dir, pem).ok
    key = w.st.store / "station-key.pub.pem"
    assert key.read_bytes() == pem
    assert passes(run_recipe(recipe, w.st.trail.journal_dir, key))


def test_verify_finds_a_row_changed_inserted_or_deleted_behind_the_stations_back(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 1, "r2": 1})
    assert verify_station(w.st).ok
    with w.st.db.engine.begin() as c:   # not through the station: no audit record
        c.execute(text("UPDATE recordings SET officer_id = '999999' WHERE recording_id = 'r1'"))
        c.execute(text("DELETE FROM segments WHERE recording = "
                       "(SELECT id FROM recordings WHERE recording_id = 'r2')"))
        c.execute(text("INSERT INTO cases (case_no, name, category, department, status, opened_ns, opened_by) "
                       "VALUES ('X-1', 'forged', '其他', '', 'open', 1, 'nobody')"))
    found = {(f.kind, f.where.split(":")[0]) for f in verify_station(w.st).findings}
    assert found == {("RowChanged", "recordings"), ("RowMissing", "segments"), ("RowUnattested", "cases")}
    out = w.cli("verify", "--json")
    assert out.returncode == 1
    assert {f["kind"] for f in json.loads(out.stdout)["findings"]} == {"RowChanged", "RowMissing", "RowUnattested"}


def test_verify_finds_a_changed_audit_line_and_a_changed_stored_file(sqlite_station_world):
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 1})
    with w.st.db.engine.begin() as c:
        c.execute(text("UPDATE audit_entries SET line = replace(line, 'ingest', 'ingesX') WHERE type = 'ingest'"))
    assert [f.kind for f in verify_station(w.st).findings] == ["EntryDiffers"]
    with w.st.db.engine.begin() as c:
        c.execute(text("UPDATE audit_entries SET line = replace(line, 'ingesX', 'ingest')"))
    seg = next((w.st.store / "devices").rglob("r1_00000.ts"))
    seg.chmod(0o644)
    with open(seg, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 8)
    r = verify_station(w.st, files=True)
    assert [f.kind for f in r.findings] == ["FileChanged"]


def test_init_writes_a_documented_config_and_says_what_to_do_next(tmp_path):
    cfg = tmp_path / "etc" / "station.toml"
    run = [sys.executable, "-m", "station", "init", "--config", str(cfg)]
    r = subprocess.run(run + ["--unit", UNIT, "--store", str(tmp_path / "store")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "next:" in r.stdout and "user add" in r.stdout and "pki issue-dock" in r.stdout
    body = cfg.read_text(encoding="utf-8")
    assert f'unit = "{UNIT}"' in body and "# the agency unit name" in body and "[retention]" in body
    assert (tmp_path / "store" / "keys" / "station-key.pem").stat().st_mode & 0o777 == 0o600
    again = subprocess.run(run, capture_output=True, text=True)          # idempotent: keeps config and key
    assert again.returncode == 0 and "kept" in again.stdout
    assert cfg.read_text(encoding="utf-8") == body
    # a new station without a unit: a clear usage error
    r = subprocess.run([sys.executable, "-m", "station", "init", "--config", str(tmp_path / "b.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unit" in r.stderr
    # a typo in the file: named, exit 2
    cfg.write_text(body.replace("deadline_hours", "deadline_hour"), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "station", "verify", "--config", str(cfg)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "deadline_hour" in r.stderr


def test_the_shipped_example_config_is_what_init_writes_and_loads():
    from pathlib import Path

    from station.config import example_toml, load
    path = Path(__file__).resolve().parents[1] / "deploy" / "station" / "station.toml"
    values = {"station": {"unit": "厦门市城市管理行政执法局", "store_dir": "/srv/station"}}
    assert path.read_text(encoding="utf-8") == example_toml(values)
    cfg = load(path)
    assert cfg.labels.deadline_hours == 48 and cfg.retention.default_days == 365
    assert cfg.database_url == "sqlite:////srv/station/station.sqlite"
