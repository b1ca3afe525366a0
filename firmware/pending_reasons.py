"""An interruption reason still owed after a restart, rebuilt from the journal (D5).

The state machine keeps the pending reason in memory only; the journal is the
durable copy. At boot the last ``reason-pending`` not followed by a
``reason-given`` or ``reason-missing`` is still owed, so a reboot cannot
erase the question.
"""
from __future__ import annotations

from pathlib import Path

from firmware.states import PendingReason
from recorder.journal import iter_records

OPENS = "reason-pending"
CLOSES = frozenset({"reason-given", "reason-missing"})


def pending_from_journal(journal_path: Path, now_ns: int) -> PendingReason | None:
    """The reason still owed, dated ``now_ns`` (monotonic instants do not survive a reboot)."""
    pending = None
    for rec in iter_records(journal_path):
        if rec.type == OPENS:
            pending = PendingReason(rec.payload.get("cause", "fault"), now_ns)
        elif rec.type in CLOSES:
            pending = None
    return pending
