"""S8 controlled access: requests, approvals by another approver, time-boxed grants, the access
check every viewer and copier goes through, and the register of every attempt.

Fed by real dockings of simulated recordings (tests/station_fixture.py), on SQLite and PostgreSQL.
The command-line flows run the real ``station`` command (system clock); the time rules use the
station's injected clock in-process.
"""
import hashlib
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from recorder import records
from station.access import requests, viewer
from station.access.policy import authorize
from station.app import Station
from station.audit.integrity import verify_station
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound
from tests.station_fixture import OFFICER_NO, sqlite_station_world, station_world  # noqa: F401
from tests.tmpfs import tmpfs


def _recording(w, rid="r1"):
    with w.st.db.session() as s:
        return s.scalars(select(m.Recording).where(m.Recording.recording_id == rid)).one()


def _audit(w, *types):
    with w.st.db.session() as s:
        rows = s.scalars(select(m.AuditEntry).where(m.AuditEntry.type.in_(types)).order_by(m.AuditEntry.seq))
        return [(e.type, e.actor, e.subject, records.parse_line(e.line.encode("ascii")).payload) for e in rows]


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_request_approve_view_copy_and_the_register(station_world, tmp_path):
    w = station_world
    w.dock_device("dev", {"r1": 2})
    st, rec = w.st, _recording(w)
    ref = str(rec.id)
    clerk = w.user("clerk")
    # (grants decided on the command line run on the system clock, later than the test's clock: they
    # are valid for both; a grant decided in-process is used in-process only)

    # no request: refused (exit 3), and the attempt is registered
    r = w.cli("view", ref, "--reason", "想看看", user="clerk")
    assert r.returncode == 3 and "no approved request" in r.stderr
    req = w.cli_json("access", "request", ref, "--action", "view", "--reason", "案件复核", user="clerk")
    assert req["status"] == "pending"
    # an approver asking for themselves cannot approve their own request (exit 3, audited)
    own = w.cli_json("access", "request", rec.name, "--action", "view", "--reason", "投诉核查", user="chief")
    r = w.cli("access", "approve", str(own["id"]), user="chief")
    assert r.returncode == 3 and "own request" in r.stderr
    ok = w.cli_json("access", "approve", str(own["id"]), "--hours", "2", "--note", "同意", user="deputy")
    assert ok["status"] == "approved" and ok["decided_by"] == "deputy" and ok["valid_until"]
    # approved by another approver: chief views; every listed original re-hashes to the catalogue
    got = w.cli_json("view", ref, user="chief")
    with st.db.session() as s:
        segs = s.scalars(select(m.Segment).where(m.Segment.recording == rec.id).order_by(m.Segment.index)).all()
    assert [g["index"] for g in got["segments"]] == [0, 1]
    assert [_sha(g["path"]) for g in got["segments"]] == [g.sha256 for g in segs]
    assert got["approver"] == "deputy" and got["request"] == own["id"] and got["reason"] == "投诉核查"

    # the clerk's view request approved by chief: view granted, but a view grant does not allow a copy
    with pytest.raises(NotAllowed):
        requests.approve(st, clerk, req["id"])                          # a clerk is no approver
    requests.approve(st, w.user("chief"), req["id"])
    assert authorize(st, clerk, rec.id, "view", "复核第二段").granted
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NotAllowed):
        viewer.copy(st, clerk, rec.id, out, "移送")
    assert list(out.iterdir()) == []
    creq = requests.request_access(st, clerk, rec.id, "copy", "移送检察院")
    w.cli_json("access", "approve", str(creq.id), user="deputy")
    done = w.cli_json("copy", ref, "--to", str(out), "--reason", "移送检察院", user="clerk")
    target = out / rec.name
    assert Path(done["directory"]) == target
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    assert [f["sha256"] for f in manifest["files"]] == [g.sha256 for g in segs]
    for f, g in zip(manifest["files"], segs, strict=True):
        assert (target / f["file"]).read_bytes() == (st.store / "devices" / rec.device_id / "mirror"
                                                    / g.path).read_bytes()
    assert manifest["approver"] == "deputy" and manifest["copied_by"] == "clerk"
    assert sorted(p.name for p in out.iterdir()) == [rec.name]        # no staging left behind
    with pytest.raises(Conflict):
        viewer.copy(st, clerk, rec.id, out, "again")                     # the target exists

    # the register: every attempt with who, why, when, approver; auditors and approvers read it, officers not
    assert w.cli("access", "log", ref, user="wang").returncode == 3
    log = w.cli_json("access", "log", ref, user="auditor")
    attempts = [(a["username"], a["action"], a["granted"], a["reason"], a["approver"]) for a in log["attempts"]]
    assert attempts == [
        ("clerk", "view", False, "想看看", None),
        ("chief", "view", True, "投诉核查", "deputy"),
        ("clerk", "view", True, "复核第二段", "chief"),
        ("clerk", "copy", False, "移送", None),
        ("clerk", "copy", True, "移送检察院", "deputy"),
    ]
    assert all(a["at"] and a["audit_seq"] for a in log["attempts"])
    assert log["attempts"][3]["rule"] == "no approved request to copy this recording"
    assert [(q["requester"], q["action"], q["status"], q["decided_by"]) for q in log["requests"]] == [
        # (approved in-process on the test's clock, 2026-09: long expired on the system clock of the command)
        ("clerk", "view", "expired", "chief"), ("chief", "view", "approved", "deputy"),
        ("clerk", "copy", "approved", "deputy")]
    # and the audit journal holds each: refusals, the self-approval, the views and the copy
    audit = _audit(w, "view", "view-refused", "copy", "copy-refused", "approval-refused", "copy-written")
    kinds = [a[0] for a in audit]
    assert [kinds.count(k) for k in ("view-refused", "view", "copy-refused", "copy", "copy-written")] == [
        1, 2, 1, 1, 1]
    self_approval = next(a for a in audit if a[0] == "approval-refused")
    assert self_approval[1] == "chief" and self_approval[2] == f"access-request:{own['id']}"
    written = next(a for a in audit if a[0] == "copy-written")[3]
    assert written["details"]["manifest_sha256"] == _sha(target / "manifest.json")
    # lists: the clerk sees only their own, approvers all; --pending filters
    mine = w.cli_json("access", "list", user="clerk")
    assert {q["requester"] for q in mine} == {"clerk"} and len(mine) == 2
    assert len(requests.requests(st, w.user("deputy"))) == 3
    assert requests.requests(st, w.user("deputy"), pending=True) == []
    assert verify_station(st).ok                  # every request, decision and attempt is attested


