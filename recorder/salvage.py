"""Power-loss recovery: turn what a crash left behind into sealed, accounted-for evidence.

After a power cut the evidence directory can hold:

* ``NAME.ts.part`` that ends with the segmenter's end marker (its length and
  SHA-256 match every byte before it): closed completely, the power went before
  the rename. Nothing is cut; it is checked, renamed and sealed like the next case.
* Any other ``NAME.ts.part``: the segment being written. It is cut back to the last whole
  188-byte TS packet and then to the last PES boundary at which every stream's
  packet is complete (so the file decodes without errors), checked by decoding
  it with PyAV, renamed to ``NAME.ts`` and returned as a SegmentInfo with
  ``recovered=True`` for sealing. The bytes cut off are not thrown away: they
  are kept beside it as ``NAME.ts.cut-at-OFFSET`` and attested in the segment
  record.
* ``NAME.ts`` without a journal record: closed and renamed, but the power went
  before it was sealed. It is analysed the same way (nothing is cut) and sealed.
* A part file with nothing decodable (empty, garbage) is renamed
  ``NAME.ts.unreadable`` and journaled as an ``unreadable-part`` record, never deleted.

``recover()`` does all of this and journals one ``interruption`` record with
cause ``power-loss`` per recording affected. ``salvage_part`` and ``analyse_ts``
are the pieces, for callers who want to drive it themselves.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

import av

from common.clock import TimeQuality, TimeSample
from recorder import age, records
from recorder.encrypt import SYNC_SUFFIX, encrypted_part, read_index
from recorder.journal import Journal, fsync_dir, iter_records
from recorder.records import Record
from recorder.seal import Sealer
from recorder.segment_info import SegmentInfo
from recorder.segmenter import TS_ORIGIN_S, is_complete
from recorder.store import RECORDINGS_DIR, EvidenceStore

log = logging.getLogger(__name__)

TS_PACKET = 188
TS_SYNC = 0x47
TIME_BASE = 90000
PART_SUFFIX = ".part"
UNREADABLE_SUFFIX = ".unreadable"
CUT_INFIX = ".cut-at-"
_DEFAULT_NAME = re.compile(r"^(?P<recording_id>.+)[_-](?P<index>\d+)\.ts$")

NameParser = Callable[[Path], "tuple[str, int | None]"]


def default_name_parser(path: Path) -> tuple[str, int | None]:
    """``<recording_id>_<index>.ts`` (or ``-``); otherwise the parent directory is the id."""
    name = path.name.removesuffix(PART_SUFFIX)
    m = _DEFAULT_NAME.match(name)
    if m:
        return m.group("recording_id"), int(m.group("index"))
    return path.parent.name, None


# ---- finding a clean cut in a transport stream -----------------------------
def ts_cut_point(data: bytes | memoryview) -> int:
    """Byte offset up to which ``data`` holds only whole TS packets and complete PES packets.

    Stops at the first packet without the 0x47 sync byte (e.g. a zero-filled tail
    after a power cut). The last PES packet of each elementary stream is treated
    as possibly incomplete, because a crashed writer never said it had finished it;
    the cut is then moved back until no PES packet straddles it. A closed segment
    (it ends with a valid end marker, see ``recorder.segmenter.is_complete``) said
    it had finished every packet: it is returned whole.
    """
    if is_complete(data):
        return len(data)
    n = len(data) // TS_PACKET * TS_PACKET
    starts: dict[int, list[int]] = {}
    last_packet: dict[int, list[int]] = {}   # per PID, per PES: offset of its last packet
    end = 0
    for off in range(0, n, TS_PACKET):
        if data[off] != TS_SYNC:
            break
        end = off + TS_PACKET
        b1, b3 = data[off + 1], data[off + 3]
        pid = ((b1 & 0x1F) << 8) | data[off + 2]
        afc = (b3 >> 4) & 3
        if not afc & 1:
            continue  # no payload
        payload = off + 4 + (1 + data[off + 4] if afc & 2 else 0)
        if b1 & 0x40 and payload + 3 <= end and bytes(data[payload:payload + 3]) == b"\0\0\1":
            starts.setdefault(pid, []).append(off)
            last_packet.setdefault(pid, []).append(off)
        elif pid in starts:
            last_packet[pid][-1] = off
    if not starts:
        return 0
    cut = min(s[-1] for s in starts.values())
    cut = min(cut, end)
    moved = True
    while moved:
        moved = False
        for pid, s in starts.items():
            for begin, last in zip(s, last_packet[pid], strict=False):
                if begin < cut < last + TS_PACKET:
                    cut, moved = begin, True
    return cut


@dataclass(frozen=True)
class MediaFacts:
    """What decoding a TS byte string found."""

    video_frames: int
    first_pts: int | None
    last_pts: int | None
    audio_samples: int
    frame_duration: int | None
    error: str | None = None


def analyse_ts(data: bytes) -> MediaFacts:
    """Decode every video and audio packet (PyAV); counts, PTS range, or the error hit."""
    frames, samples, pts = 0, 0, []
    rate = None
    try:
        with av.open(io.BytesIO(data), "r", format="mpegts") as c:   # "r": the default for a BytesIO
            if not c.streams.video:
                return MediaFacts(0, None, None, 0, None, "no video stream")
            vs = c.streams.video[0]
            if vs.average_rate:
                rate = vs.average_rate
            streams = [vs] + list(c.streams.audio[:1])
            for packet in c.demux(*streams):
                for frame in packet.decode():
                    if packet.stream.type == "video":
                        vframe = cast(av.VideoFrame, frame)   # a video packet decodes to video frames
                        frames += 1
                        if vframe.pts is not None:
                            assert vframe.time_base is not None   # a decoded frame has its stream's
                            pts.append(int(vframe.pts * vframe.time_base * TIME_BASE))
                    else:
                        samples += cast(av.AudioFrame, frame).samples   # the other stream is audio
    except (av.FFmpegError, ValueError, IndexError) as exc:
        return MediaFacts(frames, None, None, samples, None, f"decode failed: {exc}")
    if not frames or not pts:
        return MediaFacts(0, None, None, samples, None, "no decodable video frame")
    pts.sort()
    diffs = [b - a for a, b in itertools.pairwise(pts) if b > a]
    duration = int(round(TIME_BASE / rate)) if rate else (min(diffs) if diffs else None)
    return MediaFacts(frames, pts[0], pts[-1], samples, duration)


# ---- salvaging one file -----------------------------------------------------
@dataclass
class SalvageResult:
    source: Path                        # the file found (NAME.ts.part or unsealed NAME.ts)
    info: SegmentInfo | None = None     # to seal, when something was recovered
    unreadable: Path | None = None      # where an undecodable file was kept
    cut_bytes: int = 0                  # bytes moved to the cut-off file
    reason: str | None = None           # why it was unreadable
    record: Record | None = None        # the record recover() wrote for it
    attachments: list[dict[str, Any]] = field(default_factory=list)
    sync_index: Path | None = None      # an encrypted segment's sync index, removed once journaled


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()



def _cut_back(path: Path, name: str, data: bytes, cut: int, attachments: list[dict[str, Any]],
              root: Path) -> int:
    """Keep ``data[cut:]`` as the attested ``<name>.cut-at-<cut>`` (once: a rerun finds it among
    ``attachments``) and truncate ``path`` to ``cut``, durably. Returns the bytes cut off."""
    tail = data[cut:]
    cut_path = path.with_name(f"{name}{CUT_INFIX}{cut}")
    rel = records.relpath_in(root, cut_path)
    if not any(a["path"] == rel for a in attachments):
        _write_new(cut_path, tail)
        attachments.append(records.file_attestation(rel, _sha(tail), len(tail), "salvage-cut"))
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, cut)
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(tail)

def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _free_name(path: Path) -> Path:
    if not os.path.lexists(path):
        return path
    k = 1
    while os.path.lexists(path.with_name(f"{path.name}.{k}")):
        k += 1
    return path.with_name(f"{path.name}.{k}")


def _estimate_wall(prev: dict[str, Any] | None, first_pts: int, last_pts: int, mtime_ns: int,
                   start: dict[str, Any] | None = None
                   ) -> tuple[TimeSample, TimeSample, str, dict[str, Any]]:
    """Wall times of a salvaged segment, and how they were found (integers only).

    Best first: extrapolated from the previous sealed segment's ``wall_end``; else from the
    recording's ``recording-start`` record (``start``: its message, whose own wall/monotonic
    pair was journaled before the first frame was written, and whose ``t0_mono_ns`` is the
    monotonic instant of media time zero); else the file's mtime, read before the salvage
    touched the file (an mtime read after the cut would be the time of the next start-up).
    """
    if prev is not None:
        end = prev["wall_end"]
        base_mono, base_wall = end["mono_ns"], end["wall_ns"]
        q = TimeQuality(end["time_quality"])
        err = end.get("time_error_ns")
        d0 = (first_pts - prev["last_pts"]) * 10**9 // TIME_BASE
        d1 = (last_pts - prev["last_pts"]) * 10**9 // TIME_BASE
        e = None if err is None else err / 1e9
        return (TimeSample(base_mono + d0, base_wall + d0, q, e),
                TimeSample(base_mono + d1, base_wall + d1, q, e), "extrapolated-from-previous-segment",
                {"segment_index": prev["index"], "mono_ns": base_mono, "wall_ns": base_wall})
    if start is not None:
        base_mono, base_wall = start["mono_ns"], start["wall_ns"]
        payload = start.get("payload", {})
        t0 = payload.get("t0_mono_ns", payload.get("first_frame_mono_ns", base_mono))
        q = TimeQuality(start["time_quality"])
        err = start.get("time_error_ns")
        e = None if err is None else err / 1e9
        origin = TS_ORIGIN_S * TIME_BASE
        m0 = t0 + (first_pts - origin) * 10**9 // TIME_BASE
        m1 = t0 + (last_pts - origin) * 10**9 // TIME_BASE
        return (TimeSample(m0, base_wall + m0 - base_mono, q, e),
                TimeSample(m1, base_wall + m1 - base_mono, q, e), "recording-start-record",
                {"record_seq": start["seq"], "mono_ns": base_mono, "wall_ns": base_wall,
                 "t0_mono_ns": t0})
    span = (last_pts - first_pts) * 10**9 // TIME_BASE
    return (TimeSample(0, mtime_ns - span, TimeQuality.UNSYNCED),
            TimeSample(span, mtime_ns, TimeQuality.UNSYNCED), "file-mtime", {"mtime_ns": mtime_ns})


def _existing_cuts(name: str, directory: Path, attested: set[str], root: Path) -> list[dict[str, Any]]:
    """Cut-off files of an earlier salvage of the same segment that died before sealing."""
    found = []
    for p in sorted(directory.glob(name + CUT_INFIX + "*")):
        rel = records.relpath_in(root, p)
        if rel not in attested:
            data = p.read_bytes()
            found.append(records.file_attestation(rel, _sha(data), len(data), "salvage-cut"))
    return found


def salvage_file(path: Path, root: Path, previous: dict[str, Any] | None = None,
                 name_parser: NameParser = default_name_parser,
                 attested: set[str] | None = None, final: bool = True,
                 start: dict[str, Any] | None = None) -> SalvageResult:
    """Salvage one ``NAME.ts.part`` (cut, check, rename) or analyse one unsealed ``NAME.ts``.

    ``previous`` is the payload of the last sealed segment of the same recording
    (for index, audio sample and wall-time continuity), if any. ``start`` is the message
    of the recording's ``recording-start`` record, if any: it dates a segment that has
    no sealed predecessor.
    """
    path, root = Path(path), Path(root)
    attested = attested or set()
    is_part = path.name.endswith(PART_SUFFIX)
    final_path = path.with_name(path.name.removesuffix(PART_SUFFIX))
    result = SalvageResult(source=path)
    mtime_ns = path.stat().st_mtime_ns   # before anything below touches the file
    data = path.read_bytes()
    sealed_facts: dict[str, Any] | None = None
    sync_index = final_path.with_name(final_path.name + SYNC_SUFFIX)
    if encrypted_part(data) or os.path.lexists(sync_index):
        # the device cannot decrypt what it wrote: cut at the last durable sync point its
        # sync index names (recorder/encrypt.py), with the media facts noted there (a part
        # killed before its header reached the disk is empty: its index says it was encrypted)
        result.sync_index = sync_index
        head, entry = _sync_point(result.sync_index, data)
        cut = entry["stored_size"] if entry else 0
        facts = (MediaFacts(entry["video_frames"], entry["first_pts"], entry["last_pts"],
                            entry["audio_samples"], entry.get("frame_duration")) if entry else
                 MediaFacts(0, None, None, 0, None, "encrypted, and no durable sync point its "
                            "sync index vouches for (not a whole chunk, nor half a second, was written)"))
        if entry:
            sealed_facts = {"format": head.get("format", age.FORMAT),
                            "recipients": head.get("recipients", []),
                            "complete": bool(entry["complete"]), "chunks": entry["chunks"],
                            "plaintext_sha256": entry["plain_sha256"],
                            "plaintext_size": entry["plain_size"]}
            if (not entry["complete"] and isinstance(entry.get("media_size"), int)
                    and 0 < entry["media_size"] <= entry["plain_size"]):
                # the plaintext ends where a chunk ended, inside a TS packet and a PES packet
                # whose rest was not written: players get the whole PES packets before it
                sealed_facts["media_size"] = entry["media_size"]
    else:
        cut = ts_cut_point(data) if is_part else len(data)
        facts = analyse_ts(data[:cut]) if cut else MediaFacts(0, None, None, 0, None, "no whole TS packet")
    if facts.error:
        keep = _free_name(final_path.with_name(final_path.name + UNREADABLE_SUFFIX))
        os.chmod(path, 0o444)
        os.rename(path, keep)
        fsync_dir(path.parent)
        result.unreadable, result.reason = keep, facts.error
        result.attachments = [records.file_attestation(
            records.relpath_in(root, keep), _sha(data), len(data), "unreadable-part")]
        log.error("salvage: %s is unreadable (%s); kept as %s", path, facts.error, keep.name)
        return result

    attachments = _existing_cuts(final_path.name, path.parent, attested, root)
    if cut < len(data):
        assert is_part or sealed_facts is not None, "an unsealed closed segment is never cut"
        result.cut_bytes = _cut_back(path, final_path.name, data, cut, attachments, root)
    if is_part and path != final_path:
        os.rename(path, final_path)
    fsync_dir(path.parent)

    recording_id, index = name_parser(final_path)
    if index is None:
        index = previous["index"] + 1 if previous else 0
    if previous is not None:
        first_sample = previous["first_sample"] + previous["audio_samples"]
        frame_duration = previous["frame_duration"]
    else:
        first_sample, frame_duration = 0, facts.frame_duration or TIME_BASE // 25
    assert facts.first_pts is not None and facts.last_pts is not None   # analyse_ts sets both unless error
    wall_start, wall_end, wall_source, wall_basis = _estimate_wall(
        previous, facts.first_pts, facts.last_pts, mtime_ns, start)
    body = data[:cut]
    result.attachments = attachments
    result.info = SegmentInfo(
        path=final_path, recording_id=recording_id, index=index, sha256=_sha(body), size=len(body),
        time_base=TIME_BASE, first_pts=facts.first_pts, last_pts=facts.last_pts,
        frame_duration=frame_duration, video_frames=facts.video_frames,
        first_sample=first_sample, audio_samples=facts.audio_samples,
        wall_start=wall_start, wall_end=wall_end, final=final, recovered=True,
        extra={"attachments": attachments,
               "salvage": {"source": path.name, "cut_bytes": result.cut_bytes,
                           "original_size": len(data), "wall_time": wall_source,
                           "wall_time_basis": wall_basis,
                           "decoded_video_frames": facts.video_frames,
                           "decoded_audio_samples": facts.audio_samples}})
    if sealed_facts is not None:
        # not decoded: counted by the writer in what it made durable (its sync index)
        salvage = result.info.extra["salvage"]
        salvage["cut_at"] = "sync-index"
        salvage["indexed_video_frames"] = salvage.pop("decoded_video_frames")
        salvage["indexed_audio_samples"] = salvage.pop("decoded_audio_samples")
        result.info.extra["encryption"] = sealed_facts
    log.warning("salvage: recovered %s (%d frames, %d bytes cut off)", final_path.name,
                facts.video_frames, result.cut_bytes)
    return result


def _sync_point(index: Path, data: bytes, media: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The sync index's head and its last entry that the file bears out: the ciphertext
    prefix it names is present with that SHA-256 (a complete entry: the whole file).
    ``media``: a segment's entry must also name the frames it holds (a voice note's has none)."""
    head, entries = read_index(index)
    for e in reversed(entries):
        n = e["stored_size"]
        if n > len(data) or (e.get("complete") and n != len(data)):
            continue
        if media and (not e.get("video_frames") or not isinstance(e.get("first_pts"), int)
                      or not isinstance(e.get("last_pts"), int)):
            continue
        if not (isinstance(e.get("plain_size"), int) and isinstance(e.get("plain_sha256"), str)
                and isinstance(e.get("chunks"), int)):
            continue
        if _sha(data[:n]) == e["stored_sha256"]:
            return head, e
    return head, None


