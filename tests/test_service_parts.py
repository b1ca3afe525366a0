"""The service's parts on their own: gesture table, watches, voice-note cutting, owed reasons.

Expectations come from the officer controls in firmware/service.py's docstring and the
journal vocabulary, not from the tables under test.
"""
from __future__ import annotations

import numpy as np
import pytest

from common.media import AudioBlock
from firmware.intents import Intent, intent_for
from firmware.pending_reasons import pending_from_journal
from firmware.states import Answered, State, StateMachine
from firmware.voice_notes import RecentSound, cut
from firmware.watches import BatteryWatch, Power, StorageWatch
from hw.battery import BatteryConfig, BatteryError, BatteryReading
from hw.buttons import Gesture, GestureKind

NS = 1_000_000_000


def g(kind: GestureKind, count: int = 0) -> Gesture:
    return Gesture(kind, at_ns=0, count=count, pressed_ns=0, released_ns=0)


@pytest.mark.parametrize("state, expected", [
    (State.READY, Intent.START), (State.INTERRUPTED, Intent.START_AFTER_INTERRUPTION),
    (State.RECORDING, Intent.REQUEST_PAUSE), (State.PAUSED, Intent.RESUME),
    (State.FAULT, Intent.RETRY_CHECK), (State.DOCKED, Intent.IGNORE), (State.OFF, Intent.IGNORE),
    (State.SELF_CHECK, Intent.IGNORE)])
def test_record_double_press(state, expected):
    assert intent_for(g(GestureKind.RECORD_START, 2), state, False, False) is expected


@pytest.mark.parametrize("state, expected", [
    (State.RECORDING, Intent.STOP), (State.PAUSED, Intent.END_PAUSE), (State.READY, Intent.IGNORE)])
def test_record_hold(state, expected):
    assert intent_for(g(GestureKind.RECORD_STOP), state, False, False) is expected


def test_mark_presses_answer_the_question_asked_else_bookmark():
    mark = g(GestureKind.MARK, 2)
    assert intent_for(mark, State.RECORDING, True, True) is Intent.PAUSE_REASON
    assert intent_for(mark, State.READY, True, True) is Intent.INTERRUPTION_REASON
    assert intent_for(mark, State.RECORDING, False, True) is Intent.INTERRUPTION_REASON
    assert intent_for(mark, State.RECORDING, False, False) is Intent.BOOKMARK
    assert intent_for(g(GestureKind.MARK_HOLD_START), State.READY, False, False) is Intent.NOTE_START
    assert intent_for(g(GestureKind.MARK_HOLD_END), State.READY, False, False) is Intent.NOTE_END