def test_an_approval_revoked_ends_at_once_and_the_register_keeps_both(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 1})
    rec = _recording(w)
    ref = str(rec.id)
    req = w.cli_json("access", "request", ref, "--action", "view", "--reason", "案件复核", user="clerk")
    rid = str(req["id"])
    # only an approval in force can be revoked: a pending request is a conflict (exit 6)
    r = w.cli("access", "revoke", rid, "--note", "不需要了", user="chief")
    assert r.returncode == 6 and "pending" in r.stderr
    w.cli_json("access", "approve", rid, "--note", "同意", user="chief")
    assert w.cli_json("view", ref, user="clerk")["request"] == req["id"]
    # the requester (no approver) may not revoke (exit 3, audited); a revocation needs a note (exit 2)
    r = w.cli("access", "revoke", rid, "--note", "不需要了", user="clerk")
    assert r.returncode == 3
    assert ("not-allowed", "clerk", f"revoke access request {rid}") in [a[:3] for a in _audit(w, "not-allowed")]
    assert w.cli("access", "revoke", rid, user="deputy").returncode == 2
    # any approver but the requester revokes it, with the approval itself kept
    out = w.cli_json("access", "revoke", rid, "--note", "批准有误", user="deputy")
    assert (out["status"], out["revoked_by"], out["revoke_note"], out["decided_by"]) == (
        "revoked", "deputy", "批准有误", "chief")
    assert out["revoked"] and out["valid_until"]
    # at once: the next view is refused and says why; revoking again is a conflict
    r = w.cli("view", ref, user="clerk")
    assert r.returncode == 3 and "revoked by deputy" in r.stderr
    assert w.cli("access", "revoke", rid, "--note", "再次", user="chief").returncode == 6
    # the register: the view before and the refusal after, and the request with who revoked it
    log = w.cli_json("access", "log", ref, user="auditor")
    assert [(a["username"], a["granted"], a["approver"]) for a in log["attempts"]] == [
        ("clerk", True, "chief"), ("clerk", False, None)]
    assert log["attempts"][1]["rule"] == f"the approval was revoked by deputy (request {rid}: 批准有误)"
    assert [(q["status"], q["decided_by"], q["revoked_by"], q["revoke_note"]) for q in log["requests"]] == [
        ("revoked", "chief", "deputy", "批准有误")]
    assert "已撤销" in w.cli("access", "log", ref, user="auditor", check=True).stdout
    revoked = _audit(w, "access-revoke")
    assert [(a[1], a[2]) for a in revoked] == [("deputy", f"access-request:{rid}")]
    assert revoked[0][3]["reason"] == "批准有误" and revoked[0][3]["details"]["approved_by"] == "chief"
    assert verify_station(w.st).ok


