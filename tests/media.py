"""Test helpers that look at recordings the way a court's expert would: with ffprobe/ffmpeg and PyAV."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import numpy as np


def ffmpeg_errors(path: Path) -> str:
    """What ``ffmpeg -v error`` says while decoding the whole file (empty when clean)."""
    r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, check=False)
    return (r.stderr + ("" if r.returncode == 0 else f"\nexit {r.returncode}")).strip()


def ffprobe_packets(path: Path, stream: str) -> list[dict]:
    """Packets of stream 'v' or 'a' in file order: pts, duration, flags."""
    r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries",
                        "packet=pts,duration,flags", "-of", "json", str(path)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["packets"]


def decoded_counts(path: Path) -> tuple[int, int]:
    """(video frames, audio samples) after decoding with PyAV."""
    frames = samples = 0
    with av.open(str(path)) as c:
        for f in c.decode(*c.streams):
            if isinstance(f, av.VideoFrame):
                frames += 1
            else:
                samples += f.samples
    return frames, samples


def decode_frame(path: Path, n: int) -> np.ndarray:
    """Luma plane (video range, as coded) of the n-th video frame of a file."""
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == n:
                return f.to_ndarray(format="yuv420p")[:f.height]
    raise IndexError(f"{path} has fewer than {n + 1} frames")


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("recordings/*/*.ts"))
