"""The I2S MEMS microphone through PortAudio (sounddevice), 48 kHz mono 16-bit.

sounddevice is imported only when the microphone is opened. Each callback
block is stamped with the monotonic instant of its first sample, derived
from PortAudio's ADC time, so the recorder can keep sound on the pictures.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from common.media import AudioBlock

if TYPE_CHECKING:   # Pi-only and untyped: Any to the checker where it is not installed
    from sounddevice import CallbackFlags, InputStream

log = logging.getLogger(__name__)


class SoundDeviceMicrophone:
    def __init__(self, sample_rate: int = 48000, device: str | int | None = None,
                 block: int = 960) -> None:
        self.sample_rate, self.device, self.block = sample_rate, device, block
        self._blocks: list[AudioBlock] = []
        self._lock = threading.Lock()
        self._stream: InputStream | None = None

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any,   # PortAudio's time info (cffi)
                  status: CallbackFlags) -> None:
        if status:
            log.warning("microphone: %s", status)
        # first sample's age: now (stream time) minus its ADC capture time
        age = max(0.0, time_info.currentTime - time_info.inputBufferAdcTime) if time_info else 0.0
        mono_ns = time.monotonic_ns() - int(age * 1e9)
        block = AudioBlock(indata[:, 0].copy(), mono_ns, self.sample_rate)
        with self._lock:
            self._blocks.append(block)

    def start(self) -> None:
        import sounddevice

        stream = sounddevice.InputStream(samplerate=self.sample_rate, channels=1,
                                         dtype="int16", blocksize=self.block,
                                         device=self.device, callback=self._callback)
        self._stream = stream
        stream.start()

    def drain(self) -> list[AudioBlock]:
        with self._lock:
            blocks, self._blocks = self._blocks, []
        return blocks

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
