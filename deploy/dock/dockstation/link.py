"""The dock's client for a device's link service: TLS with a pinned device key, resumable GETs.

The device must present a certificate issued by the agency CA (serverAuth) *and*
its key must be the one registered for that device id in the dock's registry:
an unknown device, or a known id with another key, is refused before any byte
of evidence is read. Host names are not checked: the device is addressed by IP
over a point-to-point USB link, and its identity is the pinned key.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from cryptography import x509

from recorder.identity import device_id_for, load_public_key_pem, raw_public_key

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024


class LinkError(Exception):
    """Base class for dock link problems."""


class DeviceRefused(LinkError):
    """The device is not one this dock knows (unknown id, or another key for a known id)."""


class LinkInterrupted(LinkError):
    """The connection broke or timed out; partial downloads are kept for resuming."""


class DeviceProtocolError(LinkError):
    """The device answered something that is not the link protocol."""


class DeviceClient:
    def __init__(self, host: str, port: int, ca_file: str, cert_file: str, key_file: str,
                 known_key: Callable[[str], bytes | None], timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.known_key = known_key
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False   # identity = pinned key (see module docstring)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(ca_file)
        ctx.load_cert_chain(cert_file, key_file)
        self.ctx = ctx
        self.conn: http.client.HTTPSConnection | None = None
        self.device_id: str | None = None
        self.device_pem: bytes | None = None

    # ---- connection ---------------------------------------------------------------------
    def connect(self) -> str:
        """Connect, authenticate both ways, pin the device key. Returns the device id."""
        self.close()
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        try:
            conn.connect()
        except ssl.SSLError as exc:
            conn.close()
            raise DeviceRefused(f"TLS handshake with {self.host}:{self.port} failed: {exc}") from exc
        except OSError as exc:
            conn.close()
            raise LinkInterrupted(f"cannot reach {self.host}:{self.port}: {exc}") from exc
        cert = x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True))
        device_id = device_id_for(cert.public_key()) if _is_ed25519(cert) else None
        pinned = self.known_key(device_id) if device_id else None
        if pinned is None:
            conn.close()
            raise DeviceRefused(f"device {device_id or '(non-Ed25519 key)'} is not in this dock's registry")
        if raw_public_key(load_public_key_pem(pinned)) != raw_public_key(cert.public_key()):
            conn.close()
            raise DeviceRefused(f"device {device_id} presented a key other than the registered one")
        self.conn, self.device_id, self.device_pem = conn, device_id, pinned
        return device_id

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict | None = None) -> http.client.HTTPResponse:
        if self.conn is None:
            self.connect()
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            return self.conn.getresponse()
        except ssl.SSLError as exc:   # TLS 1.3: the device rejects a client certificate after the handshake
            self.close()
            raise DeviceRefused(f"the device refused this dock: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise LinkInterrupted(f"{method} {path}: {exc}") from exc

    def _json(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        resp = self._request(method, path, body, {"Content-Type": "application/json"} if body else None)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise LinkInterrupted(f"{method} {path}: {exc}") from exc
        try:
            doc = json.loads(data)
        except ValueError:
            raise DeviceProtocolError(f"{method} {path}: answer is not JSON ({resp.status})") from None
        if not isinstance(doc, dict):
            raise DeviceProtocolError(f"{method} {path}: answer is not a JSON object")
        return resp.status, doc

    # ---- protocol ------------------------------------------------------------------------
    def manifest(self) -> dict:
        status, doc = self._json("GET", "/v1/manifest")
        if status != 200 or doc.get("device") != self.device_id:
            raise DeviceProtocolError(f"bad manifest ({status}): {doc}")
        return doc

    def get_raw(self, rel: str, headers: dict | None = None) -> tuple[int, bytes]:
        """One request for a path as given (attack tests, diagnostics)."""
        resp = self._request("GET", "/v1/files/" + rel, headers=headers)
        return resp.status, resp.read()

    def request_raw(self, method: str, path: str) -> tuple[int, bytes]:
        resp = self._request(method, path)
        data = resp.read()
        if resp.will_close:
            self.close()
        return resp.status, data

    def fetch(self, rel: str, dest: Path, size: int, on_bytes: Callable[[int], None] = lambda n: None
              ) -> tuple[int, int]:
        """Bring ``dest`` to ``size`` bytes of ``rel``, resuming from what is there.

        Returns (bytes transferred now, bytes already there). Raises LinkInterrupted on a cut
        (what arrived so far is fsynced and kept).
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        have = dest.stat().st_size if dest.exists() else 0
        if have > size:
            log.warning("%s: partial copy longer than the file (%d > %d); starting again", rel, have, size)
            os.truncate(dest, 0)
            have = 0
        if have == size:
            return 0, have
        resp = self._request("GET", "/v1/files/" + quote(rel), headers={"Range": f"bytes={have}-{size - 1}"})
        if resp.status != 206:
            body = resp.read()
            raise DeviceProtocolError(f"GET {rel}: status {resp.status}: {body[:200]!r}")
        got = 0
        with open(dest, "ab") as out:
            try:
                while have + got < size:
                    chunk = resp.read(min(_CHUNK, size - have - got))
                    if not chunk:
                        raise LinkInterrupted(f"{rel}: connection closed at {have + got} of {size} bytes")
                    out.write(chunk)
                    got += len(chunk)
                    on_bytes(len(chunk))
            except (OSError, http.client.HTTPException, socket.timeout) as exc:
                self.close()
                raise LinkInterrupted(f"{rel}: cut at {have + got} of {size} bytes: {exc}") from exc
            finally:
                out.flush()
                os.fsync(out.fileno())
        return got, have

    def send_receipt(self, wire: bytes) -> tuple[int, dict]:
        return self._json("POST", "/v1/receipt", wire)


def _is_ed25519(cert: x509.Certificate) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    return isinstance(cert.public_key(), Ed25519PublicKey)

