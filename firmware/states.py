"""The device state machine: a small transition table, every change journaled.

States::

    off -> self-check -> ready (pre-event buffering) -> recording -> ready
    recording -> interrupted -> ready          (abnormal end, D5)
    recording <-> paused                       (lawfully not recording, D6)
    off/ready <-> docked ; any trouble -> fault

Only the named methods change state; each checks :data:`TRANSITIONS`,
raises :class:`IllegalTransition` otherwise, and calls
``journal(type, payload)`` BEFORE the change: if the journal raises, the
state stays as it was and the exception propagates, so the machine never
claims a state the journal does not hold.

Interruption reasons (D5), exactly:

* :meth:`interrupt` (any cause in :data:`INTERRUPTION_CAUSES`) sets a
  pending reason and journals ``reason-pending``. :meth:`require_reason` does
  the same at boot when recovery found a recording that was never closed
  (power loss). The officer's normal :meth:`stop_recording` never does.
* Starting again is never blocked (D3 outranks paperwork):
  :meth:`start_recording` returns True when a reason is pending, and the
  firmware plays the ``reason-required`` cue. The officer answers during the
  resumed recording (D5: "when recording resumes") with :meth:`give_reason`
  (code from the mark-button press count and/or a voice-note id); answering
  earlier, while not recording, is accepted too.
* ``reason-missing`` is journaled once per interruption, at the first of:
  (a) ``reason_timeout_s`` after the resumed recording started, seen by
  :meth:`poll` or by any later method call; (b) the resumed recording ending
  (stop, interrupt, pause) before that without an answer. A later answer is
  still accepted and journaled with ``late: true``; the missing record stays.
* A new interruption while an earlier reason is still unanswered first
  closes the earlier one (``reason-missing`` if not yet logged), then opens
  its own.

Questions in flight (the officer answers with presses and voice notes, so
the machine, not the service, remembers what a press would answer):

* :meth:`request_pause` while recording opens a pause request: for
  ``pause_request_s`` mark presses choose a not-recording reason
  (:meth:`pause`), else :meth:`poll_requests` journals
  ``pause-request-expired`` and recording simply continues.
* :meth:`note_recorded`: a voice note made while a pause reason is asked is
  kept for :meth:`pause`; one made while an interruption reason is owed waits
  ``note_answer_s`` for a code by presses (:meth:`answer_with_code`), then
  answers alone.
* :meth:`await_camera` after a camera stall: :meth:`camera_returned` says
  once, when ready again and frames flow, that recording resumes by itself.
"""
from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

from firmware.reasons import SUGGESTED_FOR_CAUSE, ReasonKind, by_code

if TYPE_CHECKING:
    from firmware.selfcheck import SelfCheckResult

log = logging.getLogger(__name__)

NS = 1_000_000_000


class State(str, enum.Enum):
    OFF = "off"
    SELF_CHECK = "self-check"
    READY = "ready"              # pre-event buffering, not recording
    RECORDING = "recording"
    PAUSED = "paused"            # lawfully not recording, reason given (D6)
    INTERRUPTED = "interrupted"  # recording ended abnormally (D5)
    DOCKED = "docked"
    FAULT = "fault"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.OFF: frozenset({S.SELF_CHECK, S.DOCKED}),
    S.SELF_CHECK: frozenset({S.READY, S.FAULT, S.OFF}),
    S.READY: frozenset({S.RECORDING, S.SELF_CHECK, S.DOCKED, S.FAULT, S.OFF}),
    S.RECORDING: frozenset({S.READY, S.INTERRUPTED, S.PAUSED}),
    S.PAUSED: frozenset({S.RECORDING, S.READY, S.FAULT, S.OFF}),
    S.INTERRUPTED: frozenset({S.READY, S.FAULT, S.OFF}),
    S.DOCKED: frozenset({S.READY, S.OFF, S.FAULT}),
    S.FAULT: frozenset({S.SELF_CHECK, S.OFF}),
}

# Where each event may start, where TRANSITIONS alone would allow more (several events
# share a target: ready is reached by stop, recover, undock, pause-end and self-check).
_FROM_OFF = frozenset({S.OFF})
_FROM_READY = frozenset({S.READY})
_FROM_READY_OR_FAULT = frozenset({S.READY, S.FAULT})
_FROM_SELF_CHECK = frozenset({S.SELF_CHECK})
_FROM_RECORDING = frozenset({S.RECORDING})
_FROM_PAUSED = frozenset({S.PAUSED})
_FROM_INTERRUPTED = frozenset({S.INTERRUPTED})
_FROM_DOCKED = frozenset({S.DOCKED})

# Causes of an abnormal end of recording; each makes the next start ask for a reason.
INTERRUPTION_CAUSES = frozenset({
    "fault", "power-loss", "storage-full", "low-battery", "camera-stall", "microphone-stall",
})
OFFICER_STOP = "officer-stop"


