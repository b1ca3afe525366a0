"""The agency store on S3 Object Lock (boto3): COMPLIANCE retention, legal holds, versioned bucket.

Each object is written once with ``ObjectLockMode=COMPLIANCE`` until the recording's
retention end and its SHA-256 in the metadata (``x-amz-meta-sha256``); the gateway then
refuses any delete of that version before the date or under a legal hold, to anyone,
administrator included (COMPLIANCE, unlike GOVERNANCE, has no bypass), and refuses to
move the date earlier. The dates are absolute (from the catalogue, i.e. the recording's
own end time and the rules), and the gateway judges them by its own clock, so a station
whose clock is off cannot shorten anything.

SeaweedFS specifics (deploy/agency/, station/docs/agency.md): after the upload the same
retention is set again with PutObjectRetention, because that call is what stamps the
filer entry for the filer-level WORM rule (``fs.configure -locationPrefix=/buckets/ -worm``);
a plain upload leaves it unstamped.
"""
from __future__ import annotations

import base64
import hashlib
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from station.config import AgencySection
from station.storage.base import (
    IntegrityConflict,
    StoreDenied,
    StoredObject,
    StoreRefused,
    StoreUnavailable,
    require,
)

MIN_KEEP_NS = 86_400 * 1_000_000_000   # a file whose end has passed is still kept a day after upload
DENIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch"}
REFUSALS = {"AccessDenied", "AccessDeniedException",
            "ObjectLocked", "InvalidRequest", "MethodNotAllowed"}
MISSING = {"NoSuchKey", "404", "NoSuchVersion", "NotFound"}


def _until(ns: int) -> datetime:
    """A retention end in ns as the whole second at or after it (S3 keeps seconds)."""
    return datetime.fromtimestamp(math.ceil(ns / 1e9), tz=timezone.utc)


def _ns(dt: Any) -> int | None:
    return int(dt.timestamp()) * 1_000_000_000 if isinstance(dt, datetime) else None


def file_digests(path: Path) -> tuple[str, bytes, int]:
    """SHA-256 (hex), MD5 (raw, for Content-MD5) and size of a file, in one read."""
    sha, md5, n = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
            n += len(chunk)
    return sha.hexdigest(), md5.digest(), n