def test_grants_expire_refused_requests_do_not_count_and_purged_is_a_conflict(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 1})
    st, rec = w.st, _recording(w)
    clerk, chief, deputy = w.user("clerk"), w.user("chief"), w.user("deputy")
    assert st.cfg.access.grant_hours == 24
    with pytest.raises(InvalidInput):
        requests.request_access(st, clerk, rec.id, "view", "  ")         # a reason is required
    with pytest.raises(InvalidInput):
        requests.request_access(st, clerk, rec.id, "look", "x")
    with pytest.raises(NotFound):
        requests.request_access(st, clerk, rec.id + 100, "view", "x")
    req = requests.request_access(st, clerk, rec.id, "view", "案件复核")
    with pytest.raises(Conflict):
        requests.request_access(st, clerk, rec.id, "view", "again")     # one pending at a time
    with pytest.raises(InvalidInput):
        requests.approve(st, chief, req.id, hours=7 * 24 + 1)           # at most 7 days
    granted = requests.approve(st, chief, req.id)
    assert granted.valid_until_ns == st.now_ns() + 24 * NS_PER_HOUR
    w.clock.advance(23 * NS_PER_HOUR)                                    # grant_hours - 1 h: valid
    a = authorize(st, clerk, rec.id, "view", "复核")
    assert a.granted and a.request_id == req.id and a.approver == "chief"
    w.clock.advance(2 * NS_PER_HOUR)                                     # grant_hours + 1 h: expired
    with pytest.raises(NotAllowed, match="expired"):
        authorize(st, clerk, rec.id, "view", "复核")
    assert requests.requests(st, clerk, mine=True)[0]["status"] == "expired"
    # a refused request cannot be used
    again = requests.request_access(st, clerk, rec.id, "view", "再次复核")
    requests.refuse(st, deputy, again.id, "理由不充分")
    with pytest.raises(NotAllowed, match="refused"):
        authorize(st, clerk, rec.id, "view", "复核")
    with pytest.raises(Conflict):
        requests.approve(st, chief, again.id)                           # decided once, for good
    with pytest.raises(InvalidInput):
        requests.refuse(st, deputy, again.id, " ")                      # a refusal needs a note
    with st.db.session() as s:
        rows = s.scalars(select(m.Access).order_by(m.Access.id)).all()
    assert [(x.granted, x.request_id) for x in rows] == [(True, req.id), (False, None), (False, None)]
    assert [a[0] for a in _audit(w, "view", "view-refused")] == ["view", "view-refused", "view-refused"]

    # a copy grant covers viewing too
    creq = requests.request_access(st, clerk, rec.id, "copy", "移送")
    requests.approve(st, chief, creq.id, hours=1)
    assert authorize(st, clerk, rec.id, "view").request_id == creq.id
    # purged (the tombstone as the purge leaves it): requests, approvals and access are conflicts,
    # and the attempt is still registered
    pending = requests.request_access(st, w.user("auditor"), rec.id, "view", "审计抽查")
    with st.trail.action("purge", actor="admin", subject=f"recording:{rec.id}", reason="test tombstone") as ch:
        row = ch.session.get(m.Recording, rec.id)
        row.status, row.purged_ns = "purged", st.now_ns()
        ch.touch(row)
    with pytest.raises(Conflict):
        authorize(st, clerk, rec.id, "view", "复核")
    with pytest.raises(Conflict):
        requests.request_access(st, clerk, rec.id, "copy", "移送")
    with pytest.raises(Conflict):
        requests.approve(st, chief, pending.id)
    last = _audit(w, "view-refused")[-1][3]
    assert last["details"]["rule"] == "the recording is purged"


