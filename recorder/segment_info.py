"""The facts about one closed segment, handed to whoever seals it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from common.clock import TimeSample


@dataclass(frozen=True)
class SegmentInfo:
    path: Path                 # final path of the closed segment file
    recording_id: str          # which continuous recording it belongs to
    index: int                 # 0-based position within the recording
    sha256: str                # hex digest of the file's bytes, computed while writing
    size: int                  # bytes
    time_base: int             # ticks per second of the PTS values below (90000)
    first_pts: int             # first video PTS (media time, not wall time)
    last_pts: int              # last video PTS
    frame_duration: int        # ticks per frame
    video_frames: int
    first_sample: int          # index of the first audio sample in the recording
    audio_samples: int
    wall_start: TimeSample     # wall time of the first frame
    wall_end: TimeSample       # wall time of the last frame
    frames_repeated: int = 0   # frames the camera missed, filled by repeating the last one
    silence_samples: int = 0   # audio samples the microphone missed, filled with silence
    final: bool = False        # last segment of its recording
    recovered: bool = False    # salvaged after a crash or power loss
    extra: dict[str, Any] = field(default_factory=dict)


class SegmentSink(Protocol):
    """Told when a segment closes (the evidence layer seals it there)."""

    def segment_closed(self, info: SegmentInfo) -> object: ...   # the result is ignored (Sealer: its Record)
