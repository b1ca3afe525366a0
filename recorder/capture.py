"""The interfaces the recorder consumes: a camera and a microphone.

The core owns these Protocols, so ``Pipeline(camera, microphone)`` can name them; the
adapters implement them structurally: ``hw.picamera.PiCamera`` and
``hw.sounddevice_mic.SoundDeviceMicrophone`` on the Pi, ``sim.camera.SimCamera`` and
``sim.microphone.SimMicrophone`` in the simulation. The data they deliver (:class:`Frame`,
:class:`AudioBlock`) is defined one layer down, in ``common.media``, which both the
recorder and the adapters import (``hw/`` may not import ``recorder/``).
"""
from __future__ import annotations

from typing import Protocol

from common.media import AudioBlock, Frame

__all__ = ["AudioBlock", "Camera", "Frame", "Microphone", "Timebase"]


class Camera(Protocol):
    """Raw frames with monotonic timestamps (see :class:`common.media.Frame`)."""

    width: int
    height: int
    fps: int

    def start(self) -> None: ...

    def read(self, timeout: float) -> Frame | None:
        """Next frame, or None if none arrived within ``timeout`` seconds."""
        ...

    def stop(self) -> None: ...


class Microphone(Protocol):
    """Blocks of PCM with monotonic timestamps (see :class:`common.media.AudioBlock`)."""

    sample_rate: int

    def start(self) -> None: ...

    def drain(self) -> list[AudioBlock]:
        """All blocks captured so far and not yet returned; never blocks."""
        ...

    def stop(self) -> None: ...


class Timebase(Protocol):
    """The monotonic clock the capture loop runs on (``common.clock.MonotonicTime`` on the
    device, ``sim.clock.SimTime`` in the simulation)."""

    def now_ns(self) -> int: ...

    def sleep_until(self, t_ns: int) -> None: ...
