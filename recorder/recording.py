"""One continuous recording: captured frames and sound in, sealed segments out.

A recording never has a hole: every slot of its constant-rate timeline holds
a frame and every sample position holds sound. What the camera or microphone
failed to deliver is bridged (a repeated frame, silence), counted, and written
into the segment's record, so nothing is inserted unseen. Gaps too long to
bridge end the recording instead; the next one starts fresh.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np

from common.clock import TimeSample, WallClock
from recorder.encode import AacEncoder, AudioSettings, H264Encoder, VideoSettings
from recorder.prebuffer import Handover
from recorder.segment_info import SegmentInfo, SegmentSink
from recorder.segmenter import Segmenter, StreamFormat
from recorder.stamp import Stamper
from recorder.timeline import AudioTimeline, Placement, VideoTimeline

log = logging.getLogger(__name__)


@dataclass
class RecordingStats:
    frames: int = 0
    frames_repeated: int = 0
    frames_dropped: int = 0
    samples: int = 0
    silence_samples: int = 0


CLOCK_STEP_NS = 100_000_000
"""Wall-minus-monotonic changing more than this between two frames is a step, not slewing
(chrony slews at most 83 ms per second, under 3 ms per frame)."""


class Recording:
    def __init__(self, directory: Path, recording_id: str, video: VideoSettings,
                 audio: AudioSettings, segment_seconds: int, t0_ns: int,
                 stamper: Stamper, wall_clock: WallClock, sink: SegmentSink | None = None,
                 position: Callable[[], str | None] | None = None,
                 max_bridge_s: float = 0.5, mic_timeout_s: float = 2.0,
                 handover: Handover | None = None,
                 on_clock_step: Callable[[dict[str, Any]], None] | None = None,
                 recipients: Sequence[str] = ()) -> None:
        """``handover``: continue a pre-event capture session (its encoder keeps running and
        its buffered packets become this recording's first frames); ``t0_ns`` is then ignored.
        ``recipients``: age recipients every segment is encrypted to (none: plain segments)."""
        self.id = recording_id
        self.video, self.audio = video, audio
        self.slot_offset = 0  # encoder slot of this recording's slot 0
        if handover is not None:
            t0_ns, self.slot_offset = handover.t0_ns, handover.slot_offset
        self.venc = handover.encoder if handover is not None else H264Encoder(video)
        self.aenc = AacEncoder(audio)
        fmt = StreamFormat(video.width, video.height, video.fps, audio.sample_rate,
                           self.venc.extradata, self.aenc.extradata)
        self.segmenter = Segmenter(directory, recording_id, fmt, video.fps * segment_seconds, sink,
                                   recipients)
        self.vt = VideoTimeline(video.fps, t0_ns, max_bridge_s)
        self._frame_ticks = video.frame_ticks
        self.at = AudioTimeline(audio.sample_rate, t0_ns)
        self.stamper, self.wall_clock, self.position = stamper, wall_clock, position or (lambda: None)
        self.mic_timeout = int(mic_timeout_s * audio.sample_rate)
        self.mic_silent = False
        self._hold = np.zeros(0, dtype=np.int16)  # sound captured ahead of the encoded pictures
        self._last: np.ndarray | None = None   # the last encoded picture (repeated over missed slots)
        self._last_owned = False   # _last is our copy, not the camera's buffer
        self.stats = RecordingStats()
        self.on_clock_step = on_clock_step or (lambda step: None)
        self._wall_offset: int | None = None  # wall - monotonic at the last frame
        self.prebuffered_frames = 0
        if handover is not None:
            self._adopt(handover)

    def _adopt(self, h: Handover) -> None:
        """Write the pre-event buffer as this recording's first frames, then its sound."""
        for f in h.frames:
            self.segmenter.note_frame(f.slot - h.slot_offset, f.sample, f.repeated)
            self.stats.frames += 1
            self.stats.frames_repeated += int(f.repeated)
        self.vt.next_slot = h.next_slot
        self.prebuffered_frames = h.next_slot
        self._last, self._last_owned = h.last_frame, h.last_frame_owned
        for pkt in h.packets:
            self._write_video(pkt)
        self.add_audio_blocks(h.audio)
        if h.audio_end_ns is not None:   # sound not kept before the press: counted silence
            self._add_silence(self.at.fill_until(self.at.expected_at(h.audio_end_ns)))
        self._release_audio(self._video_samples())

    # -- video ---------------------------------------------------------------
    def add_frame(self, data: np.ndarray, mono_ns: int) -> Placement:
        """Stamp and encode a frame; returns STALL if the gap since the last one was too long."""
        place = self.vt.place(mono_ns)
        if place.kind is Placement.EARLY:
            self.stats.frames_dropped += 1
            self._keep_last()
            return place.kind
        if place.kind is Placement.STALL:
            return place.kind
        if place.kind is Placement.LATE and self._last is not None:
            log.warning("camera skipped %d frame(s) before slot %d: repeating the last one",
                        place.missing, place.slot)
            for slot in range(place.slot - place.missing, place.slot):
                self._encode(slot, self._last.copy(), self.vt.slot_time_ns(slot), repeated=True)
        self._encode(place.slot, data, mono_ns)
        return place.kind

    def _encode(self, slot: int, data: np.ndarray, mono_ns: int, repeated: bool = False) -> None:
        sample = self.wall_clock.at(mono_ns)
        self._watch_wall_clock(slot, sample)
        self.stamper.apply(data, sample, self.position())
        segmenter = self.segmenter
        segmenter.note_frame(slot, sample, repeated)
        shift = self.slot_offset * self._frame_ticks
        for pkt in self.venc.encode(data, slot * self._frame_ticks + shift):
            if shift:   # packets carry encoder-session PTS; the recording's media time starts at its slot 0
                pkt.pts -= shift   # type: ignore[operator]   # the encoder stamps both
                pkt.dts -= shift   # type: ignore[operator]
            segmenter.write("v", pkt)
        self._last, self._last_owned = data, repeated
        stats = self.stats
        stats.frames += 1
        if repeated:
            stats.frames_repeated += 1
        if len(self._hold):   # sound captured ahead of the pictures: what now lies under them
            self._release_audio(self._video_samples())

    def _keep_last(self) -> None:
        """A frame was dropped, so the last encoded picture is now older than the previous
        frame, the oldest the camera keeps intact (``FramePool.SAFE_NEWER``): copy it, once,
        for the repeats it may still be needed for. A rare path (a camera running early)."""
        if self._last is not None and not self._last_owned:
            self._last, self._last_owned = self._last.copy(), True

    def _watch_wall_clock(self, slot: int, sample: TimeSample) -> None:
        """Report a step of the wall clock between two frames (first GPS fix, NTP step, manual
        set): the stamp follows the new time, the media timeline does not move."""
        offset = sample.wall_ns - sample.mono_ns
        if self._wall_offset is not None and abs(offset - self._wall_offset) > CLOCK_STEP_NS:
            self.on_clock_step({"recording_id": self.id, "slot": slot, "mono_ns": sample.mono_ns,
                                "old_wall_ns": sample.mono_ns + self._wall_offset,
                                "new_wall_ns": sample.wall_ns,
                                "delta_ns": offset - self._wall_offset,
                                "time_quality": sample.quality.value})
        self._wall_offset = offset

    def _write_video(self, pkt: av.Packet[Any]) -> None:
        """Packets carry encoder-session PTS; the recording's media time starts at its slot 0."""
        if self.slot_offset:
            shift = self.slot_offset * self.video.frame_ticks
            assert pkt.pts is not None and pkt.dts is not None   # the encoder stamps both
            pkt.pts -= shift
            pkt.dts -= shift
        self.segmenter.write("v", pkt)

    def _video_samples(self) -> int:
        """Samples that belong under the frames encoded so far."""
        return self.vt.next_slot * self.audio.sample_rate // self.video.fps

    # -- audio ---------------------------------------------------------------
    def add_audio(self, samples: np.ndarray, mono_ns: int) -> None:
        self.add_audio_blocks(((samples, mono_ns),))

    def add_audio_blocks(self, blocks: Iterable[tuple[np.ndarray, int]]) -> None:
        """Place several captured blocks ((samples, first sample's instant), in capture order)
        and encode what lies under the frames once: the same samples reach the encoder in
        the same order as block by block (it cuts its own 1024-sample frames), with one
        hold update and one encoder call per drain rather than per block."""
        pieces = [self._hold] if len(self._hold) else []
        held = len(self._hold)
        for samples, mono_ns in blocks:
            fill, samples = self.at.place(samples, mono_ns)
            if fill:
                self.segmenter.note_silence(self.stats.samples + held, fill)
                self.stats.silence_samples += fill
                pieces.append(np.zeros(fill, dtype=np.int16))
                held += fill
            if len(samples):
                if self.mic_silent:
                    log.info("microphone delivers sound again (recording %s)", self.id)
                    self.mic_silent = False
                pieces.append(samples)
                held += len(samples)
        if len(pieces) > 1:
            self._hold = np.concatenate(pieces)
        elif pieces:
            self._hold = pieces[0]
        self._release_audio(self._video_samples())

    def check_microphone(self) -> None:
        """Bridge with silence once the microphone has been quiet longer than the timeout."""
        behind = self._video_samples() - self.at.written
        if behind > self.mic_timeout or (self.mic_silent and behind > 0):
            if not self.mic_silent:
                log.error("microphone delivered no audio for %.1f s in recording %s: "
                          "recording continues with silence", behind / self.audio.sample_rate, self.id)
                self.mic_silent = True
            self._add_silence(self.at.fill_until(self._video_samples()))
            self._release_audio(self._video_samples())

    def _add_silence(self, count: int) -> None:
        first = self.stats.samples + len(self._hold)
        self.segmenter.note_silence(first, count)
        self.stats.silence_samples += count
        self._hold = np.concatenate([self._hold, np.zeros(count, dtype=np.int16)])

    def _release_audio(self, upto: int) -> None:
        n = min(len(self._hold), upto - self.stats.samples)
        if n <= 0:
            return
        chunk, self._hold = self._hold[:n], self._hold[n:]
        self.stats.samples += n
        for pkt in self.aenc.encode(chunk):
            self.segmenter.write("a", pkt)

    # -- end -----------------------------------------------------------------
    def close(self) -> list[SegmentInfo]:
        """Flush encoders, end audio exactly under the last frame, close the last segment."""
        target = self._video_samples()
        missing = target - self.stats.samples - len(self._hold)
        if missing > 0:
            self._add_silence(missing)
        self._release_audio(target)
        self._hold = self._hold[:0]
        for pkt in self.venc.flush():
            self._write_video(pkt)
        for pkt in self.aenc.flush():
            self.segmenter.write("a", pkt)
        return self.segmenter.finish()

    def abort(self) -> None:
        self.segmenter.abort()
