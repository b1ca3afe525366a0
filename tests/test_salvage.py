"""Power-loss salvage on real truncated MPEG-TS segments: decodable result, nothing lost, all journaled."""
import subprocess

import pytest

from recorder import records
from recorder.journal import iter_records
from recorder.salvage import TS_PACKET, analyse_ts, recover, ts_cut_point
from recorder.verify import verify_directory
from tests.media_fixture import make_recording, new_device


@pytest.fixture(scope="module")
def segment_bytes(tmp_path_factory):
    [info] = make_recording(tmp_path_factory.mktemp("src"), "r1", 1)
    return info.path.read_bytes()


def ffmpeg_errors(path):
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                         capture_output=True, text=True)
    return out.returncode, out.stderr


def journal(dev):
    return list(iter_records(dev.journal.path))


@pytest.mark.parametrize("fraction", [0.2, 0.33, 0.45, 0.5, 0.61, 0.7, 0.77, 0.9, 0.97, 1.0])
def test_truncated_part_is_salvaged_to_a_cleanly_decodable_segment(tmp_path, segment_bytes, fraction):
    cut_at = int(len(segment_bytes) * fraction) - (7 if fraction < 1 else 0)  # mid-packet
    data = segment_bytes[:cut_at]
    dev = new_device(tmp_path)
    part = dev.store.recording_dir("r1") / "r1_00000.ts.part"
    part.write_bytes(data)

    [res] = recover(dev.store, dev.sealer)

    assert res.info is not None and res.info.recovered and res.info.final
    assert not part.exists()
    seg = part.with_name("r1_00000.ts")
    assert seg.stat().st_size % TS_PACKET == 0
    rc, err = ffmpeg_errors(seg)
    assert rc == 0 and err == "", err
    # nothing lost: the segment plus the cut-off file are exactly what the crash left
    kept = seg.read_bytes()
    if res.cut_bytes:
        [att] = res.attachments
        kept += (dev.root / att["path"]).read_bytes()
    assert kept == data
    facts = analyse_ts(seg.read_bytes())
    assert res.info.video_frames == facts.video_frames > 0
    assert res.info.first_pts == facts.first_pts
    types = [r.type for r in journal(dev)]
    assert types[-2:] == [records.SEGMENT, records.INTERRUPTION]
    interruption = journal(dev)[-1].payload
    assert interruption["cause"] == "power-loss" and interruption["recovered_segments"] == [0]
    result = verify_directory(dev.root, dev.pem)
    assert result.ok, result.failure


@pytest.mark.parametrize("content", [b"", b"\x47" * 100, b"garbage" * 200, None])
def test_undecodable_part_is_kept_and_journaled(tmp_path, segment_bytes, content):
    data = segment_bytes[:3 * TS_PACKET] if content is None else content
    dev = new_device(tmp_path)
    part = dev.store.recording_dir("r1") / "r1_00000.ts.part"
    part.write_bytes(data)

    [res] = recover(dev.store, dev.sealer)

    assert res.info is None and res.unreadable == part.with_name("r1_00000.ts.unreadable")
    assert res.unreadable.read_bytes() == data
    rec = [r for r in journal(dev) if r.type == records.UNREADABLE_PART][0]
    assert rec.payload["attachments"][0]["path"] == "recordings/r1/r1_00000.ts.unreadable"
    assert rec.payload["reason"]
    assert journal(dev)[-1].payload["unreadable"] == ["recordings/r1/r1_00000.ts.unreadable"]
    assert verify_directory(dev.root, dev.pem).ok


