"""Button gestures: deterministic timing via an injected clock, and real gpiozero MockFactory pins."""
from __future__ import annotations

import logging

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from common.clock import ManualClock
from hw.buttons import ControlsConfig, Gesture, GestureButtons, GestureKind, MarkRecogniser, RecordRecogniser

MS = 1_000_000
S = 1_000_000_000
CFG = ControlsConfig()


class Driver:
    """Feeds edges at given times (ms) into a recogniser and collects gestures."""

    def __init__(self, recogniser):
        self.r = recogniser
        self.out: list[Gesture] = []

    def edge(self, pressed: bool, t_ms: float):
        self.out += self.r.edge(pressed, round(t_ms * MS))

    def tap(self, t_ms: float, length_ms: float = 100):
        self.edge(True, t_ms)
        self.edge(False, t_ms + length_ms)

    def poll(self, t_ms: float):
        self.out += self.r.poll(round(t_ms * MS))
        return self.out


# -- record button -----------------------------------------------------------

def test_double_press_within_window_starts_once():
    d = Driver(RecordRecogniser(CFG))
    d.tap(0)
    d.edge(True, 400)
    d.poll(400 + 30)   # second press confirmed after bounce_s
    assert d.out == [Gesture(GestureKind.RECORD_START, 400 * MS, count=2, pressed_ns=0)]
    d.edge(False, 500)
    d.poll(10_000)
    assert len(d.out) == 1


def test_single_press_does_nothing():
    d = Driver(RecordRecogniser(CFG))
    d.tap(0, 200)
    assert d.poll(20_000) == []


def test_presses_further_apart_than_window_do_nothing():
    d = Driver(RecordRecogniser(CFG))
    d.tap(0)
    d.tap(601)            # window is 0.6 s from first press start to second press start
    d.tap(1300)
    assert d.poll(5_000) == []


def test_second_press_exactly_at_window_edge_counts():
    d = Driver(RecordRecogniser(CFG))
    d.tap(0)
    d.tap(600)
    assert [g.kind for g in d.poll(2_000)] == [GestureKind.RECORD_START]


def test_contact_bounce_never_counts_as_two_presses():
    d = Driver(RecordRecogniser(CFG))
    t = 0.0
    for _ in range(4):          # bouncy press: edges 2 ms apart
        d.edge(True, t)
        d.edge(False, t + 2)
        t += 4
    d.edge(True, t)
    d.edge(False, t + 150)      # bouncy release
    d.edge(True, t + 152)
    d.edge(False, t + 154)
    assert d.poll(3_000) == []


def test_glitch_shorter_than_bounce_is_no_press():
    d = Driver(RecordRecogniser(CFG))
    d.edge(True, 0)
    d.edge(False, 20)   # 20 ms < bounce_s 30 ms
    d.tap(300)
    assert d.poll(5_000) == [], "a glitch plus one real press is not a double press"


def test_hold_three_seconds_stops_at_threshold_not_before():
    d = Driver(RecordRecogniser(CFG))
    d.edge(True, 1_000)
    assert d.poll(3_999) == []
    assert d.poll(4_000) == [Gesture(GestureKind.RECORD_STOP, 4_000 * MS, pressed_ns=1_000 * MS)]
    d.edge(False, 6_000)
    d.poll(9_000)
    assert len(d.out) == 1, "one hold is one stop"


def test_late_poll_dates_the_stop_at_the_threshold():
    d = Driver(RecordRecogniser(CFG))
    d.edge(True, 0)
    out = d.poll(7_250)
    assert out[0].kind is GestureKind.RECORD_STOP and out[0].at_ns == 3_000 * MS


def test_release_before_hold_threshold_is_no_stop_even_if_polled_late():
    d = Driver(RecordRecogniser(CFG))
    d.edge(True, 0)
    d.edge(False, 2_990)
    assert d.poll(3_500) == []


def test_unconfirmed_release_holds_back_the_hold_timer_until_it_proves_bounce():
    d = Driver(RecordRecogniser(CFG))
    d.edge(True, 0)
    d.edge(False, 2_990)       # might be a release...
    assert d.poll(3_010) == []
    d.edge(True, 3_012)        # ...but it was bounce (22 ms): still held
    assert [g.kind for g in d.poll(3_100)] == [GestureKind.RECORD_STOP]


