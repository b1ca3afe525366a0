"""Voice notes from the mark button: the sound between press and release, cut to the sample.

The hold is recognised only ``mark_long_press_s`` after the press, so the
service keeps the last few seconds of sound in RAM (:class:`RecentSound`) and
a note starts at the press, not at the threshold. The same buffer gives the
self-check its microphone level. Cutting is plain sample arithmetic on the
blocks' monotonic timestamps (:func:`cut`), so a note lines up with the video
recorded at the same instants.
"""
from __future__ import annotations

import collections
import datetime as dt
import math
import secrets
from collections.abc import Iterable, Sequence

import numpy as np

from common.media import AudioBlock
from firmware.selfcheck import rms_dbfs

NS = 1_000_000_000
RECENT_AUDIO_S = 3.0   # sound kept in RAM so a voice note starts at the press, not at the hold threshold


def _end_ns(b: AudioBlock) -> int:
    return b.mono_ns + len(b.samples) * NS // b.sample_rate


def cut(blocks: Iterable[AudioBlock], from_ns: int, to_ns: int) -> np.ndarray:
    """The samples captured in [from_ns, to_ns), joined (int16; empty if none)."""
    pcm = []
    for b in blocks:
        n = len(b.samples)
        start = max(0, (from_ns - b.mono_ns) * b.sample_rate // NS)
        stop = min(n, max(0, (to_ns - b.mono_ns) * b.sample_rate // NS))
        if stop > start:
            pcm.append(b.samples[start:stop])
    return np.concatenate(pcm) if pcm else np.zeros(0, np.int16)


def note_id(wall_ns: int) -> str:
    """``VN-<UTC second of the press>-<6 hex>``: sortable and unique on one device."""
    t = dt.datetime.fromtimestamp(wall_ns / 1e9, dt.timezone.utc)
    return f"VN-{t:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class RecentSound:
    """The last seconds of microphone sound, and the blocks of the note being held, if any."""

    def __init__(self, keep_s: float = RECENT_AUDIO_S) -> None:
        self.keep_ns = int(keep_s * NS)
        self._recent: collections.deque[AudioBlock] = collections.deque()
        self._held: list[AudioBlock] | None = None
        self.pressed_ns: int | None = None     # press of the note being held

    @property
    def holding(self) -> bool:
        return self._held is not None

    def feed(self, blocks: Sequence[AudioBlock], now_ns: int) -> None:
        """Every block the microphone delivers (the pipeline's audio tap)."""
        recent = self._recent
        recent.extend(blocks)
        horizon = now_ns - self.keep_ns
        pressed = self.pressed_ns
        while recent and recent[0].mono_ns < horizon and (
                pressed is None or recent[0].mono_ns < pressed - NS):
            recent.popleft()
        if self._held is not None:
            self._held.extend(blocks)

    def hold(self, pressed_ns: int) -> None:
        """A note begins at ``pressed_ns``: keep the sound already heard since then, and what follows."""
        self.pressed_ns = pressed_ns
        self._held = [b for b in self._recent if _end_ns(b) > pressed_ns]

    def release(self, released_ns: int) -> tuple[int, np.ndarray] | None:
        """End the held note: (pressed_ns, its samples up to ``released_ns``), or None if none."""
        if self._held is None or self.pressed_ns is None:
            return None
        held, pressed = self._held, self.pressed_ns
        self._held = self.pressed_ns = None
        return pressed, cut(held, pressed, released_ns)

    def level_dbfs(self, now_ns: int, seconds: float = 1.0) -> float:
        """Loudness of the last ``seconds`` (the last block if none that recent); -inf with no sound."""
        if not self._recent:
            return -math.inf
        since = now_ns - int(seconds * NS)
        pcm = [b.samples for b in self._recent if b.mono_ns >= since] or [self._recent[-1].samples]
        return rms_dbfs(np.concatenate(pcm))