class IllegalTransition(RuntimeError):
    def __init__(self, source: State, target: State, cause: str,
                 sources: frozenset[State] | None = None) -> None:
        if sources is not None and source not in sources:   # the event does not belong here
            known = ", ".join(sorted(s.value for s in sources))
            super().__init__(f"cannot {cause} from {source.value}; only from: {known}")
        else:
            allowed = ", ".join(sorted(s.value for s in TRANSITIONS[source])) or "nothing"
            super().__init__(f"cannot go from {source.value} to {target.value} ({cause}); "
                             f"from {source.value} only to: {allowed}")
        self.source, self.target, self.cause = source, target, cause


class NoReasonPending(ValueError):
    """A reason was given but none is asked for."""


class Answered(str, enum.Enum):
    """What :meth:`StateMachine.poll_requests` just closed (the firmware cues the officer)."""

    NOTE_ANSWERED = "note-answered"            # a voice note alone answered the interruption
    PAUSE_REQUEST_EXPIRED = "pause-request-expired"   # no reason chosen: recording continues


@dataclass(frozen=True)
class PendingReason:
    cause: str
    interrupted_ns: int
    resumed_ns: int | None = None     # start of the recording during which it is due
    missing_logged: bool = False

    def deadline_ns(self, timeout_ns: int) -> int | None:
        return None if self.resumed_ns is None else self.resumed_ns + timeout_ns


Journal = Callable[[str, dict[str, Any]], object]


