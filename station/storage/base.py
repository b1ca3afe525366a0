"""The evidence store's contract, whatever engine is behind it.

Every object is write-once: ``put`` of a key that holds the same bytes (same SHA-256) is a
no-op, of a key that holds other bytes is refused (``IntegrityConflict``; the caller raises
an integrity alert). Each object carries a retention end (it may only be moved later,
never earlier) and a legal hold flag; ``delete`` is refused by the store itself while
either forbids it (``StoreRefused``), whatever the caller's clock says. A store that cannot
be reached raises ``StoreUnavailable`` and nothing is lost: the caller tries again later.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from station.errors import Conflict, Unavailable


class StoreUnavailable(Unavailable):
    """The store does not answer (down, network cut): try again later."""


class StoreRefused(Conflict):
    """The store refused (retention not over, legal hold, no permission)."""


class StoreDenied(StoreRefused):
    """The store does not know our credentials (wrong key pair): this station may not write."""

    exit_code = 3


class IntegrityConflict(Conflict):
    """The key already holds different bytes: the same recording uploaded twice, not the same."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int
    version: str                 # the store's version id ("" where there is none)
    retain_until_ns: int | None  # None: no retention set
    legal_hold: bool


class EvidenceStore(Protocol):
    """What the station asks of a store (``station.storage.local`` / ``station.storage.s3``)."""

    kind: str

    def describe(self) -> str: ...

    def check(self) -> None:
        """Raise ``StoreUnavailable`` / ``StoreRefused`` if the store cannot be written now."""

    def head(self, key: str) -> StoredObject | None: ...

    def put_file(self, key: str, path: Path, sha256: str, retain_until_ns: int,
                 legal_hold: bool = False) -> tuple[StoredObject, bool]:
        """Store ``path`` under ``key`` (checked against ``sha256``); True if it was written now."""

    def read(self, key: str) -> bytes: ...

    def extend_retention(self, key: str, until_ns: int) -> StoredObject:
        """Move the retention end to ``until_ns`` if that is later; never earlier."""

    def set_legal_hold(self, key: str, on: bool) -> StoredObject: ...

    def delete(self, key: str) -> None:
        """Delete every version of ``key``; refused while retained or held."""


def require(store: EvidenceStore, key: str) -> StoredObject:
    """What the store holds under ``key``; StoreRefused when it holds nothing there."""
    have = store.head(key)
    if have is None:
        raise StoreRefused(f"{key} is not in the store")
    return have
