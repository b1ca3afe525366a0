"""Opening the device's evidence: identity, journal, store and sealer, with crash recovery.

Done once at service start, before the first frame: whatever a power cut
left half-written is salvaged, sealed as recovered and journaled as a
``power-loss`` interruption, so the chain continues where it broke.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from common.clock import WallClock
from firmware.config import journal_form
from recorder import identity, records
from recorder.journal import JOURNAL_NAME, Journal, JournalError, iter_records, last_record
from recorder.salvage import SalvageResult, recover
from recorder.seal import Sealer
from recorder.store import EvidenceStore

log = logging.getLogger(__name__)

_ABSENT = object()


@dataclass
class Evidence:
    signer: identity.Signer
    journal: Journal
    store: EvidenceStore
    sealer: Sealer
    salvaged: list[SalvageResult]

    def record(self, kind: str, payload: dict[str, Any]) -> None:
        """Journal an event; a journal that cannot be written is logged, never fatal to recording."""
        try:
            self.journal.append(kind, payload)
        except (JournalError, OSError, ValueError) as exc:
            log.error("could not journal %s %s: %s", kind, payload, exc)

    def note_config(self, cfg: dict[str, dict[str, Any]]) -> bool:
        """Journal the effective configuration when it differs from the last one recorded, so
        every recording can be read against the settings it was made with. True if journaled.

        The record holds ``config.journal_form(cfg)`` (integers only: ``*_ms``, ``*_permille``,
        ...) and ``sha256`` is over its canonical JSON; raises ConfigError if that is not possible.
        """
        cfg = journal_form(cfg)
        digest = hashlib.sha256(records.canonical_json(cfg)).hexdigest()
        last = None
        for rec in iter_records(self.journal.path):
            if rec.type == records.CONFIG_CHANGE:
                last = rec.payload
        if last is not None and last.get("sha256") == digest:
            return False
        old = (last or {}).get("config", {})
        changed = sorted(f"{sec}.{key}" for sec in cfg for key in cfg[sec]
                         if old.get(sec, {}).get(key, _ABSENT) != cfg[sec][key])
        self.record(records.CONFIG_CHANGE, {"sha256": digest, "config": cfg, "changed": changed,
                                            "previous_sha256": (last or {}).get("sha256")})
        return True

    def close(self, cause: str = "stop") -> None:
        self.record(records.SHUTDOWN, {"cause": cause})
        self.journal.close()


def _previous_session(journal_path: Path) -> dict[str, Any]:
    """How the last session ended: a shutdown record last means cleanly; anything else means
    it was cut off (killed, hung and restarted by the watchdog, or the power went)."""
    try:
        last = last_record(journal_path)
    except (JournalError, ValueError) as exc:  # a torn tail is recovered by Journal.open
        return {"ended": "abnormally", "last_seq": None, "last_type": None, "note": str(exc)}
    if last is None:  # no whole record: a new journal, or one whose only line was torn
        torn = journal_path.exists() and journal_path.stat().st_size > 0
        return {"ended": "abnormally", "last_seq": None, "last_type": None} if torn else {"ended": "none"}
    ended = "cleanly" if last.type == records.SHUTDOWN else "abnormally"
    return {"ended": ended, "last_seq": last.seq, "last_type": last.type}


def open_evidence(root: Path, key_dir: Path, wall_clock: WallClock,
                  monotonic_ns: Callable[[], int], provision: bool = False,
                  boot_payload: dict[str, Any] | None = None) -> Evidence:
    """Load the device key (or create it when ``provision``), open the journal, salvage leftovers."""
    try:
        signer = identity.FileSigner.load(key_dir)
    except identity.IdentityMissing:
        if not provision:
            raise
        signer = identity.provision(key_dir)
        log.warning("provisioned a new device key in %s", key_dir)
    root = Path(root).resolve()
    previous = _previous_session(root / JOURNAL_NAME)
    journal = Journal.open(root, signer, wall_clock, monotonic_ns)
    store = EvidenceStore(root, journal)
    sealer = Sealer(store, journal)
    journal.append(records.BOOT, {**(boot_payload or {}), "previous_session": previous})
    if previous.get("ended") == "abnormally":
        log.warning("the previous session did not shut down (last record #%s, %s): "
                    "crash, watchdog restart or power loss", previous["last_seq"],
                    previous["last_type"])
    salvaged = recover(store, sealer, journal)
    for r in salvaged:
        log.warning("recovered after power loss: %s", r.source)
    return Evidence(signer, journal, store, sealer, salvaged)
