"""The speaker: what plays the spoken notice (D7) and nothing else.

The service only needs ``play(path)``; on the Pi that is ALSA ``aplay``, in
the simulator a list of what would have been played, so scenarios can check it.
"""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class AudioOut(Protocol):
    def play(self, path: Path) -> None:
        """Start playing a WAV file; must not block (recording never waits for the speaker)."""
        ...


class LoggedAudioOut:
    """The simulator's speaker: remembers what it was asked to play."""

    def __init__(self) -> None:
        self.played: list[Path] = []

    def play(self, path: Path) -> None:
        log.info("audio out: %s", path)
        self.played.append(Path(path))


class AplayAudioOut:
    """The Pi's speaker through ALSA ``aplay``, started and left to run."""

    def play(self, path: Path) -> None:
        subprocess.Popen(["aplay", "-q", str(path)], stdin=subprocess.DEVNULL)
