"""Stations pushing to the agency store (station.sync) — a real SeaweedFS and real dockings.

Order matters at the end of the file: the catch-up test stops the session's weed server
and starts it again (same ports, same data).
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from recorder.identity import device_id_for_pem
from station import config as station_config
from station.access.requests import approve, request_access
from station.app import Station
from station.audit.integrity import verify_station
from station.casework.cases import close_case, open_case
from station.casework.labels import LabelInput, label_recording
from station.clock import NS_PER_DAY, NS_PER_HOUR
from station.db import models as m
from station.dock import offline, spool
from station.dock.ingest import Docking
from station.keeping import holds
from station.recordings import find_recording
from station.storage import StoreRefused, open_store
from station.sync import file_key, sync, verify_from_store
from tests.agency_world import another_station, join_agency
from tests.pg import PgCluster
from tests.seaweed import BUCKET, s3_client, weed_server  # noqa: F401
from tests.station_fixture import StationWorld, make_station_world, sqlite_station_world  # noqa: F401

S = 1_000_000_000


def _recordings(st: Station) -> dict[str, m.Recording]:
    with st.db.session() as s:
        rows = s.scalars(select(m.Recording).order_by(m.Recording.id))
        return {f"{r.device_id[:6]}/{r.recording_id}": r for r in rows}


def _objects(st: Station) -> list[m.AgencyObject]:
    with st.db.session() as s:
        return list(s.scalars(select(m.AgencyObject).order_by(m.AgencyObject.key)))


def _one_version_each(client, st: Station, objs: list[m.AgencyObject]) -> None:
    for o in objs:
        key = st.cfg.agency.prefix + o.key
        v = client.list_object_versions(Bucket=BUCKET, Prefix=key)
        assert len([x for x in v.get("Versions", []) if x["Key"] == key]) == 1, key


def _all_verify(st: Station, tmp: Path) -> None:
    store = open_store(st.cfg)
    for rec in _recordings(st).values():
        res = verify_from_store(st, store, rec.id, tmp / f"v{rec.id}")
        assert res.ok, (rec.id, res.failure)


@pytest.mark.parametrize("table, needle", [
    ({"kind": "s4"}, "[agency] kind"),
    ({"kind": "s3"}, "endpoint_url"),
    ({"kind": "s3", "endpoint_url": "http://store:8333"}, "access_key"),
    ({"kind": "s3", "endpoint_url": "http://store:8333", "access_key": "K", "prefix": "/x"}, "prefix"),
    ({"connect_timeout_s": 0}, "connect_timeout_s"),
    ({"bucket": ""}, "bucket"),
])
def test_bad_agency_settings_are_named(tmp_path, table, needle):
    body = '[station]\nunit = "单位"\nstore_dir = "/srv/x"\n[agency]\n' + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    path = tmp_path / "station.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(station_config.StationConfigError, match=re.escape(needle)):
        station_config.load(path)


def test_sync_on_a_local_only_station_says_so(sqlite_station_world):
    r = sqlite_station_world.cli("sync", "--json")
    assert r.returncode == 2 and "[agency] kind is local" in r.stderr


def test_docked_evidence_and_the_audit_journal_reach_the_store_once_and_verify(sqlite_station_world, weed_server,
                                                                            tmp_path):
    w = sqlite_station_world
    st = join_agency(w, weed_server)
    w.dock_device("dev", {"r1": 2, "r2": 1})
    report = sync(st)
    assert report.ok and report.unavailable is None, report.to_dict()
    objs = _objects(st)
    kinds = sorted({o.kind for o in objs})
    assert kinds == ["audit", "file", "journal"]
    recs = _recordings(st)
    files = [o for o in objs if o.kind == "file"]
    assert len(files) == 3 and all(o.recording in {r.id for r in recs.values()} for o in files)
    # COMPLIANCE until the recording's retention end (from the catalogue, not the station's clock)
    store = open_store(st.cfg)
    for o in files:
        head = store.head(o.key)
        rec = next(r for r in recs.values() if r.id == o.recording)
        assert head is not None and head.sha256 == o.sha256 and not head.legal_hold
        assert rec.retention_end_ns is not None and 0 <= head.retain_until_ns - rec.retention_end_ns < S
    _all_verify(st, tmp_path)
    # the audit journal: every line up to the sync, in order, byte for byte
    audit = [o for o in objs if o.kind == "audit"]
    text = b"".join(store.read(o.key) for o in sorted(audit, key=lambda o: o.key)).decode("ascii")
    with st.db.session() as s:
        lines = [e.line for e in s.scalars(select(m.AuditEntry).where(m.AuditEntry.station == st.name)
                                           .order_by(m.AuditEntry.seq))]
    assert text.splitlines() == [ln.rstrip("\n") for ln in lines]
    # again: nothing new to write, nothing written twice
    again = sync(st)
    assert again.ok and again.pushed == 0 and again.already == 0 and again.audit_lines == 0
    client = s3_client(weed_server)
    _one_version_each(client, st, objs)
    # the command: --json, exit 0, and reading a recording back from the store
    rid = recs[next(iter(recs))].id
    r = w.cli("sync", "--json", "--verify", str(rid))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["verified"] == [{"recording": rid, "ok": True, "failure": None}]


def test_holds_cases_and_purges_follow_into_the_store(sqlite_station_world, weed_server, tmp_path):
    w = sqlite_station_world
    st = join_agency(w, weed_server)
    w.dock_device("dev", {"r1": 1, "r2": 1})
    assert sync(st).ok
    recs = _recordings(st)
    r1, r2 = (next(r for r in recs.values() if r.recording_id == x) for x in ("r1", "r2"))
    store = open_store(st.cfg)
    k1 = next(o.key for o in _objects(st) if o.recording == r1.id)
    k2 = next(o.key for o in _objects(st) if o.recording == r2.id)
    before = store.head(k1).retain_until_ns
    # S6 hold -> legal hold; released -> off
    hold = holds.place(st, w.user("clerk"), r2.id, "complaint", reason="当事人投诉")
    rep = sync(st)
    assert rep.holds_changed == 1 and store.head(k2).legal_hold
    holds.release(st, w.user("chief"), hold.id, reason="投诉已处理")
    assert sync(st).holds_changed == 1 and not store.head(k2).legal_hold
    # joins a case: open case -> legal hold (end unknown); closed -> retention extended to the case's end
    clerk = w.user("clerk")
    open_case(st, clerk, "CASE-15", "占道经营", "行政处罚", "市容科")
    label_recording(st, clerk, "r1", LabelInput(case_no="CASE-15", counterpart="某店", content="检查",
                                                 place="湖滨南路"))
    assert sync(st).holds_changed == 1 and store.head(k1).legal_hold
    w.clock.advance(30 * NS_PER_DAY)
    close_case(st, clerk, "CASE-15")
    rep = sync(st)
    head = store.head(k1)
    assert rep.extended >= 1 and not head.legal_hold and head.retain_until_ns > before
    with st.db.session() as s:
        assert abs(head.retain_until_ns - s.get(m.Recording, r1.id).retention_end_ns) < S
    # a station whose clock is years ahead purges locally (S11)... the store refuses: its clock rules
    w.clock.advance(2 * 365 * NS_PER_DAY)
    from station.keeping import purge
    done = purge.purge(st, w.user("admin"), [str(r2.id)], reason="保存期限届满")
    assert [o.recording for o in done] == [r2.id]
    rep = sync(st)
    assert rep.deleted == 0 and [x["key"] for x in rep.refused] == [k2]
    assert store.read(k2) and store.head(k2).retain_until_ns == store.head(k2).retain_until_ns
    with st.db.session() as s:
        events = [e.type for e in s.scalars(select(m.AuditEntry).where(m.AuditEntry.type == "agency-sync"))]
    assert events


def test_a_station_with_its_clock_hours_off_cannot_shorten_a_retention(sqlite_station_world, weed_server):
    w = sqlite_station_world
    st = join_agency(w, weed_server)
    w.dock_device("dev", {"r1": 1})
    w.clock.advance(11 * NS_PER_HOUR)               # the station's clock runs eleven hours ahead
    assert sync(st).ok
    rec = next(iter(_recordings(st).values()))
    store = open_store(st.cfg)
    key = next(o.key for o in _objects(st) if o.recording == rec.id)
    head = store.head(key)
    assert 0 <= head.retain_until_ns - rec.retention_end_ns < S      # the catalogue's end, not clock + period
    assert store.extend_retention(key, head.retain_until_ns - NS_PER_DAY).retain_until_ns == head.retain_until_ns
    with pytest.raises(StoreRefused):
        store.delete(key)


def test_the_same_recording_with_other_bytes_is_refused_and_alerted(sqlite_station_world, weed_server):
    w = sqlite_station_world
    st = join_agency(w, weed_server)
    w.dock_device("dev", {"r1": 1})
    rec = next(iter(_recordings(st).values()))
    with st.db.session() as s:
        seg = s.scalars(select(m.Segment).where(m.Segment.recording == rec.id)).one()
    key = file_key(rec.device_id, seg.path)
    s3_client(weed_server).put_object(Bucket=BUCKET, Key=st.cfg.agency.prefix + key, Body=b"not the recording",
                                      Metadata={"sha256": "0" * 64})
    r = w.cli("sync", "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert [c["key"] for c in out["conflicts"]] == [key]
    with st.db.session() as s:
        alerts = list(s.scalars(select(m.AuditEntry).where(m.AuditEntry.type == "integrity-alert")))
    assert alerts and key in alerts[-1].line
    assert sync(st).conflicts == []      # alerted once; the conflict is remembered, not re-pushed


def test_without_the_agency_credentials_sync_is_refused(sqlite_station_world, weed_server):
    w = sqlite_station_world
    join_agency(w, weed_server, access_key="NOTAGENCYKEY")
    r = w.cli("sync", "--json")
    assert r.returncode == 3 and "credentials" in r.stderr
    with w.st.db.session() as s:
        assert s.scalar(select(m.AgencyObject.key)) is None


def test_two_stations_ingest_concurrently_into_one_catalogue_and_share_it(pg_cluster, weed_server, tmp_path):
    url = pg_cluster.create_database()
    w1 = make_station_world(tmp_path / "s1", url, "postgresql")
    w2 = another_station(tmp_path / "s2", url, w1)
    try:
        prefix = f"t-{uuid.uuid4().hex[:12]}/"
        st1, st2 = join_agency(w1, weed_server, prefix=prefix), join_agency(w2, weed_server, prefix=prefix)
        w1.record("a", {"r1": 1, "r2": 1})
        w2.record("b", {"r1": 1}, officer="042042")
        errors: list[BaseException] = []

        def dock(world: StationWorld, name: str) -> None:
            try:
                world.dock_device(name)
                assert sync(world.st).ok
            except BaseException as exc:      # reported below
                errors.append(exc)
        threads = [threading.Thread(target=dock, args=a) for a in ((w1, "a"), (w2, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        with st2.db.session() as s:
            recs = list(s.scalars(select(m.Recording).order_by(m.Recording.id)))
            assert sorted((r.station, r.recording_id) for r in recs) == [("station-1", "r1"), ("station-1", "r2"),
                                                                          ("station-2", "r1")]
            # station 2's users find station 1's recordings and ask for them, audited at station 2
            first = next(r for r in recs if r.station == "station-1")
            elsewhere = find_recording(s, f"{first.device_id}/{first.recording_id}")
        req = request_access(st2, w2.user("li"), elsewhere.id, "view", "复核执法过程")
        approve(st2, w2.user("chief"), req.id)
        with st2.db.session() as s:
            entry = s.scalars(select(m.AuditEntry).where(m.AuditEntry.type == "access-request")).one()
            assert entry.station == "station-2" and entry.subject == f"recording:{elsewhere.id}"
        # and read it back from the agency store, though station 2 never had it locally
        assert not (w2.cfg.store / "devices" / elsewhere.device_id).exists()
        res = verify_from_store(st2, open_store(st2.cfg), elsewhere.id, tmp_path / "v")
        assert res.ok, res.failure
        assert {o.station for o in _objects(st1)} == {"station-1", "station-2"}
    finally:
        w1.st.close()
        w2.st.close()


# ---- the shared catalogue away: dockings spooled, receipted, replayed once and in order ---------------------
def _dock_any(w: StationWorld, name: str, recordings: dict[str, int] | None = None):
    """Dock ``name`` as `station dock` does: the station is opened even with the catalogue away."""
    if recordings is not None:
        w.record(name, recordings)
    with w.link(name) as port:
        cfg = station_config.load(w.config_path, device_address="127.0.0.1", port=port)
        st = offline.open_station(cfg, w.clock)
        try:
            return Docking(st, progress=False).run()
        finally:
            st.close()


def _dock_cli(w: StationWorld, dev, cert: Path, name: str) -> subprocess.CompletedProcess[str]:
    """``station dock`` as the dock service runs it, against ``dev``'s link (certificate ``cert``)."""
    link = w.dock.start_link(dev, cert_file=str(cert), crl_file=str(w.dock.base / f"{name}-crl.pem"))
    try:
        return w.cli("dock", "--device-address", "127.0.0.1", "--port", str(link.address[1]), timeout=300)
    finally:
        link.stop()


