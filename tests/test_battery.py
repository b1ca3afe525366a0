"""MAX17048 register decoding through the SMBus read_word_data seam, and the simulated battery."""
from __future__ import annotations

import builtins
import math

import pytest

from common.clock import ManualClock
from hw.battery import (
    REG_CRATE,
    REG_SOC,
    REG_VCELL,
    REG_VERSION,
    BatteryConfig,
    BatteryError,
    BatteryReading,
    Max17048,
    estimate_hours_left,
    swap16,
)
from sim.battery import SimulatedBattery

S = 1_000_000_000
H = 3600 * S


class FakeSMBus:
    """Holds the chip's big-endian register values; answers like SMBus (little-endian words)."""

    def __init__(self, registers: dict[int, int], address: int = 0x36):
        self.registers = registers
        self.address = address
        self.reads: list[tuple[int, int]] = []

    def read_word_data(self, address: int, register: int):
        self.reads.append((address, register))
        if address != self.address:
            raise OSError(121, "Remote I/O error")   # what Linux gives for a NAK
        value = self.registers[register]
        if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            return value   # garbage passed through as is
        return ((value & 0xFF) << 8) | (value >> 8)   # first byte on the wire (MSB) lands low


def chip(vcell=0xCA00, soc=0x5A80, crate=0xFFF0, version=0x0012):
    return {REG_VCELL: vcell, REG_SOC: soc, REG_CRATE: crate, REG_VERSION: version}


def test_decodes_big_endian_registers_from_little_endian_smbus_words():
    bus = FakeSMBus(chip())
    reading = Max17048(smbus=bus).read()
    assert reading.voltage == pytest.approx(0xCA00 * 78.125e-6)   # 51712 LSB = 4.04 V
    assert reading.voltage == pytest.approx(4.04)
    assert reading.percent == pytest.approx(90.5)                 # 0x5A = 90, 0x80/256 = 0.5
    assert reading.rate_pct_per_h == pytest.approx(-16 * 0.208)   # 0xFFF0 = -16
    assert not reading.charging
    assert bus.reads[0] == (0x36, REG_VERSION), "the chip is identified before trusting it"


def test_byte_swap_is_not_symmetric_by_accident():
    # 0x0102 and 0x0201 must decode differently; a missing swap would read SOC 0x805A as 128 %.
    assert swap16(0x0201) == 0x0102
    reading = Max17048(smbus=FakeSMBus(chip(soc=0x0180))).read()
    assert reading.percent == pytest.approx(1.5)


def test_positive_crate_means_charging():
    reading = Max17048(smbus=FakeSMBus(chip(crate=0x0064))).read()
    assert reading.rate_pct_per_h == pytest.approx(100 * 0.208)
    assert reading.charging


def test_small_overshoot_above_100_percent_is_clamped():
    assert Max17048(smbus=FakeSMBus(chip(soc=0x6480))).read().percent == 100.0   # 100.5 %


@pytest.mark.parametrize("registers, match", [
    (chip(version=0x0003), "not a MAX17048"),
    (chip(soc=0xFFFF), "implausible state of charge"),
    (chip(vcell=0x0000), "implausible cell voltage"),
    (chip(vcell=0xFFFF), "implausible cell voltage"),
    (chip(soc=-1), "not a 16-bit word"),
    (chip(soc=0x1_0000), "not a 16-bit word"),
    (chip(soc=None), "not a 16-bit word"),
])
def test_bad_answers_are_clear_errors(registers, match):
    with pytest.raises(BatteryError, match=match):
        Max17048(smbus=FakeSMBus(registers)).read()


def test_bus_error_names_bus_address_and_register():
    gauge = Max17048(i2c_bus=3, address=0x37, smbus=FakeSMBus(chip()))
    with pytest.raises(BatteryError, match=r"bus 3 address 0x37.*0x08"):
        gauge.read()


def test_missing_smbus2_is_a_battery_error(monkeypatch):
    real_import = builtins.__import__

    def no_smbus2(name, *args, **kwargs):
        if name == "smbus2":
            raise ImportError("No module named 'smbus2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_smbus2)
    with pytest.raises(BatteryError, match="cannot open the bus"):
        Max17048(i2c_bus=1).read()


def test_hours_left_uses_measured_drain_or_fallback():
    assert estimate_hours_left(BatteryReading(50.0, 3.8, -10.0), 12.5) == pytest.approx(5.0)
    # rate too small to trust (idle gauge): fall back to the nominal drain
    assert estimate_hours_left(BatteryReading(50.0, 3.8, -0.2), 12.5) == pytest.approx(4.0)
    assert estimate_hours_left(BatteryReading(50.0, None, None), 25.0) == pytest.approx(2.0)
    assert estimate_hours_left(BatteryReading(50.0, 3.8, +5.0), 12.5) is None
    with pytest.raises(ValueError):
        estimate_hours_left(BatteryReading(50.0), 0.0)


@pytest.mark.parametrize("bad, match", [
    ({"address": 0x200}, "address"),
    ({"i2c_bus": "one"}, "i2c_bus"),
    ({"nominal_drain_pct_per_h": 0}, "nominal_drain"),
    ({"low_percent": 3, "critical_percent": 5}, "critical_percent"),
    ({"capacity": 3000}, "unknown"),
])
def test_bad_battery_config(bad, match):
    with pytest.raises(ValueError, match=match):
        BatteryConfig.from_mapping(bad)


# -- simulation ----------------------------------------------------------------

def test_simulated_drain_follows_the_clock():
    clock = ManualClock(0)
    battery = SimulatedBattery(clock.monotonic_ns, percent=80.0, drain_pct_per_h=10.0)
    assert battery.read().percent == pytest.approx(80.0)
    clock.advance_to(2 * H)
    reading = battery.read()
    assert reading.percent == pytest.approx(60.0)
    assert reading.rate_pct_per_h == -10.0
    assert estimate_hours_left(reading, 12.5) == pytest.approx(6.0)
    assert 3.3 < reading.voltage < 4.2
    clock.advance_to(20 * H)
    assert battery.read().percent == 0.0 and battery.read().rate_pct_per_h == 0.0


def test_scripted_percent_rate_changes_and_charging():
    clock = ManualClock(0)
    battery = SimulatedBattery(clock.monotonic_ns, percent=100.0, drain_pct_per_h=12.5)
    clock.advance_to(1 * H)
    battery.set_drain(50.0)          # rebases at 87.5 %
    clock.advance_to(2 * H)
    assert battery.read().percent == pytest.approx(37.5)
    battery.set_percent(6.0)         # scenario: jump to near-empty
    assert battery.read().percent == pytest.approx(6.0)
    battery.set_charging(40.0)
    clock.advance_to(3 * H)
    reading = battery.read()
    assert reading.percent == pytest.approx(46.0) and reading.charging
    clock.advance_to(10 * H)
    assert battery.read().percent == 100.0 and not battery.read().charging


def test_simulated_gauge_failure_and_bad_scripts():
    clock = ManualClock(0)
    battery = SimulatedBattery(clock.monotonic_ns)
    battery.set_failure(BatteryError("gauge gone"))
    with pytest.raises(BatteryError, match="gauge gone"):
        battery.read()
    battery.set_failure(None)
    assert battery.read().percent == 100.0
    for bad in (-1, 101, math.nan, "50", True):
        with pytest.raises(ValueError):
            battery.set_percent(bad)
    with pytest.raises(ValueError):
        battery.set_drain(-5)
    with pytest.raises(ValueError):
        battery.set_charging(0)