class StateMachine:
    def __init__(self, journal: Journal, clock: Callable[[], int] = time.monotonic_ns,
                 reason_timeout_s: float = 60.0, state: State = State.OFF,
                 pending: PendingReason | None = None, *, pause_request_s: float = 20.0,
                 note_answer_s: float = 5.0) -> None:
        if isinstance(reason_timeout_s, bool) or not isinstance(reason_timeout_s, (int, float)) \
                or not math.isfinite(reason_timeout_s) or reason_timeout_s <= 0:
            raise ValueError(f"reason_timeout_s must be > 0, got {reason_timeout_s!r}")
        self._journal = journal
        self._clock = clock
        self._timeout_ns = round(reason_timeout_s * NS)
        self._state = State(state)
        self._pending = pending
        self._paused_ns: int | None = None
        self._pause_request_ns = round(pause_request_s * NS)
        self._note_answer_ns = round(note_answer_s * NS)
        self._pause_deadline: int | None = None       # a pause reason is asked until then
        self._pause_note: str | None = None           # voice note made for that pause
        self._note_answer: tuple[str, int] | None = None   # (note id, code by presses until)
        self._resume_on_frames = False

    @property
    def state(self) -> State:
        return self._state

    @property
    def pending(self) -> PendingReason | None:
        """The unanswered interruption, if any (persist-worthy: rebuild it at boot from the journal)."""
        return self._pending

    @property
    def pause_requested(self) -> bool:
        """A pause was asked for and its not-recording reason is awaited."""
        return self._pause_deadline is not None

    @property
    def reason_due_ns(self) -> int | None:
        return self._pending.deadline_ns(self._timeout_ns) if self._pending else None

    # -- the one place state changes ------------------------------------------
    def _go(self, target: State, cause: str, sources: frozenset[State] | None = None, /,
            **detail: object) -> None:
        self._check(target, cause, sources)
        payload = {"from": self._state.value, "to": target.value, "cause": cause,
                   "mono_ns": self._clock(), **detail}
        self._journal("state", payload)
        log.info("state %s -> %s (%s)", self._state.value, target.value, cause)
        self._state = target

    def _check(self, target: State, cause: str, sources: frozenset[State] | None = None) -> None:
        """The move must be in TRANSITIONS and, when the event names them, start from one of
        its own ``sources`` (an undock while recording would otherwise end it silently, D5)."""
        if (sources is not None and self._state not in sources) or target not in TRANSITIONS[self._state]:
            raise IllegalTransition(self._state, target, cause, sources)

    # -- lifecycle ------------------------------------------------------------
    def power_on(self) -> None:
        self._go(State.SELF_CHECK, "power-on", _FROM_OFF)

    def run_self_check(self) -> None:
        """Re-run the self-check from ready or after a fault."""
        self._go(State.SELF_CHECK, "check-requested", _FROM_READY_OR_FAULT)

    def self_check_done(self, result: SelfCheckResult) -> None:
        """``result`` is a firmware.selfcheck.SelfCheckResult: journaled, then ready or fault."""
        target = State.READY if result.go else State.FAULT
        self._check(target, "self-check", _FROM_SELF_CHECK)
        self._journal("self-check", result.to_dict())
        self._go(target, "self-check-go" if result.go else "self-check-no-go", _FROM_SELF_CHECK)

    def power_off(self, cause: str = "officer-power-off") -> None:
        self._go(State.OFF, cause)
        self._resume_on_frames = False

    def dock(self) -> None:
        """Docking ends the shift's recording: a resume still awaited after a camera stall is
        dropped, so undocking never starts a recording the officer did not ask for."""
        self._go(State.DOCKED, "docked")
        self._resume_on_frames = False

    def undock(self) -> None:
        self._go(State.READY, "undocked", _FROM_DOCKED)

    def fail(self, detail: str) -> None:
        """Enter fault; a running recording is first interrupted with cause ``fault``."""
        if self._state is State.RECORDING:
            self.interrupt("fault", detail=detail)
        self._go(State.FAULT, "fault", detail=str(detail))

    # -- recording ------------------------------------------------------------
    def start_recording(self) -> bool:
        """Officer start from ready. Returns True when an interruption reason is now due."""
        self.poll()
        self._check(State.RECORDING, "officer-start", _FROM_READY)
        now = self._clock()
        pending = self._pending
        detail: dict[str, str | int] = {}
        if pending is not None:
            detail = {"reason_pending": pending.cause}
            if not pending.missing_logged:
                pending = replace(pending, resumed_ns=now)
                detail["reason_due_ns"] = now + self._timeout_ns
        self._go(State.RECORDING, "officer-start", _FROM_READY, **detail)
        self._pending = pending
        return pending is not None

    def stop_recording(self) -> None:
        """The officer's normal stop: no reason will be asked."""
        self._check(State.READY, OFFICER_STOP, _FROM_RECORDING)
        self._end_of_resumed_recording()
        self._go(State.READY, OFFICER_STOP, _FROM_RECORDING)
        self._pause_deadline = None

    def interrupt(self, cause: str, **detail: object) -> None:
        """Recording ended abnormally; the next start asks for a reason."""
        if cause not in INTERRUPTION_CAUSES:
            raise ValueError(f"{cause!r} is not an interruption cause; known: "
                             f"{', '.join(sorted(INTERRUPTION_CAUSES))}")
        self._check(State.INTERRUPTED, cause)
        self._end_of_resumed_recording()
        self._close_unanswered("superseded")
        self._go(State.INTERRUPTED, cause, **detail)
        self._open_pending(cause, "interrupt")

    def recover(self) -> None:
        """Back to ready after an interruption (the reason stays pending)."""
        self._go(State.READY, "recovered", _FROM_INTERRUPTED)

    def require_reason(self, cause: str) -> None:
        """At boot: recovery found a recording never closed (e.g. power loss)."""
        if cause not in INTERRUPTION_CAUSES:
            raise ValueError(f"{cause!r} is not an interruption cause")
        if self._state is State.RECORDING:
            raise IllegalTransition(self._state, self._state, "require-reason while recording; use interrupt()")
        self._close_unanswered("superseded")
        self._open_pending(cause, "found-at-boot")

    def pause(self, code: str, note_id: str | None = None, basis: str | None = None) -> None:
        """Lawfully stop recording (D6) with a not-recording reason code; needs sign-off.
        ``note_id`` defaults to the voice note made for the pause request, if any."""
        reason = by_code(ReasonKind.NOT_RECORDING, code)
        self._check(State.PAUSED, "not-recording")
        if note_id is None:
            note_id = self._pause_note
        self._pause_deadline = self._pause_note = None
        self._end_of_resumed_recording()
        now = self._clock()
        self._journal("not-recording", {"reason": reason.to_dict(), "note_id": note_id, "basis": basis,
                                        "mono_ns": now, "needs_signoff": True})
        self._go(State.PAUSED, "not-recording", reason=reason.code)
        self._paused_ns = now

    def resume(self) -> None:
        self._check(State.RECORDING, "resume", _FROM_PAUSED)
        paused = None if self._paused_ns is None else self._clock() - self._paused_ns
        self._go(State.RECORDING, "resume", _FROM_PAUSED, paused_ns=paused)
        self._paused_ns = None

    def end_pause(self) -> None:
        """Leave the not-recording period without recording (e.g. left the scene)."""
        self._go(State.READY, "pause-ended", _FROM_PAUSED)
        self._paused_ns = None

    def request_pause(self, pressed_ns: int | None = None) -> None:
        """While recording: ask for a not-recording reason; recording goes on meanwhile."""
        if self._state is not State.RECORDING:
            raise IllegalTransition(self._state, State.PAUSED, "pause-requested")
        now = self._clock()
        self._journal("pause-requested", {"mono_ns": now, "pressed_ns": pressed_ns})
        self._pause_deadline = now + self._pause_request_ns

    # -- camera stalls ------------------------------------------------------------
    def await_camera(self) -> None:
        """After a camera stall: resume by itself once ready and frames flow again."""
        self._resume_on_frames = True

    def camera_returned(self) -> bool:
        """A frame arrived: True (once) when that should resume the recording now."""
        if self._resume_on_frames and self._state is State.READY:
            self._resume_on_frames = False
            return True
        return False

    # -- reasons --------------------------------------------------------------
    def note_recorded(self, note_id: str) -> None:
        """A voice note was sealed: it belongs to the question being asked, if any."""
        if self._pause_deadline is not None:
            self._pause_note = note_id
        elif self._pending is not None:
            self._note_answer = (note_id, self._clock() + self._note_answer_ns)

    def note_answers(self) -> str | None:
        """What a voice note made now would answer (for its link): pause-request, interruption."""
        if self._pause_deadline is not None:
            return "pause-request"
        return "interruption" if self._pending is not None else None

    def answer_with_code(self, code: str) -> bool:
        """The interruption reason chosen by presses, with the voice note waiting for it if any.
        False if no reason was pending (journaled as an unsolicited ``mark``)."""
        note = self._note_answer[0] if self._note_answer else None
        self._note_answer = None
        return self._answer(code, note)

    def poll_requests(self) -> list[Answered]:
        """Close the questions whose time is up: a waiting voice note answers alone, an
        unanswered pause request expires. Journaled here; returned for the officer's cues."""
        now = self._clock()
        done: list[Answered] = []
        if self._note_answer is not None and now >= self._note_answer[1]:
            note_id, _ = self._note_answer
            self._note_answer = None
            if self._answer(None, note_id):
                done.append(Answered.NOTE_ANSWERED)
        if self._pause_deadline is not None and now >= self._pause_deadline:
            self._pause_deadline = None
            self._journal("pause-request-expired", {"mono_ns": now, "note_id": self._pause_note})
            self._pause_note = None
            done.append(Answered.PAUSE_REQUEST_EXPIRED)
        return done

    def _answer(self, code: str | None, note_id: str | None) -> bool:
        try:
            self.give_reason(code, note_id)
        except NoReasonPending:
            self._journal("mark", {"note_id": note_id, "code": code, "state": self._state.value,
                                   "mono_ns": self._clock(), "unsolicited_reason": True})
            return False
        return True

    def give_reason(self, code: str | None = None, note_id: str | None = None) -> None:
        """Answer the pending interruption with a reason code and/or a voice-note id."""
        if code is None and not note_id:
            raise ValueError("a reason needs a code, a voice-note id, or both")
        reason = by_code(ReasonKind.INTERRUPTION, code) if code is not None else None
        self.poll()
        pending = self._pending
        if pending is None:
            raise NoReasonPending("no interruption reason is pending")
        self._journal("reason-given", {
            "cause": pending.cause, "reason": reason.to_dict() if reason else None, "note_id": note_id,
            "interrupted_ns": pending.interrupted_ns, "resumed_ns": pending.resumed_ns,
            "mono_ns": self._clock(), "late": pending.missing_logged,
            "while_recording": self._state is State.RECORDING,
        })
        self._pending = None

    def poll(self) -> bool:
        """Journal ``reason-missing`` once the deadline has passed; True if it just did."""
        pending = self._pending
        if pending is None or pending.missing_logged:
            return False
        deadline = pending.deadline_ns(self._timeout_ns)
        if deadline is None or self._clock() < deadline:
            return False
        self._log_missing(pending, "timeout", deadline)
        return True

    # -- internals ------------------------------------------------------------
    def _open_pending(self, cause: str, how: str) -> None:
        now = self._clock()
        self._journal("reason-pending", {"cause": cause, "how": how, "mono_ns": now,
                                         "suggested_reason": SUGGESTED_FOR_CAUSE.get(cause)})
        self._pending = PendingReason(cause, now)

    def _end_of_resumed_recording(self) -> None:
        """Called before a recording ends: an answer due during it is now missing."""
        if self.poll():
            return
        pending = self._pending
        if self._state is State.RECORDING and pending and pending.resumed_ns is not None \
                and not pending.missing_logged:
            self._log_missing(pending, "recording-ended", self._clock())

    def _close_unanswered(self, why: str) -> None:
        pending = self._pending
        if pending is not None and not pending.missing_logged:
            self._log_missing(pending, why, self._clock())
        self._pending = None

    def _log_missing(self, pending: PendingReason, why: str, at_ns: int) -> None:
        self._journal("reason-missing", {
            "cause": pending.cause, "why": why, "interrupted_ns": pending.interrupted_ns,
            "resumed_ns": pending.resumed_ns, "mono_ns": at_ns,
        })
        self._pending = replace(pending, missing_logged=True)
