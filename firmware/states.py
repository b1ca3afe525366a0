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
"""
from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Callable

from firmware.reasons import SUGGESTED_FOR_CAUSE, ReasonKind, by_code

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

# Causes of an abnormal end of recording; each makes the next start ask for a reason.
INTERRUPTION_CAUSES = frozenset({
    "fault", "power-loss", "storage-full", "low-battery", "camera-stall", "microphone-stall",
})
OFFICER_STOP = "officer-stop"


class IllegalTransition(RuntimeError):
    def __init__(self, source: State, target: State, cause: str) -> None:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[source])) or "nothing"
        super().__init__(f"cannot go from {source.value} to {target.value} ({cause}); "
                         f"from {source.value} only to: {allowed}")
        self.source, self.target, self.cause = source, target, cause


class NoReasonPending(ValueError):
    """A reason was given but none is asked for."""


@dataclass(frozen=True)
class PendingReason:
    cause: str
    interrupted_ns: int
    resumed_ns: int | None = None     # start of the recording during which it is due
    missing_logged: bool = False

    def deadline_ns(self, timeout_ns: int) -> int | None:
        return None if self.resumed_ns is None else self.resumed_ns + timeout_ns


Journal = Callable[[str, dict], object]


class StateMachine:
    def __init__(self, journal: Journal, clock: Callable[[], int] = time.monotonic_ns,
                 reason_timeout_s: float = 60.0, state: State = State.OFF,
                 pending: PendingReason | None = None) -> None:
        if isinstance(reason_timeout_s, bool) or not isinstance(reason_timeout_s, (int, float)) \
                or not math.isfinite(reason_timeout_s) or reason_timeout_s <= 0:
            raise ValueError(f"reason_timeout_s must be > 0, got {reason_timeout_s!r}")
        self._journal = journal
        self._clock = clock
        self._timeout_ns = round(reason_timeout_s * NS)
        self._state = State(state)
        self._pending = pending
        self._paused_ns: int | None = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def pending(self) -> PendingReason | None:
        """The unanswered interruption, if any (persist-worthy: rebuild it at boot from the journal)."""
        return self._pending

    @property
    def reason_due_ns(self) -> int | None:
        return self._pending.deadline_ns(self._timeout_ns) if self._pending else None

    # -- the one place state changes ------------------------------------------
    def _go(self, target: State, cause: str, **detail) -> None:
        if target not in TRANSITIONS[self._state]:
            raise IllegalTransition(self._state, target, cause)
        payload = {"from": self._state.value, "to": target.value, "cause": cause,
                   "mono_ns": self._clock(), **detail}
        self._journal("state", payload)
        log.info("state %s -> %s (%s)", self._state.value, target.value, cause)
        self._state = target

    def _check(self, target: State, cause: str) -> None:
        if target not in TRANSITIONS[self._state]:
            raise IllegalTransition(self._state, target, cause)

    # -- lifecycle ------------------------------------------------------------
    def power_on(self) -> None:
        self._go(State.SELF_CHECK, "power-on")

    def run_self_check(self) -> None:
        """Re-run the self-check from ready or after a fault."""
        self._go(State.SELF_CHECK, "check-requested")

    def self_check_done(self, result) -> None:
        """``result`` is a firmware.selfcheck.SelfCheckResult: journaled, then ready or fault."""
        target = State.READY if result.go else State.FAULT
        self._check(target, "self-check")
        self._journal("self-check", result.to_dict())
        self._go(target, "self-check-go" if result.go else "self-check-no-go")

    def power_off(self, cause: str = "officer-power-off") -> None:
        self._go(State.OFF, cause)

    def dock(self) -> None:
        self._go(State.DOCKED, "docked")

    def undock(self) -> None:
        self._go(State.READY, "undocked")

    def fail(self, detail: str) -> None:
        """Enter fault; a running recording is first interrupted with cause ``fault``."""
        if self._state is State.RECORDING:
            self.interrupt("fault", detail=detail)
        self._go(State.FAULT, "fault", detail=str(detail))

    # -- recording ------------------------------------------------------------
    def start_recording(self) -> bool:
        """Officer start from ready. Returns True when an interruption reason is now due."""
        self.poll()
        self._check(State.RECORDING, "officer-start")
        now = self._clock()
        pending = self._pending
        detail = {}
        if pending is not None:
            detail = {"reason_pending": pending.cause}
            if not pending.missing_logged:
                pending = replace(pending, resumed_ns=now)
                detail["reason_due_ns"] = now + self._timeout_ns
        self._go(State.RECORDING, "officer-start", **detail)
        self._pending = pending
        return pending is not None

    def stop_recording(self) -> None:
        """The officer's normal stop: no reason will be asked."""
        self._check(State.READY, OFFICER_STOP)
        self._end_of_resumed_recording()
        self._go(State.READY, OFFICER_STOP)

    def interrupt(self, cause: str, **detail) -> None:
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
        self._go(State.READY, "recovered")

    def require_reason(self, cause: str) -> None:
        """At boot: recovery found a recording never closed (e.g. power loss)."""
        if cause not in INTERRUPTION_CAUSES:
            raise ValueError(f"{cause!r} is not an interruption cause")
        if self._state is State.RECORDING:
            raise IllegalTransition(self._state, self._state, "require-reason while recording; use interrupt()")
        self._close_unanswered("superseded")
        self._open_pending(cause, "found-at-boot")

    def pause(self, code: str, note_id: str | None = None, basis: str | None = None) -> None:
        """Lawfully stop recording (D6) with a not-recording reason code; needs sign-off."""
        reason = by_code(ReasonKind.NOT_RECORDING, code)
        self._check(State.PAUSED, "not-recording")
        self._end_of_resumed_recording()
        now = self._clock()
        self._journal("not-recording", {"reason": reason.to_dict(), "note_id": note_id, "basis": basis,
                                        "mono_ns": now, "needs_signoff": True})
        self._go(State.PAUSED, "not-recording", reason=reason.code)
        self._paused_ns = now

    def resume(self) -> None:
        self._check(State.RECORDING, "resume")
        paused = None if self._paused_ns is None else self._clock() - self._paused_ns
        self._go(State.RECORDING, "resume", paused_ns=paused)
        self._paused_ns = None

    def end_pause(self) -> None:
        """Leave the not-recording period without recording (e.g. left the scene)."""
        self._go(State.READY, "pause-ended")
        self._paused_ns = None

    # -- reasons --------------------------------------------------------------
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
