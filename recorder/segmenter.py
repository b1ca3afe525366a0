"""Rolling segments: encoded packets in, self-contained MPEG-TS files out.

MPEG-TS because it survives truncation (a power cut leaves every whole
188-byte packet readable, where an MP4 without its index is lost), each file
decodes on its own, and timestamps carry across files unchanged, so segment
N+1 starts exactly one frame after segment N ends.

Segment k holds video frames [k*F, (k+1)*F) — frame k*F is always a keyframe
because the encoder's GOP divides F — and the AAC packets whose first sample
lies in [k*S, (k+1)*S) with S the samples of F frames. A segment is written as
``NAME.ts.part`` while open, hashed as it is written, fsynced and renamed to
``NAME.ts`` when it closes, and then handed to the sink (which seals it).

A closed segment ends with one end-marker TS packet (null PID 0x1FFF, which every
demuxer skips) carrying the byte length and SHA-256 of everything before it
(:func:`end_marker`). It is written and handed to the kernel on the capture thread
before the next segment's part file is created, so a part file that a crash left
can be told complete (:func:`is_complete`: salvage keeps it whole) from one cut off
mid-write (salvage cuts it back to whole packets).
"""
from __future__ import annotations

import fractions
import hashlib
import io
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import av
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.stream import VideoStream

from common.clock import TimeSample
from common.crashpoints import crashpoint
from recorder.encode import AUDIO_LAYOUT
from recorder.segment_info import SegmentInfo, SegmentSink

log = logging.getLogger(__name__)

TS_ORIGIN_S = 1
"""Media time 0 is written as PTS 1 s: AAC's priming packet sits before the first
sample and MPEG-TS cannot carry negative timestamps (ffmpeg would otherwise shift
the first segment alone and open a gap at its end)."""


TS_PACKET = 188
MUX_BUFFER = 32 * 1024
"""The muxer's write buffer: bytes reach the file (and the running SHA-256) in writes of up
to this size, and in full before each sync point (each keyframe; an encrypted file asks for
more, ``HashingFile.sync_every_frames``; see ``_mux``). A killed process loses at most this
much of the open segment that it had muxed; a power cut, what came after the last sync."""
_FLUSH_PACKETS = 0x0200   # AVFMT_FLAG_FLUSH_PACKETS (av.container.core.Flags.flush_packets): set for
# one packet, the muxer flushes its buffer after writing it
END_MAGIC = b"BWC-SEGMENT-END\x01"
_END_HEADER = bytes((0x47, 0x1F, 0xFF, 0x10))   # sync, PID 0x1FFF (null), payload only, CC 0


def end_marker(size: int, sha256: bytes) -> bytes:
    """The TS packet that ends a closed segment: magic, the byte length and the SHA-256
    of the ``size`` bytes before it (the segment without this packet), 0xFF padding."""
    payload = END_MAGIC + size.to_bytes(8, "big") + sha256
    return _END_HEADER + payload.ljust(TS_PACKET - len(_END_HEADER), b"\xff")


def is_complete(data: bytes | memoryview) -> bool:
    """True when ``data`` is a whole closed segment: it ends with an end marker whose length
    and SHA-256 are those of every byte before it (so nothing is missing, torn or zeroed)."""
    n = len(data) - TS_PACKET
    if n < 0:
        return False
    marker = bytes(data[n:])
    m = len(_END_HEADER) + len(END_MAGIC)
    if marker[:m] != _END_HEADER + END_MAGIC or int.from_bytes(marker[m:m + 8], "big") != n:
        return False
    return marker == end_marker(n, hashlib.sha256(data[:n]).digest())


class StorageError(OSError):
    """Writing a segment failed (disk full, device gone); closed segments are unaffected."""


