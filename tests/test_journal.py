"""The journal: chained signed lines, checkable with sha256sum + openssl; torn-tail recovery."""
import base64
import hashlib
import json
import os
import subprocess
import threading

import pytest

from common.clock import TimeQuality, TimeSample
from recorder import records
from recorder.identity import provision
from recorder.journal import JOURNAL_NAME, QUARANTINE_DIR, Journal, JournalCorrupt, iter_records
from recorder.verify import verify_directory
from tests.media_fixture import new_device


def _lines(dev):
    return (dev.root / JOURNAL_NAME).read_bytes().splitlines(keepends=True)


def test_records_are_chained_and_signed(tmp_path):
    dev = new_device(tmp_path)
    sample = TimeSample(5_000, 1_790_000_000_123_456_789, TimeQuality.GPS, 0.0005, None)
    dev.journal.append("boot", {"firmware": "1.0"}, sample=sample)
    dev.journal.append("config-change", {"key": "segment_seconds", "old": 10, "new": 5})
    lines = _lines(dev)
    assert len(lines) == 2
    first = json.loads(lines[0].split(b"\t")[0])
    assert first["seq"] == 0 and first["prev"] == "0" * 64
    assert first["wall_ns"] == 1_790_000_000_123_456_789 and first["mono_ns"] == 5_000
    assert first["time_quality"] == "GPS" and first["time_error_ns"] == 500_000
    assert first["device"] == dev.signer.device_id
    second = json.loads(lines[1].split(b"\t")[0])
    assert second["seq"] == 1 and second["prev"] == hashlib.sha256(lines[0]).hexdigest()
    assert dev.journal.head == (1, hashlib.sha256(lines[1]).hexdigest())
    for line in lines:
        msg, sig = line.rstrip(b"\n").split(b"\t")
        dev.signer.public_key().verify(base64.b64decode(sig), msg)


def test_line_checks_with_sha256sum_and_openssl(tmp_path):
    dev = new_device(tmp_path)
    dev.journal.append("boot", {})
    dev.journal.append("shutdown", {})
    (tmp_path / "pub.pem").write_bytes(dev.pem)
    j = dev.root / JOURNAL_NAME
    script = f"""set -e
sed -n 2p {j} | cut -f1 | tr -d '\\n' > msg
sed -n 2p {j} | cut -f2 | base64 -d > sig
openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in msg -sigfile sig
sed -n 1p {j} | sha256sum | cut -d' ' -f1
"""
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Signature Verified Successfully" in out.stdout
    prev = json.loads(_lines(dev)[1].split(b"\t")[0])["prev"]
    assert out.stdout.strip().splitlines()[-1] == prev


def test_reopen_continues_the_chain(tmp_path):
    dev = new_device(tmp_path)
    dev.journal.append("boot", {})
    dev = dev.reopen()
    rec = dev.journal.append("boot", {})
    assert rec.seq == 1
    assert verify_directory(dev.root, dev.pem).ok


def test_bad_type_or_payload_is_refused_and_journal_unchanged(tmp_path):
    dev = new_device(tmp_path)
    dev.journal.append("boot", {})
    before = (dev.root / JOURNAL_NAME).read_bytes()
    with pytest.raises(ValueError):
        dev.journal.append("Bad Type", {})
    with pytest.raises(ValueError):
        dev.journal.append("note", {"x": float("nan")})
    with pytest.raises(ValueError):
        dev.journal.append("note", {"x": object()})
    with pytest.raises(ValueError):
        dev.journal.append("note", ["not", "a", "dict"])
    assert (dev.root / JOURNAL_NAME).read_bytes() == before
    assert dev.journal.append("note", {}).seq == 1


