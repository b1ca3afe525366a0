"""Docking end to end: device and dock as two hosts joined by a veth pair (network namespaces).

Record on the simulator with the real pipeline, serve it with ``bodycam dock serve`` in
the device namespace, offload with ``station dock`` in the dock namespace, cut the
link mid-transfer, resume, verify, receipt, purge. Skipped only if namespaces cannot be made.
"""
import json
import subprocess
import time

import pytest

from recorder import receipt
from recorder.journal import iter_records
from recorder.verify import verify_directory
from tests.netns import PYTHON, ROOT, DockWorld, VethPair, env, netns_available

OK, WHY = netns_available()
pytestmark = pytest.mark.skipif(not OK, reason=WHY or "network namespaces unavailable")
UNIT = "厦门市城市管理行政执法局"


@pytest.fixture()
def veth():
    pair = VethPair()
    yield pair
    pair.close()


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _recorded_device(tmp_path, veth, world, device_id_text: str, seconds: int):
    """A device recorded with the real CLI (2 s segments), certified and registered at the
    station: (evidence dir, key dir, device config, public key, device id, segment paths,
    subprocess options)."""
    evidence, key_dir = tmp_path / "evidence", tmp_path / "identity"
    dev_cfg = tmp_path / "bodycam.toml"
    dev_cfg.write_text(
        f'[device]\nid = "{device_id_text}"\nofficer_id = "031337"\n[video]\nwidth = 320\nheight = 240\n'
        '[segment]\nseconds = 2\n'
        f'[dock]\nlisten_address = "{veth.dev_addr}"\nport = 8443\nca_file = "{world.ca_file}"\n'
        f'cert_file = "{tmp_path / "dev-cert.pem"}"\n', encoding="utf-8")
    run = dict(cwd=ROOT, env=env(), capture_output=True, text=True)
    rec = subprocess.run([PYTHON, "-m", "firmware", "record", "--sim", "--fast", "--duration", str(seconds),
                          "--config", str(dev_cfg), "--out", str(evidence), "--key-dir", str(key_dir),
                          "--provision"], **run)
    assert rec.returncode == 0, rec.stderr
    pem = subprocess.run([PYTHON, "-m", "firmware", "identity", "export", "--key-dir", str(key_dir)],
                         **run).stdout.encode()
    world.device_cert(pem)
    device_id = world.register(pem)
    segments = sorted(p.relative_to(evidence).as_posix() for p in evidence.rglob("*.ts"))
    return evidence, key_dir, dev_cfg, pem, device_id, segments, run


