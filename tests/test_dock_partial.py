"""One damaged file does not block a device (issue 9, B7) and the ledger is readable (B9).

Real TLS on loopback (the device's DockLink in this process, the dock's Docking
against it), real MPEG-TS segments, real journal and ledger; nothing mocked. The
two-host run with the command line is in test_dock_e2e.py.

* a segment whose bytes differ from what the journal attests is quarantined alone,
  with a report; the journal and every intact file are stored, named and receipted;
  the device purges exactly those and keeps the damaged one;
* a journal whose chain is broken still quarantines the whole docking: nothing purged;
* the verifier's ``collect_file_failures`` mode lists every bad file, not the first;
* receipt answers are stored as JSON; ``station ledger`` prints ISO 8601 times.
"""
import base64
import datetime as dt
import hashlib
import json
import logging
import os
import stat
import subprocess

import pytest

from recorder import receipt, records, verify
from recorder.journal import JOURNAL_NAME, iter_records
from recorder.verify import verify_directory
from station import config as dock_config  # noqa: E402  (path set up by tests.netns)
from station.dock.ingest import Docking
from tests.media_fixture import new_device, record_session
from tests.netns import PYTHON, ROOT, DockWorld, env

DAMAGED = "recordings/r1/r1_00001.ts"
INTACT = ["recordings/r1/r1_00000.ts", "recordings/r2/r2_00000.ts"]


@pytest.fixture()
def world(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="firmware.dock_link")
    w = DockWorld.create(tmp_path)
    link = w.serve_recorded_device()
    w.device_id = w.register(w.dev.pem)
    yield w
    link.stop()


def docking(w):
    cfg = dock_config.load(w.dock_config("127.0.0.1", w.port))
    return Docking(w.station(cfg), progress=False)


def flip_byte(path, at=5000):
    os.chmod(path, stat.S_IWUSR | stat.S_IRUSR)
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


def attested(dev, rel):
    [p] = [r.payload for r in iter_records(dev.journal.path) if r.type == "segment" and r.payload["path"] == rel]
    return p


def purged_paths(dev):
    return sorted(f["path"] for r in iter_records(dev.journal.path) if r.type == receipt.PURGE
                  for f in r.payload["files"])


def break_chain(dev):
    """An insider with the device key rewrites r2's recording-start and re-signs it: ChainBroken after it."""
    lines = dev.journal.path.read_bytes().splitlines(keepends=True)
    [i] = [n for n, line in enumerate(lines) if b'"recording-start"' in line and b'"r2"' in line]
    msg, _ = lines[i].rstrip(b"\n").split(b"\t")
    m = json.loads(msg)
    m["payload"]["recording_id"] = "r9"
    msg = records.canonical_json(m)
    lines[i] = msg + b"\t" + base64.b64encode(dev.signer.sign(msg)) + b"\n"
    dev.journal.path.write_bytes(b"".join(lines))