def test_double_press_then_holding_the_second_press_does_not_also_stop():
    d = Driver(RecordRecogniser(CFG))
    d.tap(0)
    d.edge(True, 300)
    out = d.poll(10_000)
    assert [g.kind for g in out] == [GestureKind.RECORD_START]


def test_triple_press_config_needs_three():
    d = Driver(RecordRecogniser(ControlsConfig(start_presses=3)))
    d.tap(0)
    d.tap(250)
    assert d.poll(400) == []
    d.tap(500)
    assert [(g.kind, g.count) for g in d.poll(2_000)] == [(GestureKind.RECORD_START, 3)]


def test_missed_edge_is_recovered_from_the_polled_level():
    r = RecordRecogniser(CFG)
    assert r.poll(0, pressed=True) == []          # press seen only as a level
    out = r.poll(3_100 * MS, pressed=True)
    assert [g.kind for g in out] == [GestureKind.RECORD_STOP]
    assert out[0].pressed_ns == 0


def test_time_going_backwards_is_refused():
    r = RecordRecogniser(CFG)
    r.edge(True, 5 * S)
    with pytest.raises(ValueError, match="backwards"):
        r.poll(4 * S)
    with pytest.raises(TypeError):
        r.poll(1.5)


# -- mark button -------------------------------------------------------------

def test_one_short_press_is_a_bookmark_after_the_count_gap():
    d = Driver(MarkRecogniser(CFG))
    d.tap(1_000, 120)
    assert d.poll(1_120 + 699) == []
    out = d.poll(1_120 + 700)
    assert len(out) == 1 and out[0].is_bookmark
    assert out[0].pressed_ns == 1_000 * MS and out[0].at_ns == 1_820 * MS


@pytest.mark.parametrize("n", [2, 3, 6, 9])
def test_n_short_presses_report_count_n(n):
    d = Driver(MarkRecogniser(CFG))
    for i in range(n):
        d.tap(i * 400, 150)            # 250 ms gaps
    out = d.poll(n * 400 + 2_000)
    assert [(g.kind, g.count) for g in out] == [(GestureKind.MARK, n)]
    assert not out[0].is_bookmark


def test_gap_longer_than_window_splits_counts():
    d = Driver(MarkRecogniser(CFG))
    d.tap(0, 100)
    d.tap(900, 100)     # gap 800 ms > 700 ms
    assert [g.count for g in d.poll(5_000)] == [1, 1]


def test_long_press_reports_press_and_release_times():
    d = Driver(MarkRecogniser(CFG))
    d.edge(True, 2_000)
    assert d.poll(2_999) == []
    out = d.poll(3_000)
    assert out == [Gesture(GestureKind.MARK_HOLD_START, 3_000 * MS, pressed_ns=2_000 * MS)]
    d.edge(False, 9_500)
    d.poll(9_600)
    assert d.out[-1] == Gesture(GestureKind.MARK_HOLD_END, 9_500 * MS,
                                pressed_ns=2_000 * MS, released_ns=9_500 * MS)
    d.poll(20_000)
    assert len(d.out) == 2, "a long press is not also counted as a short press"


def test_short_presses_before_a_long_press_are_not_lost():
    d = Driver(MarkRecogniser(CFG))
    d.tap(0, 100)
    d.tap(300, 100)
    d.edge(True, 600)
    out = d.poll(1_700)
    assert [(g.kind, g.count) for g in out] == [(GestureKind.MARK, 2), (GestureKind.MARK_HOLD_START, 0)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=14), min_size=1, max_size=12),
       st.integers(min_value=80, max_value=800))   # burst (<= 168 ms) + hold stays short of 1 s
def test_any_bounce_burst_is_at_most_one_press(gaps_ms, held_ms):
    """Bursts of edges closer than bounce_s around one press give exactly one press."""
    d = Driver(MarkRecogniser(CFG))
    t, level = 0, False
    for gap in gaps_ms:
        level = not level
        d.edge(level, t)
        t += gap
    d.edge(True, t)
    d.edge(False, t + held_ms)
    out = d.poll(t + held_ms + 5_000)
    assert [g.kind for g in out if g.kind is GestureKind.MARK] == [GestureKind.MARK]
    assert all(g.count == 1 for g in out if g.kind is GestureKind.MARK)


