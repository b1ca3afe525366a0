"""Battery state from a fuel gauge: charge percent, cell voltage, charge rate.

The device must know its charge before duty (D1 self-check) and warn before
low battery ends a recording (D5). The real gauge is a MAX17048 on I2C;
``sim/battery.py`` implements the same :class:`BatteryGauge` protocol.

Byte order matters: SMBus ``read_word_data`` assembles the first byte on the
wire as the LOW byte, while the MAX17048 sends its registers MSB first, so
every word is byte-swapped before decoding.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

from common.settings import Section

log = logging.getLogger(__name__)


class I2CBus(Protocol):
    """What the gauge uses of an SMBus (smbus2.SMBus, or a test's stand-in); its answer is checked."""

    def read_word_data(self, i2c_addr: int, register: int, /) -> object: ...

REG_VCELL = 0x02      # cell voltage, 78.125 uV/LSB
REG_SOC = 0x04        # state of charge, 1/256 %/LSB
REG_MODE = 0x06
REG_VERSION = 0x08    # 0x001X on MAX17048/9
REG_CRATE = 0x16      # signed, 0.208 %/h per LSB (positive = charging)

VCELL_V_PER_LSB = 78.125e-6
SOC_PCT_PER_LSB = 1 / 256
CRATE_PCT_H_PER_LSB = 0.208
SOC_OVERSHOOT_PCT = 101.0        # the gauge may read slightly above 100 % right after charging
VCELL_PLAUSIBLE_V = (2.5, 4.6)   # outside: no cell, wrong chip or bus garbage


class BatteryError(RuntimeError):
    """The gauge could not be read or gave an implausible answer."""


@dataclass(frozen=True)
class BatteryReading:
    percent: float                       # 0-100
    voltage: float | None = None         # cell volts, when the gauge reports it
    rate_pct_per_h: float | None = None  # positive = charging, negative = draining

    @property
    def charging(self) -> bool:
        return self.rate_pct_per_h is not None and self.rate_pct_per_h > 0


class BatteryGauge(Protocol):
    def read(self) -> BatteryReading:
        """The current reading; raises :class:`BatteryError` when it cannot be had."""


@dataclass(frozen=True)
class BatteryConfig(Section):
    """The ``[battery]`` settings."""

    SECTION = "battery"

    i2c_bus: int = 1
    address: int = 0x36
    nominal_drain_pct_per_h: float = 12.5   # used when the gauge gives no usable rate (8 h from full)
    low_percent: float = 15.0               # cue 'low-battery'
    critical_percent: float = 5.0           # end the recording cleanly (interruption cause low-battery)

    def __post_init__(self) -> None:
        for name in ("i2c_bus", "address"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"[battery] {name} must be a non-negative integer, got {value!r}")
        if not 0x03 <= self.address <= 0x77:
            raise ValueError(f"[battery] address must be a 7-bit I2C address, got {self.address:#x}")
        for name in ("nominal_drain_pct_per_h", "low_percent", "critical_percent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"[battery] {name} must be a number, got {value!r}")
        if self.nominal_drain_pct_per_h <= 0:
            raise ValueError("[battery] nominal_drain_pct_per_h must be > 0")
        if not 0 <= self.critical_percent < self.low_percent <= 100:
            raise ValueError("[battery] need 0 <= critical_percent < low_percent <= 100")



def swap16(word: int) -> int:
    """SMBus little-endian word -> the chip's big-endian register value."""
    return ((word & 0xFF) << 8) | (word >> 8)


def estimate_hours_left(reading: BatteryReading, fallback_drain_pct_per_h: float,
                        min_rate_pct_per_h: float = 0.5) -> float | None:
    """Hours until empty at the measured drain, or at the fallback when the gauge
    reports none or a rate too small to trust; None while charging."""
    if reading.charging:
        return None
    drain = None
    if reading.rate_pct_per_h is not None and -reading.rate_pct_per_h >= min_rate_pct_per_h:
        drain = -reading.rate_pct_per_h
    if drain is None:
        drain = fallback_drain_pct_per_h
    if not drain > 0:
        raise ValueError(f"drain rate must be > 0 %/h, got {drain!r}")
    return reading.percent / drain


class Max17048:
    """MAX17048/9 fuel gauge over I2C (smbus2, imported on first use).

    ``smbus`` may be any object with ``read_word_data(address, register)``;
    it is the seam tests use instead of a real bus.
    """

    def __init__(self, i2c_bus: int = 1, address: int = 0x36, smbus: I2CBus | None = None) -> None:
        self.i2c_bus = i2c_bus
        self.address = address
        self._bus = smbus
        self._checked = False

    @classmethod
    def from_config(cls, config: BatteryConfig) -> "Max17048":
        return cls(config.i2c_bus, config.address)

    def _where(self) -> str:
        return f"MAX17048 at I2C bus {self.i2c_bus} address {self.address:#04x}"

    def _register(self, register: int) -> int:
        if self._bus is None:
            try:
                from smbus2 import SMBus
                self._bus = SMBus(self.i2c_bus)
            except (ImportError, OSError) as exc:
                raise BatteryError(f"{self._where()}: cannot open the bus: {exc}") from exc
        try:
            word = self._bus.read_word_data(self.address, register)
        except OSError as exc:
            raise BatteryError(f"{self._where()}: reading register {register:#04x} failed: {exc}") from exc
        if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF:
            raise BatteryError(f"{self._where()}: register {register:#04x} gave {word!r}, not a 16-bit word")
        return swap16(word)

    def version(self) -> int:
        return self._register(REG_VERSION)

    def _check_chip(self) -> None:
        version = self.version()
        if version & 0xFFF0 != 0x0010:
            raise BatteryError(f"{self._where()}: VERSION is {version:#06x}, not a MAX17048/9 (0x001X)")
        self._checked = True

    def read(self) -> BatteryReading:
        if not self._checked:
            self._check_chip()
        voltage = self._register(REG_VCELL) * VCELL_V_PER_LSB
        percent = self._register(REG_SOC) * SOC_PCT_PER_LSB
        crate = self._register(REG_CRATE)
        rate = (crate - 0x10000 if crate & 0x8000 else crate) * CRATE_PCT_H_PER_LSB
        if not VCELL_PLAUSIBLE_V[0] <= voltage <= VCELL_PLAUSIBLE_V[1]:
            raise BatteryError(f"{self._where()}: implausible cell voltage {voltage:.3f} V")
        if percent > SOC_OVERSHOOT_PCT:
            raise BatteryError(f"{self._where()}: implausible state of charge {percent:.1f} %")
        return BatteryReading(min(percent, 100.0), round(voltage, 5), round(rate, 3))

    def close(self) -> None:
        if self._bus is not None and hasattr(self._bus, "close"):
            self._bus.close()
        self._bus = None
