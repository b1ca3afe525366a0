"""What a button gesture means, given the state: two buttons, many intents.

Kept apart from the service so the whole control table reads in one place
(and matches the officer's card): the same double press starts a recording
when ready, asks to pause while recording, resumes when paused and retries
the self-check after a fault; mark presses answer a question when one is
asked, else they are bookmarks.
"""
from __future__ import annotations

import enum

from firmware.states import State
from hw.buttons import Gesture, GestureKind


class Intent(enum.Enum):
    START = "start"                        # ready: start recording
    START_AFTER_INTERRUPTION = "start-after-interruption"   # interrupted: back to ready, then start
    REQUEST_PAUSE = "request-pause"        # recording: a not-recording reason is asked for next
    RESUME = "resume"                      # paused: record again
    RETRY_CHECK = "retry-check"            # fault: run the self-check again
    STOP = "stop"                          # recording: the officer's normal stop
    END_PAUSE = "end-pause"                # paused: leave without recording
    PAUSE_REASON = "pause-reason"          # presses choose the not-recording reason (D6)
    INTERRUPTION_REASON = "interruption-reason"   # presses choose the interruption reason (D5)
    BOOKMARK = "bookmark"
    NOTE_START = "note-start"
    NOTE_END = "note-end"
    IGNORE = "ignore"


_RECORD_START = {
    State.READY: Intent.START,
    State.INTERRUPTED: Intent.START_AFTER_INTERRUPTION,
    State.RECORDING: Intent.REQUEST_PAUSE,
    State.PAUSED: Intent.RESUME,
    State.FAULT: Intent.RETRY_CHECK,
}
_RECORD_STOP = {State.RECORDING: Intent.STOP, State.PAUSED: Intent.END_PAUSE}


def intent_for(g: Gesture, state: State, pause_requested: bool, reason_asked: bool) -> Intent:
    """``pause_requested``: a pause was asked for and its reason is awaited; ``reason_asked``: an
    interruption reason is owed and not yet journaled missing (after that, presses are bookmarks)."""
    kind = g.kind
    if kind is GestureKind.RECORD_START:
        return _RECORD_START.get(state, Intent.IGNORE)
    if kind is GestureKind.RECORD_STOP:
        return _RECORD_STOP.get(state, Intent.IGNORE)
    if kind is GestureKind.MARK:
        if pause_requested and state is State.RECORDING:
            return Intent.PAUSE_REASON
        if reason_asked:
            return Intent.INTERRUPTION_REASON
        return Intent.BOOKMARK
    if kind is GestureKind.MARK_HOLD_START:
        return Intent.NOTE_START
    if kind is GestureKind.MARK_HOLD_END:
        return Intent.NOTE_END
    return Intent.IGNORE
