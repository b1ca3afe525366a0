"""Ingest, concurrent and under faults (issue 12): a rack of devices docking at once into one
station, a ``kill -9`` at each dangerous point of a docking, a PostgreSQL server that goes
away mid-ingest, and the systemd/udev units that run one docking per USB link.

Every docking here is the real one: ``station dock`` processes (or ``Docking`` in-process)
over the real TLS link of simulated devices that recorded real segments.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from recorder import receipt
from recorder.identity import device_id_for_pem
from recorder.journal import JOURNAL_NAME, iter_records
from station import config as station_config
from station.app import Station
from station.audit.integrity import verify_station
from station.db import models as m
from station.dock.ingest import Docking
from tests.pg import PgCluster
from tests.station_fixture import make_station_world, sqlite_station_world, station_world  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "station"


def _redock(w, name: str):
    """Dock ``name`` again in-process (its certificate exists already)."""
    with w.link(name) as port:
        cfg = station_config.load(w.config_path, device_address="127.0.0.1", port=port)
        return Docking(Station.open(cfg, w.clock), progress=False).run()


def _dock_process(w, link, env_extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``station dock`` for the device behind ``link``, as station-dock@.service runs it."""
    env = w.env()
    env.pop("BODYCAM_CRASHPOINT", None)
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "station", "dock", "--device-address", "127.0.0.1",
                             "--port", str(link.address[1])], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _segments_on_device(dev) -> set[str]:
    return {p.relative_to(dev.root).as_posix() for p in dev.root.rglob("*.ts")}


def _purged_on_device(dev) -> set[str]:
    return {f["path"] for r in iter_records(dev.root / JOURNAL_NAME) if r.type == receipt.PURGE
            for f in r.payload["files"]}


def _catalogue(st: Station) -> dict[tuple[str, str], list[int]]:
    """(device, recording) -> segment indexes present, from the catalogue."""
    out: dict[tuple[str, str], list[int]] = {}
    with st.db.session() as s:
        for seg, rec in s.execute(select(m.Segment, m.Recording).join(m.Recording,
                                                                       m.Segment.recording == m.Recording.id)):
            if seg.present:
                out.setdefault((rec.device_id, rec.recording_id), []).append(seg.index)
    return {k: sorted(v) for k, v in out.items()}


def _dockings(st: Station) -> list[tuple[str, str, str | None]]:
    with st.db.session() as s:
        return [(d.device_id, d.status, d.detail) for d in s.scalars(select(m.Docking).order_by(m.Docking.id))]


# ---- a rack: several devices at once, one of them failing ------------------------------------
def test_a_rack_of_devices_docks_at_once_and_a_failing_one_blocks_no_other(station_world):
    w = station_world
    names = ["rack0", "rack1", "rack2", "rack3"]
    for k, name in enumerate(names):
        w.record(name, {f"{name}-r1": 2, f"{name}-r2": 1} if k != 1 else {f"{name}-r1": 1})
    # rack3's journal is tampered with on the device: one signed record altered
    journal = w.devices["rack3"].root / JOURNAL_NAME
    data = journal.read_bytes()
    assert data.count(b'"firmware":"test"') == 1
    journal.write_bytes(data.replace(b'"firmware":"test"', b'"firmware":"tesx"'))
    links = [w.start_link(n) for n in names]
    try:
        procs = [_dock_process(w, link) for link in links]      # all four at once
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for link in links:
            link.stop()
    codes = [p.returncode for p in procs]
    assert codes == [0, 0, 0, 1], outs                           # 1: quarantined, nothing stored
    summaries = [json.loads(out.splitlines()[-1]) for out, _ in outs]
    assert [s["status"] for s in summaries] == ["ok", "ok", "ok", "quarantined"]
    assert "BadSignature" in summaries[3]["detail"]
    st = w.reopen()
    ids = {n: device_id_for_pem(w.devices[n].pem) for n in names}
    assert _catalogue(st) == {(ids["rack0"], "rack0-r1"): [0, 1], (ids["rack0"], "rack0-r2"): [0],
                              (ids["rack1"], "rack1-r1"): [0],
                              (ids["rack2"], "rack2-r1"): [0, 1], (ids["rack2"], "rack2-r2"): [0]}
    # each docking is its own ledger row, each ingest one audited action (one transaction)
    assert sorted((d, s) for d, s, _ in _dockings(st)) == sorted(
        [(ids["rack0"], "ok"), (ids["rack1"], "ok"), (ids["rack2"], "ok"), (ids["rack3"], "quarantined")])
    with st.db.session() as s:
        ingests = s.scalars(select(m.AuditEntry).where(m.AuditEntry.type == "ingest")).all()
    assert len(ingests) == 3
    report = verify_station(st, files=True)
    assert report.ok and report.files_checked == 7, report.to_dict()
    # the good devices purged what was receipted; the tampered one keeps everything
    for n in names[:3]:
        assert _segments_on_device(w.devices[n]) == set()
    assert len(_segments_on_device(w.devices["rack3"])) == 3 and not _purged_on_device(w.devices["rack3"])