# ---- B7: a damaged segment is quarantined alone ---------------------------------------------
def test_damaged_segment_is_quarantined_alone_intact_files_ingested_and_purged(world):
    w, dev = world, world.dev
    seg = attested(dev, DAMAGED)
    damaged_bytes = flip_byte(dev.root / DAMAGED)
    report = docking(w).run()

    # the docking: partial, the intact files purged on the device, the damaged one kept as it was
    assert report.status == "partial", report.detail
    assert sorted(report.purged) == INTACT and purged_paths(dev) == INTACT
    assert sorted(p.relative_to(dev.root).as_posix() for p in dev.root.rglob("*.ts")) == [DAMAGED]
    assert (dev.root / DAMAGED).read_bytes() == damaged_bytes
    assert DAMAGED in report.detail and "SegmentHashMismatch" in report.detail
    # the receipt the device journaled names the intact files only
    [rec] = [r for r in iter_records(dev.journal.path) if r.type == receipt.DOCK_RECEIPT]
    assert sorted(f["path"] for f in rec.payload["receipt"]["files"]) == INTACT
    # the device journal still verifies: signatures and chain whole, the purged files released,
    # and the one damaged file is the only thing wrong with it
    strict = verify_directory(dev.root, dev.pem)
    assert isinstance(strict.failure, verify.SegmentHashMismatch) and strict.failure.file == DAMAGED
    full = verify_directory(dev.root, dev.pem, collect_file_failures=True)
    assert full.failure is None, full.failure
    assert [(f.reason, f.file) for f in full.file_failures] == [("SegmentHashMismatch", DAMAGED)]
    assert any("released: 2 files purged" in c for c in full.checks)

    # the station: the mirror holds the verified journal and the intact files, not the damaged one
    mirror = w.store / "devices" / w.device_id / "mirror"
    assert not (mirror / DAMAGED).exists()
    for rel in INTACT:
        assert (mirror / rel).is_file()
    m = verify_directory(mirror, dev.pem, collect_file_failures=True)
    assert m.failure is None and [(f.reason, f.file) for f in m.file_failures] == [("SegmentMissing", DAMAGED)]
    # the quarantine: the bytes as received, and a report with reason, expected and found
    q = report.quarantine_dir
    assert q.parent == w.store / "quarantine" / w.device_id
    assert (q / "files" / DAMAGED).read_bytes() == damaged_bytes
    text = (q / "REPORT.txt").read_text(encoding="utf-8")
    found_sha = hashlib.sha256(damaged_bytes).hexdigest()
    for want in (DAMAGED, "SegmentHashMismatch", seg["sha256"], found_sha, "the device keeps them", "escalate"):
        assert want in text, want
    [entry] = json.loads((q / "report.json").read_text(encoding="utf-8"))["files"]
    assert entry["reason"] == "SegmentHashMismatch" and entry["path"] == DAMAGED
    assert (entry["expected_sha256"], entry["expected_size"]) == (seg["sha256"], seg["size"])
    assert (entry["found_sha256"], entry["found_size"]) == (found_sha, len(damaged_bytes))
    assert (entry["recording_id"], entry["seg_index"]) == ("r1", 1)
    # the named view: both recordings, with the hole marked
    r1 = w.store / "recordings" / "厦门市城市管理行政执法局_未标注_20260921_未标注_r1"
    assert sorted(p.name for p in r1.iterdir()) == [f"{r1.name}_00000.ts", f"{r1.name}_00001.DAMAGED.txt"]
    assert "SegmentHashMismatch" in (r1 / f"{r1.name}_00001.DAMAGED.txt").read_text(encoding="utf-8")
    # the ledger marks it
    ledger = w.ledger()
    [d] = ledger.rows("dockings")
    assert d["status"] == "partial" and d["purged"] == 2 and d["head_seq"] is not None
    [row] = ledger.rows("quarantined_files")
    assert (row["path"], row["reason"], row["recording_id"], row["seg_index"]) == (
        DAMAGED, "SegmentHashMismatch", "r1", 1)
    assert (row["expected_sha256"], row["found_sha256"]) == (seg["sha256"], found_sha)
    assert row["docking_id"] == d["id"] and row["quarantine_dir"] == str(q)
    assert row["resolved_docking_id"] is None
    assert [r["path"] for r in ledger.open_quarantined_files(w.device_id)] == [DAMAGED]
    [rc] = ledger.rows("receipts")
    assert rc["files"] == 2
    # a partial docking's head is the anchor for the next one (its journal verified in full)
    assert ledger.last_anchor(w.device_id) == (d["head_seq"], d["head_hash"])
    # and the clerk's listing of it
    out = subprocess.run([PYTHON, "-m", "station", "ledger", "--config", str(w.dock_config("127.0.0.1", w.port)),
                          "--table", "quarantined_files"], cwd=ROOT, env=env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    [shown] = [json.loads(line) for line in out.stdout.splitlines()]
    assert shown["path"] == DAMAGED and shown["reason"] == "SegmentHashMismatch"
    assert dt.datetime.fromisoformat(shown["quarantined"]).utcoffset() is not None


def test_damaged_file_is_retried_at_each_docking_and_resolved_when_it_arrives_intact(world):
    w, dev = world, world.dev
    good = (dev.root / DAMAGED).read_bytes()
    flip_byte(dev.root / DAMAGED)
    assert docking(w).run().status == "partial"
    # docked again, still damaged: quarantined again, nothing else to purge, anchored at the partial head
    again = docking(w).run()
    assert again.status == "partial" and again.purged == [] and again.files_new == 1
    assert (dev.root / DAMAGED).exists()
    ledger = w.ledger()
    assert [r["path"] for r in ledger.open_quarantined_files(w.device_id)] == [DAMAGED, DAMAGED]
    # the device's copy is good again (say a transient read error): stored, named, receipted, resolved
    os.chmod(dev.root / DAMAGED, stat.S_IWUSR | stat.S_IRUSR)
    (dev.root / DAMAGED).write_bytes(good)
    last = docking(w).run()
    assert last.status == "ok", last.detail
    assert last.purged == [DAMAGED] and not list(dev.root.rglob("*.ts"))
    mirror = w.store / "devices" / w.device_id / "mirror"
    assert verify_directory(mirror, dev.pem).ok and verify_directory(dev.root, dev.pem).ok
    assert ledger.open_quarantined_files(w.device_id) == []
    assert {r["resolved_docking_id"] for r in ledger.rows("quarantined_files")} == {last.docking_id}
    r1 = w.store / "recordings" / "厦门市城市管理行政执法局_未标注_20260921_未标注_r1"
    assert sorted(p.name for p in r1.iterdir()) == [f"{r1.name}_00000.ts", f"{r1.name}_00001.ts"]


@pytest.mark.parametrize("change", ["truncated", "grown"])
def test_segment_of_another_size_on_the_device_is_quarantined_not_retried_forever(world, change):
    """Before: the dock asked for the attested length, got fewer bytes, called it a cut (exit 75) every time."""
    w, dev = world, world.dev
    seg = attested(dev, DAMAGED)
    target = dev.root / DAMAGED
    os.chmod(target, stat.S_IWUSR | stat.S_IRUSR)
    data = target.read_bytes()
    changed = data[: len(data) // 2] if change == "truncated" else data + b"\0" * 4096
    target.write_bytes(changed)
    report = docking(w).run()
    assert report.status == "partial", report.detail
    assert sorted(report.purged) == INTACT and target.read_bytes() == changed
    [d] = report.quarantined_files
    assert (d["path"], d["reason"]) == (DAMAGED, "SegmentSizeMismatch")
    assert (d["expected_size"], d["found_size"]) == (seg["size"], len(changed))
    assert (report.quarantine_dir / "files" / DAMAGED).read_bytes() == changed
    full = verify_directory(dev.root, dev.pem, collect_file_failures=True)
    assert full.failure is None and [f.reason for f in full.file_failures] == ["SegmentSizeMismatch"]


def test_broken_chain_quarantines_the_whole_docking_even_with_intact_files(world):
    w, dev = world, world.dev
    flip_byte(dev.root / DAMAGED)
    break_chain(dev)
    report = docking(w).run()
    assert report.status == "quarantined" and report.detail.startswith("ChainBroken")
    assert report.purged == [] and report.quarantined_files == []
    assert len(list(dev.root.rglob("*.ts"))) == 3 and purged_paths(dev) == []
    assert not (w.store / "devices" / w.device_id / "mirror").exists()
    assert not (w.store / "recordings").exists()
    text = (report.quarantine_dir / "REPORT.txt").read_text(encoding="utf-8")
    assert "ChainBroken" in text and "WHOLE docking" in text and "not partially trustworthy" in text
    assert "SegmentHashMismatch" in text        # the damaged file is named too
    doc = json.loads((report.quarantine_dir / "report.json").read_text(encoding="utf-8"))
    assert doc["scope"] == "docking" and doc["failure"]["reason"] == "ChainBroken"
    ledger = w.ledger()
    assert [d["status"] for d in ledger.rows("dockings")] == ["quarantined"]
    assert ledger.rows("receipts") == [] and ledger.rows("quarantined_files") == []
    assert ledger.last_anchor(w.device_id) is None


# ---- the verifier mode --------------------------------------------------------------------
def test_verifier_collects_every_bad_file_and_still_checks_the_journal(tmp_path):
    dev = new_device(tmp_path)
    record_session(dev, {"r1": 3, "r2": 1})
    flip_byte(dev.root / "recordings/r1/r1_00000.ts")
    os.unlink(dev.root / "recordings/r1/r1_00002.ts")
    p = dev.root / "recordings/r2/r2_00000.ts"
    os.chmod(p, 0o644)
    with open(p, "ab") as f:
        f.write(b"x")
    # default: the first failure is the verdict, as before
    first = verify_directory(dev.root, dev.pem)
    assert isinstance(first.failure, verify.SegmentHashMismatch) and first.file_failures == []
    # collected: every bad file, in journal order, the journal itself verified to the end
    res = verify_directory(dev.root, dev.pem, collect_file_failures=True)
    assert res.failure is None and not res.ok and res.head == dev.journal.head
    assert [(type(f), f.file) for f in res.file_failures] == [
        (verify.SegmentHashMismatch, "recordings/r1/r1_00000.ts"),
        (verify.SegmentMissing, "recordings/r1/r1_00002.ts"),
        (verify.SegmentSizeMismatch, "recordings/r2/r2_00000.ts")]
    assert res.file_failures[2].expected + 1 == res.file_failures[2].found
    # a journal failure is still the verdict in this mode
    lines = (dev.root / JOURNAL_NAME).read_bytes().splitlines(keepends=True)
    (dev.root / JOURNAL_NAME).write_bytes(b"".join(lines[:2] + lines[3:]))
    res = verify_directory(dev.root, dev.pem, collect_file_failures=True)
    assert isinstance(res.failure, verify.SequenceGap)


# ---- B9: the ledger stores JSON and prints ISO 8601 ------------------------------------------------
def test_receipt_response_is_stored_as_json_and_ledger_prints_iso_times(world):
    w = world
    report = docking(w).run()
    assert report.status == "ok", report.detail
    ledger = w.ledger()
    [rc] = ledger.rows("receipts")
    answer = json.loads(rc["response"])
    assert answer["accepted"] is True and sorted(answer["removed"]) == sorted(INTACT + [DAMAGED])
    cfg = w.dock_config("127.0.0.1", w.port)
    stored = {t: ledger.rows(t) for t in ("dockings", "receipts", "recordings", "devices")}
    for table, rows in stored.items():
        out = subprocess.run([PYTHON, "-m", "station", "ledger", "--config", str(cfg), "--table", table],
                             cwd=ROOT, env=env(), capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        printed = [json.loads(line) for line in out.stdout.splitlines()]
        assert len(printed) == len(rows) > 0
        for row, shown in zip(rows, printed, strict=True):
            assert not any(k.endswith("_ns") for k in shown), shown
            for k, v in row.items():
                if not k.endswith("_ns") or v is None:
                    continue
                t = dt.datetime.fromisoformat(shown[k[:-3]])
                assert t.utcoffset() is not None, shown[k[:-3]]
                assert t.utcoffset() == dt.timedelta(hours=8)          # Asia/Shanghai, the default
                assert abs(t.timestamp() * 1e9 - v) < 1e6               # millisecond precision
                assert shown[k[:-3]][19] == "." and shown[k[:-3]][-6:] == "+08:00"
    [rshown] = [json.loads(line) for line in subprocess.run(
        [PYTHON, "-m", "station", "ledger", "--config", str(cfg), "--table", "receipts"],
        cwd=ROOT, env=env(), capture_output=True, text=True).stdout.splitlines()]
    assert json.loads(rshown["response"])["removed"] == answer["removed"]
