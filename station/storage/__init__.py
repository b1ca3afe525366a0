"""Where verified evidence is kept for the agency: one interface (``base.EvidenceStore``), two
implementations — ``local`` (the single office's default: today's ``store_dir`` layout) and ``s3`` (an S3
Object Lock bucket through boto3: SeaweedFS in deploy/agency/). ``open_store`` picks one
from ``[agency]``; ``station.sync`` pushes to it. See station/docs/agency.md.
"""
from __future__ import annotations

from pathlib import Path

from station.config import StationConfig
from station.storage.base import EvidenceStore, IntegrityConflict, StoredObject, StoreRefused, StoreUnavailable

__all__ = ["EvidenceStore", "IntegrityConflict", "StoreRefused", "StoreUnavailable", "StoredObject", "open_store"]


def open_store(cfg: StationConfig) -> EvidenceStore:
    """The agency store the configuration names (``[agency] kind``)."""
    a = cfg.agency
    if a.kind == "s3":
        from station.storage.s3 import S3ObjectLockStore
        return S3ObjectLockStore.from_config(a)
    from station.storage.local import LocalStore
    return LocalStore(Path(cfg.store))        # today's layout: the mirrors are the objects
