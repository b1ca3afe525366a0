"""Software encoders: I420 frames to H.264 packets, PCM to AAC packets (PyAV).

Encoders only make packets; they do not know where packets go (the
segmenter or the pre-event buffer decides). On a Pi 4 / Zero 2 W the camera's
hardware encoder replaces :class:`H264Encoder` and hands over packets the
same way.
"""
from __future__ import annotations

import fractions
from dataclasses import dataclass
from typing import Any, cast

import av
import numpy as np

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)   # MPEG-TS clock
AUDIO_LAYOUT = "mono"   # one microphone: AAC-LC, one channel (encoder, muxer and ADTS headers agree)


@dataclass(frozen=True)
class VideoSettings:
    width: int = 1920
    height: int = 1080
    fps: int = 30
    keyframe_interval_s: int = 1
    bitrate_kbps: int = 4000
    preset: str = "superfast"
    threads: int = 0          # 0: let x264 choose
    encoder: str = "libx264"  # or "h264_v4l2m2m": the Pi 4 / Zero 2 W hardware encoder via FFmpeg

    @property
    def gop(self) -> int:
        return self.fps * self.keyframe_interval_s

    @property
    def frame_ticks(self) -> int:
        return 90000 // self.fps


@dataclass(frozen=True)
class AudioSettings:
    sample_rate: int = 48000
    bitrate_kbps: int = 64


def x264_params(v: VideoSettings) -> str:
    """Fixed GOP, no scene-cut keyframes, in-band SPS/PPS: every segment starts on an IDR
    at a known frame and decodes on its own. No B-frames: packets leave in display order,
    so a file cut by a power loss ends on a whole frame, the encoder holds fewer frames
    (less memory, quicker sealing), and it costs less CPU."""
    return (f"keyint={v.gop}:min-keyint={v.gop}:scenecut=0:open-gop=0:repeat-headers=1:bframes=0"
            f":vbv-maxrate={v.bitrate_kbps}:vbv-bufsize={v.bitrate_kbps * 2}")


class H264Encoder:
    def __init__(self, v: VideoSettings) -> None:
        self.settings = v
        # v.encoder names a video codec (a plain str, so the stubs cannot pick the video overload)
        ctx = cast(av.VideoCodecContext, av.CodecContext.create(v.encoder, "w"))
        ctx.width, ctx.height = v.width, v.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = VIDEO_TIME_BASE
        ctx.framerate = fractions.Fraction(v.fps, 1)
        ctx.bit_rate = v.bitrate_kbps * 1000
        ctx.gop_size = v.gop
        ctx.thread_count = v.threads
        if v.encoder == "libx264":
            ctx.options = {"preset": v.preset, "x264-params": x264_params(v)}
        # hardware encoders get the fixed GOP from gop_size; their SPS/PPS come as extradata,
        # which the MPEG-TS muxer puts in front of every keyframe

        ctx.open()
        self.ctx = ctx
        self.extradata = ctx.extradata
        # libx264 copies the picture into its own frame inside encode(), so it can read the
        # caller's buffer in place: no 3 MB frame of ours and no 0.35 ms copy per 1080p
        # frame. Other encoders (and pictures not laid out as one contiguous I420 array) get
        # a copy in one frame reused for every picture (a plain array copy into its planes is
        # ~20x cheaper than building a new frame with from_ndarray).
        self._in_place = v.encoder == "libx264"
        self._frame: av.VideoFrame | None = None
        self._planes: list[np.ndarray] = []

    def _copy(self, data: np.ndarray) -> av.VideoFrame:
        v = self.settings
        w, h = v.width, v.height
        if self._frame is None:
            self._frame = av.VideoFrame(w, h, "yuv420p")
            self._frame.time_base = VIDEO_TIME_BASE
            # a plane supports the buffer protocol; numpy's 3.11 stub lists only concrete buffer types
            self._planes = [np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:ph, :pw]  # type: ignore[call-overload]
                            for p, (pw, ph) in zip(self._frame.planes,
                                                   [(w, h)] + [(w // 2, h // 2)] * 2, strict=False)]
        y, u, v_ = self._planes
        y[:] = data[:h]
        u[:] = data[h:h + h // 4].reshape(h // 2, w // 2)
        v_[:] = data[h + h // 4:].reshape(h // 2, w // 2)
        return self._frame

    def encode(self, data: np.ndarray, pts: int) -> list[av.Packet[Any]]:
        """Encode one I420 picture (shape (h*3//2, w)) at ``pts`` (1/90000 s). The picture is
        not needed after this returns (the caller may reuse its buffer)."""
        if (self._in_place and data.flags.c_contiguous
                and data.shape == (self.settings.height * 3 // 2, self.settings.width)):
            frame = av.VideoFrame.from_numpy_buffer(data, "yuv420p")
            frame.time_base = VIDEO_TIME_BASE
        else:
            frame = self._copy(data)
        frame.pts = pts
        return self.ctx.encode(frame)

    def flush(self) -> list[av.Packet[Any]]:
        return self.ctx.encode(None)


class AacEncoder:
    """AAC-LC, fed in exact 1024-sample frames so each packet's PTS is its first sample."""

    def __init__(self, a: AudioSettings) -> None:
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate = a.sample_rate
        ctx.layout = AUDIO_LAYOUT
        ctx.format = "fltp"
        ctx.bit_rate = a.bitrate_kbps * 1000
        ctx.time_base = fractions.Fraction(1, a.sample_rate)
        ctx.open()
        self.ctx = ctx
        self.sample_rate = a.sample_rate
        self.frame_size = ctx.frame_size or 1024
        self.extradata = ctx.extradata
        self._time_base = ctx.time_base   # read once: each read builds a new Fraction
        self._pending = np.zeros(0, dtype=np.float32)
        self._next_pts = 0  # sample index of _pending[0]

    def encode(self, samples: np.ndarray) -> list[av.Packet[Any]]:
        """Append int16 samples; encode every complete frame."""
        pcm = samples.astype(np.float32) * (1.0 / 32768.0)
        buf = np.concatenate([self._pending, pcm]) if len(self._pending) else pcm
        n = len(buf) // self.frame_size * self.frame_size
        packets: list[av.Packet[Any]] = []
        for i in range(0, n, self.frame_size):
            packets += self._encode_frame(buf[i:i + self.frame_size])
        self._pending = buf[n:].copy()
        return packets

    def _encode_frame(self, chunk: np.ndarray) -> list[av.Packet[Any]]:
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout=AUDIO_LAYOUT)
        frame.sample_rate = self.sample_rate
        frame.pts = self._next_pts
        frame.time_base = self._time_base
        self._next_pts += len(chunk)
        return self.ctx.encode(frame)

    def flush(self) -> list[av.Packet[Any]]:
        packets = self._encode_frame(self._pending) if len(self._pending) else []
        self._pending = np.zeros(0, dtype=np.float32)
        return packets + self.ctx.encode(None)