@dataclass
class S3ObjectLockStore:
    client: Any
    bucket: str
    prefix: str = ""
    endpoint: str = ""
    kind: str = "s3"
    clock_offset_ns: int = 0     # the store's clock minus ours, from its Date header (``check``)

    @classmethod
    def from_config(cls, a: AgencySection) -> "S3ObjectLockStore":
        import boto3
        from botocore.config import Config
        try:
            secret = Path(a.secret_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StoreRefused(f"the store's secret key file {a.secret_key_file} cannot be read: {exc}") from None
        client = boto3.client("s3", endpoint_url=a.endpoint_url, region_name=a.region,
                              aws_access_key_id=a.access_key, aws_secret_access_key=secret,
                              config=Config(s3={"addressing_style": "path"}, connect_timeout=a.connect_timeout_s,
                                            read_timeout=a.read_timeout_s,
                                            retries={"max_attempts": 2, "mode": "standard"}))
        return cls(client, a.bucket, a.prefix, a.endpoint_url)

    def describe(self) -> str:
        return f"s3 {self.endpoint}/{self.bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _call(self, what: str, fn: Any, **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return fn(Bucket=self.bucket, **kw)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in MISSING or status == 404:
                raise KeyError(kw.get("Key", "")) from None
            if code in DENIALS or (code == "403" and what == "read"):   # HEAD: no body, no code
                raise StoreDenied(f"the store does not accept this station's credentials ({code}): "
                                  "check [agency] access_key and secret_key_file") from None
            if code in REFUSALS or status in (401, 403):
                raise StoreRefused(f"the store refused {what} {kw.get('Key', '')}: {code} "
                                   f"{err.get('Message', '')}".strip()) from None
            raise StoreUnavailable(f"the store failed {what}: {code} {err.get('Message', '')}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"the store at {self.endpoint} cannot be reached ({what}): {exc}") from None

    def check(self) -> None:
        """The bucket is there, versioned and locked (COMPLIANCE needs it), and our key may use it."""
        conf = self._call("read the lock configuration of", self.client.get_object_lock_configuration)
        date = conf.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if date:
            from email.utils import parsedate_to_datetime
            self.clock_offset_ns = int(parsedate_to_datetime(date).timestamp()) * 1_000_000_000 - time.time_ns()
        if conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise StoreRefused(f"bucket {self.bucket} has no object lock: create it with object lock "
                               "(deploy/agency/)")

    def head(self, key: str) -> StoredObject | None:
        k = self._key(key)
        try:
            h = self._call("read", self.client.head_object, Key=k)
        except KeyError:
            return None
        until = _ns(h.get("ObjectLockRetainUntilDate"))
        hold = h.get("ObjectLockLegalHoldStatus")
        version = h.get("VersionId") or ""
        if until is None and version:
            try:
                r = self._call("read the retention of", self.client.get_object_retention, Key=k, VersionId=version)
                until = _ns(r.get("Retention", {}).get("RetainUntilDate"))
            except KeyError:
                until = None
        if hold is None and version:
            try:
                r = self._call("read the legal hold of", self.client.get_object_legal_hold, Key=k,
                               VersionId=version)
                hold = r.get("LegalHold", {}).get("Status")
            except (KeyError, StoreRefused):
                hold = None
        return StoredObject(key, h.get("Metadata", {}).get("sha256", ""), int(h.get("ContentLength", 0)), version,
                            until, hold == "ON")

    def put_file(self, key: str, path: Path, sha256: str, retain_until_ns: int,
                 legal_hold: bool = False) -> tuple[StoredObject, bool]:
        have = self.head(key)
        if have is not None:
            if have.sha256 != sha256:
                raise IntegrityConflict(f"{key} is already in the store with SHA-256 {have.sha256 or '(none)'}, "
                                        f"not {sha256}: refused")
            if have.retain_until_ns is None or have.retain_until_ns < retain_until_ns:
                have = self.extend_retention(key, retain_until_ns)
            if legal_hold and not have.legal_hold:
                have = self.set_legal_hold(key, True)
            return have, False
        found, md5, size = file_digests(path)
        if found != sha256:
            raise IntegrityConflict(f"{path} is not what was verified (SHA-256 {found}, expected {sha256}): "
                                    "not uploaded")
        # an end already past by the store's clock (an old recording docked late) cannot be set:
        # such a file is kept a day from now, then may be purged like any other
        until = _until(max(retain_until_ns, self.server_now_ns() + MIN_KEEP_NS)
                       if retain_until_ns <= self.server_now_ns() else retain_until_ns)
        with open(path, "rb") as body:
            r = self._call("write", self.client.put_object, Key=self._key(key), Body=body,
                           ContentMD5=base64.b64encode(md5).decode("ascii"), Metadata={"sha256": sha256},
                           ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until,
                           ObjectLockLegalHoldStatus="ON" if legal_hold else "OFF")
        version = r.get("VersionId") or ""
        # the same date again: stamps the filer entry for SeaweedFS's filer-level WORM rule
        self._call("set the retention of", self.client.put_object_retention, Key=self._key(key),
                   VersionId=version, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
        return StoredObject(key, sha256, size, version, _ns(until), legal_hold), True

    def server_now_ns(self) -> int:
        return time.time_ns() + self.clock_offset_ns

    def read(self, key: str) -> bytes:
        try:
            r = self._call("read", self.client.get_object, Key=self._key(key))
        except KeyError:
            raise StoreRefused(f"{key} is not in the store") from None
        data: bytes = r["Body"].read()
        return data

    def extend_retention(self, key: str, until_ns: int) -> StoredObject:
        have = require(self, key)
        if have.retain_until_ns is not None and have.retain_until_ns >= until_ns:
            return have                      # never earlier: the store would refuse it anyway
        until = _until(until_ns)
        self._call("extend the retention of", self.client.put_object_retention, Key=self._key(key),
                   VersionId=have.version, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
        return StoredObject(key, have.sha256, have.size, have.version, _ns(until), have.legal_hold)

    def set_legal_hold(self, key: str, on: bool) -> StoredObject:
        have = require(self, key)
        self._call("set the legal hold of", self.client.put_object_legal_hold, Key=self._key(key),
                   VersionId=have.version, LegalHold={"Status": "ON" if on else "OFF"})
        return StoredObject(key, have.sha256, have.size, have.version, have.retain_until_ns, on)

    def versions(self, key: str) -> list[str]:
        k = self._key(key)
        r = self._call("list the versions of", self.client.list_object_versions, Prefix=k)
        out = [v["VersionId"] for v in r.get("Versions", []) if v.get("Key") == k]
        out += [v["VersionId"] for v in r.get("DeleteMarkers", []) if v.get("Key") == k]
        return out

    def delete(self, key: str) -> None:
        for version in self.versions(key):
            try:
                self._call("delete", self.client.delete_object, Key=self._key(key), VersionId=version)
            except KeyError:
                continue
