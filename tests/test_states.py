"""State machine: transition table, journaling, interruption (D5) and not-recording (D6) reasons."""
from __future__ import annotations

import itertools

import pytest

from common.clock import ManualClock, TimeQuality
from firmware.reasons import (
    INTERRUPTION_REASONS,
    NOT_RECORDING_REASONS,
    SUGGESTED_FOR_CAUSE,
    ReasonKind,
    UnknownReason,
    by_code,
    by_press_count,
)
from firmware.selfcheck import Probes, SelfCheckThresholds, run_self_check
from firmware.states import (
    INTERRUPTION_CAUSES,
    TRANSITIONS,
    IllegalTransition,
    NoReasonPending,
    PendingReason,
    State,
    StateMachine,
)

S = 1_000_000_000


class Rig:
    def __init__(self, state=State.READY, timeout_s=60.0, **kw):
        self.clock = ManualClock(0)
        self.records: list[tuple[str, dict]] = []
        self.m = StateMachine(lambda t, p: self.records.append((t, p)), clock=self.clock.monotonic_ns,
                              reason_timeout_s=timeout_s, state=state, **kw)

    def at(self, seconds):
        self.clock.advance_to(round(seconds * S))

    def types(self):
        return [t for t, _ in self.records]

    def last(self, type_):
        return [p for t, p in self.records if t == type_][-1]


# -- table -------------------------------------------------------------------

def test_every_state_has_a_row_and_targets_are_states():
    assert set(TRANSITIONS) == set(State)
    assert all(targets <= set(State) for targets in TRANSITIONS.values())


def test_recording_cannot_end_silently():
    """Off, fault and docked are only reachable from recording through an interruption or stop."""
    assert TRANSITIONS[State.RECORDING] == {State.READY, State.INTERRUPTED, State.PAUSED}


def test_normal_shift_journals_every_transition_with_from_to_cause():
    r = Rig(state=State.OFF)
    r.m.power_on()
    good = Probes(battery=lambda: (90.0, 7.0), storage=lambda: 64 * 10**9,
                  time=lambda: TimeQuality.NTP, camera=lambda: True,
                  microphone=lambda: -50.0, journal=lambda: True)
    r.m.self_check_done(run_self_check(good, SelfCheckThresholds(), 6_000_000))
    r.at(10)
    assert r.m.start_recording() is False
    r.at(100)
    r.m.stop_recording()
    r.m.dock()
    r.m.power_off()
    states = [(p["from"], p["to"], p["cause"]) for t, p in r.records if t == "state"]
    assert states == [("off", "self-check", "power-on"), ("self-check", "ready", "self-check-go"),
                      ("ready", "recording", "officer-start"), ("recording", "ready", "officer-stop"),
                      ("ready", "docked", "docked"), ("docked", "off", "officer-power-off")]
    assert r.types().count("self-check") == 1 and r.last("self-check")["go"] is True
    assert [p["mono_ns"] for t, p in r.records if t == "state"][2:4] == [10 * S, 100 * S]
    assert "reason-pending" not in r.types()


def test_failed_self_check_goes_to_fault():
    r = Rig(state=State.SELF_CHECK)
    r.m.self_check_done(run_self_check(Probes(), SelfCheckThresholds(), 6_000_000))
    assert r.m.state is State.FAULT and r.last("self-check")["go"] is False


@pytest.mark.parametrize("source, action", [
    (State.OFF, lambda m: m.start_recording()),
    (State.READY, lambda m: m.stop_recording()),
    (State.READY, lambda m: m.interrupt("fault")),
    (State.RECORDING, lambda m: m.dock()),
    (State.RECORDING, lambda m: m.power_off()),
    (State.DOCKED, lambda m: m.start_recording()),
    (State.SELF_CHECK, lambda m: m.dock()),
    (State.PAUSED, lambda m: m.pause("state-secret")),
    (State.INTERRUPTED, lambda m: m.start_recording()),
    (State.OFF, lambda m: m.fail("x")),
])
def test_illegal_transitions_raise_and_change_nothing(source, action):
    r = Rig(state=source)
    with pytest.raises(IllegalTransition, match=f"from {source.value}"):
        action(r.m)
    assert r.m.state is source
    assert r.records == []


