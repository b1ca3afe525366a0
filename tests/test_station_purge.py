"""S11 expiry: ``station purge list|run`` on both catalogue backends, fed by real dockings.

Time rules run on the injected clock (the action API); the command line runs on the system
clock, so its recordings are made 500 days in the past. Crash safety: a real ``station purge
run`` killed with SIGKILL at named crash points (common/crashpoints.py), then run again.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from recorder.journal import iter_records
from station.audit.integrity import verify_station
from station.clock import NS_PER_DAY
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound, Unavailable
from station.keeping import holds, purge
from tests.station_fixture import sqlite_station_world, station_world  # noqa: F401

OLD = 500 * NS_PER_DAY      # recordings this old are past the default year on the system clock too


def old_wall0() -> int:
    return time.time_ns() - OLD


def rec_id(w, rid: str) -> int:
    with w.st.db.session() as s:
        return s.scalars(select(m.Recording.id).where(m.Recording.recording_id == rid)).one()


def stored_files(w, rid: str) -> list[Path]:
    """The recording's segment files in the device mirror and its named view."""
    with w.st.db.session() as s:
        rec = s.scalars(select(m.Recording).where(m.Recording.recording_id == rid)).one()
        segs = s.scalars(select(m.Segment).where(m.Segment.recording == rec.id)).all()
        mirror = [w.st.store / "devices" / rec.device_id / "mirror" / g.path for g in segs]
        view = sorted((w.st.store / "recordings" / rec.name).glob("*"))
    return mirror + view


def redock(w, name: str, recordings: dict[str, int]):
    """Dock device ``name`` again (the fixture issues its certificate at each docking: a new one)."""
    (w.dock.base / f"{name}-cert.pem").unlink(missing_ok=True)
    return w.dock_device(name, recordings)


def audit(w, type_: str) -> list[dict]:
    out = []
    for rec in iter_records(w.st.trail.journal_dir / "journal.log"):
        if rec.type == type_:
            out.append(rec.payload)
    return out


def test_purge_is_refused_in_retention_and_when_held_and_works_after_with_hashes(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 2, "r2": 1})
    r1, r2 = rec_id(w, "r1"), rec_id(w, "r2")
    admin, clerk = w.user("admin"), w.user("clerk")
    files_r1 = stored_files(w, "r1")
    assert len(files_r1) == 4 and all(p.is_file() for p in files_r1)

    # still in retention (the default year from the recording's end): refused, audited, nothing changed
    assert purge.candidates(w.st) == []
    with pytest.raises(Conflict, match="retention"):
        purge.purge(w.st, admin, [str(r1)], reason="到期销毁")
    assert audit(w, "purge-refused")[-1]["subject"] == f"recording:{r1}"

    hold = holds.place(w.st, clerk, r2, "complaint", reason="当事人投诉，需长期保存")
    w.clock.advance(366 * NS_PER_DAY)
    cands = purge.candidates(w.st)
    assert [c.recording for c in cands] == [r1]            # r2 is held
    assert cands[0].bytes == sum(p.stat().st_size for p in files_r1[:2])
    # a held recording is refused even when named, and takes the others with it: nothing purged
    with pytest.raises(Conflict, match="held"):
        purge.purge(w.st, admin, [str(r1), str(r2)], reason="到期销毁")
    assert all(p.is_file() for p in files_r1)
    with pytest.raises(NotAllowed):
        purge.purge(w.st, clerk, [str(r1)], reason="到期销毁")
    with pytest.raises(InvalidInput):
        purge.purge(w.st, admin, [str(r1)], reason="  ")
    with pytest.raises(NotFound):
        purge.purge(w.st, admin, ["999"], reason="到期销毁")

    with w.st.db.session() as s:
        segs = {g.path: (g.sha256, g.size) for g in s.scalars(select(m.Segment).where(m.Segment.recording == r1))}
    done = purge.purge(w.st, admin, None, reason="保存期限届满，无保存价值")
    assert [o.recording for o in done] == [r1] and done[0].removed == 4
    assert not any(os.path.lexists(p) for p in files_r1)
    assert not (files_r1[-1].parent).exists()                # the named view directory is gone
    with w.st.db.session() as s:
        rec = s.get(m.Recording, r1)
        assert rec.status == "purged" and rec.purged_ns == w.clock.now_ns()
        assert not any(g.present for g in s.scalars(select(m.Segment).where(m.Segment.recording == r1)))
        tomb = s.scalars(select(m.Purge).where(m.Purge.recording == r1)).one()
        assert (tomb.purged_by, tomb.confirmed_by, tomb.reason) == ("admin", "admin", "保存期限届满，无保存价值")
        assert tomb.retention_end_ns == rec.retention_end_ns <= w.clock.now_ns()
        kept = {f["path"].split("/mirror/")[1]: (f["sha256"], f["size"])
                for f in json.loads(tomb.files) if f["role"] == "segment"}
        assert kept == segs
        assert s.get(m.Recording, r2).status == "stored"
    record = audit(w, "purge")[-1]
    assert record["actor"] == "admin" and record["reason"] == "保存期限届满，无保存价值"
    assert {f["path"].split("/mirror/")[1]: (f["sha256"], f["size"])
            for f in record["details"]["files"] if f["role"] == "segment"} == segs
    assert set(record["rows"]) == {"purges", "recordings", "segments"}
    # purged segments are not present, so the file check skips them: the station still verifies
    report = verify_station(w.st, files=True)
    assert report.ok, report.findings
    assert report.files_checked == 1
    # purged is purged: not a candidate, refused when named, cannot be held
    assert purge.candidates(w.st) == []
    with pytest.raises(Conflict, match="purged"):
        purge.purge(w.st, admin, [str(r1)], reason="again")
    with pytest.raises(Conflict):
        holds.place(w.st, clerk, r1, "dispute", reason="x")
    # released, the held one expires like any other
    holds.release(w.st, w.user("chief"), hold.id, reason="投诉已处理完毕")
    assert [c.recording for c in purge.candidates(w.st)] == [r2]


