"""Every kind of tampering is caught by the verifier with the right named reason."""
import base64
import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware import evidence_cli
from recorder import records, verify
from recorder.journal import JOURNAL_NAME
from tests.media_fixture import make_recording, new_device, record_session


@dataclasses.dataclass
class Recorded:
    root: Path
    pem: bytes
    other_root: Path
    other_pem: bytes


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    base = tmp_path_factory.mktemp("recorded")
    dev = new_device(base, "a")
    record_session(dev, {"r1": 3, "r2": 2})
    other = new_device(base, "b")
    record_session(other, {"x1": 1})
    dev.journal.close()
    other.journal.close()
    return Recorded(dev.root, dev.pem, other.root, other.pem)


@pytest.fixture()
def ev(recorded, tmp_path):
    """A fresh copy of the recorded evidence directory to tamper with."""
    shutil.copytree(recorded.root, tmp_path / "ev")
    return tmp_path / "ev"


def lines(root):
    return (root / JOURNAL_NAME).read_bytes().splitlines(keepends=True)


def write_lines(root, ls):
    (root / JOURNAL_NAME).write_bytes(b"".join(ls))


def segment_file(root, rel="recordings/r1/r1_00001.ts"):
    p = root / rel
    os.chmod(p, 0o644)
    return p


def fails(root, pem, reason, **kw):
    result = verify.verify_directory(root, pem, **kw)
    assert not result.ok, "tampering went undetected"
    assert isinstance(result.failure, reason), result.failure
    return result.failure


def test_untouched_directory_passes(recorded):
    result = verify.verify_directory(recorded.root, recorded.pem)
    assert result.ok, result.failure
    assert result.records == len(lines(recorded.root)) and result.files == 5
    assert result.head == (result.records - 1, records.line_hash(lines(recorded.root)[-1]))


def test_flip_one_byte_in_a_segment(ev, recorded):
    p = segment_file(ev)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    f = fails(ev, recorded.pem, verify.SegmentHashMismatch)
    assert f.file == "recordings/r1/r1_00001.ts" and f.seq == 3


def test_truncate_a_segment(ev, recorded):
    p = segment_file(ev)
    size = p.stat().st_size
    os.truncate(p, size - 188)
    f = fails(ev, recorded.pem, verify.SegmentSizeMismatch)
    assert (f.expected, f.found) == (size, size - 188)


def test_delete_a_segment(ev, recorded):
    segment_file(ev).unlink()
    assert fails(ev, recorded.pem, verify.SegmentMissing).file == "recordings/r1/r1_00001.ts"


def test_add_a_foreign_segment(ev, recorded):
    shutil.copy(recorded.other_root / "recordings/x1/x1_00000.ts", ev / "recordings/r1/r1_00003.ts")
    assert fails(ev, recorded.pem, verify.SegmentExtra).file == "recordings/r1/r1_00003.ts"


def test_add_any_stray_file(ev, recorded):
    (ev / "notes.txt").write_text("copied here")
    assert fails(ev, recorded.pem, verify.SegmentExtra).file == "notes.txt"


def test_replace_a_segment_by_another_device_segment(ev, recorded):
    p = segment_file(ev)
    shutil.copy(recorded.other_root / "recordings/x1/x1_00000.ts", p)
    fails(ev, recorded.pem, (verify.SegmentSizeMismatch, verify.SegmentHashMismatch))


def test_delete_a_journal_record(ev, recorded):
    ls = lines(ev)
    del ls[3]
    write_lines(ev, ls)
    f = fails(ev, recorded.pem, verify.SequenceGap)
    assert (f.expected, f.found, f.line_no) == (3, 4, 4)


def test_delete_a_segment_and_its_record_together(ev, recorded):
    ls = lines(ev)
    del ls[3]
    write_lines(ev, ls)
    segment_file(ev).unlink()
    fails(ev, recorded.pem, verify.SequenceGap)


def test_cutting_the_tail_needs_an_anchor(ev, recorded):
    head = verify.verify_directory(recorded.root, recorded.pem).head
    write_lines(ev, lines(ev)[:-1])  # the final shutdown record
    assert verify.verify_directory(ev, recorded.pem).ok  # documented limit without an anchor
    fails(ev, recorded.pem, verify.AnchorMismatch, anchor=head)


def test_anchor_of_a_different_history_fails(ev, recorded):
    fails(ev, recorded.pem, verify.AnchorMismatch, anchor=(2, "0" * 64))


def test_reorder_journal_records(ev, recorded):
    ls = lines(ev)
    ls[2], ls[3] = ls[3], ls[2]
    write_lines(ev, ls)
    assert fails(ev, recorded.pem, verify.SequenceGap).line_no == 3


def test_duplicate_a_journal_record(ev, recorded):
    ls = lines(ev)
    ls.insert(3, ls[2])
    write_lines(ev, ls)
    assert fails(ev, recorded.pem, verify.SequenceGap).line_no == 4


def _edit(line, change):
    msg, sig = line.rstrip(b"\n").split(b"\t")
    m = json.loads(msg)
    change(m)
    return records.canonical_json(m), sig


def test_edit_a_journal_record(ev, recorded):
    ls = lines(ev)
    msg, sig = _edit(ls[2], lambda m: m["payload"].update(video_frames=24))
    ls[2] = msg + b"\t" + sig + b"\n"
    write_lines(ev, ls)
    assert fails(ev, recorded.pem, verify.BadSignature).seq == 2


def test_edit_wall_time_of_a_record(ev, recorded):
    ls = lines(ev)
    msg, sig = _edit(ls[1], lambda m: m.update(wall_ns=m["wall_ns"] - 3600 * 10**9))
    ls[1] = msg + b"\t" + sig + b"\n"
    write_lines(ev, ls)
    fails(ev, recorded.pem, verify.BadSignature)