def _on_device(dev) -> set[str]:
    return {p.relative_to(dev.root).as_posix() for p in dev.root.rglob("*.ts")}


def test_with_the_catalogue_away_dockings_are_spooled_then_replayed_once_in_order(weed_server, tmp_path,
                                                                                  monkeypatch):
    cluster = PgCluster()          # its own server: this test stops it
    try:
        w = make_station_world(tmp_path / "s1", cluster.create_database(), "postgresql")
        join_agency(w, weed_server)
        for name in ("a", "b"):                     # both known here while the catalogue answered
            first = _dock_any(w, name, {"r1": 1})
            assert first.status == "ok", first.detail
        w.record("never", {"r1": 1})                 # registered, never docked at this station
        a_id, b_id = (device_id_for_pem(w.devices[n].pem) for n in ("a", "b"))
        w.record("a", {"r2": 2})
        w.record("b", {"r3": 1})
        w.st.close()
        # "fast", not "immediate": this throwaway cluster runs synchronous_commit=off (tests/pg.py), so an
        # immediate stop may lose the last commits, which no production server would
        cluster.stop("fast")
        try:
            a1 = _dock_any(w, "a")
            w.record("a", {"r4": 1})
            a2 = _dock_any(w, "a")                   # twice: its anchor is the mirror's head, not the catalogue's
            b1 = _dock_any(w, "b")
            for rep in (a1, a2, b1):                 # verified, kept, spooled, receipted: the devices purged
                assert (rep.status, rep.docking_id, rep.receipt_refused) == ("ok", 0, None), rep.detail
                assert len(rep.spooled) == 3 and rep.purged
            assert a2.head[0] > a1.head[0] and _on_device(w.devices["a"]) == _on_device(w.devices["b"]) == set()
            with pytest.raises(offline.CatalogueUnreachable, match="never docked at this station"):
                _dock_any(w, "never")               # its key is not known here: refused, nothing read
            assert _on_device(w.devices["never"])
            # what a clerk sees without the catalogue; sync says it is unavailable
            r = w.cli("spool", "--json")
            assert r.returncode == 0, r.stderr
            assert [(x["kind"], x["device"], x["ended"]) for x in json.loads(r.stdout)["waiting"]] == [
                ("ingest", a_id, True), ("ingest", a_id, True), ("ingest", b_id, True)]
            assert "等待补录进目录的离线入库 3 条" in w.cli("spool").stdout
            r = w.cli("sync", "--json")
            assert r.returncode == 7, r.stderr
        finally:
            cluster.start()
        # the replay killed (-9) right after its first docking committed, before it marked it done
        env = {**w.env(), "BODYCAM_CRASHPOINT": "spool-replayed:1"}
        r = subprocess.run([sys.executable, "-m", "station", "sync", "--json"], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == -signal.SIGKILL, r.stderr
        st = w.reopen()
        with st.db.session() as s:
            assert s.scalar(select(func.count()).where(m.Docking.spool_ref.is_not(None))) == 1
        r = w.cli("sync", "--json", timeout=300)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["spool"] == {"replayed": 2, "already": 1, "waiting": 0, "blocked": None} and out["ok"]
        assert out["pushed"] > 0                     # then the normal push to the agency store
        st = w.reopen()
        with st.db.session() as s:
            docks = [(d.device_id, d.status, d.spool_ref is not None, d.head_seq)
                     for d in s.scalars(select(m.Docking).order_by(m.Docking.id))]
            recs = sorted((r.device_id, r.recording_id, r.segments) for r in s.scalars(select(m.Recording)))
            receipts = {d.id: n for d, n in s.execute(
                select(m.Docking, func.count(m.Receipt.id)).join(m.Receipt, m.Receipt.docking_id == m.Docking.id)
                .group_by(m.Docking.id))}
            replayed = [e.line for e in s.scalars(select(m.AuditEntry).where(m.AuditEntry.type == "ingest"))
                        if '"spooled"' in e.line]
        # in order, once each: the spooled dockings after the online ones, a's two in journal order
        assert [d[:3] for d in docks] == [(a_id, "ok", False), (b_id, "ok", False), (a_id, "ok", True),
                                          (a_id, "ok", True), (b_id, "ok", True)]
        assert docks[2][3] == a1.head[0] and docks[3][3] == a2.head[0] and docks[4][3] == b1.head[0]
        assert recs == sorted([(a_id, "r1", 1), (a_id, "r2", 2), (a_id, "r4", 1), (b_id, "r1", 1), (b_id, "r3", 1)])
        assert len(receipts) == 5 and len(replayed) == 3
        report = verify_station(st, files=True)
        assert report.ok, report.to_dict()
        assert spool.waiting(st.store) == [] and "没有等待补录的离线入库" in w.cli("spool").stdout
        _all_verify(st, tmp_path)                    # and every recording verifies from the agency store
        again = sync(st)
        assert again.spool == {"replayed": 0, "already": 0, "waiting": 0, "blocked": None} and again.pushed == 0
        # the catalogue back: the next docking is an ordinary one, anchored on the replayed head
        nxt = _dock_any(w, "a", {"r5": 1})
        assert nxt.status == "ok" and nxt.docking_id > 0 and not nxt.spooled
        # the catalogue lost in the middle of a docking (checked in, files verified and kept): it goes on,
        # spooled and receipted; the replay closes the half-written ledger row as interrupted
        real_commit = Docking._commit

        def commit_then_lose_the_catalogue(cand, mirror, partial):
            real_commit(cand, mirror, partial)
            cluster.stop("fast")
        monkeypatch.setattr(Docking, "_commit", staticmethod(commit_then_lose_the_catalogue))
        try:
            mid = _dock_any(w, "b", {"r6": 1})
        finally:
            monkeypatch.undo()
            cluster.start()
        assert (mid.status, mid.receipt_refused) == ("ok", None) and mid.docking_id > 0 and mid.spooled, mid.detail
        assert mid.purged and not _on_device(w.devices["b"])
        st = w.reopen()
        assert sync(st).spool == {"replayed": 1, "already": 0, "waiting": 0, "blocked": None}
        with st.db.session() as s:
            last = [(d.id, d.status, d.spool_ref is not None) for d in s.scalars(
                select(m.Docking).where(m.Docking.device_id == b_id).order_by(m.Docking.id))][-2:]
            assert s.scalar(select(func.count()).select_from(m.Recording).where(m.Recording.recording_id == "r6")) == 1
        assert [x[1:] for x in last] == [("interrupted", False), ("ok", True)] and last[0][0] == mid.docking_id
        assert verify_station(st, files=True).ok
        w.st.close()
    finally:
        cluster.destroy()


def test_a_docking_killed_between_its_spool_record_and_its_receipt_loses_nothing(weed_server, tmp_path):
    cluster = PgCluster()
    try:
        w = make_station_world(tmp_path / "s1", cluster.create_database(), "postgresql")
        join_agency(w, weed_server)
        assert _dock_any(w, "a", {"r1": 1}).status == "ok"
        a_id = device_id_for_pem(w.devices["a"].pem)
        # r1 purged (S11) after a's last docking here: its cached tombstones do not know it yet
        w.clock.advance(2 * 365 * NS_PER_DAY)
        from station.keeping import purge
        r1 = next(iter(_recordings(w.st).values()))
        assert [o.recording for o in purge.purge(w.st, w.user("admin"), [str(r1.id)], reason="保存期限届满")] == [r1.id]
        w.record("a", {"r2": 1})
        w.st.close()
        cluster.stop("fast")
        try:
            dev = w.devices["a"]
            link = w.dock.start_link(dev, cert_file=str(w.dock.base / "a-cert.pem"),
                                     crl_file=str(w.dock.base / "a-crl.pem"))
            try:
                env = {**w.env(), "BODYCAM_CRASHPOINT": "dock-spooled:1"}
                r = subprocess.run([sys.executable, "-m", "station", "dock", "--device-address", "127.0.0.1",
                                    "--port", str(link.address[1])], env=env, capture_output=True, text=True,
                                   timeout=300)
            finally:
                link.stop()
            assert r.returncode == -signal.SIGKILL, r.stderr
            assert _on_device(dev)                     # spooled, but no receipt: the device purged nothing
            again = _dock_any(w, "a")                   # the next docking, still without the catalogue
            # r1, purged here after a's last online docking, is not asked for again nor missed: the offline
            # anchor (the mirror's head) is past it
            assert again.status == "ok" and again.spooled and again.purged and not _on_device(dev)
            # `station dock` says so, exits 0 (the device has its receipt) and leaves the sync for later
            w.record("a", {"r3": 1})
            r = _dock_cli(w, dev, w.dock.base / "a-cert.pem", "a")
            assert r.returncode == 0, r.stderr
            out = json.loads(r.stdout)
            assert out["status"] == "ok" and out["docking"] == 0 and out["spooled"] and out["purged"] == 1
            assert "目录数据库不可用" in r.stderr and "synced" not in r.stderr
        finally:
            cluster.start()
        st = w.reopen()
        rep = sync(st)
        assert rep.ok and rep.spool == {"replayed": 3, "already": 0, "waiting": 0, "blocked": None}, rep.to_dict()
        with st.db.session() as s:
            docks = [(d.status, d.spool_ref is not None, d.detail) for d in s.scalars(
                select(m.Docking).order_by(m.Docking.id))]
            recs = sorted((r.device_id, r.recording_id, r.status) for r in s.scalars(select(m.Recording)))
            quarantined = s.scalar(select(func.count()).select_from(m.QuarantinedFile))
        assert [d[:2] for d in docks] == [("ok", False), ("ok", True), ("ok", True), ("ok", True)]
        assert "before its check-out" in docks[1][2] and quarantined == 0
        assert recs == [(a_id, "r1", "purged"), (a_id, "r2", "stored"), (a_id, "r3", "stored")]
        assert verify_station(st, files=True).ok
        r2 = next(r for r in _recordings(st).values() if r.recording_id == "r2")
        assert verify_from_store(st, open_store(st.cfg), r2.id, tmp_path / "v").ok
        st.close()
    finally:
        cluster.destroy()


def test_a_partial_docking_spooled_offline_replays_its_quarantined_file(weed_server, tmp_path):
    """A segment damaged on the device while the catalogue is away: the docking is partial, the intact
    files are receipted and purged, the damaged one stays on the device; the replay writes the same
    quarantine row and the partial ledger row a live docking would, and the station verifies."""
    from tests.test_dock_partial import flip_byte
    cluster = PgCluster()
    try:
        w = make_station_world(tmp_path / "s1", cluster.create_database(), "postgresql")
        join_agency(w, weed_server)
        assert _dock_any(w, "a", {"r1": 1}).status == "ok"
        w.record("a", {"r2": 2})
        dev, a_id = w.devices["a"], device_id_for_pem(w.devices["a"].pem)
        damaged = "recordings/r2/r2_00001.ts"
        flip_byte(dev.root / damaged)
        w.st.close()
        cluster.stop("fast")
        try:
            rep = _dock_any(w, "a")
            assert (rep.status, rep.docking_id, rep.receipt_refused) == ("partial", 0, None), rep.detail
            assert rep.spooled and sorted(rep.purged) == ["recordings/r2/r2_00000.ts"]
            assert _on_device(dev) == {damaged}                  # kept on the device, fetched again next time
        finally:
            cluster.start()
        st = w.reopen()
        assert sync(st).spool == {"replayed": 1, "already": 0, "waiting": 0, "blocked": None}
        with st.db.session() as s:
            [dock] = s.scalars(select(m.Docking).where(m.Docking.spool_ref.is_not(None))).all()
            quarantined = [(q.device_id, q.docking_id, q.path, q.reason)
                           for q in s.scalars(select(m.QuarantinedFile))]
        assert (dock.device_id, dock.status) == (a_id, "partial")
        assert quarantined == [(a_id, dock.id, damaged, "SegmentHashMismatch")]
        assert verify_station(st, files=True).ok
        w.st.close()
    finally:
        cluster.destroy()


def test_a_spool_that_does_not_hold_together_is_refused_and_nothing_is_replayed(sqlite_station_world):
    w = sqlite_station_world
    rep = w.dock_device("dev", {"r1": 1})
    st = w.st

    def dockings() -> int:
        with st.db.session() as s:
            return s.scalar(select(func.count()).select_from(m.Docking))
    before = dockings()
    # a spooled docking whose head the verified mirror does not hold
    spool.append(st, spool.INGEST, {"device": rep.device_id, "head_seq": rep.head[0], "head_hash": "0" * 64,
                                    "damaged": [], "files_new": 0, "bytes_new": 0})
    r = w.cli("sync", "--json")
    assert r.returncode == 6 and "no longer holds the spooled head" in r.stderr, r.stderr
    assert dockings() == before
    waiting = json.loads(w.cli("spool", "--json").stdout)["waiting"]
    assert [(x["kind"], x["device"], x["ended"]) for x in waiting] == [("ingest", rep.device_id, False)]
    # a spool changed by hand no longer verifies: nothing is replayed from it
    path = st.store / "spool" / "journal.log"
    path.write_text(path.read_text(encoding="ascii").replace("0" * 64, "1" * 64), encoding="ascii")
    r = w.cli("sync", "--json")
    assert r.returncode == 6 and "does not verify" in r.stderr, r.stderr
    assert dockings() == before
    # and it never blocks a docking (this station has no agency store: it docks into its catalogue)
    assert w.dock_device("dev", {"r2": 1}).status == "ok" and dockings() == before + 1


def test_a_docking_syncs_to_the_agency_store_right_after_its_receipt(sqlite_station_world, weed_server):
    w = sqlite_station_world
    join_agency(w, weed_server)
    w.record("dev", {"r1": 2})
    dev = w.devices["dev"]
    r = _dock_cli(w, dev, w.dock.device_cert(dev.pem, "dev"), "dev")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "ok" and "synced to the agency store" in r.stderr
    assert not _on_device(dev)                        # receipted first
    objs = _objects(w.reopen())
    assert sorted({o.kind for o in objs}) == ["audit", "file", "journal"]
    assert len([o for o in objs if o.kind == "file"]) == 2
    # a store that does not answer never fails the docking: logged, left for the timer
    w.record("dev", {"r2": 1})
    with open(w.config_path, encoding="utf-8") as f:
        text = f.read()
    from tests.seaweed import free_ports
    w.config_path.write_text(text.replace(weed_server.s3_url, f"http://127.0.0.1:{free_ports(1)[0]}"),
                             encoding="utf-8")
    r = _dock_cli(w, dev, w.dock.base / "dev-cert.pem", "dev")
    assert r.returncode == 0, r.stderr
    assert "the sync after the docking did not finish" in r.stderr and not _on_device(dev)
    w.config_path.write_text(text, encoding="utf-8")
    rep = sync(w.reopen())
    assert rep.ok and len([o for o in _objects(w.st) if o.kind == "file"]) == 3


# ---- last: takes the store away and brings it back ----------------------------------------------------------
def test_the_station_keeps_ingesting_while_the_store_is_down_and_catches_up(sqlite_station_world, weed_server,
                                                                          tmp_path):
    w = sqlite_station_world
    st = join_agency(w, weed_server)
    w.dock_device("dev", {"r1": 1})
    assert sync(st).ok
    pushed_before = {o.key for o in _objects(st)}
    weed_server.stop()
    try:
        w.dock_device("dev", {"r2": 2})             # ingest does not need the store
        w.dock_device("other", {"r9": 1})
        r = w.cli("sync", "--json", timeout=180)
        assert r.returncode == 7, r.stderr
        assert json.loads(r.stdout)["unavailable"]
        assert {o.key for o in _objects(st)} == pushed_before      # nothing claimed that is not there
    finally:
        weed_server.start()
    rep = sync(st)
    assert rep.ok, rep.to_dict()
    objs = _objects(st)
    assert len([o for o in objs if o.kind == "file"]) == 4
    _all_verify(st, tmp_path)
    assert sync(st).pushed == 0
    client = s3_client(weed_server)
    _one_version_each(client, st, objs)
    # the audit journal in the store has every line, in order, no gap, no repeat
    seqs: list[int] = []
    for o in sorted((o for o in objs if o.kind == "audit"), key=lambda o: o.key):
        seqs += [json.loads(line.split("\t")[0])["seq"]
                 for line in open_store(st.cfg).read(o.key).decode().splitlines()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[0] in (0, 1)
