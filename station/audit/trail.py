"""Every station action is one database transaction and one signed audit record, or neither.

The audit journal (``<store>/audit/journal.log``) has the device journal's format and is
written by the same ``recorder.journal`` code, signed with the station key: a third party
checks it with ``docs/evidence-format.md``'s recipe and the station's public key. Each
record names the action (its type), who did it, what it is about, why, the details, and
a digest of every catalogue row the action wrote (``rows``: table -> key -> digest), so
``station verify`` finds a row changed behind the station's back.

How "changed and journaled" stays one step, even across ``kill -9`` or a database that
goes away:

1. under an exclusive lock on ``<store>/audit.lock`` (one writer per station; other
   processes wait their turn) the journal is opened and any line the catalogue holds
   beyond its head is appended first (step 4 of an earlier action that died);
2. the action's changes are made in one transaction, and the record attesting them is
   signed and added to ``audit_entries`` in that same transaction;
3. commit: from here the action happened, and its signed line exists;
4. the line is appended to the journal file (fsync).

A crash before 3 leaves neither; after 3 the next action (or ``station verify``) copies
the line over. A commit that fails (the database went away) leaves neither either: the
caller gets the error and nothing was done.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from recorder import records
from recorder.identity import Signer
from recorder.journal import Journal
from station.clock import AuditWallClock, Clock
from station.db.engine import Database
from station.db.models import AUDITED, AuditEntry, Base

AUDIT_DIR = "audit"
LOCK_NAME = "audit.lock"
DIGEST_HEX = 32   # 128 bits of SHA-256 per row: small records, still no second preimage to find


def row_key(obj: Base) -> str:
    """The primary key of a row as text (``a/b`` for a composite key)."""
    ident = inspect(obj).identity
    if ident is None:
        raise ValueError(f"{obj!r} has no primary key yet (flush first)")
    return "/".join(str(v) for v in ident)


def row_state(obj: Base) -> dict[str, Any]:
    """Every column of a row, by name: what its digest covers."""
    return {c.key: getattr(obj, c.key) for c in inspect(type(obj)).column_attrs}


def row_digest(state: dict[str, Any]) -> str:
    return hashlib.sha256(records.canonical_json(state)).hexdigest()[:DIGEST_HEX]


class Change:
    """What one action did: the rows it wrote (``touch``) and its details for the record."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.details: dict[str, Any] = {}
        self._rows: list[Base] = []
        self.subject: str | None = None
        self.record: records.Record | None = None   # set once signed (after the block)

    def touch(self, *rows: Base) -> None:
        """Attest these rows (new or changed) in the action's record."""
        self._rows.extend(rows)

    def add(self, *rows: Base) -> None:
        """``session.add`` and ``touch``."""
        self.session.add_all(rows)
        self._rows.extend(rows)

    def rows_payload(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for obj in self._rows:
            if type(obj) not in AUDITED:
                raise TypeError(f"{type(obj).__name__} is not an audited table")
            out.setdefault(type(obj).__tablename__, {})[row_key(obj)] = row_digest(row_state(obj))
        return out


class AuditTrail:
    def __init__(self, db: Database, store: Path, signer: Signer, station: str, clock: Clock) -> None:
        self.db, self.store, self.signer, self.station, self.clock = db, Path(store), signer, station, clock

    @property
    def journal_dir(self) -> Path:
        return self.store / AUDIT_DIR

    @contextmanager
    def _locked_journal(self) -> Iterator[Journal]:
        self.store.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.store / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)       # waits for another process's action to end
            journal = Journal.open(self.journal_dir, self.signer, AuditWallClock(self.clock))
            try:
                self._catch_up(journal)
                yield journal
            finally:
                journal.close()
        finally:
            os.close(fd)

    def _catch_up(self, journal: Journal) -> int:
        """Append lines the catalogue holds beyond the journal's head (an action that died
        between its commit and its append). Returns how many."""
        head_seq = journal.head[0]
        with self.db.session() as s:
            lines = s.scalars(select(AuditEntry.line).where(AuditEntry.station == self.station,
                                                            AuditEntry.seq > head_seq)
                              .order_by(AuditEntry.seq)).all()
        for line in lines:
            journal.write_prepared(records.parse_line(line.encode("ascii")))
        return len(lines)

    def catch_up(self) -> tuple[int, str]:
        """Bring the journal file up to the catalogue; returns its head (seq, hash)."""
        with self._locked_journal() as journal:
            return journal.head

    @contextmanager
    def action(self, type: str, *, actor: str, subject: str = "", reason: str | None = None,
               **details: Any) -> Iterator[Change]:
        """One audited action: the block's changes and their record commit together.

        ``type`` names the action (``ingest``, ``label``, ``access-refused``...), ``actor`` the
        user (or ``station`` for the station itself), ``subject`` what it is about
        (``recording:12``), ``reason`` why when the rules ask for one. Raise in the block to
        abandon the action (nothing is written).
        """
        with self._locked_journal() as journal:
            with self.db.session(write=True) as s:
                change = Change(s)
                yield change
                s.flush()
                payload: dict[str, Any] = {"actor": actor, "subject": change.subject or subject,
                                           "station": self.station, "rows": change.rows_payload()}
                if reason is not None:
                    payload["reason"] = reason
                merged = {**details, **change.details}
                if merged:
                    payload["details"] = merged
                record = journal.prepare(type, payload)
                s.add(AuditEntry(station=self.station, seq=record.seq, type=type, actor=actor,
                                 subject=payload["subject"], wall_ns=record.message["wall_ns"],
                                 hash=record.hash, line=record.line.decode("ascii")))
            journal.write_prepared(record)
            change.record = record

    def event(self, type: str, *, actor: str, subject: str = "", reason: str | None = None,
              **details: Any) -> records.Record:
        """An audited event that changes no row (a refusal, a view, a download)."""
        with self.action(type, actor=actor, subject=subject, reason=reason, **details) as change:
            pass
        assert change.record is not None
        return change.record