# -- the whole table, written from the rules (not from TRANSITIONS) -------------------
#
# The states docstring and docs/requirements.md (D3, D5, D6, D10), per event:
#   off -> self-check -> ready (power on; a GO check) or fault (a NO-GO check);
#   a self-check is re-run from ready or after a fault (never while recording, paused,
#   interrupted or docked: there the service checks without leaving the state);
#   ready -> recording (officer start) -> ready (officer stop);
#   recording -> interrupted (abnormal end, D5) -> ready (recovered);
#   recording <-> paused (lawfully not recording, D6); paused -> ready (pause ended);
#   off/ready <-> docked (undock returns to ready);
#   any trouble -> fault, from every state that is on and not already in fault
#     (from recording through an interruption: a recording never ends silently, D5);
#   power off from every state that is on, except recording (stop or interrupt first).
# Every other (state, event) pair must be refused and change nothing.

_GOOD_PROBES = dict(battery=lambda: (90.0, 7.0), storage=lambda: 64 * 10**9,
                    time=lambda: TimeQuality.NTP, camera=lambda: True,
                    microphone=lambda: -50.0, journal=lambda: True)
ON = set(State) - {State.OFF}

# event -> (call, cause journaled, {source: target})
EXPECTED_TABLE = {
    "power_on": (lambda m: m.power_on(), "power-on", {State.OFF: State.SELF_CHECK}),
    "run_self_check": (lambda m: m.run_self_check(), "check-requested",
                       {State.READY: State.SELF_CHECK, State.FAULT: State.SELF_CHECK}),
    "self_check_done(go)": (
        lambda m: m.self_check_done(run_self_check(Probes(**_GOOD_PROBES), SelfCheckThresholds(),
                                                   6_000_000)),
        "self-check-go", {State.SELF_CHECK: State.READY}),
    "self_check_done(no-go)": (
        lambda m: m.self_check_done(run_self_check(Probes(), SelfCheckThresholds(), 6_000_000)),
        "self-check-no-go", {State.SELF_CHECK: State.FAULT}),
    "power_off": (lambda m: m.power_off(), "officer-power-off",
                  {s: State.OFF for s in ON - {State.RECORDING}}),
    "dock": (lambda m: m.dock(), "docked", {State.OFF: State.DOCKED, State.READY: State.DOCKED}),
    "undock": (lambda m: m.undock(), "undocked", {State.DOCKED: State.READY}),
    "fail": (lambda m: m.fail("x"), "fault", {s: State.FAULT for s in ON - {State.FAULT}}),
    "start_recording": (lambda m: m.start_recording(), "officer-start",
                        {State.READY: State.RECORDING}),
    "stop_recording": (lambda m: m.stop_recording(), "officer-stop",
                       {State.RECORDING: State.READY}),
    "interrupt": (lambda m: m.interrupt("camera-stall"), "camera-stall",
                  {State.RECORDING: State.INTERRUPTED}),
    "recover": (lambda m: m.recover(), "recovered", {State.INTERRUPTED: State.READY}),
    "pause": (lambda m: m.pause("state-secret"), "not-recording", {State.RECORDING: State.PAUSED}),
    "resume": (lambda m: m.resume(), "resume", {State.PAUSED: State.RECORDING}),
    "end_pause": (lambda m: m.end_pause(), "pause-ended", {State.PAUSED: State.READY}),
}

def _table_cases():
    for event in EXPECTED_TABLE:
        for source in State:
            yield pytest.param(event, source, id=f"{event}-from-{source.value}")


