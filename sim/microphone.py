"""A simulated microphone: a tone or a WAV file (e.g. speech from espeak-ng), 48 kHz mono.

It implements :class:`recorder.capture.Microphone`. Faults: silence from a given
time (the microphone delivers nothing, as a dead I2S link) and a clock skew in
parts per million (its sample clock runs fast or slow against the monotonic
clock, as real crystals do).
"""
from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.media import AudioBlock
from sim.clock import SimTime


@dataclass
class MicFaults:
    dead_from_s: float | None = None   # deliver nothing from this time on
    dead_until_s: float | None = None  # ... until this time (None: for good)
    skew_ppm: float = 0.0              # sample clock error


def load_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Read a PCM WAV as mono int16 at ``sample_rate`` (linear resampling if needed)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels, rate = w.getnchannels(), w.getframerate()
    mono: np.ndarray = raw.reshape(-1, channels).mean(axis=1)
    if rate != sample_rate:
        n = int(round(len(mono) * sample_rate / rate))
        mono = np.interp(np.arange(n) * rate / sample_rate, np.arange(len(mono)), mono)
    if len(mono) == 0:
        raise ValueError(f"{path}: no samples")
    return mono.astype(np.int16)


class SimMicrophone:
    """Delivers blocks of ``block`` samples once their last sample has been 'captured'."""

    def __init__(self, sample_rate: int = 48000, block: int = 960, tone_hz: float = 440.0,
                 wav: Path | None = None, time_source: SimTime | None = None,
                 faults: MicFaults | None = None) -> None:
        self.sample_rate = sample_rate
        self.block = block
        self.time = time_source or SimTime(realtime=True)
        self.faults = faults or MicFaults()
        self._source = load_wav(wav, sample_rate) if wav else None
        self._tone_hz = tone_hz
        self._tone = self._tone_table()
        self._t0: int | None = None
        self._emitted = 0  # samples produced by the (simulated) ADC so far

    def _tone_table(self) -> tuple[int, np.ndarray] | None:
        """(period, one period of the tone plus a block): a block is then a slice, not a sine
        computed afresh (that took ~14 us a block, 0.09 ms per 1080p frame in the pipeline
        benchmark, work a real microphone does not do). None when the tone does not repeat
        within a second of samples (a non-integer frequency)."""
        if not float(self._tone_hz).is_integer() or self._tone_hz <= 0:
            return None
        period = self.sample_rate // math.gcd(self.sample_rate, int(self._tone_hz))
        t = np.arange(period + self.block) / self.sample_rate
        return period, (np.sin(2 * np.pi * self._tone_hz * t) * 8000).astype(np.int16)

    def start(self) -> None:
        self._t0 = self.time.now_ns()
        self._emitted = 0

    def stop(self) -> None:
        pass

    def _samples(self, start: int, n: int) -> np.ndarray:
        if self._source is not None:
            idx = (np.arange(start, start + n) % len(self._source))
            return self._source[idx]
        if self._tone is not None and n <= self.block:
            period, table = self._tone
            k = start % period
            return table[k:k + n].copy()
        t = np.arange(start, start + n) / self.sample_rate
        return (np.sin(2 * np.pi * self._tone_hz * t) * 8000).astype(np.int16)

    def _dead(self, t_s: float) -> bool:
        f = self.faults
        return f.dead_from_s is not None and t_s >= f.dead_from_s and (
            f.dead_until_s is None or t_s < f.dead_until_s)

    def drain(self) -> list[AudioBlock]:
        t0 = self._t0
        if t0 is None:
            raise RuntimeError("microphone not started")
        f = self.faults
        rate = self.sample_rate * (1 + f.skew_ppm / 1e6)
        available = int((self.time.now_ns() - t0) / 1e9 * rate)
        block, emitted = self.block, self._emitted
        if emitted + block > available:   # most calls: no whole block yet (cheap, like a real drain)
            return []
        blocks = []
        may_die = f.dead_from_s is not None
        while emitted + block <= available:
            start = emitted
            t_ns = t0 + int(start / rate * 1e9)
            emitted += block
            if may_die and self._dead((t_ns - t0) / 1e9):
                continue
            blocks.append(AudioBlock(self._samples(start, block), t_ns, self.sample_rate))
        self._emitted = emitted
        return blocks


class ScriptedMicrophone(SimMicrophone):
    """Quiet room tone with speech WAVs mixed in at scripted instants."""

    def __init__(self, sample_rate: int, time_source: SimTime) -> None:
        super().__init__(sample_rate, tone_hz=220.0, time_source=time_source)
        self.speech: list[tuple[int, np.ndarray]] = []   # (first sample, pcm)

    def speak(self, at_s: float, wav: Path) -> None:
        self.speech.append((int(at_s * self.sample_rate), load_wav(wav, self.sample_rate)))

    def _samples(self, start: int, n: int) -> np.ndarray:
        out = (super()._samples(start, n).astype(np.int32) // 4)
        for first, pcm in self.speech:
            lo, hi = max(start, first), min(start + n, first + len(pcm))
            if lo < hi:
                out[lo - start:hi - start] += pcm[lo - first:hi - first]
        return out.clip(-32768, 32767).astype(np.int16)
