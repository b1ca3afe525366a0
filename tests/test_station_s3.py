"""The evidence store interface against a real SeaweedFS (S3 gateway with object lock) and on disk.

Each test writes its own keys into the session's ``evidence`` bucket (tests/seaweed.py).
Waits for a retention to pass are a few seconds, bounded.
"""
from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select

from station.db import models as m
from station.storage import IntegrityConflict, StoreRefused, open_store
from station.storage.base import StoreDenied, StoreUnavailable
from station.storage.local import LocalStore
from station.storage.s3 import S3ObjectLockStore
from station.sync import file_key
from tests.seaweed import BUCKET, filer_jwt, operator, s3_client, weed_server  # noqa: F401
from tests.station_fixture import sqlite_station_world  # noqa: F401

S = 1_000_000_000


def _store(server, **kw) -> S3ObjectLockStore:
    store = S3ObjectLockStore(s3_client(server, **kw), BUCKET, endpoint=server.s3_url)
    store.check()
    return store


def _file(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    p = tmp_path / f"{uuid.uuid4().hex}.ts"
    p.write_bytes(data)
    return p, hashlib.sha256(data).hexdigest()


def _key() -> str:
    return f"test/{uuid.uuid4().hex}/seg_0001.ts"


def _wait_past(store: S3ObjectLockStore, until_ns: int, limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while store.server_now_ns() <= until_ns + S and time.monotonic() < deadline:
        time.sleep(0.5)


def test_upload_with_compliance_retention_is_idempotent_and_checked_by_hash(weed_server, tmp_path):
    store = _store(weed_server)
    path, sha = _file(tmp_path, b"segment bytes" * 1000)
    key, until = _key(), store.server_now_ns() + 3600 * S
    obj, wrote = store.put_file(key, path, sha, until)
    assert wrote and obj.sha256 == sha and obj.version
    head = store.head(key)
    assert head is not None and head.sha256 == sha and head.size == path.stat().st_size
    assert head.retain_until_ns is not None and abs(head.retain_until_ns - until) <= S
    r = s3_client(weed_server).get_object_retention(Bucket=BUCKET, Key=key, VersionId=obj.version)
    assert r["Retention"]["Mode"] == "COMPLIANCE"
    # the same bytes again: nothing written, still one version
    again, wrote = store.put_file(key, path, sha, until)
    assert not wrote and again.version == obj.version and store.versions(key) == [obj.version]
    # other bytes under the same key: refused, the stored object untouched
    other, other_sha = _file(tmp_path, b"tampered")
    with pytest.raises(IntegrityConflict):
        store.put_file(key, other, other_sha, until)
    assert store.read(key) == path.read_bytes() and store.versions(key) == [obj.version]
    # a local file that is not what was verified is not uploaded
    with pytest.raises(IntegrityConflict):
        store.put_file(_key(), other, sha, until)


def test_delete_before_retention_is_refused_by_the_gateway_with_or_without_bypass(weed_server, tmp_path):
    store = _store(weed_server)
    path, sha = _file(tmp_path, b"evidence")
    key = _key()
    obj, _ = store.put_file(key, path, sha, store.server_now_ns() + 3600 * S)
    client = s3_client(weed_server)
    for c in (client, operator(weed_server)):        # the stations, and the storage administrator
        for kw in ({}, {"BypassGovernanceRetention": True}):
            with pytest.raises(ClientError) as e:
                c.delete_object(Bucket=BUCKET, Key=key, VersionId=obj.version, **kw)
            assert e.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(StoreRefused):
        store.delete(key)
    # nor can the date be moved earlier, by anyone
    from datetime import datetime, timezone
    with pytest.raises(ClientError):
        client.put_object_retention(Bucket=BUCKET, Key=key, VersionId=obj.version,
                                    Retention={"Mode": "COMPLIANCE",
                                               "RetainUntilDate": datetime.now(timezone.utc)})
    # extend_retention never moves it earlier either; later works
    head = store.head(key)
    assert head is not None and head.retain_until_ns is not None
    assert store.extend_retention(key, head.retain_until_ns - 1800 * S).retain_until_ns == head.retain_until_ns
    later = store.extend_retention(key, head.retain_until_ns + 3600 * S)
    assert store.head(key).retain_until_ns == later.retain_until_ns > head.retain_until_ns
    assert store.read(key) == b"evidence"


def test_a_delete_through_the_filer_http_api_is_refused(weed_server, tmp_path):
    """The trap of issue 15: the filer deleted locked objects outright. Here it refuses them: without
    the filer's JWT key (only on the storage host) every write/delete is 401; with it, the
    WORM rule on /buckets/ still refuses the object's own delete (403)."""
    store = _store(weed_server)
    path, sha = _file(tmp_path, b"locked")
    key = _key()
    obj, _ = store.put_file(key, path, sha, store.server_now_ns() + 3600 * S)
    version_file = f"{weed_server.filer_url}/buckets/{BUCKET}/{key}.versions/v_{obj.version}"
    with httpx.Client(timeout=10) as http:
        for url in (version_file, f"{weed_server.filer_url}/buckets/{BUCKET}/{key}.versions?recursive=true",
                    f"{weed_server.filer_url}/buckets/{BUCKET}?recursive=true",
                    f"{weed_server.filer_url}/buckets?recursive=true"):
            r = http.delete(url)
            assert r.status_code == 401, (url, r.status_code, r.text)
        r = http.post(version_file, files={"file": ("x", b"overwritten")})
        assert r.status_code == 401
        r = http.delete(version_file, headers={"Authorization": f"Bearer {filer_jwt(weed_server)}"})
        assert r.status_code == 403 and "not permitted" in r.text
        listing = http.get(f"{weed_server.filer_url}/buckets/{BUCKET}/{key}.versions/",
                           headers={"Accept": "application/json"}).json()
        entry = next(e for e in listing["Entries"] if e["FullPath"].endswith(obj.version))
        assert entry["WORMEnforcedAtTsNs"] > 0          # stamped: the filer's WORM rule holds it
        # the volume server refuses a delete of the raw chunk without the master's signing key
        for chunk in entry["chunks"]:
            r = http.delete(f"{weed_server.volume_url}/{chunk['file_id']}")
            assert r.status_code == 401, r.text
    assert store.read(key) == b"locked"


def test_legal_hold_blocks_the_delete_after_retention_and_the_purge_follows_release(weed_server, tmp_path):
    store = _store(weed_server)
    held, sha = _file(tmp_path, b"held")
    key_held = _key()
    until = store.server_now_ns() + 2 * S
    store.put_file(key_held, held, sha, until, legal_hold=True)
    plain, sha2 = _file(tmp_path, b"plain")
    key_plain = _key()
    store.put_file(key_plain, plain, sha2, until)
    with pytest.raises(StoreRefused):
        store.delete(key_plain)                 # still in retention
    _wait_past(store, until)
    store.delete(key_plain)                     # retention over: the purge goes through
    assert store.head(key_plain) is None and store.versions(key_plain) == []
    with pytest.raises(StoreRefused):
        store.delete(key_held)                  # the legal hold outlives the retention
    assert store.head(key_held).legal_hold
    store.set_legal_hold(key_held, False)
    store.delete(key_held)
    assert store.head(key_held) is None


def test_a_station_without_the_agency_credentials_cannot_write(weed_server, tmp_path):
    path, sha = _file(tmp_path, b"x")
    for kw in ({"secret": "not-the-secret"}, {"access": "SOMEONEELSE", "secret": "whatever"}):
        store = S3ObjectLockStore(s3_client(weed_server, **kw), BUCKET, endpoint=weed_server.s3_url)
        with pytest.raises(StoreDenied):
            store.check()
        with pytest.raises(StoreDenied):
            store.put_file(_key(), path, sha, time.time_ns() + 3600 * S)


def test_a_store_that_does_not_answer_is_unavailable(tmp_path):
    import boto3
    from botocore.config import Config

    from tests.seaweed import free_ports
    port = free_ports(1)[0]
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="a",
                          aws_secret_access_key="b", region_name="us-east-1",
                          config=Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1}))
    with pytest.raises(StoreUnavailable):
        S3ObjectLockStore(client, BUCKET).check()