# ---- kill -9 in the middle of an ingest --------------------------------------------------------
CRASH_POINTS = ["dock-fetched", "dock-mirror-swapped", "dock-committed", "dock-catalogued", "dock-receipted"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_9_mid_ingest_loses_nothing_and_the_next_docking_completes(sqlite_station_world, point):
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 2})                       # an earlier docking: a mirror exists
    dev = w.record("dev", {"r2": 2, "r3": 1})
    device_id = device_id_for_pem(dev.pem)
    new = _segments_on_device(dev)
    assert len(new) == 3
    link = w.start_link("dev")
    try:
        p = _dock_process(w, link, {"BODYCAM_CRASHPOINT": f"{point}:1"})
        out, err = p.communicate(timeout=120)
    finally:
        link.stop()
    assert p.returncode == -signal.SIGKILL, (out, err)
    st = w.reopen()
    # nothing lost: whatever the device purged (only after a receipt) is stored and catalogued
    on_device, purged = _segments_on_device(dev), _purged_on_device(dev)
    if point == "dock-receipted":
        assert purged >= new and on_device == set()
    else:
        assert on_device == new and purged == {p for p in purged if p.startswith("recordings/r1/")} != set()
    mirror = w.cfg.store / "devices" / device_id / "mirror"
    assert mirror.is_dir() and all((mirror / p).is_file() for p in purged)
    # the catalogue is consistent with the store and its audit journal
    report = verify_station(st, files=True)
    assert report.ok, report.to_dict()
    assert [s for _, s, _ in _dockings(st)] == ["ok", "in-progress"]
    # the next docking of the device closes the dead one and completes
    again = _redock(w, "dev")
    assert again.status == "ok", again.detail
    st = w.reopen()
    dockings = _dockings(st)
    assert [s for _, s, _ in dockings] == ["ok", "interrupted", "ok"]
    assert "without closing it" in (dockings[1][2] or "")
    assert _catalogue(st) == {(device_id, "r1"): [0, 1], (device_id, "r2"): [0, 1], (device_id, "r3"): [0]}
    assert _segments_on_device(dev) == set()
    report = verify_station(st, files=True)
    assert report.ok and report.files_checked == 5, report.to_dict()
    leftovers = [p.name for p in (w.cfg.store / "devices" / device_id).iterdir()
                 if p.name.startswith(("candidate-", "old-"))]
    assert leftovers == []


def test_two_processes_never_dock_the_same_device_at_once(sqlite_station_world):
    """A second `station dock` for a device being docked (a udev event twice) exits 75 at once;
    the first one is not disturbed, and its in-progress row is not taken for a dead one."""
    w = sqlite_station_world
    dev = w.record("dev", {"r1": 1})
    device_id = device_id_for_pem(dev.pem)
    lock = w.cfg.store / "devices" / device_id / "dock.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    import fcntl
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)          # as a running docking of this device holds it
    link = w.start_link("dev")
    try:
        p = _dock_process(w, link)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 75 and "being docked by another process" in err, (out, err)
        assert _dockings(w.reopen()) == []
        os.close(fd)
        p = _dock_process(w, link)
        out, err = p.communicate(timeout=60)
    finally:
        link.stop()
    assert p.returncode == 0, (out, err)


# ---- PostgreSQL goes away mid-ingest -----------------------------------------------------------
def test_postgresql_going_away_mid_ingest_receipts_nothing_and_a_redock_completes(tmp_path, monkeypatch):
    cluster = PgCluster()
    try:
        w = make_station_world(tmp_path, cluster.create_database(), "postgresql")
        dev = w.record("dev", {"r1": 2, "r2": 1})
        device_id = device_id_for_pem(dev.pem)
        real_commit = Docking._commit

        def commit_then_lose_the_database(cand, mirror, partial):
            real_commit(cand, mirror, partial)          # the files are in the mirror...
            cluster.stop("immediate")                   # ...and the catalogue's server is gone

        monkeypatch.setattr(Docking, "_commit", staticmethod(commit_then_lose_the_database))
        link = w.start_link("dev")
        try:
            cfg = station_config.load(w.config_path, device_address="127.0.0.1", port=link.address[1])
            with pytest.raises(OperationalError):
                Docking(Station.open(cfg, w.clock), progress=False).run()
        finally:
            link.stop()
        monkeypatch.undo()
        # nothing was receipted: the device purged nothing
        assert len(_segments_on_device(dev)) == 3 and not _purged_on_device(dev)
        cluster.start()
        # the command line says what happened when the server is gone
        cluster.stop("immediate")
        r = w.cli("dock", "--device-address", "127.0.0.1", "--port", "9")
        assert r.returncode == 7 and "cannot reach the catalogue" in r.stderr, r.stderr
        cluster.start()
        st = w.reopen()
        assert [s for _, s, _ in _dockings(st)] == ["in-progress"]
        again = _redock(w, "dev")
        assert again.status == "ok" and again.files_new == 0      # the mirror kept the files
        st = w.reopen()
        assert [s for _, s, _ in _dockings(st)] == ["interrupted", "ok"]
        assert _catalogue(st) == {(device_id, "r1"): [0, 1], (device_id, "r2"): [0]}
        with st.db.session() as s:
            assert len(s.scalars(select(m.Recording)).all()) == 2
            assert len(s.scalars(select(m.Segment)).all()) == 3
        assert _segments_on_device(dev) == set()
        report = verify_station(st, files=True)
        assert report.ok and report.files_checked == 3, report.to_dict()
        st.close()
    finally:
        cluster.destroy()


