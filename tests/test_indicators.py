"""Lamps, motor and buzzer on gpiozero MockFactory pins, stepped by a manual clock."""
from __future__ import annotations

import pytest
from gpiozero.exc import PinPWMUnsupported
from gpiozero.pins.mock import MockFactory, MockPWMPin

from common.clock import ManualClock
from firmware.states import State
from hw.indicators import CUES, STATE_LAMPS, IndicatorConfig, Indicators, blink

MS = 1_000_000
GREEN, YELLOW, RED, MOTOR, BUZZER = 16, 25, 24, 23, 12


@pytest.fixture(params=[True, False], ids=["tonal", "active"])
def rig(request):
    factory = MockFactory(pin_class=MockPWMPin)
    clock = ManualClock(0)
    ind = Indicators(IndicatorConfig(buzzer_tonal=request.param), clock=clock.monotonic_ns,
                     pin_factory=factory)

    def at(t_ms):
        clock.advance_to(round(t_ms * MS))
        ind.poll()

    def lit(pin):
        return bool(factory.pin(pin).state)

    yield ind, at, lit, factory
    ind.close()
    factory.reset()


def lamps(lit):
    return tuple(lit(p) for p in (GREEN, YELLOW, RED))


def test_every_device_state_has_a_lamp_pattern():
    assert set(STATE_LAMPS) == {s.value for s in State}


@pytest.mark.parametrize("state, expected", [
    ("off", (False, False, False)),
    ("ready", (True, False, False)),
    ("recording", (False, True, True)),
    ("self-check", (True, True, True)),
])
def test_steady_state_lamps(rig, state, expected):
    ind, at, lit, _ = rig
    ind.show_state(state)
    at(0)
    assert lamps(lit) == expected
    at(5_000)
    assert lamps(lit) == expected


def test_fault_blinks_red_with_its_period(rig):
    ind, at, lit, factory = rig
    ind.show_state(State.FAULT)       # enum accepted as well as its name
    seen = []
    for t in (0, 124, 125, 249, 250, 374, 375, 10_000, 10_125):   # 0.25 s period: 125 ms on, 125 ms off
        at(t)
        seen.append(lit(RED))
    assert seen == [True, True, False, False, True, True, False, True, False]
    assert not lit(GREEN) and not lit(YELLOW)
    assert factory.pin(RED).states[0].state is False


def test_state_change_replaces_lamps(rig):
    ind, at, lit, _ = rig
    ind.show_state("recording")
    at(10)
    ind.show_state("ready")
    at(20)
    assert lamps(lit) == (True, False, False)


def test_custom_lamps_and_bad_modes(rig):
    ind, at, lit, _ = rig
    ind.set_lamps(yellow=blink(1.0))
    at(100)
    assert lamps(lit) == (False, True, False)
    at(600)
    assert lamps(lit) == (False, False, False)
    with pytest.raises(TypeError):
        ind.set_lamps(green=True)
    with pytest.raises(ValueError, match="blink period"):
        ind.set_lamps(red=blink(0))


def test_unknown_state_and_cue_are_clear_errors(rig):
    ind, *_ = rig
    with pytest.raises(ValueError, match="no lamp pattern"):
        ind.show_state("standby")
    with pytest.raises(ValueError, match="unknown cue"):
        ind.cue("beep")


def test_recording_started_cue_vibrates_and_sounds_then_stops(rig):
    ind, at, lit, factory = rig
    ind.cue("recording-started")            # one 0.4 s step
    assert ind.playing == "recording-started"
    assert lit(MOTOR) and factory.pin(BUZZER).state > 0
    at(399)
    assert lit(MOTOR)
    at(400)
    assert not lit(MOTOR) and not factory.pin(BUZZER).state
    assert ind.playing is None
    assert [bool(s.state) for s in factory.pin(MOTOR).states] == [False, True, False]


def test_tonal_buzzer_plays_the_step_tone():
    factory = MockFactory(pin_class=MockPWMPin)
    clock = ManualClock(0)
    ind = Indicators(IndicatorConfig(buzzer_mid_hz=2000.0), clock=clock.monotonic_ns, pin_factory=factory)
    try:
        ind.cue("reason-required")     # three 150 ms beeps at 1.5x mid
        assert factory.pin(BUZZER).frequency == pytest.approx(3000.0)
        clock.advance_to(160 * MS)
        ind.poll()
        assert factory.pin(BUZZER).frequency is None
    finally:
        ind.close()
        factory.reset()


def test_reason_required_pattern_counts_three_pulses(rig):
    ind, at, lit, factory = rig
    ind.cue("reason-required")
    for t in range(0, 1200, 10):
        at(t)
    motor_on = [s for s in factory.pin(MOTOR).states if s.state]
    assert len(motor_on) == 3


def test_cues_queue_in_order(rig):
    ind, at, lit, _ = rig
    ind.cue("bookmark")       # 0.1 s
    ind.cue("reminder")       # 0.2 s
    assert ind.playing == "bookmark"
    at(100)
    assert ind.playing == "reminder" and lit(MOTOR)
    at(300)
    assert ind.playing is None and not lit(MOTOR)


def test_fault_cue_preempts_and_queue_is_bounded(rig, caplog):
    ind, at, lit, _ = rig
    for _ in range(6):
        ind.cue("low-battery")
    assert "queue full" in caplog.text
    ind.cue("fault")
    assert ind.playing == "fault"
    total = sum(step.duration_s for step in CUES["fault"])
    at(total * 1000)
    assert ind.playing is None, "the queued low-battery cues were dropped by the fault"


def test_sound_and_vibration_can_be_switched_off():
    factory = MockFactory(pin_class=MockPWMPin)
    clock = ManualClock(0)
    ind = Indicators(IndicatorConfig(sound=False), clock=clock.monotonic_ns, pin_factory=factory)
    try:
        ind.cue("recording-started")
        assert factory.pin(MOTOR).state and not factory.pin(BUZZER).state
    finally:
        ind.close()
        factory.reset()


def test_every_cue_tone_is_within_the_buzzer_range():
    for name, steps in CUES.items():
        assert steps, name
        for step in steps:
            assert step.duration_s > 0, name
            assert step.tone is None or 0.5 <= step.tone <= 2.0, name


@pytest.mark.parametrize("bad, match", [
    ({"led_yellow_pin": 16}, "differ"),
    ({"buzzer_pin": 99}, "BCM"),
    ({"sound": "yes"}, "sound"),
    ({"buzzer_mid_hz": 20}, "buzzer_mid_hz"),
    ({"led_blue_pin": 3}, "unknown"),
])
def test_bad_indicator_config(bad, match):
    with pytest.raises(ValueError, match=match):
        IndicatorConfig.from_mapping(bad)


def test_non_pwm_pin_for_tonal_buzzer_fails_cleanly_and_frees_pins():
    factory = MockFactory()        # plain MockPin: no PWM
    # gpiozero's own error for a PWM device on a pin without PWM, passed through unchanged
    with pytest.raises(PinPWMUnsupported):
        Indicators(IndicatorConfig(buzzer_tonal=True), pin_factory=factory)
    Indicators(IndicatorConfig(buzzer_tonal=False), pin_factory=factory).close()   # LED pins were released
    factory.reset()