# -- config ------------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [
    ({"start_presses": 1}, "start_presses"),
    ({"start_presses": True}, "start_presses"),
    ({"record_pin": 6}, "differ"),
    ({"record_pin": 40}, "BCM"),
    ({"stop_hold_s": -1}, "stop_hold_s"),
    ({"stop_hold_s": float("nan")}, "stop_hold_s"),
    ({"bounce_s": "fast"}, "bounce_s"),
    ({"stop_hold_s": 0.5}, "exceed press_window_s"),
    ({"press_window_s": 0.02}, "exceed bounce_s"),
    ({"hold_s": 3}, "unknown setting"),
])
def test_bad_controls_config_is_refused_with_the_key_named(bad, match):
    with pytest.raises(ValueError, match=match):
        ControlsConfig.from_mapping(bad)


def test_controls_defaults_match_the_wiring_plan():
    c = ControlsConfig.from_mapping({})
    assert (c.record_pin, c.mark_pin, c.start_presses, c.press_window_s, c.stop_hold_s) == (5, 6, 2, 0.6, 3.0)


# -- gpiozero MockFactory pins -------------------------------------------------

@pytest.fixture
def rig():
    factory = MockFactory()
    clock = ManualClock(1 * S)
    got: list[Gesture] = []
    buttons = GestureButtons(CFG, got.append, clock=clock.monotonic_ns, pin_factory=factory)

    def at(t_ms):
        clock.advance_to(1 * S + round(t_ms * MS))

    yield buttons, factory.pin(5), factory.pin(6), at, got
    buttons.close()
    factory.reset()


def test_mock_pins_double_press_starts_and_hold_stops(rig):
    buttons, record, _mark, at, got = rig
    assert record.state is True, "pull-up: idle button reads high"
    for t, low in [(0, True), (2, False), (4, True), (120, False), (350, True), (460, False)]:
        at(t)
        record.drive_low() if low else record.drive_high()
    at(500)
    buttons.poll()
    assert [(g.kind, g.at_ns) for g in got] == [(GestureKind.RECORD_START, 1 * S + 350 * MS)]
    at(10_000)
    record.drive_low()
    at(12_999)
    buttons.poll()
    assert len(got) == 1
    at(13_000)
    buttons.poll()
    assert got[-1].kind is GestureKind.RECORD_STOP and got[-1].at_ns == 1 * S + 13_000 * MS


def test_mock_pins_mark_count_and_voice_hold(rig):
    buttons, _record, mark, at, got = rig
    for i in range(3):
        at(i * 300)
        mark.drive_low()
        at(i * 300 + 100)
        mark.drive_high()
    at(2_000)
    buttons.poll()
    at(5_000)
    mark.drive_low()
    at(6_000)
    buttons.poll()
    at(8_000)
    mark.drive_high()
    at(8_100)
    buttons.poll()
    assert [(g.kind, g.count) for g in got] == [
        (GestureKind.MARK, 3), (GestureKind.MARK_HOLD_START, 0), (GestureKind.MARK_HOLD_END, 0)]
    assert (got[2].pressed_ns, got[2].released_ns) == (1 * S + 5_000 * MS, 1 * S + 8_000 * MS)


def test_failing_gesture_handler_is_logged_not_raised_into_gpiozero(caplog):
    factory = MockFactory()
    clock = ManualClock(0)

    def broken(_g):
        raise RuntimeError("handler bug")

    buttons = GestureButtons(CFG, broken, clock=clock.monotonic_ns, pin_factory=factory)
    try:
        mark = factory.pin(6)
        mark.drive_low()
        clock.advance_to(100 * MS)
        mark.drive_high()
        clock.advance_to(2 * S)
        with caplog.at_level(logging.ERROR, logger="hw.buttons"):
            buttons.poll()
        assert "handler bug" in caplog.text
    finally:
        buttons.close()
    with pytest.raises(RuntimeError, match="closed"):
        buttons.poll()
    factory.reset()


def test_pin_conflict_is_a_clear_error_and_releases_the_first_button():
    from gpiozero import LED, Button
    from gpiozero.exc import GPIOPinInUse

    factory = MockFactory()
    led = LED(6, pin_factory=factory)           # mark pin already taken
    with pytest.raises(GPIOPinInUse):
        GestureButtons(CFG, lambda g: None, pin_factory=factory)
    Button(5, pin_factory=factory).close()      # the record button's pin was given back
    led.close()
    factory.reset()