def test_the_expected_table_covers_every_rule_edge():
    """Every edge the rules name is used by some event, and no rule edge is missing from
    TRANSITIONS (the converse is what the whole-table test below checks)."""
    edges = {(s, t) for _, _, moves in EXPECTED_TABLE.values() for s, t in moves.items()}
    edges |= {(State.RECORDING, State.INTERRUPTED), (State.INTERRUPTED, State.FAULT)}  # fail()
    assert {(s, t) for s, targets in TRANSITIONS.items() for t in targets} == \
        edges - {(State.RECORDING, State.FAULT)}


@pytest.mark.parametrize("event, source", list(_table_cases()))
def test_whole_transition_table(event, source):
    call, cause, moves = EXPECTED_TABLE[event]
    r = Rig(state=source)
    target = moves.get(source)
    if target is None:
        try:
            call(r.m)
        except IllegalTransition as exc:
            assert f"from {source.value}" in str(exc)
        else:
            raise AssertionError(f"{event} from {source.value} was accepted: "
                                 f"now {r.m.state.value}, journaled {r.records}")
        assert r.m.state is source and r.records == []
        return
    call(r.m)
    assert r.m.state is target
    state_records = [p for t, p in r.records if t == "state"]
    if event == "fail" and source is State.RECORDING:     # the recording is interrupted first
        assert [(p["from"], p["to"], p["cause"]) for p in state_records] == [
            ("recording", "interrupted", "fault"), ("interrupted", "fault", "fault")]
    else:
        assert [(p["from"], p["to"], p["cause"]) for p in state_records] == [
            (source.value, target.value, cause)]


def test_journal_failure_leaves_the_state_unchanged():
    def broken(_t, _p):
        raise OSError("disk full")

    m = StateMachine(broken, clock=ManualClock(0).monotonic_ns, state=State.READY)
    with pytest.raises(OSError):
        m.start_recording()
    assert m.state is State.READY


# -- D5: interruption reasons ------------------------------------------------

def test_normal_stop_never_asks_for_a_reason():
    r = Rig()
    r.m.start_recording()
    r.m.stop_recording()
    assert r.m.start_recording() is False and r.m.pending is None


# What the device can tell the officer about each cause, as a code of the regulations' list
# (docs/requirements.md, D5): a stalled camera or microphone is a device fault; a body-worn
# camera loses power when its battery runs out.
EXPECTED_SUGGESTION = {
    "fault": "device-fault", "camera-stall": "device-fault", "microphone-stall": "device-fault",
    "low-battery": "low-battery", "storage-full": "storage-full", "power-loss": "low-battery",
}


def test_suggested_reasons_are_the_expected_ones():
    assert SUGGESTED_FOR_CAUSE == EXPECTED_SUGGESTION
    assert set(EXPECTED_SUGGESTION) == set(INTERRUPTION_CAUSES) == {
        "fault", "power-loss", "storage-full", "low-battery", "camera-stall", "microphone-stall"}


@pytest.mark.parametrize("cause", sorted(INTERRUPTION_CAUSES))
def test_every_abnormal_end_makes_the_next_start_ask(cause):
    r = Rig()
    r.m.start_recording()
    r.at(5)
    r.m.interrupt(cause)
    assert r.m.state is State.INTERRUPTED
    pending = r.last("reason-pending")
    assert pending["cause"] == cause and pending["mono_ns"] == 5 * S
    assert pending["suggested_reason"] == EXPECTED_SUGGESTION[cause]
    r.m.recover()
    r.at(30)
    assert r.m.start_recording() is True
    assert r.last("state")["reason_pending"] == cause
    assert r.m.reason_due_ns == 90 * S


def test_unknown_interruption_cause_is_refused():
    r = Rig(state=State.RECORDING)
    with pytest.raises(ValueError, match="not an interruption cause"):
        r.m.interrupt("officer-stop")
    assert r.m.state is State.RECORDING


def interrupted_and_resumed(timeout_s=60.0):
    r = Rig(timeout_s=timeout_s)
    r.m.start_recording()
    r.at(10)
    r.m.interrupt("camera-stall")
    r.m.recover()
    r.at(20)
    r.m.start_recording()
    return r