_NOTE_FACTS = ("samples", "sample_rate", "duration_ms", "codec", "start", "end", "link")
"""What a voice note's record takes from its sync index head (recorder.voice_note)."""


def salvage_encrypted_note(path: Path, root: Path, attested: set[str]) -> dict[str, Any] | None:
    """The record facts of an encrypted voice note a power cut left without its record
    (recorder.voice_note writes its sync index ``NOTE.aac.age.sync`` first): the note's own
    facts from the index head, its plaintext facts (``encryption``) from the last index entry
    the file bears out, and its attachments. A file cut short is cut back to that entry's whole
    chunks like a segment (the tail kept as ``NOTE.aac.age.cut-at-N``, attested), and then has
    no length facts. None when no entry matches (the note is attested as it is, without them)."""
    path, root = Path(path), Path(root)
    data = path.read_bytes()
    head, entry = _sync_point(path.with_name(path.name + SYNC_SUFFIX), data, media=False)
    if entry is None:
        return None
    note = head.get("note")
    if not isinstance(note, dict):
        note = {}
    cut = entry["stored_size"]
    attachments = _existing_cuts(path.name, path.parent, attested, root)
    facts: dict[str, Any] = {k: note[k] for k in _NOTE_FACTS if k in note}
    if cut < len(data):
        cut_bytes = _cut_back(path, path.name, data, cut, attachments, root)
        for k in ("samples", "duration_ms", "end"):   # they describe the whole note
            facts.pop(k, None)
        facts["salvage"] = {"cut_at": "sync-index", "cut_bytes": cut_bytes, "original_size": len(data)}
        log.warning("salvage: voice note %s cut back to its last whole chunk (%d bytes cut off)",
                    path.name, cut_bytes)
    os.chmod(path, 0o444)
    fsync_dir(path.parent)
    body = data[:cut]
    facts["encryption"] = {"format": head.get("format", age.FORMAT), "recipients": head.get("recipients", []),
                           "complete": bool(entry["complete"]), "chunks": entry["chunks"],
                           "plaintext_sha256": entry["plain_sha256"], "plaintext_size": entry["plain_size"]}
    facts["attachments"] = [records.file_attestation(records.relpath_in(root, path), _sha(body), len(body),
                                                     "voice-note"), *attachments]
    return facts


