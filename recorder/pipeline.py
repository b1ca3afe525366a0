"""The capture loop: camera and microphone in, recordings out, until told to stop.

It owns what happens *between* recordings: a camera that stalls ends the
current recording (closed segments stay sealed) and a new one starts when
frames return; a storage failure stops cleanly. Each such event is reported
through ``on_event`` so the device service can journal it and tell the
officer.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from recorder.clock import WallClock
from recorder.encode import AudioSettings, VideoSettings
from recorder.prebuffer import Handover, PreEventCapture
from recorder.recording import Recording, RecordingStats
from recorder.segment_info import SegmentInfo, SegmentSink
from recorder.segmenter import StorageError
from recorder.stamp import Stamper
from recorder.timeline import Placement

log = logging.getLogger(__name__)


class StorageFull(StorageError):
    """Free space is below the reserve: recording stops rather than overwrite anything."""


class Timebase(Protocol):
    def now_ns(self) -> int: ...
    def sleep_until(self, t_ns: int) -> None: ...


@dataclass(frozen=True)
class PipelineSettings:
    video: VideoSettings = VideoSettings()
    audio: AudioSettings = AudioSettings()
    segment_seconds: int = 10
    device_id: str = "BWC-0000"
    officer_id: str = "000000"
    timezone: str = "UTC"
    stall_timeout_s: float = 1.0   # no frame for this long ends the recording (camera-stall)
    max_bridge_s: float = 0.5      # shorter camera gaps are bridged by repeating frames
    mic_timeout_s: float = 2.0     # no sound for this long is reported and filled with silence
    audio_latency_s: float = 0.1   # how long to wait for the last sound at stop
    prebuffer_s: float = 0.0       # pre-event buffer while ready (driven capture only), 0-120 s
    prebuffer_audio: bool = False  # keep sound in the pre-event buffer too


@dataclass
class RecordingResult:
    recording_id: str
    cause: str                       # why it ended: stop, camera-stall, storage-error
    segments: list[SegmentInfo] = field(default_factory=list)
    stats: RecordingStats = field(default_factory=RecordingStats)


def new_recording_id(wall_ns: int) -> str:
    t = dt.datetime.fromtimestamp(wall_ns / 1e9, dt.timezone.utc)
    return f"{t:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class Pipeline:
    def __init__(self, settings: PipelineSettings, camera, microphone, timebase: Timebase,
                 wall_clock: WallClock, out_dir: Path, sink: SegmentSink | None = None,
                 position: Callable[[], str | None] | None = None,
                 on_event: Callable[[str, dict], None] | None = None,
                 stop: threading.Event | None = None,
                 storage_low: Callable[[], bool] | None = None) -> None:
        self.s = settings
        self.camera, self.mic, self.time = camera, microphone, timebase
        self.wall_clock, self.out_dir, self.sink = wall_clock, Path(out_dir), sink
        self.position = position
        self.on_event = on_event or (lambda kind, payload: None)
        self.stop_event = stop or threading.Event()
        self.storage_low = storage_low or (lambda: False)
        v = settings.video
        self.stamper = Stamper(v.width, v.height, settings.device_id, settings.officer_id,
                               settings.timezone)
        self.results: list[RecordingResult] = []
        self.heartbeat = 0  # frames processed; a watchdog can watch it move
        # driven capture (open/step/begin_recording/end_recording/close), used by the device service
        self.capture = PreEventCapture(v, self.stamper, wall_clock, settings.prebuffer_s,
                                       settings.prebuffer_audio, settings.audio.sample_rate,
                                       settings.max_bridge_s, position)
        self.buffering = True         # while not recording: True = pre-event buffer, False = discard
        self.audio_tap: Callable[[list], None] | None = None   # sees every drained audio block
        self.rec: Recording | None = None
        self.last_frame_ns: int | None = None
        self._opened = False

    def _start(self, t0_ns: int, handover: Handover | None = None, detail: dict | None = None) -> Recording:
        t_first = handover.t0_ns if handover is not None else t0_ns
        rid = new_recording_id(self.wall_clock.at(t_first).wall_ns)
        rec = Recording(self.out_dir / "recordings" / rid, rid, self.s.video, self.s.audio, self.s.segment_seconds,
                        t0_ns, self.stamper, self.wall_clock, self.sink, self.position,
                        self.s.max_bridge_s, self.s.mic_timeout_s, handover=handover,
                        on_clock_step=self._clock_stepped)
        self.results.append(RecordingResult(rid, "recording"))
        log.info("recording %s started in %s (%d pre-event frames)", rid,
                 self.out_dir / "recordings" / rid, rec.prebuffered_frames)
        payload = {"recording_id": rid}
        if handover is not None:
            payload.update(prebuffer_frames=handover.span_frames, prebuffer_audio=bool(handover.audio),
                           first_frame_mono_ns=handover.t0_ns)
        payload.update(detail or {})
        self.on_event("recording-start", payload)
        return rec

    def _clock_stepped(self, step: dict) -> None:
        log.warning("wall clock stepped by %+.3f s during recording %s; media time unaffected",
                    step["delta_ns"] / 1e9, step["recording_id"])
        self.on_event("clock-step", step)

    def _end(self, rec: Recording, cause: str) -> None:
        result = self.results[-1]
        result.cause = cause
        result.stats = rec.stats
        result.segments = rec.close()
        log.info("recording %s ended (%s): %d segments, %d frames", rec.id, cause,
                 len(result.segments), rec.stats.frames)
        self.on_event("recording-stop", {"recording_id": rec.id, "cause": cause,
                                         "segments": len(result.segments)})

    def run(self, duration_s: float | None = None) -> list[RecordingResult]:
        """Record until ``stop`` is set or ``duration_s`` seconds after the first frame.

        A stall inside that span does not extend it: the run ends at the same
        instant, with the stall visible as two recordings."""
        self.mic.start()
        self.camera.start()
        end_ns = None
        if duration_s is not None:
            half_frame = 500_000_000 // self.s.video.fps
            end_ns = self.time.now_ns() + int(duration_s * 1e9) - half_frame
        rec: Recording | None = None
        if self.storage_low():
            raise StorageFull("storage nearly full: not starting to record")
        try:
            while not self.stop_event.is_set():
                frame = self.camera.read(self.s.stall_timeout_s)
                if frame is None:
                    if rec is not None:
                        self._camera_stalled(rec)
                        rec = None
                    if end_ns is not None and self.time.now_ns() >= end_ns:
                        break
                    continue
                if end_ns is not None and frame.mono_ns >= end_ns:
                    break
                if rec is None:
                    rec = self._start(frame.mono_ns)
                elif rec.add_frame(frame.data, frame.mono_ns) is Placement.STALL:
                    self._camera_stalled(rec)
                    rec = self._start(frame.mono_ns)
                if rec.vt.next_slot == 0:
                    rec.add_frame(frame.data, frame.mono_ns)
                for block in self.mic.drain():
                    rec.add_audio(block.samples, block.mono_ns)
                rec.check_microphone()
                self.heartbeat += 1
                if rec.vt.next_slot % self.s.video.fps == 0 and self.storage_low():
                    self._storage_full(rec)
                    rec = None
                    break
            if rec is not None:
                self._finish_audio(rec)
                self._end(rec, "stop")
        except StorageError as exc:
            log.error("storage failed: %s; recording stopped, closed segments are intact", exc)
            self.on_event("interruption", {"cause": "storage-error", "error": str(exc),
                                           "recording_id": rec.id if rec else None})
            if rec is not None:
                self.results[-1].cause = "storage-error"
                self.results[-1].stats = rec.stats
                self.results[-1].segments = list(rec.segmenter.closed)
                rec.abort()
            raise
        finally:
            self.camera.stop()
            self.mic.stop()
        return self.results

    # -- driven capture: the device service calls these from its one loop ---------------
    def open(self) -> None:
        """Start camera and microphone; frames then flow through :meth:`step`."""
        self.mic.start()
        self.camera.start()
        self._opened = True

    @property
    def recording(self) -> bool:
        return self.rec is not None

    def step(self) -> tuple[int | None, RecordingResult | None]:
        """Take one frame (or a stall timeout) and the sound drained with it.

        Returns (frame instant or None, result of a recording that ended here by itself:
        camera-stall or storage-full). Raises StorageError as :meth:`run` does."""
        frame = self.camera.read(self.s.stall_timeout_s)
        ended = None
        rec = self.rec
        if frame is None:
            if isinstance(rec, _PendingStart):
                pass   # still waiting for the first frame of the requested recording
            elif rec is not None:
                self._camera_stalled(rec)
                self.rec, ended = None, self.results[-1]
            else:
                self.capture.reset()
        elif rec is not None:
            try:
                if rec.add_frame(frame.data, frame.mono_ns) is Placement.STALL:
                    self._camera_stalled(rec)
                    self.rec, ended = None, self.results[-1]
                    self._not_recording_frame(frame)
            except StorageError:
                self._storage_failed(rec)
                raise
        else:
            self._not_recording_frame(frame)
        blocks = self.mic.drain()
        if self.audio_tap is not None and blocks:
            self.audio_tap(blocks)
        rec = self.rec
        try:
            for block in blocks:
                if isinstance(rec, Recording):
                    rec.add_audio(block.samples, block.mono_ns)
                elif self.buffering and self.capture.enabled:
                    self.capture.add_audio(block.samples, block.mono_ns)
            if isinstance(rec, Recording) and frame is not None:
                rec.check_microphone()
                if rec.vt.next_slot % self.s.video.fps == 0 and self.storage_low():
                    self._storage_full(rec)
                    self.rec, ended = None, self.results[-1]
        except StorageError:
            self._storage_failed(rec)
            raise
        if frame is not None:
            self.last_frame_ns = frame.mono_ns
            self.heartbeat += 1
        return (frame.mono_ns if frame else None), ended

    def _not_recording_frame(self, frame) -> None:
        if self.buffering and self.capture.enabled:
            self.capture.add_frame(frame.data, frame.mono_ns)

    def set_buffering(self, on: bool) -> None:
        """Pre-event buffering on (ready) or off (paused, docked: nothing is kept, even in RAM)."""
        self.buffering = on
        if not on:
            self.capture.reset()

    def begin_recording(self, detail: dict | None = None) -> str:
        """Start a recording now; it opens with the pre-event buffer when there is one."""
        if self.rec is not None:
            raise RuntimeError("already recording")
        if self.storage_low():
            raise StorageFull("storage nearly full: not starting to record")
        handover = self.capture.hand_over() if self.capture.enabled else None
        if handover is None:
            self.rec = _PendingStart(self, detail)
            return ""
        self.rec = self._start(0, handover, detail)
        return self.rec.id

    def end_recording(self, cause: str = "stop") -> RecordingResult | None:
        """End the current recording (waits for the sound under the last frame)."""
        rec, self.rec = self.rec, None
        if rec is None:
            return None
        if isinstance(rec, _PendingStart):
            log.info("recording ended (%s) before its first frame", cause)
            return None
        try:
            self._finish_audio(rec)
            self._end(rec, cause)
        except StorageError:
            self._storage_failed(rec)
            raise
        return self.results[-1]

    def _storage_failed(self, rec) -> None:
        self.rec = None
        if rec is None or isinstance(rec, _PendingStart):
            return
        log.error("storage failed; recording %s stopped, closed segments are intact", rec.id)
        self.on_event("interruption", {"cause": "storage-error", "recording_id": rec.id})
        self.results[-1].cause = "storage-error"
        self.results[-1].stats = rec.stats
        self.results[-1].segments = list(rec.segmenter.closed)
        rec.abort()

    def close(self) -> None:
        if self.rec is not None:
            self.end_recording("stop")
        self.capture.reset()
        if self._opened:
            self.camera.stop()
            self.mic.stop()
            self._opened = False

    def _finish_audio(self, rec: Recording) -> None:
        """Wait for the sound under the last frame to be captured, then take it."""
        end = rec.vt.slot_time_ns(rec.vt.next_slot) + int(self.s.audio_latency_s * 1e9)
        self.time.sleep_until(end)
        for block in self.mic.drain():
            rec.add_audio(block.samples, block.mono_ns)

    def _storage_full(self, rec: Recording) -> None:
        log.error("storage nearly full: recording %s stopped and sealed; evidence is never "
                  "overwritten, dock the device to free space", rec.id)
        self.on_event("interruption", {"cause": "storage-full", "recording_id": rec.id})
        self._finish_audio(rec)
        self._end(rec, "storage-full")

    def _camera_stalled(self, rec: Recording) -> None:
        log.error("camera stalled: no frame for %.1f s; recording %s closed, "
                  "a new one starts when frames return", self.s.stall_timeout_s, rec.id)
        self.on_event("interruption", {"cause": "camera-stall", "recording_id": rec.id,
                                       "stall_timeout_s": self.s.stall_timeout_s})
        self._end(rec, "camera-stall")


class _PendingStart:
    """A start asked for when nothing was buffered: the recording begins with the next frame."""

    def __init__(self, pipeline: Pipeline, detail: dict | None) -> None:
        self.p, self.detail = pipeline, detail

    def add_frame(self, data, mono_ns) -> Placement:
        rec = self.p._start(mono_ns, None, self.detail)
        self.p.rec = rec
        rec.add_frame(data, mono_ns)
        return Placement.NEXT

    def add_audio(self, samples, mono_ns) -> None:
        pass   # sound before the first frame belongs to no recording