# ---- one docking per USB link: the units -------------------------------------------------------
def test_rack_units_pass_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed")
    service = (DEPLOY / "station-dock@.service").read_text()
    rule = (DEPLOY / "90-station-dock.rules").read_text()
    assert 'ENV{SYSTEMD_WANTS}+="station-dock@%k.service"' in rule and 'SUBSYSTEM=="net"' in rule
    exec_start = [ln for ln in service.splitlines() if ln.startswith("ExecStart=")]
    assert exec_start == ["ExecStart=/opt/station/.venv/bin/station dock --config /etc/station/station.toml "
                          "--device-address 10.77.0.1 --wait 60"]
    assert "NetworkNamespacePath=/run/netns/dock-%I" in service
    bindir = tmp_path / "venv-bin"
    bindir.mkdir()
    (bindir / "station").write_text("#!/bin/sh\n")
    (bindir / "station").chmod(0o755)
    (tmp_path / "station-dock@.service").write_text(service.replace("/opt/station/.venv/bin/", f"{bindir}/"))
    shutil.copy(DEPLOY / "station-dock-link@.service", tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "station-dock@usb3.service"),
                             str(tmp_path / "station-dock-link@usb3.service")], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# ---- the verifier's shortcut for files already read: what it trusts ----------------------------
def test_known_digest_is_taken_only_for_the_same_unchanged_inode(tmp_path):
    from recorder.verify import KnownDigest, verify_directory
    from tests.media_fixture import new_device, record_session
    dev = new_device(tmp_path)
    record_session(dev, {"r1": 2})
    seg = next(dev.root.rglob("r1_00000.ts"))
    rel = seg.relative_to(dev.root).as_posix()
    wrong = KnownDigest.of_stat(os.stat(seg), "0" * 64)
    # same inode, size and mtime: the caller's digest is the one compared (here a wrong one)
    r = verify_directory(dev.root, dev.pem, known_digests={rel: wrong}, collect_file_failures=True)
    assert [f.reason for f in r.file_failures] == ["SegmentHashMismatch"] and r.file_failures[0].found == "0" * 64
    # once the file is written to, its mtime moves: the digest is ignored and the file hashed
    with open(seg, "r+b") as f:         # the same byte written back: same bytes, a new mtime
        b = f.read(1)
        f.seek(0)
        f.write(b)
    if os.stat(seg).st_mtime_ns == wrong.mtime_ns:   # a coarse file system clock: same tick
        os.utime(seg, ns=(wrong.mtime_ns, wrong.mtime_ns + 1))
    assert verify_directory(dev.root, dev.pem, known_digests={rel: wrong}).ok


def test_the_old_mirror_is_not_hashed_again_unless_it_changed(sqlite_station_world):
    """Each docking verifies old mirror + new files + journal; the old mirror's files are taken
    from the index its commit wrote while they are the same, unchanged inodes. A mirror file
    written to behind the station's back is hashed again and caught at the next docking; one
    whose mtime was also put back is caught by `station verify --files` (the documented limit)."""
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 2})
    dev = w.devices["dev"]
    device_id = device_id_for_pem(dev.pem)
    mirror = w.cfg.store / "devices" / device_id / "mirror"
    index = json.loads((w.cfg.store / "devices" / device_id / "mirror-index.json").read_text())["files"]
    assert sorted(index) == ["recordings/r1/r1_00000.ts", "recordings/r1/r1_00001.ts"]
    # a byte changed in place, mtime put back: the docking trusts the index...
    seg0 = mirror / "recordings/r1/r1_00000.ts"
    st0 = os.stat(seg0)
    os.chmod(seg0, 0o644)
    with open(seg0, "r+b") as f:
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 1]))
    os.utime(seg0, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    w.record("dev", {"r2": 1})
    assert _redock(w, "dev").status == "ok"
    # ...and `station verify --files` finds it
    found = verify_station(w.reopen(), files=True).findings
    assert [f.kind for f in found] == ["FileChanged"]
    # a byte changed in place the ordinary way (mtime moves): the next docking hashes it and
    # quarantines it (it is no longer on the device: status partial, the rest stored)
    seg1 = mirror / "recordings/r1/r1_00001.ts"
    os.chmod(seg1, 0o644)
    with open(seg1, "r+b") as f:
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 1]))
    w.record("dev", {"r3": 1})
    report = _redock(w, "dev")
    assert report.status == "partial"
    assert {(d["path"], d["reason"]) for d in report.quarantined_files} == {
        ("recordings/r1/r1_00001.ts", "SegmentHashMismatch")}
