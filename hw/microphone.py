"""What a microphone gives the recorder: blocks of PCM with monotonic timestamps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class AudioBlock:
    """Mono 16-bit PCM; ``mono_ns`` is the capture instant of the first sample."""

    samples: np.ndarray   # shape (n,), int16
    mono_ns: int
    sample_rate: int


class Microphone(Protocol):
    sample_rate: int

    def start(self) -> None: ...

    def drain(self) -> list[AudioBlock]:
        """All blocks captured so far and not yet returned; never blocks."""

    def stop(self) -> None: ...