def test_reason_given_in_time_clears_pending_and_no_missing_record():
    r = interrupted_and_resumed()
    r.at(79.999)
    r.m.give_reason(code="device-fault", note_id="note-7")
    given = r.last("reason-given")
    assert given["reason"]["code"] == "device-fault" and given["reason"]["zh"] == "设备故障"
    assert given["note_id"] == "note-7" and given["late"] is False and given["while_recording"] is True
    assert (given["interrupted_ns"], given["resumed_ns"]) == (10 * S, 20 * S)
    r.at(500)
    assert r.m.poll() is False
    assert "reason-missing" not in r.types() and r.m.pending is None


def test_reason_missing_is_journaled_exactly_at_the_deadline_once():
    r = interrupted_and_resumed(timeout_s=60)
    r.at(79.999)
    assert r.m.poll() is False
    r.at(80)
    assert r.m.poll() is True
    missing = r.last("reason-missing")
    assert missing == {"cause": "camera-stall", "why": "timeout", "interrupted_ns": 10 * S,
                       "resumed_ns": 20 * S, "mono_ns": 80 * S}
    r.at(200)
    assert r.m.poll() is False
    assert r.types().count("reason-missing") == 1


def test_late_reason_is_accepted_and_marked_late():
    r = interrupted_and_resumed()
    r.at(300)
    r.m.give_reason(note_id="voice-1")      # poll not called: give_reason notices the deadline first
    assert r.types()[-2:] == ["reason-missing", "reason-given"]
    assert r.last("reason-missing")["mono_ns"] == 80 * S, "dated at the deadline, not when noticed"
    assert r.last("reason-given")["late"] is True and r.m.pending is None


def test_stopping_the_resumed_recording_without_answer_is_missing_at_the_stop():
    r = interrupted_and_resumed()
    r.at(35)
    r.m.stop_recording()
    assert r.last("reason-missing")["why"] == "recording-ended"
    assert r.last("reason-missing")["mono_ns"] == 35 * S
    assert r.m.start_recording() is True, "still asked again at the next start"
    r.at(1_000)
    assert r.m.poll() is False and r.types().count("reason-missing") == 1


def test_stop_after_deadline_without_poll_logs_timeout_not_recording_ended():
    r = interrupted_and_resumed()
    r.at(100)
    r.m.stop_recording()
    missing = [p for t, p in r.records if t == "reason-missing"]
    assert [(p["why"], p["mono_ns"]) for p in missing] == [("timeout", 80 * S)]


def test_second_interruption_before_answer_closes_the_first():
    r = interrupted_and_resumed()
    r.at(25)
    r.m.interrupt("storage-full")
    assert [p["why"] for t, p in r.records if t == "reason-missing"] == ["recording-ended"]
    assert r.m.pending.cause == "storage-full" and r.m.pending.resumed_ns is None


def test_reason_may_be_given_before_resuming():
    r = Rig(state=State.RECORDING)
    r.m.interrupt("low-battery")
    r.m.give_reason(code="low-battery")
    assert r.last("reason-given")["while_recording"] is False
    r.m.recover()
    assert r.m.start_recording() is False


def test_bad_reasons_are_refused_and_lose_nothing():
    r = interrupted_and_resumed()
    with pytest.raises(ValueError, match="code, a voice-note id"):
        r.m.give_reason()
    with pytest.raises(UnknownReason):
        r.m.give_reason(code="state-secret")      # a D6 code is not a D5 reason
    assert r.m.pending is not None
    r.m.give_reason(code="other")
    with pytest.raises(NoReasonPending):
        r.m.give_reason(code="other")


def test_reason_required_at_boot_after_power_loss():
    r = Rig(state=State.OFF)
    r.m.require_reason("power-loss")
    assert r.last("reason-pending")["how"] == "found-at-boot"
    r.m.power_on()
    r.m.self_check_done(type("R", (), {"go": True, "to_dict": lambda self: {"go": True}})())
    assert r.m.start_recording() is True
    with pytest.raises(IllegalTransition):
        r.m.require_reason("power-loss")


