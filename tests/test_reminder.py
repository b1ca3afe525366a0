"""Recording reminder on a manual clock."""
from __future__ import annotations

import pytest

from common.clock import ManualClock
from firmware.reminder import RecordingReminder, ReminderConfig

S = 1_000_000_000


def rig(**kw):
    clock = ManualClock(0)
    fired: list[int] = []
    reminder = RecordingReminder(lambda: fired.append(clock.monotonic_ns()), clock=clock.monotonic_ns, **kw)
    return clock, reminder, fired


def test_fires_every_interval_while_recording_and_not_after_stop():
    clock, reminder, fired = rig()
    assert reminder.poll() is False, "not running before start"
    clock.advance_to(10 * S)
    reminder.start()
    clock.advance_to(129 * S + S - 1)
    assert reminder.poll() is False
    clock.advance_to(130 * S)
    assert reminder.poll() is True
    assert reminder.poll() is False, "once per interval"
    clock.advance_to(250 * S)
    reminder.poll()
    assert fired == [130 * S, 250 * S]
    reminder.stop()
    clock.advance_to(10_000 * S)
    assert reminder.poll() is False and reminder.fired == 2 and not reminder.running


def test_schedule_does_not_drift_with_slightly_late_polls():
    clock, reminder, fired = rig(interval_s=120)
    reminder.start()
    for k in range(1, 6):
        clock.advance_to(k * 120 * S + 3 * S)   # every poll 3 s late
        reminder.poll()
    assert reminder.next_due_ns == 720 * S


def test_very_late_poll_fires_once_not_a_burst():
    clock, reminder, fired = rig(interval_s=120)
    reminder.start()
    clock.advance_to(1_000 * S)
    assert reminder.poll() is True
    assert reminder.poll() is False
    assert len(fired) == 1 and reminder.next_due_ns == 1_080 * S


def test_restart_reanchors():
    clock, reminder, _ = rig(interval_s=60)
    reminder.start()
    clock.advance_to(50 * S)
    reminder.start()
    assert reminder.next_due_ns == 110 * S


def test_disabled_never_fires():
    clock, reminder, fired = rig(enabled=False)
    reminder.start()
    clock.advance_to(1_000 * S)
    assert reminder.poll() is False and fired == [] and not reminder.running


def test_failing_cue_is_logged_and_schedule_continues(caplog):
    clock = ManualClock(0)
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("buzzer gone")

    reminder = RecordingReminder(broken, clock=clock.monotonic_ns, interval_s=10)
    reminder.start()
    clock.advance_to(10 * S)
    assert reminder.poll() is True
    assert "buzzer gone" in caplog.text
    clock.advance_to(20 * S)
    assert reminder.poll() is True and len(calls) == 2


def test_from_config_and_bad_config():
    clock = ManualClock(0)
    reminder = RecordingReminder.from_config(ReminderConfig.from_mapping({"interval_s": 30}), lambda: None,
                                             clock.monotonic_ns)
    reminder.start()
    assert reminder.next_due_ns == 30 * S
    for bad in ({"interval_s": 0}, {"interval_s": 1}, {"interval_s": "2m"}, {"enabled": "no"},
                {"cue": ""}, {"every": 5}):
        with pytest.raises(ValueError):
            ReminderConfig.from_mapping(bad)
    with pytest.raises(ValueError):
        RecordingReminder(lambda: None, interval_s=float("nan"))