def test_cut_is_exact_to_the_sample():
    rate = 1000
    blocks = [AudioBlock(np.arange(100, dtype=np.int16) + 100 * i, 10 * NS + i * NS // 10, rate)
              for i in range(5)]          # 0.1 s blocks: samples 0..499 from t=10 s
    pcm = cut(blocks, 10 * NS + 150 * NS // 1000, 10 * NS + 320 * NS // 1000)
    assert pcm.tolist() == list(range(150, 320))
    assert cut(blocks, 20 * NS, 21 * NS).size == 0


def test_recent_sound_keeps_the_press_even_when_the_hold_is_recognised_late():
    rate = 1000
    s = RecentSound(keep_s=3.0)
    for i in range(10):                   # 1 s blocks at t = 0..9 s
        s.feed([AudioBlock(np.full(rate, i, np.int16), i * NS, rate)], now_ns=(i + 1) * NS)
    s.hold(pressed_ns=7 * NS + NS // 2)
    s.feed([AudioBlock(np.full(rate, 10, np.int16), 10 * NS, rate)], now_ns=11 * NS)
    pressed, pcm = s.release(10 * NS + NS // 4)
    assert pressed == 7 * NS + NS // 2
    assert len(pcm) == 2750 and pcm[0] == 7 and pcm[-1] == 10
    assert s.release(11 * NS) is None


class Gauge:
    def __init__(self) -> None:
        self.reading: BatteryReading | Exception = BatteryReading(100.0)

    def read(self) -> BatteryReading:
        if isinstance(self.reading, Exception):
            raise self.reading
        return self.reading


def test_battery_watch_says_each_condition_once_and_repeats_the_cue():
    journal: list[tuple[str, dict]] = []
    gauge = Gauge()
    w = BatteryWatch(gauge, BatteryConfig(low_percent=15, critical_percent=5),
                     lambda k, p: journal.append((k, p)), poll_s=1, repeat_s=10)
    assert w.poll(0, recording=True) is Power.OK
    gauge.reading = BatteryReading(12.0)
    assert w.poll(NS // 2, recording=True) is Power.OK        # not due yet
    assert w.poll(NS, recording=True) is Power.LOW
    assert w.poll(2 * NS, recording=True) is Power.OK         # cued 1 s ago
    assert w.poll(11 * NS, recording=True) is Power.LOW       # repeated after repeat_s
    gauge.reading = BatteryReading(4.0)
    assert w.poll(12 * NS, recording=True) is Power.CRITICAL
    gauge.reading = BatteryError("i2c")
    w.poll(13 * NS, recording=True)
    w.poll(14 * NS, recording=True)
    assert [k for k, _ in journal] == ["battery-low", "battery-critical", "battery-gauge-error"]
    assert journal[1][1] == {"permille": 40}


def test_storage_watch_warns_once_until_space_returns():
    journal: list[str] = []
    free = [10 * 2**20]
    w = StorageWatch(lambda: free[0], reserve_bytes=2**20, warn_bytes=20 * 2**20,
                     journal=lambda k, p: journal.append(k), poll_s=1)
    assert w.poll(0) and not w.poll(NS) and journal == ["storage-low"]
    assert not w.at_reserve() and w.usable_bytes() == 9 * 2**20
    free[0] = 2**20
    assert w.at_reserve() and w.usable_bytes() == 0


@pytest.mark.parametrize("types, owed", [
    (["reason-pending"], "camera-stall"),
    (["reason-pending", "reason-given"], None),
    (["reason-pending", "reason-missing"], None),
    (["reason-pending", "reason-missing", "reason-pending"], "camera-stall"),
    ([], None)])
def test_pending_reason_survives_a_restart(monkeypatch, tmp_path, types, owed):
    from types import SimpleNamespace

    import firmware.pending_reasons as pr
    recs = [SimpleNamespace(type=t, payload={"cause": "camera-stall"}) for t in types]
    monkeypatch.setattr(pr, "iter_records", lambda path: iter(recs))
    pending = pending_from_journal(tmp_path / "journal.log", now_ns=5)
    assert (pending.cause if pending else None) == owed
    assert pending is None or (pending.interrupted_ns == 5 and not pending.missing_logged)


def test_pause_request_expires_and_a_note_answers_alone():
    journal: list[tuple[str, dict]] = []
    now = [0]
    m = StateMachine(lambda k, p: journal.append((k, p)), lambda: now[0], 60,
                     state=State.RECORDING, pause_request_s=20, note_answer_s=5)
    m.request_pause(pressed_ns=0)
    assert m.pause_requested and m.note_answers() == "pause-request"
    m.note_recorded("VN-1")
    now[0] = 20 * NS
    assert m.poll_requests() == [Answered.PAUSE_REQUEST_EXPIRED]
    assert journal[-1] == ("pause-request-expired", {"mono_ns": 20 * NS, "note_id": "VN-1"})
    m.interrupt("camera-stall")
    m.recover()
    m.note_recorded("VN-2")
    now[0] = 24 * NS
    assert m.poll_requests() == []
    now[0] = 25 * NS
    assert m.poll_requests() == [Answered.NOTE_ANSWERED]
    assert journal[-1][0] == "reason-given" and journal[-1][1]["note_id"] == "VN-2"
