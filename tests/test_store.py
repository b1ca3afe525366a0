"""The evidence store refuses deletion and overwrite (D9) and journals every attempt; sealing."""
import dataclasses
import stat

import pytest

from recorder import records
from recorder.journal import iter_records
from recorder.seal import SealError
from recorder.store import DeletionRefused, OverwriteRefused, ReclaimRequiresDockReceipt, StoreError
from recorder.verify import verify_directory
from tests.media_fixture import make_recording, new_device


@pytest.fixture()
def dev(tmp_path):
    d = new_device(tmp_path)
    d.journal.append("boot", {})
    d.infos = make_recording(d.store.recording_dir("r1"), "r1", 2)
    for info in d.infos:
        d.sealer.segment_closed(info)
    return d


def _tamper_records(dev):
    return [r for r in iter_records(dev.journal.path) if r.type == records.TAMPER_ATTEMPT]


def test_sealed_segment_is_read_only(dev):
    for info in dev.infos:
        assert stat.S_IMODE(info.path.stat().st_mode) == 0o444


def test_remove_is_refused_journaled_and_nothing_lost(dev):
    target = dev.infos[0].path
    before = target.read_bytes()
    with pytest.raises(DeletionRefused, match="never deleted") as exc:
        dev.store.remove(target, actor="cli")
    assert target.read_bytes() == before
    [rec] = _tamper_records(dev)
    assert rec.seq == exc.value.record_seq
    assert rec.payload == {"action": "remove", "path": "recordings/r1/r1_00000.ts", "actor": "cli",
                           "exists": True, "refused": True}
    assert verify_directory(dev.root, dev.pem).ok


def test_remove_of_path_outside_store_is_refused_too(dev):
    with pytest.raises(DeletionRefused):
        dev.store.remove("/etc/hostname", actor="cli")
    assert _tamper_records(dev)[0].payload["path"] == "/etc/hostname"


def test_remove_of_the_journal_is_refused(dev):
    with pytest.raises(DeletionRefused):
        dev.store.remove("journal.log")
    assert dev.journal.path.exists()


def test_overwrite_is_refused(dev):
    before = dev.infos[1].path.read_bytes()
    with pytest.raises(OverwriteRefused, match="never modified"):
        dev.store.overwrite(dev.infos[1].path, actor="cli")
    assert dev.infos[1].path.read_bytes() == before
    assert _tamper_records(dev)[0].payload["action"] == "overwrite"


@pytest.mark.parametrize("mode", ["wb", "ab", "r+b", "w+b", "xb"])
def test_opening_existing_file_for_writing_is_refused(dev, mode):
    path = dev.infos[0].path
    before = path.read_bytes()
    with pytest.raises(OverwriteRefused, match="never opened for writing"):
        dev.store.open(path, mode)
    assert path.read_bytes() == before
    assert _tamper_records(dev)[0].payload["action"] == f"open-{mode}"


def test_reading_is_allowed_and_not_journaled(dev):
    with dev.store.open(dev.infos[0].path) as f:
        assert f.read(1) == b"\x47"
    assert _tamper_records(dev) == []


def test_only_exclusive_creation_may_write_a_new_file(dev):
    with pytest.raises(OverwriteRefused, match="exclusive"):
        dev.store.open("recordings/r1/new.bin", "wb")
    with dev.store.open("recordings/r1/new.bin", "xb") as f:
        f.write(b"x")
    with pytest.raises(StoreError, match="outside"):
        dev.store.open("/tmp/elsewhere", "rb")


def test_nearly_full(dev):
    free = dev.store.free_bytes()
    assert free > 0
    assert dev.store.nearly_full(0) is False
    assert dev.store.nearly_full(free * 2 + 2**40) is True
    with pytest.raises(ValueError):
        dev.store.nearly_full(-1)


def test_reclaim_needs_a_dock_receipt(dev):
    with pytest.raises(ReclaimRequiresDockReceipt, match="dock receipt"):
        dev.store.reclaim(None)
    assert all(i.path.exists() for i in dev.infos)


def test_bad_recording_id_is_refused(dev):
    for bad in ["../up", "", "a/b", ".hidden"]:
        with pytest.raises(ValueError):
            dev.store.recording_dir(bad)


def test_seal_records_the_on_disk_hash_when_writer_disagrees(tmp_path):
    dev = new_device(tmp_path)
    [info] = make_recording(dev.store.recording_dir("r2"), "r2", 1)
    wrong = dataclasses.replace(info, sha256="0" * 64, size=info.size + 1)
    rec = dev.sealer.segment_closed(wrong)
    assert rec.payload["sha256"] == info.sha256
    assert rec.payload["writer_sha256"] == "0" * 64
    assert rec.payload["writer_size"] == info.size + 1
    assert verify_directory(dev.root, dev.pem).ok


def test_seal_payload_carries_segment_facts(dev):
    rec = [r for r in iter_records(dev.journal.path) if r.type == "segment"][1]
    info = dev.infos[1]
    p = rec.payload
    assert (p["path"], p["sha256"], p["size"], p["index"], p["final"], p["recovered"]) == \
        ("recordings/r1/r1_00001.ts", info.sha256, info.size, 1, True, False)
    assert (p["first_pts"], p["last_pts"], p["video_frames"], p["first_sample"]) == \
        (info.first_pts, info.last_pts, info.video_frames, info.first_sample)
    assert p["wall_start"]["wall_ns"] == info.wall_start.wall_ns


def test_sealing_a_part_file_or_missing_file_fails_clearly(tmp_path):
    dev = new_device(tmp_path)
    [info] = make_recording(dev.store.recording_dir("r3"), "r3", 1)
    with pytest.raises(SealError, match="not closed"):
        dev.sealer.segment_closed(dataclasses.replace(info, path=info.path.with_name("x.ts.part")))
    with pytest.raises(SealError, match="cannot seal"):
        dev.sealer.segment_closed(dataclasses.replace(info, path=info.path.with_name("gone.ts")))
    with pytest.raises(StoreError, match="outside"):
        dev.sealer.segment_closed(dataclasses.replace(info, path=tmp_path / "elsewhere.ts"))
