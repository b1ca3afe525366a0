"""The pre-event buffer: the last N seconds of ENCODED video, in RAM only, while the device is ready.

When the officer starts recording, what happened just before the press is
often what matters. While ready, frames are stamped and encoded exactly as
when recording (same encoder, same timeline); the packets are held in a ring
of whole GOPs, so the oldest kept packet is always a keyframe and the
recording can start on it. At start the encoder, its timeline and the ring are
handed to the recording (:class:`Handover`): the buffered packets become the
recording's first segments and the encoder simply continues, so there is no
gap and no re-encoding. Nothing in the buffer touches storage unless
recording starts; leaving ready (pause, stall, shutdown) discards it.

Bound: the span from the first kept keyframe to the newest frame never
exceeds ``seconds`` (unless only one GOP is held), so the recording starts
between ``seconds - keyframe_interval`` and ``seconds`` before the press.

Audio: off by default (sound is not kept before the press; the recording's
audio before the press is silence, counted in each segment's
``silence_samples``, so the records say exactly which sound is real). With
``keep_audio`` the raw microphone blocks over the same span are kept too.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import av
import numpy as np

from common.clock import TimeSample, WallClock
from recorder.encode import H264Encoder, VideoSettings
from recorder.stamp import Stamper
from recorder.timeline import Placement, VideoTimeline

log = logging.getLogger(__name__)

MAX_SECONDS = 120.0


@dataclass(frozen=True)
class BufferedFrame:
    slot: int               # position on the capture session's timeline
    sample: TimeSample      # wall time burned into it
    repeated: bool = False  # a repeat bridging a missed camera frame


@dataclass
class _Gop:
    first_slot: int
    packets: list[av.Packet[Any]] = field(default_factory=list)   # encoder output: no stream yet
    nbytes: int = 0


@dataclass
class Handover:
    """Everything a recording needs to continue the capture session without a gap."""

    encoder: H264Encoder
    slot_offset: int              # session slot that becomes recording slot 0 (a keyframe)
    t0_ns: int                    # monotonic instant of that slot
    next_slot: int                # recording slot of the next frame
    frames: list[BufferedFrame]   # buffered frames, session slots, in order
    packets: list[av.Packet[Any]]  # encoded packets (session PTS), in decode order
    audio: list[tuple[np.ndarray, int]]   # (samples, mono_ns) kept, empty when audio is off
    audio_end_ns: int | None      # end of the last sound drained (silence is filled up to here)
    last_frame: np.ndarray | None
    last_frame_owned: bool = False   # last_frame is a copy, not the camera's buffer

    @property
    def span_frames(self) -> int:
        """Frames taken from the buffer (the recording's first ``span_frames`` slots)."""
        return self.next_slot


class PreEventBuffer:
    """Ring of whole GOPs of encoded packets plus their frames' wall times, bounded in seconds."""

    def __init__(self, fps: int, seconds: float, frame_ticks: int) -> None:
        if not 0 <= seconds <= MAX_SECONDS:
            raise ValueError(f"pre-event buffer must be 0-{MAX_SECONDS:.0f} s, got {seconds!r}")
        self.fps, self.frame_ticks = fps, frame_ticks
        self.limit_frames = int(round(seconds * fps))
        self.gops: collections.deque[_Gop] = collections.deque()
        self.frames: collections.deque[BufferedFrame] = collections.deque()
        self.nbytes = 0
        self.dropped_gops = 0

    def note_frame(self, frame: BufferedFrame) -> None:
        self.frames.append(frame)
        self._trim()

    def add_packet(self, pkt: av.Packet[Any]) -> None:
        if pkt.is_keyframe:
            assert pkt.pts is not None   # the encoder stamps every packet it returns
            self.gops.append(_Gop(pkt.pts // self.frame_ticks))
        elif not self.gops:
            log.warning("pre-event buffer: packet before the first keyframe dropped")
            return
        gop = self.gops[-1]
        gop.packets.append(pkt)
        gop.nbytes += pkt.size
        self.nbytes += pkt.size
        self._trim()

    def _trim(self) -> None:
        if not self.frames:
            return
        newest = self.frames[-1].slot
        while len(self.gops) > 1 and newest - self.gops[0].first_slot + 1 > self.limit_frames:
            gop = self.gops.popleft()
            self.nbytes -= gop.nbytes
            self.dropped_gops += 1
        if not self.gops:
            return   # the encoder has not yet delivered the first keyframe of these frames
        first = self.gops[0].first_slot
        while self.frames and self.frames[0].slot < first:
            self.frames.popleft()

    @property
    def first_slot(self) -> int | None:
        return self.gops[0].first_slot if self.gops else None

    @property
    def span_frames(self) -> int:
        return len(self.frames)

    def take(self) -> tuple[int | None, list[BufferedFrame], list[av.Packet[Any]]]:
        first = self.first_slot
        frames = list(self.frames)
        packets = [p for gop in self.gops for p in gop.packets]
        self.clear()
        return first, frames, packets

    def clear(self) -> None:
        self.gops.clear()
        self.frames.clear()
        self.nbytes = 0


class PreEventCapture:
    """Stamps and encodes frames while ready, into a :class:`PreEventBuffer`.

    The session (encoder + timeline) starts with the first frame and is reset
    on a camera stall (a buffer with a hole would be useless) or by
    :meth:`reset`. :meth:`hand_over` gives it to a new recording.
    """

    def __init__(self, video: VideoSettings, stamper: Stamper, wall_clock: WallClock,
                 seconds: float, keep_audio: bool = False, sample_rate: int = 48000,
                 max_bridge_s: float = 0.5, position: Callable[[], str | None] | None = None,
                 encoder_factory: Callable[[VideoSettings], H264Encoder] = H264Encoder) -> None:
        self.video = video
        self.stamper, self.wall_clock = stamper, wall_clock
        self.position = position or (lambda: None)
        self.seconds, self.keep_audio = float(seconds), bool(keep_audio)
        self.rate = sample_rate
        self.max_bridge_s = max_bridge_s
        self.encoder_factory = encoder_factory
        self.buffer = PreEventBuffer(video.fps, seconds, video.frame_ticks)
        self.venc: H264Encoder | None = None
        self.vt: VideoTimeline | None = None
        self._last: np.ndarray | None = None
        self._last_owned = False   # _last is our copy, not the camera's buffer
        self._audio: collections.deque[tuple[np.ndarray, int]] = collections.deque()
        self.audio_end_ns: int | None = None
        self.peak_bytes = 0

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def reset(self) -> None:
        """Discard everything buffered (nothing was written anywhere)."""
        self.buffer.clear()
        self._audio.clear()
        self.venc, self.vt, self._last = None, None, None

    def add_frame(self, data: np.ndarray, mono_ns: int) -> None:
        if self.vt is None:
            self.venc = self.encoder_factory(self.video)
            self.vt = VideoTimeline(self.video.fps, mono_ns, self.max_bridge_s)
        place = self.vt.place(mono_ns)
        if place.kind is Placement.EARLY:
            # the last encoded picture is now older than the camera keeps (see Recording._keep_last)
            if self._last is not None and not self._last_owned:
                self._last, self._last_owned = self._last.copy(), True
            return
        if place.kind is Placement.STALL:
            log.warning("camera gap of %d frames while ready: pre-event buffer restarted", place.missing)
            self.reset()
            self.add_frame(data, mono_ns)
            return
        if place.kind is Placement.LATE and self._last is not None:
            for slot in range(place.slot - place.missing, place.slot):
                self._encode(slot, self._last.copy(), self.vt.slot_time_ns(slot), True)
        self._encode(place.slot, data, mono_ns, False)

    def _encode(self, slot: int, data: np.ndarray, mono_ns: int, repeated: bool) -> None:
        sample = self.wall_clock.at(mono_ns)
        self.stamper.apply(data, sample, self.position())
        self.buffer.note_frame(BufferedFrame(slot, sample, repeated))
        assert self.venc is not None   # set together with self.vt in add_frame
        for pkt in self.venc.encode(data, slot * self.video.frame_ticks):
            self.buffer.add_packet(pkt)
        self._last, self._last_owned = data, repeated
        self._trim_audio()
        self.peak_bytes = max(self.peak_bytes, self.buffer.nbytes)

    def add_audio(self, samples: np.ndarray, mono_ns: int) -> None:
        self.audio_end_ns = mono_ns + len(samples) * 1_000_000_000 // self.rate
        if self.keep_audio:
            self._audio.append((samples, mono_ns))
            self._trim_audio()

    def _trim_audio(self) -> None:
        if not self.buffer.frames:
            return
        first_ns = self.buffer.frames[0].sample.mono_ns
        while self._audio:
            samples, t = self._audio[0]
            if t + len(samples) * 1_000_000_000 // self.rate >= first_ns:
                break
            self._audio.popleft()

    def hand_over(self) -> Handover | None:
        """The session for a recording starting now; None when nothing usable is buffered."""
        if self.vt is None or self.buffer.first_slot is None:
            self.reset()
            return None
        first, frames, packets = self.buffer.take()
        assert first is not None and self.venc is not None   # first_slot checked above; venc is set with vt
        h = Handover(encoder=self.venc, slot_offset=first, t0_ns=self.vt.slot_time_ns(first),
                     next_slot=self.vt.next_slot - first, frames=frames, packets=packets,
                     audio=list(self._audio) if self.keep_audio else [],
                     audio_end_ns=self.audio_end_ns, last_frame=self._last,
                     last_frame_owned=self._last_owned)
        self.venc, self.vt, self._last = None, None, None
        self._audio.clear()
        return h