def test_a_purge_waits_for_no_docking_of_the_device_and_a_docking_none_for_the_purge(sqlite_station_world):
    """A docking builds its new mirror from hard links to the old one and swaps it in: a purge
    committed meanwhile would have its files brought back. Both hold the device's lock
    (``devices/<id>/dock.lock``), so a purge meeting a docking stops (exit 7, nothing purged)
    and goes through once the docking is over."""
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 1}, wall0_ns=old_wall0())
    r1 = rec_id(w, "r1")
    files = stored_files(w, "r1")
    w.clock.advance(OLD)
    with w.st.db.session() as s:
        device = s.get(m.Recording, r1).device_id
    fd = os.open(w.st.store / "devices" / device / "dock.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)                       # as a docking of this device holds it
    try:
        with pytest.raises(Unavailable, match="docking"):
            purge.purge(w.st, w.user("admin"), [str(r1)], reason="到期销毁")
        r = w.cli("purge", "run", "--reason", "到期销毁", "--confirm", user="admin")
        assert r.returncode == 7 and "docking" in r.stderr, r.stderr
    finally:
        os.close(fd)
    with w.st.db.session() as s:
        assert s.get(m.Recording, r1).status == "stored" and s.scalars(select(m.Purge)).first() is None
    assert all(p.is_file() for p in files) and audit(w, "purge") == []
    done = purge.purge(w.st, w.user("admin"), [str(r1)], reason="到期销毁")
    assert [o.recording for o in done] == [r1] and not any(os.path.lexists(p) for p in files)


def test_purge_commands_list_dry_run_roles_and_confirm(station_world):
    w = station_world
    w.dock_device("dev", {"old1": 2, "old2": 1}, wall0_ns=old_wall0())
    r1, r2 = rec_id(w, "old1"), rec_id(w, "old2")
    files = stored_files(w, "old1") + stored_files(w, "old2")
    listed = w.cli_json("purge", "list")                      # no sign-in: the daily timer's way
    assert [c["recording"] for c in listed["candidates"]] == [r1, r2]
    assert listed["bytes"] == sum(p.stat().st_size for p in files if "/mirror/" in str(p))
    assert all(len(f["sha256"]) == 64 for c in listed["candidates"] for f in c["files"])
    dry = w.cli("purge", "run", user="admin")                 # no --confirm: lists, deletes nothing
    assert dry.returncode == 0 and "未确认" in dry.stdout
    assert "保存期限至" in dry.stdout and "合计 2 个录像" in dry.stdout
    assert all(p.is_file() for p in files)
    assert w.cli("purge", "run", "--reason", "到期", "--confirm", user="clerk").returncode == 3
    assert w.cli("purge", "run", "--confirm", user="admin").returncode == 2        # no reason
    assert all(p.is_file() for p in files)

    h = w.cli_json("hold", "place", str(r2), "--kind", "dispute", "--reason", "行政复议中", user="clerk")
    held = w.cli("purge", "run", "--recording", str(r2), "--reason", "到期", "--confirm", user="admin")
    assert held.returncode == 6 and "held" in held.stderr
    out = w.cli_json("purge", "run", "--reason", "保存期限届满", "--confirm", user="admin")
    assert [p["recording"] for p in out["purged"]] == [r1]
    assert out["purged"][0]["confirmed_by"] == "admin" and out["purged"][0]["files_removed"] == 4
    assert not any(os.path.lexists(p) for p in stored_files(w, "old1")[:2])
    assert all(p.is_file() for p in stored_files(w, "old2"))
    holds.release(w.st, w.user("chief"), h["id"], reason="复议结束")
    assert [c.recording for c in purge.candidates(w.st)] == [r2]
    assert verify_station(w.st, files=True).ok


def _crash_run(w, point: str, ref: str) -> subprocess.CompletedProcess[str]:
    env = w.env("admin")
    env["BODYCAM_CRASHPOINT"] = f"{point}:1"
    return subprocess.run([sys.executable, "-m", "station", "purge", "run", "--recording", ref,
                           "--reason", "保存期限届满", "--confirm"], env=env, capture_output=True, text=True,
                          timeout=120)


def test_kill_9_mid_purge_is_consistent_and_finished_by_running_again(sqlite_station_world):
    w = sqlite_station_world
    w.dock_device("dev", {"a": 2, "b": 2, "c": 1}, wall0_ns=old_wall0())
    a, b = rec_id(w, "a"), rec_id(w, "b")
    fa, fb, fc = stored_files(w, "a"), stored_files(w, "b"), stored_files(w, "c")

    # killed before the commit: nothing happened
    r = _crash_run(w, "purge-before-commit", str(a))
    assert r.returncode == -9, r.stderr
    assert all(p.is_file() for p in fa)
    with w.st.db.session() as s:
        assert s.get(m.Recording, a).status == "stored" and s.scalars(select(m.Purge)).all() == []
    assert verify_station(w.st, files=True).ok

    # killed after deleting the first file: committed (tombstone), the rest still on disk
    r = _crash_run(w, "purge-mid-delete", str(a))
    assert r.returncode == -9, r.stderr
    left = [p for p in fa if p.exists()]
    assert 0 < len(left) < len(fa)
    with w.st.db.session() as s:
        assert s.get(m.Recording, a).status == "purged"
        assert s.scalars(select(m.Purge.recording)).all() == [a]
    report = verify_station(w.st, files=True)      # the audit line is caught up, purged rows skipped
    assert report.ok and report.files_checked == 3, report.findings
    unfinished = purge.unfinished(w.st)
    assert [t.recording for t, _ in unfinished] == [a] and len(unfinished[0][1]) == len(left)

    # killed right after the commit of b
    r = _crash_run(w, "purge-after-commit", str(b))
    assert r.returncode == -9 and all(p.is_file() for p in fb)

    # running again finishes both (audited), then purges what is asked (c, untouched until now)
    assert all(p.is_file() for p in fc)
    w.cli("purge", "run", "--recording", str(rec_id(w, "c")), "--reason", "保存期限届满", "--confirm",
          user="admin", check=True)
    assert not any(os.path.lexists(p) for p in fa + fb + fc)
    finished = {p["subject"] for p in audit(w, "purge-finished")}
    assert finished == {f"recording:{a}", f"recording:{b}"}
    assert purge.unfinished(w.st) == []
    assert len(audit(w, "purge")) == 3
    report = verify_station(w.st, files=True)
    assert report.ok, report.findings


def test_docking_again_after_a_purge_is_ok_and_never_brings_purged_files_back(station_world):
    w = station_world
    w.dock_device("dev", {"old": 2}, wall0_ns=old_wall0())
    old = rec_id(w, "old")
    files = stored_files(w, "old")
    # the device released them against the station's receipt
    dev = w.devices["dev"]
    assert not list((dev.root / "recordings").rglob("*.ts"))
    w.clock.advance(400 * NS_PER_DAY)
    purge.purge(w.st, w.user("admin"), [str(old)], reason="保存期限届满")
    assert not any(os.path.lexists(p) for p in files)

    # the next docking of the same device with new recordings: ok
    report = redock(w, "dev", {"new": 1})
    assert report.status == "ok", report.detail
    assert not any(os.path.lexists(p) for p in files)
    with w.st.db.session() as s:
        assert s.get(m.Recording, old).status == "purged"
        assert not any(g.present for g in s.scalars(select(m.Segment).where(m.Segment.recording == old)))
        new = s.scalars(select(m.Recording).where(m.Recording.recording_id == "new")).one()
        assert new.status == "stored" and new.retention_end_ns == new.end_wall_ns + 365 * NS_PER_DAY
    assert verify_station(w.st, files=True).ok




def test_a_device_still_holding_purged_files_and_a_purge_killed_mid_way_do_not_bring_them_back(
        sqlite_station_world):
    """The device never got the receipt (its files stay and are offered again) and the purge was
    killed after deleting one file: the next docking fetches none of them, keeps none of the
    leftovers, excuses their absence by the tombstone's hashes only, and stays ok."""
    w = sqlite_station_world
    dev = w.record("dev", {"old": 3}, wall0_ns=old_wall0())
    before = w.dock.base / "device-before-receipt"
    shutil.copytree(dev.root, before)
    w.dock_device("dev")
    old = rec_id(w, "old")
    files = stored_files(w, "old")
    # as if the receipt never reached the device: its evidence as it was before the docking
    dev.journal.close()
    shutil.rmtree(dev.root)
    shutil.copytree(before, dev.root)
    w.devices["dev"] = dev = dev.reopen()
    held_on_device = sorted((dev.root / "recordings" / "old").glob("*.ts"))
    assert len(held_on_device) == 3

    r = _crash_run(w, "purge-mid-delete", str(old))
    assert r.returncode == -9, r.stderr
    left = [p for p in files if p.exists()]
    assert 0 < len(left) < len(files)

    report = redock(w, "dev", {"new": 1})
    assert report.status == "ok", report.detail
    assert report.files_new == 1                     # only the new segment was fetched
    mirror = w.st.store / "devices" / report.device_id / "mirror"
    assert not (mirror / "recordings" / "old").exists() or not any((mirror / "recordings" / "old").iterdir())
    with w.st.db.session() as s:
        assert s.get(m.Recording, old).status == "purged"
        assert not any(g.present for g in s.scalars(select(m.Segment).where(m.Segment.recording == old)))
    assert verify_station(w.st, files=True).ok
    # the purge run that was killed is finished by the next one; the new recording is untouched
    w.cli("purge", "run", "--reason", "完成中断的销毁", "--confirm", user="admin", check=True)
    assert not any(os.path.lexists(p) for p in files)
    assert all(p.is_file() for p in stored_files(w, "new"))
    assert all(p.is_file() for p in held_on_device)  # the device keeps what it was never receipted for
    r2 = verify_station(w.st, files=True)
    assert r2.ok, r2.findings


def test_purge_timer_and_service_pass_systemd_analyze_and_never_delete(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed")
    units = Path(__file__).resolve().parents[1] / "deploy" / "station"
    service = (units / "station-purge.service").read_text()
    timer = (units / "station-purge.timer").read_text()
    # the timer's job only lists: deletion needs an administrator's --confirm at the station
    exec_start = [ln for ln in service.splitlines() if ln.startswith("ExecStart=")]
    assert exec_start == ["ExecStart=/opt/station/.venv/bin/station purge list --json "
                          "--config /etc/station/station.toml"]
    assert "OnCalendar=" in timer and "Unit=station-purge.service" in timer
    # the venv exists only on the station: point ExecStart at a stand-in executable
    bindir = tmp_path / "venv-bin"
    bindir.mkdir()
    (bindir / "station").write_text("#!/bin/sh\n")
    (bindir / "station").chmod(0o755)
    (tmp_path / "station-purge.service").write_text(service.replace("/opt/station/.venv/bin/", f"{bindir}/"))
    (tmp_path / "station-purge.timer").write_text(timer)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "station-purge.service"),
                             str(tmp_path / "station-purge.timer")], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