def test_officer_views_own_recording_without_request_but_never_copies(station_world, tmp_path):
    w = station_world
    w.dock_device("dev", {"r1": 1}, officer=OFFICER_NO)       # recorded by wang (031337)
    st, rec = w.st, _recording(w)
    wang, li = w.user("wang"), w.user("li")
    assert rec.officer_id == wang.officer_no and st.cfg.access.officer_views_own
    v = viewer.view(st, wang, rec.id)
    assert v.access.granted and v.access.request_id is None and v.access.approver is None
    assert "officer_views_own" in v.access.reason
    with pytest.raises(NotAllowed):
        viewer.view(st, li, rec.id, "同事的记录")            # another officer's recording
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NotAllowed):
        viewer.copy(st, wang, rec.id, out, "留存")           # never copy without approval
    assert list(out.iterdir()) == []
    # switched off in the configuration: the owner needs an approval like anyone
    strict = Station(st.cfg.with_overrides("access", officer_views_own=False), st.db, st.signer, w.clock)
    with pytest.raises(NotAllowed):
        authorize(strict, wang, rec.id, "view", "复看")
    with st.db.session() as s:
        rows = s.scalars(select(m.Access).order_by(m.Access.id)).all()
    assert [(x.username, x.action, x.granted) for x in rows] == [
        ("wang", "view", True), ("li", "view", False), ("wang", "copy", False), ("wang", "view", False)]
    # the CLI agrees (a disabled account is refused before any check: see test_station_accounts)
    r = w.cli("view", rec.name, user="wang")
    assert r.returncode == 0 and r.stdout.split() == [str(g.path) for g in v.segments]
    assert w.cli("view", rec.name, user="li").returncode == 3


def test_a_damaged_original_is_refused_with_an_integrity_alert(sqlite_station_world, tmp_path):
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 2})
    st, rec = w.st, _recording(w)
    wang = w.user("wang")
    assert len(viewer.view(st, wang, rec.id).segments) == 2
    with st.db.session() as s:
        seg = s.scalars(select(m.Segment).where(m.Segment.recording == rec.id, m.Segment.index == 1)).one()
    path = st.store / "devices" / rec.device_id / "mirror" / seg.path
    path.chmod(0o644)
    with open(path, "r+b") as f:          # flip the bits of four bytes (whatever they were)
        f.seek(1000)
        flipped = bytes(b ^ 0xFF for b in f.read(4))
        f.seek(1000)
        f.write(flipped)
    r = w.cli("view", str(rec.id), user="wang")
    assert r.returncode == 1 and "segment 1" in r.stderr and r.stdout == ""
    alert = _audit(w, "integrity-alert")
    assert len(alert) == 1 and alert[0][3]["details"]["segment"] == 1
    assert alert[0][3]["details"]["expected_sha256"] == seg.sha256
    # a copy of it is refused the same way and leaves nothing behind
    chief, clerk = w.user("chief"), w.user("clerk")
    requests.approve(st, chief, requests.request_access(st, clerk, rec.id, "copy", "移送").id)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(viewer.EvidenceDamaged):
        viewer.copy(st, clerk, rec.id, out, "移送")
    assert list(out.iterdir()) == [] and len(_audit(w, "integrity-alert")) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_during_a_copy_is_exit_7_and_leaves_no_half_file(sqlite_station_world, tmp_path):
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 3})
    rec = _recording(w)
    assert rec.bytes and rec.bytes > 3 * 4096
    req = requests.request_access(w.st, w.user("clerk"), rec.id, "copy", "移送")
    w.cli_json("access", "approve", str(req.id), user="chief")
    # room for about half of it
    size_kb = max(8, (rec.bytes // 2) // 1024)
    with tmpfs(tmp_path / "usb", f"size={size_kb}k") as usb:
        r = w.cli("copy", str(rec.id), "--to", str(usb), "--reason", "移送", user="clerk")
        assert r.returncode == 7, r.stderr
        assert "disk is full" in r.stderr and "nothing was left behind" in r.stderr
        assert [p for p in usb.rglob("*")] == []                 # no half file, no staging directory
    failed = _audit(w, "copy-failed")
    assert len(failed) == 1 and failed[0][3]["details"]["written"] > 0
    assert "No space left" in failed[0][3]["details"]["error"]
    # with room, the same grant copies it
    with tmpfs(tmp_path / "usb2", f"size={rec.bytes // 1024 + 64}k") as usb:
        done = viewer.copy(w.st, w.user("clerk"), rec.id, usb, "移送")
        assert done.bytes == rec.bytes and (usb / rec.name / "manifest.json").is_file()
