"""Placing captured frames and sound on one gap-free media timeline.

Media time is counted, not measured: frame slot k is at k/fps and sample n
at n/rate from the recording's start. Capture timestamps (monotonic clock)
only decide *which* slot a frame fills and whether the sound has drifted, so
the file has constant frame rate, continuous audio, and sound that stays on
the pictures however the microphone's crystal differs from the camera's.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class Placement(enum.Enum):
    NEXT = "next"        # the frame fills the next slot
    LATE = "late"        # slots were missed; repeat the previous frame ``missing`` times first
    EARLY = "early"      # the frame belongs to a slot already filled; drop it
    STALL = "stall"      # the camera was gone too long to bridge: the recording is interrupted


@dataclass(frozen=True)
class VideoPlace:
    kind: Placement
    slot: int
    missing: int = 0


class VideoTimeline:
    """Maps frame capture instants to slots on a constant-rate grid from the first frame."""

    def __init__(self, fps: int, t0_ns: int, max_bridge_s: float = 0.5) -> None:
        self.fps = fps
        self.t0 = t0_ns
        self.next_slot = 0
        self.max_bridge = int(max_bridge_s * fps)

    def slot_time_ns(self, slot: int) -> int:
        return self.t0 + slot * 1_000_000_000 // self.fps

    def place(self, mono_ns: int) -> VideoPlace:
        slot = round((mono_ns - self.t0) * self.fps / 1e9)
        if slot < self.next_slot:
            return VideoPlace(Placement.EARLY, slot)
        missing = slot - self.next_slot
        if missing > self.max_bridge:
            return VideoPlace(Placement.STALL, slot, missing)
        self.next_slot = slot + 1
        return VideoPlace(Placement.LATE if missing else Placement.NEXT, slot, missing)


class AudioTimeline:
    """Keeps the sample count in step with the monotonic clock.

    A block whose first sample should land more than ``tolerance`` samples
    after the write position means sound was lost: silence fills the hole.
    One that lands before it means the microphone's clock runs fast: the
    overlap is dropped. Either way the audio stays continuous and in sync.
    """

    def __init__(self, sample_rate: int, t0_ns: int, tolerance: int = 1024) -> None:
        self.rate = sample_rate
        self.t0 = t0_ns
        self.tolerance = tolerance
        self.written = 0
        self.silence = 0
        self.dropped = 0

    def expected_at(self, mono_ns: int) -> int:
        return round((mono_ns - self.t0) * self.rate / 1e9)

    def place(self, samples: np.ndarray, mono_ns: int) -> tuple[int, np.ndarray]:
        """Return (silence samples to insert first, samples to write) for a captured block."""
        start = self.expected_at(mono_ns)
        gap = start - self.written
        fill = 0
        if gap > self.tolerance:
            fill = gap
        elif gap < -self.tolerance or start < 0:
            cut = max(-gap, -start) if start < 0 else -gap
            self.dropped += min(cut, len(samples))
            samples = samples[cut:]
        self.silence += fill
        self.written += fill + len(samples)
        return fill, samples

    def fill_until(self, target: int) -> int:
        """Silence needed to bring the write position up to ``target`` samples (>= 0)."""
        fill = max(0, target - self.written)
        self.silence += fill
        self.written += fill
        return fill