def test_torn_last_line_is_quarantined_and_journaled(tmp_path):
    dev = new_device(tmp_path)
    dev.journal.append("boot", {})
    dev.journal.append("recording-start", {"recording_id": "r1"})
    full = (dev.root / JOURNAL_NAME).read_bytes()
    torn = full.splitlines(keepends=True)[1][:57]  # power cut mid-write of a third record
    with open(dev.root / JOURNAL_NAME, "ab") as f:
        f.write(torn)
    dev = dev.reopen()
    assert len(dev.journal.recoveries) == 1
    rec = dev.journal.recoveries[0]
    assert rec.type == records.JOURNAL_RECOVERED and rec.seq == 2
    att = rec.payload["attachments"][0]
    assert (dev.root / att["path"]).read_bytes() == torn
    assert att["sha256"] == hashlib.sha256(torn).hexdigest() and rec.payload["offset"] == len(full)
    assert (dev.root / JOURNAL_NAME).read_bytes().startswith(full)
    assert dev.journal.append("boot", {}).seq == 3
    result = verify_directory(dev.root, dev.pem)
    assert result.ok, result.failure


def test_zero_filled_tail_is_recovered(tmp_path):
    dev = new_device(tmp_path)
    dev.journal.append("boot", {})
    with open(dev.root / JOURNAL_NAME, "ab") as f:
        f.write(b"\0" * 4096)  # ext4 after a power cut: size grew, data never written
    dev = dev.reopen()
    assert dev.journal.recoveries[0].payload["attachments"][0]["size"] == 4096
    assert verify_directory(dev.root, dev.pem).ok


def test_crash_between_quarantine_and_record_is_finished_at_next_open(tmp_path):
    dev = new_device(tmp_path)
    dev.journal.append("boot", {})
    size = (dev.root / JOURNAL_NAME).stat().st_size
    dev.journal.close()
    torn = b'{"device":"abc'
    q = dev.root / QUARANTINE_DIR
    q.mkdir()
    name = f"journal-torn-at-{size}-{hashlib.sha256(torn).hexdigest()[:16]}.bin"
    (q / name).write_bytes(torn)  # copy made, journal truncated, then power lost again
    dev = dev.reopen()
    assert [r.payload["attachments"][0]["path"] for r in dev.journal.recoveries] == \
        [f"{QUARANTINE_DIR}/{name}"]
    assert verify_directory(dev.root, dev.pem).ok


def test_corrupt_last_whole_line_is_refused_untouched(tmp_path):
    dev = new_device(tmp_path)
    dev.journal.append("boot", {})
    dev.journal.close()
    with open(dev.root / JOURNAL_NAME, "ab") as f:
        f.write(b"this is not a record\n")
    before = (dev.root / JOURNAL_NAME).read_bytes()
    with pytest.raises(JournalCorrupt, match="malformed"):
        Journal.open(dev.root, dev.signer, dev.journal._clock)
    assert (dev.root / JOURNAL_NAME).read_bytes() == before


def test_journal_of_another_device_is_refused(tmp_path):
    dev = new_device(tmp_path)
    dev.journal.append("boot", {})
    dev.journal.close()   # its writer is gone (an open one would hold the lock: EvidenceInUse)
    other = provision(tmp_path / "other-key")
    with pytest.raises(JournalCorrupt, match="belongs to device"):
        Journal.open(dev.root, other, dev.journal._clock)


def test_concurrent_appends_get_consecutive_sequence_numbers(tmp_path):
    dev = new_device(tmp_path)

    def worker(k):
        for i in range(25):
            dev.journal.append("note", {"thread": k, "i": i})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [r.seq for r in iter_records(dev.root / JOURNAL_NAME)]
    assert seqs == list(range(100))
    result = verify_directory(dev.root, dev.pem)
    assert result.ok, result.failure


def test_long_journal_reopens_from_its_tail(tmp_path):
    dev = new_device(tmp_path)
    for i in range(300):
        dev.journal.append("note", {"i": i, "pad": "x" * 300})
    dev = dev.reopen()
    assert dev.journal.head[0] == 299
    assert dev.journal.append("note", {}).seq == 300
    assert os.path.getsize(dev.root / JOURNAL_NAME) > 65536 * 1.5
