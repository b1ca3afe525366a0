"""The store as a local directory: the single office's default, same contract as the S3 store.

Objects are read-only files under ``<root>/<key>`` with a ``<key>.meta.json`` beside them
(SHA-256, retention end, legal hold). The rules are the same (write once, refuse other
bytes, retention only moved later, no delete while retained or held) but they are kept by
this process with the station's clock: it protects against mistakes, not against root on
the machine. Where that matters, use the S3 Object Lock store (station/docs/agency.md).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from recorder import records
from station.storage.base import IntegrityConflict, StoredObject, StoreRefused, require
from station.storage.s3 import file_digests

META = ".meta.json"


@dataclass
class LocalStore:
    root: Path
    now_ns: Callable[[], int] = time.time_ns
    kind: str = "local"

    def describe(self) -> str:
        return f"local {self.root}"

    def _path(self, key: str) -> Path:
        if not records.safe_relpath(key) or key.endswith(META):
            raise StoreRefused(f"unsafe key {key!r}")
        return self.root / key

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def head(self, key: str) -> StoredObject | None:
        p = self._path(key)
        try:
            meta = json.loads(p.with_name(p.name + META).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return StoredObject(key, meta["sha256"], meta["size"], "", meta["retain_until_ns"], meta["legal_hold"])

    def _write_meta(self, o: StoredObject) -> StoredObject:
        p = self._path(o.key)
        meta = p.with_name(p.name + META)
        tmp = meta.with_name(meta.name + ".tmp")
        tmp.write_text(json.dumps({"sha256": o.sha256, "size": o.size, "retain_until_ns": o.retain_until_ns,
                                   "legal_hold": o.legal_hold}), encoding="utf-8")
        os.replace(tmp, meta)
        return o

    def put_file(self, key: str, path: Path, sha256: str, retain_until_ns: int,
                 legal_hold: bool = False) -> tuple[StoredObject, bool]:
        have = self.head(key)
        if have is not None:
            if have.sha256 != sha256:
                raise IntegrityConflict(f"{key} is already in the store with SHA-256 {have.sha256}, not {sha256}: "
                                        "refused")
            have = self.extend_retention(key, retain_until_ns)
            return (self.set_legal_hold(key, True) if legal_hold and not have.legal_hold else have), False
        found, _, size = file_digests(path)
        if found != sha256:
            raise IntegrityConflict(f"{path} is not what was verified (SHA-256 {found}, expected {sha256})")
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
        return self._write_meta(StoredObject(key, sha256, size, "", retain_until_ns, legal_hold)), True

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreRefused(f"{key} is not in the store") from None

    def extend_retention(self, key: str, until_ns: int) -> StoredObject:
        have = require(self, key)
        if have.retain_until_ns is not None and have.retain_until_ns >= until_ns:
            return have
        return self._write_meta(StoredObject(key, have.sha256, have.size, "", until_ns, have.legal_hold))

    def set_legal_hold(self, key: str, on: bool) -> StoredObject:
        have = require(self, key)
        return self._write_meta(StoredObject(key, have.sha256, have.size, "", have.retain_until_ns, on))

    def delete(self, key: str) -> None:
        have = self.head(key)
        if have is None:
            return
        if have.legal_hold:
            raise StoreRefused(f"{key} is under a legal hold")
        if have.retain_until_ns is None or self.now_ns() < have.retain_until_ns:
            raise StoreRefused(f"{key} is retained until {have.retain_until_ns}")
        p = self._path(key)
        p.unlink(missing_ok=True)
        p.with_name(p.name + META).unlink()
