"""The dock's SQLite book: known devices (the pin registry) and the usage ledger (台账, S9).

Per docking: which device, which officer, when it was checked in (docked) and
checked out again (released from the dock), what it recorded and over which
period, how it went (ok / partial / quarantined / interrupted / refused), the verified
journal head (the anchor for the next docking), and the receipt sent. Per file that
failed verification while the journal was sound (status partial): a
``quarantined_files`` row with the reason and expected/found size and SHA-256, marked
``resolved_docking_id`` once a later docking stores the file intact.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, cast

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, pubkey_pem TEXT NOT NULL, officer_id TEXT, label TEXT,
    registered_at_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dockings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, officer_id TEXT,
    checked_in_ns INTEGER NOT NULL, checked_out_ns INTEGER, status TEXT NOT NULL,
    used_from_ns INTEGER, used_until_ns INTEGER, head_seq INTEGER, head_hash TEXT,
    records INTEGER, files_new INTEGER, bytes_new INTEGER, bytes_resumed INTEGER,
    purged INTEGER, detail TEXT);
CREATE TABLE IF NOT EXISTS recordings (
    device_id TEXT NOT NULL, recording_id TEXT NOT NULL, name TEXT NOT NULL, unit TEXT NOT NULL,
    counterpart TEXT NOT NULL, content TEXT NOT NULL, date TEXT NOT NULL, officer_id TEXT,
    start_wall_ns INTEGER, end_wall_ns INTEGER, segments INTEGER, bytes INTEGER,
    docking_id INTEGER, PRIMARY KEY (device_id, recording_id));
CREATE TABLE IF NOT EXISTS receipts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, docking_id INTEGER NOT NULL,
    counter INTEGER NOT NULL, nonce TEXT NOT NULL, head_seq INTEGER NOT NULL, head_hash TEXT NOT NULL,
    files INTEGER NOT NULL, bytes INTEGER NOT NULL, sent_ns INTEGER NOT NULL, response TEXT,
    UNIQUE (device_id, counter));
CREATE TABLE IF NOT EXISTS quarantined_files (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, docking_id INTEGER NOT NULL,
    path TEXT NOT NULL, recording_id TEXT, seg_index INTEGER, reason TEXT NOT NULL,
    expected_sha256 TEXT, expected_size INTEGER, found_sha256 TEXT, found_size INTEGER, detail TEXT,
    quarantine_dir TEXT, quarantined_ns INTEGER NOT NULL, resolved_docking_id INTEGER);
"""

TABLES = ("devices", "dockings", "recordings", "receipts", "quarantined_files")


class UnknownDevice(LookupError):
    """A device that is not in the registry."""



def _inserted_id(cur: sqlite3.Cursor) -> int:
    """The id of the row the INSERT on ``cur`` made (``lastrowid`` is None only before any INSERT)."""
    return cast(int, cur.lastrowid)