def test_record_dock_cut_resume_verify_receipt_purge(tmp_path, veth):
    world = DockWorld.create(tmp_path, UNIT)
    evidence, key_dir, dev_cfg, pem, device_id, segments, run = _recorded_device(tmp_path, veth, world, "BWC-0042", 12)
    assert len(segments) >= 5

    serve = veth.popen(veth.dev_ns, PYTHON, "-m", "firmware", "dock", "serve", "--config", str(dev_cfg),
                       "--evidence", str(evidence), "--key-dir", str(key_dir), cwd=ROOT, env=env(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stdout.readline().split() == ["listening", veth.dev_addr, "8443"], serve.stderr.read()
        dock_cfg = world.dock_config(veth.dev_addr, 8443, UNIT)
        dock_cmd = [PYTHON, "-m", "station", "dock", "--config", str(dock_cfg), "--wait", "10"]

        # 1. slow link, cut it once a segment is partly across: the dock gives up, keeps the partial
        veth.limit_rate("2mbit")
        first = veth.popen(veth.dock_ns, *dock_cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        partial = world.store / "devices" / device_id / "partial" / "recordings"
        _wait_for(lambda: any(p.stat().st_size > 0 for p in partial.rglob("*.ts")), 60,
                  "a partial segment on the dock")
        veth.link(up=False)
        out, err = first.communicate(timeout=60)
        assert first.returncode == 75, err
        assert json.loads(out)["status"] == "interrupted"
        cut_at = sum(p.stat().st_size for p in partial.rglob("*.ts"))
        assert cut_at > 0
        assert len(list(evidence.rglob("*.ts"))) == len(segments), "nothing purged by an interrupted docking"

        # 2. link back: the rerun resumes with Range, verifies, receipts, and the device purges
        veth.link(up=True)
        veth.unlimit()
        second = veth.run(veth.dock_ns, *dock_cmd, check=False, cwd=ROOT, env=env())
        assert second.returncode == 0, second.stderr
        summary = json.loads(second.stdout)
        assert summary["status"] == "ok" and summary["bytes_resumed"] >= cut_at > 0
        assert summary["purged"] == len(segments)
    finally:
        serve.terminate()
        serve.wait(timeout=10)

    # the device: segments gone, every one named in a purge record, evidence still verifies
    assert list(evidence.rglob("*.ts")) == []
    purged = [f["path"] for r in iter_records(evidence / "journal.log") if r.type == receipt.PURGE
              for f in r.payload["files"]]
    assert sorted(purged) == segments
    result = verify_directory(evidence, pem)
    assert result.ok, result.failure
    # the dock: verified mirror, S3-named view, ledger rows
    mirror = world.store / "devices" / device_id / "mirror"
    assert verify_directory(mirror, pem).ok
    named = sorted(p.name for p in (world.store / "recordings").iterdir())
    assert len(named) == 1 and named[0].startswith(f"{UNIT}_未标注_") and "_未标注_" in named[0][len(UNIT):]
    assert len(list((world.store / "recordings" / named[0]).glob("*.ts"))) == len(segments)
    ledger = world.ledger()
    dockings = ledger.rows("dockings")
    assert [d["status"] for d in dockings] == ["interrupted", "ok"]
    assert dockings[1]["officer_id"] == "031337" and dockings[1]["checked_out_ns"] >= dockings[1]["checked_in_ns"]
    [recording] = ledger.rows("recordings")
    assert recording["segments"] == len(segments) and recording["officer_id"] == "031337"
    assert len(ledger.rows("receipts")) == 1


def test_one_damaged_segment_is_quarantined_the_rest_offloaded_and_purged(tmp_path, veth):
    """Issue 9 (B7): a byte-flipped segment no longer blocks the device (two hosts, the real CLIs)."""
    world = DockWorld.create(tmp_path, UNIT)
    evidence, key_dir, dev_cfg, pem, device_id, segments, run = _recorded_device(tmp_path, veth, world, "BWC-0043", 8)
    assert len(segments) >= 3
    damaged = segments[1]
    path = evidence / damaged
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    intact = [s for s in segments if s != damaged]

    serve = veth.popen(veth.dev_ns, PYTHON, "-m", "firmware", "dock", "serve", "--config", str(dev_cfg),
                       "--evidence", str(evidence), "--key-dir", str(key_dir), cwd=ROOT, env=env(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stdout.readline().split() == ["listening", veth.dev_addr, "8443"], serve.stderr.read()
        dock_cfg = world.dock_config(veth.dev_addr, 8443, UNIT)
        dock = veth.run(veth.dock_ns, PYTHON, "-m", "station", "dock", "--config", str(dock_cfg),
                        "--wait", "10", check=False, cwd=ROOT, env=env())
    finally:
        serve.terminate()
        serve.wait(timeout=10)
    assert dock.returncode == 4, dock.stderr            # partial
    summary = json.loads(dock.stdout)
    assert summary["status"] == "partial" and summary["purged"] == len(intact)
    assert [(f["path"], f["reason"]) for f in summary["quarantined_files"]] == [(damaged, "SegmentHashMismatch")]
    assert "FAILED VERIFICATION" in dock.stderr

    # the device: only the damaged segment is left, unchanged; the journal verifies but for it
    assert sorted(p.relative_to(evidence).as_posix() for p in evidence.rglob("*.ts")) == [damaged]
    assert path.read_bytes() == bytes(data)
    purged = [f["path"] for r in iter_records(evidence / "journal.log") if r.type == receipt.PURGE
              for f in r.payload["files"]]
    assert sorted(purged) == intact
    result = verify_directory(evidence, pem, collect_file_failures=True)
    assert result.failure is None, result.failure
    assert [(f.reason, f.file) for f in result.file_failures] == [("SegmentHashMismatch", damaged)]
    # the dock: intact files in the verified mirror, the damaged one in quarantine with its report
    mirror = world.store / "devices" / device_id / "mirror"
    m = verify_directory(mirror, pem, collect_file_failures=True)
    assert m.failure is None and [(f.reason, f.file) for f in m.file_failures] == [("SegmentMissing", damaged)]
    for s in intact:
        assert (mirror / s).is_file()
    qdir = world.store / "quarantine" / device_id
    [q] = list(qdir.iterdir())
    assert str(q) == summary["quarantine_dir"] and (q / "files" / damaged).read_bytes() == bytes(data)
    assert "SegmentHashMismatch" in (q / "REPORT.txt").read_text(encoding="utf-8")
    ledger = world.ledger()
    assert [d["status"] for d in ledger.rows("dockings")] == ["partial"]
    [row] = ledger.rows("quarantined_files")
    assert row["path"] == damaged and row["reason"] == "SegmentHashMismatch" and row["resolved_docking_id"] is None
    [rc] = ledger.rows("receipts")
    assert sorted(json.loads(rc["response"])["removed"]) == intact