def _drop_sync_indexes(root: Path, attested: set[str]) -> None:
    """Remove sync indexes that no file left to salvage needs: their segment was sealed, or
    kept as unreadable, and a crash came before the index was removed."""
    rec_dir = root / RECORDINGS_DIR
    if not rec_dir.is_dir():
        return
    for p in sorted(rec_dir.glob("*/*" + SYNC_SUFFIX)):
        seg = p.with_name(p.name.removesuffix(SYNC_SUFFIX))
        part = seg.with_name(seg.name + PART_SUFFIX)
        unsealed = seg.exists() and records.relpath_in(root, seg) not in attested
        if not p.is_symlink() and not part.exists() and not unsealed:
            p.unlink()


# ---- the whole start-up recovery --------------------------------------------
def find_leftovers(root: Path, attested: set[str]) -> list[Path]:
    """Part files and unsealed closed segments under ``root/recordings``, in name order."""
    base = Path(root) / RECORDINGS_DIR
    found: list[Path] = []
    if not base.is_dir():
        return found
    for p in sorted(base.rglob("*")):
        if p.is_symlink():
            # never ours (segments are regular files); one may point outside the evidence
            # directory: leave it alone, never follow it (it is not served by the dock link either)
            log.warning("salvage: %s is a symbolic link, not a segment; ignored", p)
            continue
        if not p.is_file():
            continue
        if p.name.endswith(".ts.part"):
            found.append(p)
        elif p.name.endswith(".ts") and records.relpath_in(root, p) not in attested:
            found.append(p)
    return found