def test_resign_a_record_with_another_key(ev, recorded):
    ls = lines(ev)
    msg, _ = _edit(ls[2], lambda m: m["payload"].update(final=True))
    forged = Ed25519PrivateKey.generate().sign(msg)
    ls[2] = msg + b"\t" + base64.b64encode(forged) + b"\n"
    write_lines(ev, ls)
    assert fails(ev, recorded.pem, verify.BadSignature).seq == 2


def test_rewrite_with_the_device_key_still_breaks_the_chain(tmp_path):
    """An insider holding the key who edits one record re-signs it, but the next prev differs."""
    dev = new_device(tmp_path)
    record_session(dev, {"r1": 1})
    ls = lines(dev.root)
    msg, _ = _edit(ls[1], lambda m: m["payload"].update(recording_id="other"))
    ls[1] = msg + b"\t" + base64.b64encode(dev.signer.sign(msg)) + b"\n"
    write_lines(dev.root, ls)
    f = fails(dev.root, dev.pem, verify.ChainBroken)
    assert f.seq == 2


def test_splice_two_devices_journals(ev, recorded):
    ls = lines(ev)
    foreign = lines(recorded.other_root)
    write_lines(ev, ls[:2] + foreign[2:3] + ls[2:])
    assert fails(ev, recorded.pem, verify.ForeignDevice).line_no == 3


def test_append_another_devices_journal(ev, recorded):
    write_lines(ev, lines(ev) + lines(recorded.other_root))
    fails(ev, recorded.pem, verify.ForeignDevice)


def test_verify_with_the_wrong_key(recorded):
    fails(recorded.root, recorded.other_pem, verify.ForeignDevice)


def test_garbage_line(ev, recorded):
    ls = lines(ev)
    ls.insert(1, b"hello\tworld\n")
    write_lines(ev, ls)
    assert fails(ev, recorded.pem, verify.MalformedRecord).line_no == 2


def test_non_canonical_json_is_malformed(ev, recorded):
    ls = lines(ev)
    msg, sig = ls[1].rstrip(b"\n").split(b"\t")
    ls[1] = json.dumps(json.loads(msg)).encode() + b"\t" + sig + b"\n"
    write_lines(ev, ls)
    fails(ev, recorded.pem, verify.MalformedRecord)


def test_torn_journal_tail(ev, recorded):
    (ev / JOURNAL_NAME).write_bytes((ev / JOURNAL_NAME).read_bytes()[:-40])
    fails(ev, recorded.pem, verify.TornRecord)


def test_missing_journal(ev, recorded):
    (ev / JOURNAL_NAME).unlink()
    fails(ev, recorded.pem, verify.JournalMissing)


def test_open_part_file_is_extra_unless_allowed(ev, recorded):
    (ev / "recordings/r2/r2_00002.ts.part").write_bytes(b"\x47" * 188)
    fails(ev, recorded.pem, verify.SegmentExtra)
    assert verify.verify_directory(ev, recorded.pem, allow_open_parts=True).ok


def test_media_gap_between_segments_is_caught(tmp_path):
    dev = new_device(tmp_path)
    infos = make_recording(dev.store.recording_dir("r1"), "r1", 3)
    dev.sealer.segment_closed(infos[0])
    dev.sealer.segment_closed(infos[2])  # the device itself skipped one: still not continuous
    f = fails(dev.root, dev.pem, verify.MediaDiscontinuity)
    assert (f.expected, f.found) == (1, 2)


@pytest.mark.parametrize("field,delta", [("first_pts", 3600), ("first_sample", -1)])
def test_media_timing_jump_is_caught(tmp_path, field, delta):
    dev = new_device(tmp_path)
    infos = make_recording(dev.store.recording_dir("r1"), "r1", 2)
    dev.sealer.segment_closed(infos[0])
    dev.sealer.segment_closed(dataclasses.replace(infos[1], **{field: getattr(infos[1], field) + delta}))
    assert field in str(fails(dev.root, dev.pem, verify.MediaDiscontinuity))


def test_segment_after_final_is_caught(tmp_path):
    dev = new_device(tmp_path)
    infos = make_recording(dev.store.recording_dir("r1"), "r1", 2)
    dev.sealer.segment_closed(dataclasses.replace(infos[0], final=True))
    dev.sealer.segment_closed(infos[1])
    assert "final" in str(fails(dev.root, dev.pem, verify.MediaDiscontinuity))


def test_recording_not_starting_at_index_zero(tmp_path):
    dev = new_device(tmp_path)
    infos = make_recording(dev.store.recording_dir("r1"), "r1", 2)
    dev.sealer.segment_closed(infos[1])
    fails(dev.root, dev.pem, verify.MediaDiscontinuity)


def test_cli_verify_exit_codes(ev, recorded, tmp_path, capsys):
    key = tmp_path / "pub.pem"
    key.write_bytes(recorded.pem)
    assert evidence_cli.main(["verify", str(ev), "--pubkey", str(key)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out
    segment_file(ev).unlink()
    assert evidence_cli.main(["verify", str(ev), "--pubkey", str(key)]) == 1
    err = capsys.readouterr().err
    assert "SegmentMissing" in err and "recordings/r1/r1_00001.ts" in err


def test_cli_verify_bad_key_is_a_usage_error(ev, tmp_path, capsys):
    (tmp_path / "bad.pem").write_text("nope")
    assert evidence_cli.main(["verify", str(ev), "--pubkey", str(tmp_path / "bad.pem")]) == 2
    assert "PEM" in capsys.readouterr().err
    assert evidence_cli.main(["verify", str(ev), "--pubkey", str(tmp_path / "none.pem")]) == 2
