"""Opening the device's evidence: identity, journal, store and sealer, with crash recovery.

Done once at service start, before the first frame: whatever a power cut
left half-written is salvaged, sealed as recovered and journaled as a
``power-loss`` interruption, so the chain continues where it broke.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from recorder import identity, records
from recorder.clock import WallClock
from recorder.journal import Journal, JournalError
from recorder.salvage import SalvageResult, recover
from recorder.seal import Sealer
from recorder.store import EvidenceStore

log = logging.getLogger(__name__)


@dataclass
class Evidence:
    signer: identity.Signer
    journal: Journal
    store: EvidenceStore
    sealer: Sealer
    salvaged: list[SalvageResult]

    def record(self, kind: str, payload: dict) -> None:
        """Journal an event; a journal that cannot be written is logged, never fatal to recording."""
        try:
            self.journal.append(kind, payload)
        except (JournalError, OSError, ValueError) as exc:
            log.error("could not journal %s %s: %s", kind, payload, exc)

    def close(self, cause: str = "stop") -> None:
        self.record(records.SHUTDOWN, {"cause": cause})
        self.journal.close()


def open_evidence(root: Path, key_dir: Path, wall_clock: WallClock,
                  monotonic_ns: Callable[[], int], provision: bool = False,
                  boot_payload: dict | None = None) -> Evidence:
    """Load the device key (or create it when ``provision``), open the journal, salvage leftovers."""
    try:
        signer = identity.FileSigner.load(key_dir)
    except identity.IdentityMissing:
        if not provision:
            raise
        signer = identity.provision(key_dir)
        log.warning("provisioned a new device key in %s", key_dir)
    journal = Journal.open(root, signer, wall_clock, monotonic_ns)
    store = EvidenceStore(root, journal)
    sealer = Sealer(store, journal)
    journal.append(records.BOOT, boot_payload or {})
    salvaged = recover(store, sealer, journal)
    for r in salvaged:
        log.warning("recovered after power loss: %s", r.source)
    return Evidence(signer, journal, store, sealer, salvaged)
