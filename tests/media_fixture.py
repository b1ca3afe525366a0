"""Small real MPEG-TS segments (H.264 + AAC, 90 kHz PTS) made with PyAV, for evidence tests.

Segments of one recording continue each other's video PTS and audio sample
count, like the pipeline's, and are written as NAME.ts.part then renamed.
"""
from __future__ import annotations

import hashlib
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from common.clock import TimeQuality, TimeSample
from recorder.segment_info import SegmentInfo

FPS = 25
RATE = 48000
TB = 90000
FRAME_TICKS = TB // FPS
WALL0 = 1_790_000_000_000_000_000  # an arbitrary 2026 wall time in ns


def write_ts(path: Path, first_frame: int, frames: int, first_sample: int, samples: int,
             size: tuple[int, int] = (160, 120)) -> None:
    """Encode one keyframe-first segment into ``path`` (any extension)."""
    w, h = size
    with av.open(str(path), "w", format="mpegts") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.time_base = Fraction(1, FPS)
        v.options = {"g": str(frames), "bf": "0", "preset": "ultrafast", "tune": "zerolatency"}
        a = out.add_stream("aac", rate=RATE)
        a.codec_context.layout = "mono"
        a.codec_context.time_base = Fraction(1, RATE)
        sent = 0
        for i in range(frames):
            n = first_frame + i
            img = np.zeros((h, w, 3), np.uint8)
            img[:, :, 0] = (n * 7) % 256
            img[: h // 2, (n * 3) % w:, 1] = 200
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, FPS)
            out.mux(v.encode(frame))
            want = (i + 1) * samples // frames
            while sent < want:
                k = min(1024, want - sent)
                t = (first_sample + sent + np.arange(k)) / RATE
                pcm = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).reshape(1, -1)
                af = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
                af.sample_rate, af.pts, af.time_base = RATE, first_sample + sent, Fraction(1, RATE)
                out.mux(a.encode(af))
                sent += k
        out.mux(v.encode(None))
        out.mux(a.encode(None))


def video_pts(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return sorted(p.pts for p in c.demux(c.streams.video[0]) if p.pts is not None)


def make_recording(directory: Path, recording_id: str, count: int, seconds: float = 1.0,
                   wall0_ns: int = WALL0, quality: TimeQuality = TimeQuality.NTP,
                   leave_last_open: bool = False) -> list[SegmentInfo]:
    """Write ``count`` consecutive segments; returns their SegmentInfo (last one final).

    With ``leave_last_open`` the last segment stays NAME.ts.part (a crash mid-segment)
    and is not in the returned list.
    """
    directory.mkdir(parents=True, exist_ok=True)
    frames = int(round(seconds * FPS))
    samples = int(round(seconds * RATE))
    infos = []
    for k in range(count):
        name = f"{recording_id}_{k:05d}.ts"
        part = directory / (name + ".part")
        # media time starts 1 s in, so the AAC priming delay never makes the muxer shift PTS
        write_ts(part, FPS + k * frames, frames, RATE + k * samples, samples)
        if leave_last_open and k == count - 1:
            break
        final = directory / name
        os.rename(part, final)
        data = final.read_bytes()
        pts = video_pts(final)
        mono0 = int(k * seconds * 1e9)
        mono1 = mono0 + int((frames - 1) * 1e9 / FPS)
        infos.append(SegmentInfo(
            path=final, recording_id=recording_id, index=k,
            sha256=hashlib.sha256(data).hexdigest(), size=len(data), time_base=TB,
            first_pts=pts[0], last_pts=pts[-1], frame_duration=FRAME_TICKS,
            video_frames=len(pts), first_sample=k * samples, audio_samples=samples,
            wall_start=TimeSample(mono0, wall0_ns + mono0, quality, 0.001),
            wall_end=TimeSample(mono1, wall0_ns + mono1, quality, 0.001),
            final=(k == count - 1)))
    return infos


# ---- a provisioned device with an evidence directory, for evidence tests ------
from dataclasses import dataclass  # noqa: E402

from common.clock import SystemWallClock  # noqa: E402
from recorder.identity import FileSigner, provision  # noqa: E402
from recorder.journal import Journal  # noqa: E402
from recorder.seal import Sealer  # noqa: E402
from recorder.store import EvidenceStore  # noqa: E402


@dataclass
class Device:
    key_dir: Path
    root: Path
    signer: FileSigner
    journal: Journal
    store: EvidenceStore
    sealer: Sealer

    @property
    def pem(self) -> bytes:
        return self.signer.public_key_pem()

    def reopen(self) -> "Device":
        """Close and open the journal again, as after a restart."""
        self.journal.close()
        return open_device(self.key_dir, self.root)


def open_device(key_dir: Path, root: Path) -> Device:
    signer = FileSigner.load(key_dir)
    journal = Journal.open(root, signer, SystemWallClock())
    store = EvidenceStore(root, journal)
    return Device(key_dir, root, signer, journal, store, Sealer(store))


def new_device(base: Path, name: str = "dev") -> Device:
    provision(base / f"{name}-key")
    return open_device(base / f"{name}-key", base / f"{name}-evidence")


def record_session(dev: Device, recordings: dict[str, int]) -> None:
    """boot, then for each recording: start, its sealed segments, stop; then shutdown."""
    dev.journal.append("boot", {"firmware": "test"})
    for rid, count in recordings.items():
        dev.journal.append("recording-start", {"recording_id": rid})
        for info in make_recording(dev.store.recording_dir(rid), rid, count):
            dev.sealer.segment_closed(info)
        dev.journal.append("recording-stop", {"recording_id": rid, "cause": "officer"})
    dev.journal.append("shutdown", {})
