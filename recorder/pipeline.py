"""The capture loop: camera and microphone in, recordings out, until told to stop.

There is one loop body, :meth:`Pipeline.step` (one frame or one stall timeout),
driven two ways: by the device service between its own work (``open`` /
``begin_recording`` / ``step`` / ``end_recording`` / ``close``), and by
:meth:`Pipeline.run` for ``bodycam record``, ``./run-sim`` and the benchmark,
which is only a thin driver over the same calls. So whatever the headline
command or the benchmark shows is what the device runs.

It owns what happens *between* recordings: a camera that stalls ends the
current recording (closed segments stay sealed); a storage failure stops
cleanly. Each such event is reported through ``on_event`` so the device
service can journal it and tell the officer.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from common.clock import WallClock
from recorder.capture import AudioBlock, Camera, Microphone, Timebase
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
    recipients: tuple[str, ...] = ()  # age recipients segments are encrypted to (docs/encryption.md)


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
    """Camera and microphone in, recordings out; see the module docstring for the two drivers."""

    def __init__(self, settings: PipelineSettings, camera: Camera, microphone: Microphone,
                 timebase: Timebase, wall_clock: WallClock, out_dir: Path,
                 sink: SegmentSink | None = None,
                 position: Callable[[], str | None] | None = None,
                 on_event: Callable[[str, dict[str, Any]], object] | None = None,   # its result is ignored
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
        self.capture = PreEventCapture(v, self.stamper, wall_clock, settings.prebuffer_s,
                                       settings.prebuffer_audio, settings.audio.sample_rate,
                                       settings.max_bridge_s, position)
        self.buffering = True         # while not recording: True = pre-event buffer, False = discard
        self.audio_tap: Callable[[list[AudioBlock]], None] | None = None   # sees every drained audio block
        self.rec: Recording | None = None
        # A start asked for with nothing buffered: the recording opens with the next frame.
        # Its journal detail ({} for none); None = no start pending.
        self._pending: dict[str, Any] | None = None
        self._restart_after_stall = False   # run(): a new recording when frames return
        self.last_frame_ns: int | None = None
        self._opened = False

    # -- what the service may ask ----------------------------------------------------
    @property
    def recording(self) -> bool:
        """A recording is open, or asked for and waiting for its first frame."""
        return self.rec is not None or self._pending is not None

    @property
    def current_recording_id(self) -> str | None:
        """The open recording's id; None when none is open (also before its first frame)."""
        rec = self.rec
        return rec.id if rec is not None else None

    # -- the thin driver: bodycam record, ./run-sim, the benchmark -----------------------
    def run(self, duration_s: float | None = None) -> list[RecordingResult]:
        """Record until ``stop`` is set or ``duration_s`` seconds after the first frame.

        The device's own loop (:meth:`step`), driven without a service: one recording
        from the first frame, a new one whenever frames return after a camera stall. A
        stall inside the span does not extend it: the run ends at the same instant,
        with the stall visible as two recordings."""
        self.open()
        finished = False
        try:
            self.set_buffering(False)   # the command records at once: nothing to buffer
            self.begin_recording(restart_after_stall=True)
            end_ns = None
            if duration_s is not None:
                half_frame = 500_000_000 // self.s.video.fps
                end_ns = self.time.now_ns() + int(duration_s * 1e9) - half_frame
            stop, step, now = self.stop_event, self.step, self.time.now_ns
            while not stop.is_set():
                t, ended = step(end_ns)
                if ended is not None and ended.cause == "storage-full":
                    break
                if end_ns is not None and (now() if t is None else t) >= end_ns:
                    break
            finished = True
        finally:
            if finished:
                self.close()          # ends the open recording normally
            else:
                self._release()       # an exception: what was closed stays, nothing more is written
        return self.results

    # -- the loop body --------------------------------------------------------------------
    def open(self) -> None:
        """Start camera and microphone; frames then flow through :meth:`step`."""
        self.mic.start()
        self.camera.start()
        self._opened = True

    def step(self, until_ns: int | None = None) -> tuple[int | None, RecordingResult | None]:
        """Take one frame (or a stall timeout) and the sound drained with it.

        Returns (frame instant or None, result of a recording that ended here by itself:
        camera-stall or storage-full). A frame at or after ``until_ns`` is left out (the
        caller's span ends before it). A StorageError ends the recording (closed
        segments stay intact), is journaled as an ``interruption`` and is raised."""
        frame = self.camera.read(self.s.stall_timeout_s)
        ended = None
        try:
            rec = self.rec
            if frame is None:
                if rec is not None:
                    ended = self._camera_stalled(rec)
                elif self._pending is None:
                    self.capture.reset()   # a gap in the pre-event buffer: start it afresh
            else:
                t = frame.mono_ns
                if until_ns is not None and t >= until_ns:
                    return t, None
                if rec is not None and rec.add_frame(frame.data, t) is Placement.STALL:
                    ended = self._camera_stalled(rec)
                    rec = None
                if rec is None:
                    if self._pending is not None:
                        rec = self._open_pending(t)
                        rec.add_frame(frame.data, t)
                    elif self.buffering and self.capture.enabled:
                        self.capture.add_frame(frame.data, t)
            blocks = self.mic.drain()
            if blocks:
                if self.audio_tap is not None:
                    self.audio_tap(blocks)
                rec = self.rec
                if rec is not None:
                    rec.add_audio_blocks([(b.samples, b.mono_ns) for b in blocks])
                elif self.buffering and self.capture.enabled:
                    for block in blocks:
                        self.capture.add_audio(block.samples, block.mono_ns)
            if frame is None:
                return None, ended
            rec = self.rec
            if rec is not None:
                rec.check_microphone()
                if rec.vt.next_slot % self.s.video.fps == 0 and self.storage_low():
                    ended = self._storage_full(rec)
        except StorageError as exc:
            self._storage_failed(exc)
            raise
        self.last_frame_ns = frame.mono_ns
        self.heartbeat += 1
        return frame.mono_ns, ended

    def set_buffering(self, on: bool) -> None:
        """Pre-event buffering on (ready) or off (paused, docked: nothing is kept, even in RAM)."""
        self.buffering = on
        if not on:
            self.capture.reset()

    def begin_recording(self, detail: dict[str, Any] | None = None, *,
                        restart_after_stall: bool = False) -> str | None:
        """Start a recording now; it opens with the pre-event buffer when there is one, else
        with the next frame. Returns its id, or None while it waits for that frame.

        ``restart_after_stall``: a camera stall ends the recording and the next one begins
        by itself when frames return (:meth:`run`); the service instead decides that through
        its state machine."""
        if self.recording:
            raise RuntimeError("already recording")
        if self.storage_low():
            raise StorageFull("storage nearly full: not starting to record")
        self._restart_after_stall = restart_after_stall
        handover = self.capture.hand_over() if self.capture.enabled else None
        if handover is None:
            self._pending = dict(detail or {})
            return None
        self.rec = self._start(0, handover, detail)
        return self.rec.id

    def end_recording(self, cause: str = "stop") -> RecordingResult | None:
        """End the current recording (waits for the sound under the last frame)."""
        rec, self.rec = self.rec, None
        self._restart_after_stall = False
        if self._pending is not None:
            self._pending = None
            log.info("recording ended (%s) before its first frame", cause)
        if rec is None:
            return None
        try:
            self._finish_audio(rec)
            self._end(rec, cause)
        except StorageError as exc:
            self.rec = rec
            self._storage_failed(exc)
            raise
        return self.results[-1]

    def close(self) -> None:
        """End any recording normally, then stop camera and microphone."""
        try:
            if self.recording:
                self.end_recording("stop")
        finally:
            self._release()

    def _release(self) -> None:
        self.capture.reset()
        if self._opened:
            self._opened = False
            self.camera.stop()
            self.mic.stop()

    # -- recordings begin and end ------------------------------------------------------------
    def _open_pending(self, t0_ns: int) -> Recording:
        detail, self._pending = self._pending, None
        self.rec = self._start(t0_ns, None, detail)
        return self.rec

    def _start(self, t0_ns: int, handover: Handover | None = None, detail: dict[str, Any] | None = None) -> Recording:
        t_first = handover.t0_ns if handover is not None else t0_ns
        rid = new_recording_id(self.wall_clock.at(t_first).wall_ns)
        rec = Recording(self.out_dir / "recordings" / rid, rid, self.s.video, self.s.audio, self.s.segment_seconds,
                        t0_ns, self.stamper, self.wall_clock, self.sink, self.position,
                        self.s.max_bridge_s, self.s.mic_timeout_s, handover=handover,
                        on_clock_step=self._clock_stepped, recipients=self.s.recipients)
        self.results.append(RecordingResult(rid, "recording"))
        log.info("recording %s started in %s (%d pre-event frames)", rid,
                 self.out_dir / "recordings" / rid, rec.prebuffered_frames)
        # t0_mono_ns: the monotonic instant of media time zero (the first frame's slot). With
        # the record's own wall/monotonic pair it dates every frame of the recording, which
        # salvage needs when a crash leaves the first segment unsealed.
        payload = {"recording_id": rid, "t0_mono_ns": int(t_first)}
        if handover is not None:
            payload.update(prebuffer_frames=handover.span_frames, prebuffer_audio=bool(handover.audio),
                           first_frame_mono_ns=handover.t0_ns)
        payload.update(detail or {})
        self.on_event("recording-start", payload)
        return rec

    def _clock_stepped(self, step: dict[str, Any]) -> None:
        log.warning("wall clock stepped by %+.3f s during recording %s; media time unaffected",
                    step["delta_ns"] / 1e9, step["recording_id"])
        self.on_event("clock-step", step)

    def _end(self, rec: Recording, cause: str) -> RecordingResult:
        result = self.results[-1]
        result.cause = cause
        result.stats = rec.stats
        result.segments = rec.close()
        log.info("recording %s ended (%s): %d segments, %d frames", rec.id, cause,
                 len(result.segments), rec.stats.frames)
        self.on_event("recording-stop", {"recording_id": rec.id, "cause": cause,
                                         "segments": len(result.segments)})
        return result

    def _finish_audio(self, rec: Recording) -> None:
        """Wait for the sound under the last frame to be captured, then take it."""
        end = rec.vt.slot_time_ns(rec.vt.next_slot) + int(self.s.audio_latency_s * 1e9)
        self.time.sleep_until(end)
        rec.add_audio_blocks([(b.samples, b.mono_ns) for b in self.mic.drain()])

    # -- recordings that end by themselves ------------------------------------------------------
    def _camera_stalled(self, rec: Recording) -> RecordingResult:
        log.error("camera stalled: no frame for %.1f s; recording %s closed, "
                  "a new one starts when frames return", self.s.stall_timeout_s, rec.id)
        self.on_event("interruption", {"cause": "camera-stall", "recording_id": rec.id,
                                       "stall_timeout_ms": round(self.s.stall_timeout_s * 1000)})
        result = self._end(rec, "camera-stall")
        self.rec = None
        if self._restart_after_stall:
            self._pending = {}
        return result

    def _storage_full(self, rec: Recording) -> RecordingResult:
        log.error("storage nearly full: recording %s stopped and sealed; evidence is never "
                  "overwritten, dock the device to free space", rec.id)
        self.on_event("interruption", {"cause": "storage-full", "recording_id": rec.id})
        self._finish_audio(rec)
        result = self._end(rec, "storage-full")
        self.rec, self._restart_after_stall = None, False
        return result

    def _storage_failed(self, exc: StorageError) -> None:
        """Storage failed: journal it (with or without an open recording: a recording that could
        not even be created is a fact too), keep what was closed, write nothing more."""
        rec, self.rec = self.rec, None
        self._pending, self._restart_after_stall = None, False
        log.error("storage failed: %s; recording stopped, closed segments are intact", exc)
        self.on_event("interruption", {"cause": "storage-error", "error": str(exc),
                                       "recording_id": rec.id if rec else None})
        if rec is not None:
            result = self.results[-1]
            result.cause = "storage-error"
            result.stats = rec.stats
            result.segments = list(rec.segmenter.closed)
            rec.abort()