class Ledger:
    def __init__(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ---- registry --------------------------------------------------------------------
    def register(self, device_id: str, pubkey_pem: bytes, officer_id: str = "", label: str = "") -> None:
        self.db.execute("INSERT OR REPLACE INTO devices VALUES (?,?,?,?,?)",
                        (device_id, pubkey_pem.decode("ascii"), officer_id, label, time.time_ns()))

    def pubkey(self, device_id: str) -> bytes | None:
        row = self.db.execute("SELECT pubkey_pem FROM devices WHERE device_id=?", (device_id,)).fetchone()
        return row[0].encode("ascii") if row else None

    def device(self, device_id: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM devices WHERE device_id=?", (device_id,))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row, strict=True)) if row else None

    # ---- dockings --------------------------------------------------------------------------
    def check_in(self, device_id: str, officer_id: str | None) -> int:
        cur = self.db.execute("INSERT INTO dockings (device_id, officer_id, checked_in_ns, status) "
                              "VALUES (?,?,?,?)", (device_id, officer_id, time.time_ns(), "in-progress"))
        return _inserted_id(cur)

    def update(self, docking_id: int, **values: object) -> None:
        cols = ", ".join(f"{k}=?" for k in values)
        self.db.execute(f"UPDATE dockings SET {cols} WHERE id=?", (*values.values(), docking_id))

    def check_out(self, docking_id: int, status: str, detail: str = "") -> None:
        self.update(docking_id, status=status, detail=detail, checked_out_ns=time.time_ns())

    def last_anchor(self, device_id: str) -> tuple[int, str] | None:
        # 'partial': the journal verified in full (only files were quarantined), so its head anchors too
        row = self.db.execute("SELECT head_seq, head_hash FROM dockings WHERE device_id=? "
                              "AND status IN ('ok', 'partial') AND head_seq IS NOT NULL "
                              "ORDER BY id DESC LIMIT 1", (device_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def rows(self, table: str) -> list[dict[str, Any]]:
        if table not in TABLES:
            raise ValueError(f"no table {table}")
        cur = self.db.execute(f"SELECT * FROM {table} ORDER BY rowid")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # ---- what was recorded ------------------------------------------------------------------
    def upsert_recording(self, **v: object) -> None:
        self.db.execute(
            "INSERT INTO recordings VALUES (:device_id,:recording_id,:name,:unit,:counterpart,:content,"
            ":date,:officer_id,:start_wall_ns,:end_wall_ns,:segments,:bytes,:docking_id) "
            "ON CONFLICT (device_id, recording_id) DO UPDATE SET end_wall_ns=excluded.end_wall_ns, "
            "segments=excluded.segments, bytes=excluded.bytes", v)

    def recording_name(self, device_id: str, recording_id: str) -> str | None:
        row = self.db.execute("SELECT name FROM recordings WHERE device_id=? AND recording_id=?",
                              (device_id, recording_id)).fetchone()
        return row[0] if row else None

    # ---- receipts ----------------------------------------------------------------------------
    def next_receipt_counter(self, device_id: str) -> int:
        row = self.db.execute("SELECT MAX(counter) FROM receipts WHERE device_id=?", (device_id,)).fetchone()
        return 0 if row[0] is None else row[0] + 1

    def add_receipt(self, **v: object) -> int:
        cur = self.db.execute(
            "INSERT INTO receipts (device_id, docking_id, counter, nonce, head_seq, head_hash, files, bytes,"
            " sent_ns, response) VALUES (:device_id,:docking_id,:counter,:nonce,:head_seq,:head_hash,"
            ":files,:bytes,:sent_ns,:response)", v)
        return _inserted_id(cur)

    # ---- files that failed verification (docking status 'partial') -----------------------------
    def add_quarantined_file(self, **v: object) -> int:
        v.setdefault("quarantined_ns", time.time_ns())
        cur = self.db.execute(
            "INSERT INTO quarantined_files (device_id, docking_id, path, recording_id, seg_index, reason,"
            " expected_sha256, expected_size, found_sha256, found_size, detail, quarantine_dir,"
            " quarantined_ns) VALUES (:device_id,:docking_id,:path,:recording_id,:seg_index,:reason,"
            ":expected_sha256,:expected_size,:found_sha256,:found_size,:detail,:quarantine_dir,"
            ":quarantined_ns)", v)
        return _inserted_id(cur)

    def resolve_quarantined_files(self, device_id: str, docking_id: int, stored: list[str]) -> None:
        """Mark open rows whose file is now stored intact (a later docking fetched a good copy)."""
        stored_set = set(stored)
        for row in self.open_quarantined_files(device_id):
            if row["path"] in stored_set:
                self.db.execute("UPDATE quarantined_files SET resolved_docking_id=? WHERE id=?",
                                (docking_id, row["id"]))

    def open_quarantined_files(self, device_id: str | None = None) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM quarantined_files WHERE resolved_docking_id IS NULL "
                              "AND (? IS NULL OR device_id=?) ORDER BY id", (device_id, device_id))
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
