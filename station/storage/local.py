"""The single office's store: today's on-disk layout under ``store_dir``, seen through the store interface.

The key ``devices/<id>/mirror/<path>`` *is* the mirror file the docking verified and made
read-only (station.dock.ingest); nothing is copied elsewhere. Retention (S5), holds (S6)
and purges (S11) are kept by the catalogue, as they always were: ``station purge`` checks
them before it removes mirror files. So this store records no dates of its own —
``extend_retention`` and ``set_legal_hold`` only check the object is there, and ``delete``
is refused (the one way to delete is the purge, which asks the catalogue). What it does
enforce itself is write-once: the same bytes again are a no-op, other bytes are refused.

Why this shape and not a second copy with its own lock metadata: on one machine a second
copy kept by the same process and clock protects against nothing the read-only mirror does
not, and doubles the disk. Where an administrator must not be able to shorten a retention,
that takes a store with its own clock and rules: the S3 Object Lock store.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from recorder import records
from station.storage.base import IntegrityConflict, StoredObject, StoreRefused, require
from station.storage.s3 import file_digests


@dataclass
class LocalStore:
    root: Path            # the station's store_dir
    kind: str = "local"

    def describe(self) -> str:
        return f"local {self.root}"

    def _path(self, key: str) -> Path:
        if not records.safe_relpath(key):
            raise StoreRefused(f"unsafe key {key!r}")
        return self.root / key

    def check(self) -> None:
        if not self.root.is_dir():
            raise StoreRefused(f"the store {self.root} does not exist: run `station init`")

    def head(self, key: str) -> StoredObject | None:
        p = self._path(key)
        if not p.is_file():
            return None
        sha, _, size = file_digests(p)
        return StoredObject(key, sha, size, "", None, False)

    def put_file(self, key: str, path: Path, sha256: str, retain_until_ns: int,
                 legal_hold: bool = False) -> tuple[StoredObject, bool]:
        dest = self._path(key)
        have = self.head(key)
        if have is not None:
            if have.sha256 != sha256:
                raise IntegrityConflict(f"{key} is already in the store with SHA-256 {have.sha256}, not {sha256}: "
                                        "refused")
            return have, False
        found, _, size = file_digests(path)
        if found != sha256:
            raise IntegrityConflict(f"{path} is not what was verified (SHA-256 {found}, expected {sha256})")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(path, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
        return StoredObject(key, sha256, size, "", None, False), True

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreRefused(f"{key} is not in the store") from None

    def extend_retention(self, key: str, until_ns: int) -> StoredObject:
        return require(self, key)          # the date is the catalogue's (recordings.retention_end_ns)

    def set_legal_hold(self, key: str, on: bool) -> StoredObject:
        return require(self, key)          # holds are the catalogue's (holds)

    def delete(self, key: str) -> None:
        if self.head(key) is None:
            return
        raise StoreRefused(f"{key}: the single-office store is purged only by `station purge` (S11), which "
                           "checks the catalogue's retention and holds first")