class HashingFile:
    """A write-only file that hashes what passes through; deliberately not seekable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "xb")
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:   # PyAV's I/O hands over bytes
        n = self._f.write(data)
        self.sha.update(data if n == len(data) else memoryview(data)[:n])
        self.size += n
        return n

    def flush(self) -> None:
        self._f.flush()

    def sync(self) -> None:
        """Make what was written so far durable, so a power cut loses at most the last second.

        Runs on the closer thread while the capture thread writes: Python's buffered writer
        takes its own lock, so flushing here is safe, and without it up to a buffer's worth
        of the last second would stay in user space."""
        try:
            self._f.flush()
            os.fdatasync(self._f.fileno())
        except (OSError, ValueError):  # closed meanwhile, or the disk is failing: close reports it
            pass

    def close_synced(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abandon(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass

    # -- what an encrypting file (recorder.encrypt) does differently; plain files: nothing
    def checkpoint(self) -> None:
        """At a sync point: make what the muxer wrote ready for the sync (plain: nothing to do)."""

    def finish(self) -> None:
        """After the end marker: everything to the kernel."""
        self._f.flush()

    def note_complete(self, facts: dict[str, Any]) -> None:
        """The segment is whole (an encrypting file notes it for salvage)."""

    def discard_index(self) -> None:
        """The segment is sealed (an encrypting file removes its sync index)."""

    @property
    def stored_sha256(self) -> str:
        """SHA-256 of the bytes on disk (plain: the same as what was written)."""
        return self.sha.hexdigest()

    @property
    def stored_size(self) -> int:
        return self.size

    def attestation(self) -> dict[str, Any]:
        """Extra fields for the segment record (plain: none)."""
        return {}

    def sync_every_frames(self, fps: int) -> int:
        """Video frames between extra sync points inside a GOP (plain: 0, each keyframe only;
        an encrypting file asks for more, see recorder.encrypt.SYNC_INTERVAL_S)."""
        return 0


@dataclass
class _Open:
    index: int
    part: Path
    final: Path
    file: HashingFile
    container: OutputContainer
    vstream: VideoStream
    astream: AudioStream
    first_pts: int | None = None
    last_pts: int | None = None
    frames: int = 0
    first_sample: int | None = None
    end_sample: int = 0
    syncing: bool = False   # the muxer flushes every packet until the next video frame, then sync
    sync_every: int = 0     # file.sync_every_frames(fps), asked once per segment


@dataclass
class StreamFormat:
    width: int
    height: int
    fps: int
    sample_rate: int
    video_extradata: bytes | None
    audio_extradata: bytes | None


def _stream_templates(fmt: StreamFormat) -> tuple[VideoStream, AudioStream]:
    """An H.264 and an AAC stream in a container that is never written: each segment's
    streams are made from these (``add_stream_from_template``), which PyAV treats as already
    set up and so does not open an encoder for. Their parameters are what ``add_stream``
    would give; each segment still sets size, time base, layout and extradata itself."""
    c = av.open(io.BytesIO(), "w", format="mpegts")
    return c.add_stream("h264", rate=fmt.fps), c.add_stream("aac", rate=fmt.sample_rate)


class _Closer(threading.Thread):
    """Finishes closed segments off the capture thread: fsync, rename, hand to the sink, in order."""

    def __init__(self, sink: SegmentSink | None, errors: list[Exception]) -> None:
        super().__init__(name="segment-closer", daemon=True)
        self.sink = sink
        # jobs: a closed segment to finish, an open one's file to sync, None to stop
        self.q: queue.Queue[tuple[_Open, SegmentInfo, float] | HashingFile | None] = queue.Queue()
        self.errors = errors
        self.seal_latencies: list[float] = []  # segment closed -> durable and sealed, seconds

    def run(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                return
            if isinstance(job, HashingFile):  # an open segment's periodic sync
                job.sync()
                continue
            seg, info, closed_at = job
            try:
                seg.file.close_synced()
                crashpoint("segment-before-rename")
                os.replace(seg.part, seg.final)
                crashpoint("segment-before-seal")
                if self.sink is not None:
                    self.sink.segment_closed(info)
                seg.file.discard_index()
                self.seal_latencies.append(time.perf_counter() - closed_at)
            except Exception as exc:  # logged and surfaced; never silently dropped
                log.error("could not close segment %s: %s", seg.final, exc)
                self.errors.append(exc)


class Segmenter:
    """Muxes one recording's packets into consecutive segment files."""

    def __init__(self, directory: Path, recording_id: str, fmt: StreamFormat,
                 frames_per_segment: int, sink: SegmentSink | None = None,
                 recipients: Sequence[str] = ()) -> None:
        """``recipients``: age recipients (``age1...``) to encrypt every segment to; empty
        writes plain segments."""
        self.dir = directory
        self.recipients = tuple(recipients)
        self.recording_id = recording_id
        self.fmt = fmt
        self.frames_per_segment = frames_per_segment
        self.frame_ticks = 90000 // fmt.fps
        self._audio_origin = TS_ORIGIN_S * fmt.sample_rate
        self.samples_per_segment = fmt.sample_rate * frames_per_segment // fmt.fps
        if self.samples_per_segment * fmt.fps != fmt.sample_rate * frames_per_segment:
            raise ValueError("segment length must hold a whole number of audio samples")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._seg: _Open | None = None
        self._pending: list[tuple[str, av.Packet[Any]]] = []  # packets for later segments
        self._ahead: set[str] = set()  # streams that have delivered a packet past the open segment
        self._wall_first: dict[int, TimeSample] = {}
        self._wall_last: dict[int, TimeSample] = {}
        self._repeats: dict[int, int] = {}
        self._silence: dict[int, int] = {}
        self.errors: list[Exception] = []
        self._closer = _Closer(sink, self.errors)
        self._closer.start()
        self.closed: list[SegmentInfo] = []
        self._templates = _stream_templates(fmt)
        self._open(0)

    # -- file handling -------------------------------------------------------
    def _name(self, index: int) -> Path:
        return self.dir / f"{self.recording_id}_{index:05d}.ts"

    def _open(self, index: int) -> None:
        final = self._name(index)
        part = final.with_name(final.name + ".part")
        try:
            options = {"flush_packets": "0"}
            if self.recipients:
                from recorder.encrypt import EncryptingFile  # not imported by plain recording
                f: HashingFile = EncryptingFile(part, self.recipients, self.fmt.sample_rate, TS_ORIGIN_S)
                # one PES per AAC packet, so that the sync index can count audio samples
                options["pes_payload_size"] = "0"
            else:
                f = HashingFile(part)
            # The muxer's own buffer gathers packets into writes of up to MUX_BUFFER bytes (one
            # write and SHA-256 update per ~2 frames at 1080p, not one per audio and video
            # packet); it is flushed before each sync point (see _mux), so that sync still
            # makes everything up to that frame durable.
            c = av.open(f, "w", format="mpegts", options=options, buffer_size=MUX_BUFFER)
            # streams copied from never-opened templates: PyAV opens the codec of a stream made
            # by add_stream() when muxing starts, i.e. a whole libx264 and AAC encoder (4 MB,
            # 4 threads, 2 ms) per segment that never encodes a frame
            vs = c.add_stream_from_template(self._templates[0])
            vs.width, vs.height = self.fmt.width, self.fmt.height
            vs.time_base = fractions.Fraction(1, 90000)
            if self.fmt.video_extradata:
                vs.codec_context.extradata = self.fmt.video_extradata
            aus = c.add_stream_from_template(self._templates[1])
            # the stream's own layout is what the muxer declares in every ADTS header:
            # it must match the encoder's (mono), or players get a stereo stream with
            # the sound in the left ear only
            aus.codec_context.layout = AUDIO_LAYOUT
            aus.codec_context.extradata = self.fmt.audio_extradata
        except OSError as exc:
            raise StorageError(exc.errno, f"cannot open segment {part}: {exc.strerror}") from exc
        self._seg = _Open(index, part, final, f, c, vs, aus, sync_every=f.sync_every_frames(self.fmt.fps))

    def _close_current(self, final: bool) -> SegmentInfo:
        seg = self._seg
        assert seg is not None   # only called with a segment open
        try:
            seg.container.close()
            seg.file.write(end_marker(seg.file.size, seg.file.sha.digest()))
            # out of this process's buffer now, before the next part file exists: a part
            # that a later part follows is whole even if the process is killed before the
            # closer has synced and renamed it (an encrypting file seals its last chunk here)
            seg.file.finish()
        except OSError as exc:
            seg.file.abandon()
            raise StorageError(exc.errno, f"cannot finish segment {seg.part}: {exc.strerror}") from exc
        info = SegmentInfo(
            path=seg.final, recording_id=self.recording_id, index=seg.index,
            sha256=seg.file.stored_sha256, size=seg.file.stored_size, time_base=90000,
            # a closed segment holds video frames (finish() skips an empty one), so these are set
            first_pts=cast(int, seg.first_pts), last_pts=cast(int, seg.last_pts), frame_duration=self.frame_ticks,
            video_frames=seg.frames, first_sample=seg.first_sample or 0,
            audio_samples=seg.end_sample - (seg.first_sample or 0),
            wall_start=cast(TimeSample, self._wall_first.pop(seg.index, None)),
            wall_end=cast(TimeSample, self._wall_last.pop(seg.index, None)),
            frames_repeated=self._repeats.pop(seg.index, 0), silence_samples=self._silence.pop(seg.index, 0),
            final=final, extra=seg.file.attestation())
        try:
            seg.file.note_complete({"video_frames": info.video_frames, "first_pts": info.first_pts,
                                    "last_pts": info.last_pts, "frame_duration": info.frame_duration,
                                    "first_sample": info.first_sample,
                                    "audio_samples": info.audio_samples})
        except OSError as exc:
            seg.file.abandon()
            raise StorageError(exc.errno, f"cannot finish segment {seg.part}: {exc.strerror}") from exc
        self.closed.append(info)
        self._closer.q.put((seg, info, time.perf_counter()))
        self._seg = None
        return info

    # -- packets -------------------------------------------------------------
    def _segment_of(self, kind: str, pkt: av.Packet[Any]) -> int:
        assert pkt.pts is not None   # the encoders stamp every packet
        if kind == "v":
            return (pkt.pts // self.frame_ticks) // self.frames_per_segment
        return max(pkt.pts, 0) // self.samples_per_segment

    def note_frame(self, slot: int, sample: TimeSample, repeated: bool = False) -> None:
        """Record the wall time of frame ``slot`` (and whether it repeats a missed one)."""
        index = slot // self.frames_per_segment
        self._wall_first.setdefault(index, sample)
        self._wall_last[index] = sample
        if repeated:
            self._repeats[index] = self._repeats.get(index, 0) + 1

    def note_silence(self, first_sample: int, count: int) -> None:
        """Record that ``count`` samples from ``first_sample`` were filled with silence.

        A fill longer than what is left of a segment (e.g. a pre-event buffer kept without
        sound) is split at segment boundaries, so each record counts its own silence."""
        while count > 0:
            index = first_sample // self.samples_per_segment
            n = min(count, (index + 1) * self.samples_per_segment - first_sample)
            self._silence[index] = self._silence.get(index, 0) + n
            first_sample += n
            count -= n

    def write(self, kind: str, pkt: av.Packet[Any]) -> None:
        """Accept a video ('v', PTS in 1/90000) or audio ('a', PTS in samples) packet."""
        index = self._segment_of(kind, pkt)
        seg = self._seg
        assert seg is not None   # open from __init__ until finish() or abort()
        if index > seg.index:
            self._pending.append((kind, pkt))
            self._ahead.add(kind)
            if self._ahead == {"v", "a"}:
                self._rotate()
        else:
            self._mux(kind, pkt)

    def _rotate(self) -> None:
        """Close the open segment, open the next, and replay packets that were waiting for it."""
        assert self._seg is not None   # rotation is from an open segment
        next_index = self._seg.index + 1
        self._close_current(final=False)
        self._open(next_index)
        pending, self._pending, self._ahead = self._pending, [], set()
        for kind, pkt in pending:
            self.write(kind, pkt)

    def _mux(self, kind: str, pkt: av.Packet[Any]) -> None:
        seg = self._seg
        # each PyAV property read converts afresh: read the timestamps once
        pts, dts = pkt.pts, pkt.dts
        assert seg is not None and pts is not None and dts is not None   # see write()
        if kind == "v":
            key = pkt.is_keyframe
            if seg.first_pts is None:
                if not key:
                    raise RuntimeError(f"segment {seg.index} would not start on a keyframe")
                sync = False
            else:
                every = seg.sync_every
                sync = key or (every > 0 and seg.frames % every == 0)
            origin = TS_ORIGIN_S * 90000
            pts += origin
            if seg.first_pts is None:
                seg.first_pts = pts
            seg.last_pts = pts if seg.last_pts is None else max(seg.last_pts, pts)
            seg.frames += 1
            pkt.pts, pkt.dts = pts, dts + origin
            pkt.stream = seg.vstream
        else:
            duration = pkt.duration
            assert duration is not None   # the AAC encoder gives every packet its length
            if seg.first_sample is None:
                seg.first_sample = max(pts, 0)
            end = pts + duration
            if end > seg.end_sample:
                seg.end_sample = end
            origin = self._audio_origin
            pkt.pts, pkt.dts = pts + origin, dts + origin
            pkt.stream = seg.astream
            sync = False
        try:
            c = seg.container
            if sync:
                # At each sync point (every keyframe; an encrypted file also asks for some
                # between them) what came before is made durable. The muxer's buffer is flushed
                # after every packet it writes from this keyframe to the next video frame (it
                # may hold the keyframe back to interleave it with sound); then everything it
                # has written is in the file, and the closer syncs it.
                c.flags |= _FLUSH_PACKETS
                c.mux(pkt)
                seg.syncing = True
            elif kind == "v" and seg.syncing:
                c.mux(pkt)
                c.flags &= ~_FLUSH_PACKETS
                seg.syncing = False
                seg.file.checkpoint()
                self._closer.q.put(seg.file)
            else:
                c.mux(pkt)
        except OSError as exc:
            raise StorageError(exc.errno, f"cannot write segment {seg.part}: {exc.strerror}") from exc

    def finish(self) -> list[SegmentInfo]:
        """Close the last segment and wait until every closed one is handed to the sink."""
        try:
            while self._pending:
                self._rotate()
            if self._seg is not None and self._seg.frames:
                self._close_current(final=True)
        finally:
            self._stop_closer()
        if self.errors:
            raise StorageError(None, f"segments could not be finished: {self.errors[0]}")
        return self.closed

    @property
    def seal_latencies(self) -> list[float]:
        """Seconds from each segment's close to its file being durable and sealed."""
        return self._closer.seal_latencies

    def _stop_closer(self) -> None:
        if self._closer.is_alive():
            self._closer.q.put(None)
            self._closer.join()

    def abort(self) -> None:
        """Storage failed: stop writing, keep the open part file as it is for salvage."""
        if self._seg is not None:
            self._seg.file.abandon()
            self._seg = None
        self._stop_closer()
