"""The spoken notice at each start (D7), and the journal record that proves which one played.

The record carries the file's SHA-256 so a reviewer can tell exactly what the
public heard; a notice that could not be played is journaled as such, never
silently skipped.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Callable

from hw.audio_out import AudioOut

log = logging.getLogger(__name__)

DEFAULT_NOTICE = Path(__file__).parent / "sounds" / "notice-zh.wav"


def announce(audio_out: AudioOut, configured_file: str, journal: Callable[[str, dict[str, Any]], object],
             clock: Callable[[], int]) -> None:
    """Play the notice (``configured_file``, or the shipped one when empty) and journal it."""
    path = Path(configured_file) if configured_file else DEFAULT_NOTICE
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        audio_out.play(path)
    except OSError as exc:
        log.error("announcement %s not played: %s", path, exc)
        journal("announcement-failed", {"file": path.name, "error": str(exc)})
        return
    journal("announcement", {"file": path.name, "sha256": digest, "mono_ns": clock()})