def recover(store: EvidenceStore, sealer: Sealer, journal: Journal | None = None,
            name_parser: NameParser = default_name_parser,
            cause: str = "power-loss") -> list[SalvageResult]:
    """Salvage, seal and journal everything a crash left; call once at start, before recording."""
    journal = journal or store.journal
    root = Path(store.root)
    attested: set[str] = set()
    last: dict[str, dict[str, Any]] = {}
    starts: dict[str, dict[str, Any]] = {}   # recording_id -> its recording-start record's message
    for rec in iter_records(journal.path):
        for f in records.attested_files(rec):
            attested.add(f["path"])
        if rec.type == records.SEGMENT:
            last[rec.payload["recording_id"]] = rec.payload
        elif rec.type == records.RECORDING_START and "recording_id" in rec.payload:
            starts[rec.payload["recording_id"]] = rec.message
    _drop_sync_indexes(root, attested)
    leftovers = find_leftovers(root, attested)
    results: list[SalvageResult] = []
    touched: dict[str, list[SalvageResult]] = {}
    for k, path in enumerate(leftovers):
        rid_guess, _ = name_parser(path.with_name(path.name.removesuffix(PART_SUFFIX)))
        later = any(name_parser(p.with_name(p.name.removesuffix(PART_SUFFIX)))[0] == rid_guess
                    for p in leftovers[k + 1:])
        try:
            res = salvage_file(path, root, last.get(rid_guess), name_parser, attested,
                               final=not later, start=starts.get(rid_guess))
        except OSError as exc:
            log.error("salvage: cannot process %s: %s (left in place)", path, exc)
            res = SalvageResult(source=path, reason=f"I/O error: {exc}")
            results.append(res)
            continue
        if res.info is not None:
            res.record = sealer.seal(res.info)
            last[res.info.recording_id] = res.record.payload
        elif res.unreadable is not None:
            res.record = journal.append(records.UNREADABLE_PART, {
                "source": path.name, "recording_id": rid_guess, "reason": res.reason,
                "attachments": res.attachments})
        for a in res.attachments:
            attested.add(a["path"])
        if res.sync_index is not None and res.record is not None:
            res.sync_index.unlink(missing_ok=True)   # not evidence; its facts are in the record
        results.append(res)
        touched.setdefault(rid_guess, []).append(res)
    for rid, group in touched.items():
        journal.append(records.INTERRUPTION, {
            "cause": cause, "recording_id": rid,
            "recovered_segments": [r.record.payload["index"] for r in group
                                   if r.info is not None and r.record is not None],
            "recovered_records": [r.record.seq for r in group if r.record is not None],
            "unreadable": [r.record.payload["attachments"][0]["path"] for r in group
                           if r.unreadable is not None and r.record is not None],
            "cut_bytes": sum(r.cut_bytes for r in group)})
    return results