def test_pending_reason_can_be_restored_into_a_new_machine():
    r = Rig(pending=PendingReason("fault", interrupted_ns=0))
    assert r.m.start_recording() is True


def test_fail_while_recording_interrupts_first():
    r = Rig(state=State.RECORDING)
    r.m.fail("encoder crashed")
    states = [(p["from"], p["to"]) for t, p in r.records if t == "state"]
    assert states == [("recording", "interrupted"), ("interrupted", "fault")]
    assert r.m.pending.cause == "fault"


def test_bad_timeout_is_refused():
    for bad in (0, -1, float("inf"), "60", True):
        with pytest.raises(ValueError):
            StateMachine(lambda t, p: None, reason_timeout_s=bad)


# -- D6: not recording ---------------------------------------------------------

def test_pause_needs_a_not_recording_reason_and_is_flagged_for_signoff():
    r = Rig(state=State.RECORDING)
    with pytest.raises(UnknownReason):
        r.m.pause("device-fault")
    assert r.m.state is State.RECORDING
    r.at(5)
    r.m.pause("personal-privacy", note_id="n1", basis="hospital ward")
    record = r.last("not-recording")
    assert record["reason"]["zh"] == "涉及个人隐私" and record["needs_signoff"] is True
    assert record["basis"] == "hospital ward"
    r.at(65)
    r.m.resume()
    assert r.last("state")["paused_ns"] == 60 * S and r.m.state is State.RECORDING
    r.m.pause("emergency")
    r.m.end_pause()
    assert r.m.state is State.READY


# -- reasons lists ---------------------------------------------------------------

def test_reason_lists_have_stable_unique_codes_and_press_numbers():
    for listing in (INTERRUPTION_REASONS, NOT_RECORDING_REASONS):
        assert [r.number for r in listing] == list(range(1, len(listing) + 1))
        assert len({r.code for r in listing}) == len(listing)
        assert all(r.zh and r.en for r in listing)
    codes = [r.code for r in itertools.chain(INTERRUPTION_REASONS, NOT_RECORDING_REASONS)]
    assert len(set(codes)) == len(codes), "a code names one reason across both lists"
    assert [r.code for r in INTERRUPTION_REASONS] == [
        "device-fault", "device-damage", "bad-weather", "low-battery", "storage-full",
        "change-of-site", "obstruction", "force-majeure", "other"]
    assert [r.code for r in NOT_RECORDING_REASONS] == [
        "state-secret", "commercial-secret", "personal-privacy", "work-secret", "emergency",
        "objective-impossibility"]
    assert all(by_code(ReasonKind.INTERRUPTION, c) for c in SUGGESTED_FOR_CAUSE.values())
    assert set(SUGGESTED_FOR_CAUSE) == INTERRUPTION_CAUSES


def test_press_count_selection():
    assert by_press_count(ReasonKind.INTERRUPTION, 4).code == "low-battery"
    assert by_press_count(ReasonKind.NOT_RECORDING, 1).zh == "涉及国家秘密"
    for bad in (0, 7, True, "2"):
        with pytest.raises(UnknownReason):
            by_press_count(ReasonKind.NOT_RECORDING, bad)
    with pytest.raises(UnknownReason, match="known"):
        by_code(ReasonKind.INTERRUPTION, "tired")


def test_docking_drops_the_resume_awaited_after_a_camera_stall():
    """A stall arms "resume when frames flow again"; docking in between ends that: after
    undocking, returning frames do not start a recording nobody asked for."""
    r = Rig()
    r.m.start_recording()
    r.at(5)
    r.m.interrupt("camera-stall")
    r.m.await_camera()
    r.m.recover()
    r.m.dock()
    r.m.undock()
    assert r.m.camera_returned() is False and r.m.state is State.READY
    r2 = Rig()                                    # without the docking the resume still happens
    r2.m.start_recording()
    r2.m.interrupt("camera-stall")
    r2.m.await_camera()
    r2.m.recover()
    assert r2.m.camera_returned() is True