def test_zero_filled_tail_after_power_cut_is_cut_and_kept(tmp_path, segment_bytes):
    data = segment_bytes[:20000 // TS_PACKET * TS_PACKET] + b"\0" * 8192
    dev = new_device(tmp_path)
    part = dev.store.recording_dir("r1") / "r1_00000.ts.part"
    part.write_bytes(data)
    [res] = recover(dev.store, dev.sealer)
    assert res.cut_bytes > 8192
    assert ffmpeg_errors(res.info.path) == (0, "")
    assert verify_directory(dev.root, dev.pem).ok


def test_salvaged_segment_continues_the_recording(tmp_path):
    dev = new_device(tmp_path)
    infos = make_recording(dev.store.recording_dir("r1"), "r1", 4, leave_last_open=True)
    for info in infos:  # segments 0..2 sealed, segment 3 left as .part by the crash
        dev.sealer.segment_closed(info)
    part = dev.store.recording_dir("r1") / "r1_00003.ts.part"
    with open(part, "r+b") as f:
        f.truncate(part.stat().st_size * 2 // 3)
    dev = dev.reopen()
    [res] = recover(dev.store, dev.sealer)
    assert res.info.index == 3
    assert res.info.first_pts == infos[-1].last_pts + infos[-1].frame_duration
    assert res.info.first_sample == infos[-1].first_sample + infos[-1].audio_samples
    assert res.record.payload["salvage"]["wall_time"] == "extrapolated-from-previous-segment"
    assert res.info.wall_start.wall_ns > infos[-1].wall_end.wall_ns
    result = verify_directory(dev.root, dev.pem)
    assert result.ok, result.failure


def test_closed_but_unsealed_segment_is_sealed_as_recovered(tmp_path):
    dev = new_device(tmp_path)
    infos = make_recording(dev.store.recording_dir("r1"), "r1", 3, leave_last_open=True)
    dev.sealer.segment_closed(infos[0])  # power lost after renaming segment 1, before sealing it
    dev = dev.reopen()
    results = recover(dev.store, dev.sealer)
    assert [r.info.index for r in results] == [1, 2]
    assert [r.info.final for r in results] == [False, True]
    assert results[0].cut_bytes == 0 and results[0].info.sha256 == infos[1].sha256
    assert results[1].info.recovered
    [interruption] = [r for r in journal(dev) if r.type == records.INTERRUPTION]
    assert interruption.payload["recovered_segments"] == [1, 2]
    result = verify_directory(dev.root, dev.pem)
    assert result.ok, result.failure


def test_recover_twice_finds_nothing_the_second_time(tmp_path, segment_bytes):
    dev = new_device(tmp_path)
    (dev.store.recording_dir("r1") / "r1_00000.ts.part").write_bytes(segment_bytes[:15000])
    assert len(recover(dev.store, dev.sealer)) == 1
    n = len(journal(dev))
    assert recover(dev.store, dev.sealer) == []
    assert len(journal(dev)) == n


def test_cut_point_edge_cases(segment_bytes):
    assert ts_cut_point(b"") == 0
    assert ts_cut_point(b"\0" * 1880) == 0
    cut = ts_cut_point(segment_bytes)
    assert 0 < cut < len(segment_bytes) and cut % TS_PACKET == 0
    assert ts_cut_point(segment_bytes[:cut]) <= cut


def test_first_segment_without_start_record_is_dated_by_its_mtime_before_the_cut(tmp_path):
    """No recording-start record to go by: the part file's mtime (when it was last written)
    dates it, read before salvage cuts the file, which would set the mtime to now."""
    import os
    dev = new_device(tmp_path)
    make_recording(dev.store.recording_dir("r1"), "r1", 1, leave_last_open=True)
    part = dev.store.recording_dir("r1") / "r1_00000.ts.part"
    with open(part, "r+b") as f:
        f.truncate(part.stat().st_size * 2 // 3)
    written_ns = 1_700_000_000 * 10**9           # last written long before this start-up
    os.utime(part, ns=(written_ns, written_ns))
    dev = dev.reopen()
    [res] = recover(dev.store, dev.sealer)
    assert res.cut_bytes > 0
    assert res.record.payload["wall_end"]["wall_ns"] == written_ns
    salvage = res.record.payload["salvage"]
    assert salvage["wall_time"] == "file-mtime"
    assert salvage["wall_time_basis"] == {"mtime_ns": written_ns}
    assert records.find_float(salvage) is None
    assert verify_directory(dev.root, dev.pem).ok


def _closed(data: bytes) -> bytes:
    """``data`` as the segmenter leaves a segment it closed: followed by its end marker."""
    import hashlib

    from recorder.segmenter import end_marker
    return data + end_marker(len(data), hashlib.sha256(data).digest())


def test_closed_part_with_end_marker_is_kept_whole(tmp_path, segment_bytes):
    """Closed completely, the power went before the rename: nothing is cut off the last
    PES packets, and the end marker (a null-PID packet) decodes without a word from ffmpeg."""
    from recorder.segmenter import is_complete
    data = _closed(segment_bytes)
    assert is_complete(data) and ts_cut_point(data) == len(data)
    dev = new_device(tmp_path)
    part = dev.store.recording_dir("r1") / "r1_00000.ts.part"
    part.write_bytes(data)
    [res] = recover(dev.store, dev.sealer)
    assert res.cut_bytes == 0 and res.attachments == []
    assert res.info.path.read_bytes() == data and res.info.size == len(data)
    assert ffmpeg_errors(res.info.path) == (0, "")
    assert res.info.video_frames == analyse_ts(segment_bytes).video_frames == 25
    assert verify_directory(dev.root, dev.pem).ok


def test_end_marker_that_does_not_match_what_precedes_it_is_not_trusted(segment_bytes):
    """Only a marker whose length and SHA-256 match every byte before it says "complete":
    a zeroed block (power loss), a changed byte or a marker alone gets the ordinary cut."""
    from recorder.segmenter import is_complete
    data = _closed(segment_bytes)
    zeroed = data[:4 * TS_PACKET] + b"\0" * 4096 + data[4 * TS_PACKET + 4096:]
    flipped = data[:1000] + bytes([data[1000] ^ 1]) + data[1001:]
    for bad in (zeroed, flipped, data[TS_PACKET:], data[-TS_PACKET:], data[:-1]):
        assert not is_complete(bad)
        assert ts_cut_point(bad) < len(bad)