def test_the_local_store_is_todays_layout(sqlite_station_world, tmp_path):
    """The single office's store: the mirror files a docking verified are the objects (no copy);
    write-once enforced; retention, holds and purges stay the catalogue's (delete refused)."""
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 2})
    st = w.st
    store = open_store(st.cfg)
    assert isinstance(store, LocalStore) and store.root == st.store
    store.check()
    with st.db.session() as s:
        segs = list(s.scalars(select(m.Segment).join(m.Recording, m.Recording.id == m.Segment.recording)))
        device = s.scalars(select(m.Recording.device_id)).first()
    assert len(segs) == 2
    for seg in segs:
        key = file_key(device, seg.path)
        head = store.head(key)
        assert head is not None and (head.sha256, head.size) == (seg.sha256, seg.size)
        mirror_file = st.store / "devices" / device / "mirror" / seg.path
        assert store.read(key) == mirror_file.read_bytes()
        assert mirror_file.stat().st_mode & 0o222 == 0                       # read-only, as docked
        # the same bytes again: nothing written; other bytes: refused
        assert store.put_file(key, mirror_file, seg.sha256, 0) == (head, False)
        other, other_sha = _file(tmp_path, b"other bytes")
        with pytest.raises(IntegrityConflict):
            store.put_file(key, other, other_sha, 0)
        # the dates and holds are the catalogue's: the store neither keeps nor changes them...
        assert store.extend_retention(key, 10**19) == head and store.set_legal_hold(key, True) == head
        # ...and deletes only through `station purge`
        with pytest.raises(StoreRefused, match="station purge"):
            store.delete(key)
        assert store.read(key) == mirror_file.read_bytes()
    # a new key (say a device journal copy) is written once, read-only, checked against its hash
    path, sha = _file(tmp_path, b"journal copy")
    obj, wrote = store.put_file("devices/x/journal/000000000001.jsonl", path, sha, 0)
    assert wrote and obj.sha256 == sha and store.read(obj.key) == b"journal copy"
    assert (st.store / obj.key).stat().st_mode & 0o222 == 0
    with pytest.raises(IntegrityConflict):
        store.put_file("devices/x/journal/000000000002.jsonl", path, "0" * 64, 0)
    assert store.head("devices/x/journal/000000000002.jsonl") is None
    with pytest.raises(StoreRefused):
        store.put_file("../escape", path, sha, 0)
    with pytest.raises(StoreRefused):
        store.read("devices/x/nothing")
