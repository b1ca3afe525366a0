"""The dock's client for a device's link service: TLS with a pinned device key, resumable GETs.

The device must present a certificate issued by the agency CA (serverAuth) *and*
its key must be the one registered for that device id in the dock's registry:
an unknown device, or a known id with another key, is refused before any byte
of evidence is read. Host names are not checked: the device is addressed by IP
over a point-to-point USB link, and its identity is the pinned key.

The paths and bodies are ``recorder.dock_protocol``'s (the device builds its answers
from the same types); every JSON answer is parsed strictly there, and one that is not
the protocol is a DeviceProtocolError naming the failure.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import queue
import select
import socket
import ssl
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, TypeVar, cast

from cryptography import x509

from recorder import dock_protocol as protocol
from recorder.identity import device_id_for, load_public_key_pem, raw_public_key
from recorder.verify import KnownDigest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_CHUNK = 1 << 20          # bytes per read from the TLS stream (one Python call per MiB)
_IN_FLIGHT = 16           # chunks queued for the disk writer (16 MiB) before the network waits


class LinkError(Exception):
    """Base class for dock link problems."""


class DeviceRefused(LinkError):
    """The device is not one this dock knows (unknown id, or another key for a known id)."""


class LinkInterrupted(LinkError):
    """The connection broke or timed out; partial downloads are kept for resuming."""


class DeviceProtocolError(LinkError):
    """The device answered something that is not the link protocol."""


class FileSizeDiffers(LinkError):
    """The file on the device is not the size the journal attests (truncated or grown there).

    Not a cut: fetching it again would never finish. ``found`` is the device's size
    (``Content-Range: bytes a-b/<found>``); the caller may fetch that much, for the report.
    """

    def __init__(self, rel: str, expected: int, found: int) -> None:
        super().__init__(f"{rel}: the device has {found} bytes, the journal attests {expected}")
        self.rel, self.expected, self.found = rel, expected, found


class StoreWriteError(Exception):
    """Writing a download to the station's disk failed (disk full, I/O error): not a link problem.

    ``__cause__`` is the OSError; what was written before it stays as a partial for resuming."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(f"cannot write to the station's store: {exc}")
        self.errno = exc.errno


class _DiskWriter:
    """Writes downloaded chunks in a thread of its own, so the network and the disk overlap.

    The order of the queue is the order of the bytes. After a file's last byte the thread
    fsyncs it, then reads it back from disk and hashes it: the verifier's own check of the
    file (``recorder.verify``), done while the next file downloads; ``digests`` holds the
    result with the file's identity (device, inode, size, mtime), which the verifier
    accepts only while the file is still that same, unchanged inode. The first error stops
    the thread's work and is raised (as StoreWriteError) by the next ``submit`` or ``drain``.
    """

    def __init__(self) -> None:
        self.jobs: queue.Queue[tuple[Callable[..., object], tuple[Any, ...]] | None] = queue.Queue(_IN_FLIGHT)
        # the chunk buffers, reused: a download takes one (``take``), the thread gives it back
        # once written; no buffer is allocated (and zero-filled, and faulted in) per chunk
        self.free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(_IN_FLIGHT + 2):
            self.free.put(bytearray(_CHUNK))
        self._hash_buf = bytearray(_CHUNK)
        self.error: OSError | None = None
        self.digests: dict[str, KnownDigest] = {}
        self.thread = threading.Thread(target=self._run, name="dock-disk-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            fn, args = job
            try:
                if self.error is None or fn in (self.finish, self.write):   # a file is always closed,
                    fn(*args)
            except OSError as exc:
                self.error = self.error or exc
            finally:
                self.jobs.task_done()
        self.jobs.task_done()

    def _raise(self) -> None:
        if self.error is not None:
            exc, self.error = self.error, None
            raise StoreWriteError(exc) from exc

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        self._raise()
        self.jobs.put((fn, args))

    def drain(self) -> None:
        """Wait until everything submitted is on disk (fsynced) and hashed."""
        self.jobs.join()
        self._raise()

    def take(self) -> bytearray:
        """A free chunk buffer (waits while all are queued for the disk)."""
        return self.free.get()

    def write(self, out: IO[bytes], buf: bytearray, n: int) -> None:
        """(in the thread) Write ``buf[:n]`` to ``out``; the buffer is free again afterwards."""
        try:
            if self.error is None:   # a buffer always comes back, written or not
                with memoryview(buf) as view:
                    out.write(view[:n])
        finally:
            self.free.put(buf)

    def finish(self, out: IO[bytes], dest: Path, complete: bool) -> None:
        """(in the thread) A file's last chunk was written: fsync and close it; hash it if complete."""
        try:
            out.flush()
            os.fsync(out.fileno())
        finally:
            out.close()
        if complete and self.error is None:
            h = hashlib.sha256()
            with open(dest, "rb", buffering=0) as f:
                before = os.fstat(f.fileno())
                buf = self._hash_buf
                with memoryview(buf) as view:
                    while n := f.readinto(buf):
                        h.update(view[:n])
            self.digests[str(dest)] = KnownDigest.of_stat(before, h.hexdigest())

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()


def _range_total(header: str | None) -> int | None:
    """The complete length from ``Content-Range: bytes a-b/N`` (None if absent or unparsable)."""
    total = (header or "").rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


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
        self.device_cert_der: bytes | None = None   # the certificate it presented (kept for exports, S7)
        # files the device served in full over the current TLS connection: the device purges
        # only those (it counts the same way), so the receipt names only those
        self.served: set[str] = set()
        self._writer: _DiskWriter | None = None

    @property
    def writer(self) -> _DiskWriter:
        if self._writer is None:
            self._writer = _DiskWriter()
        return self._writer

    def drain(self) -> dict[str, KnownDigest]:
        """Wait for every fetched byte to be on disk (fsynced); returns the SHA-256 read back from
        disk of each file fetched complete, by destination path (``KnownDigest``). Raises
        StoreWriteError if writing failed."""
        if self._writer is None:
            return {}
        self._writer.drain()
        return dict(self._writer.digests)

    def shutdown(self) -> None:
        """Close the connection and stop the disk writer (after draining it)."""
        self.close()
        if self._writer is not None:
            try:
                self._writer.drain()
            finally:
                self._writer.close()
                self._writer = None

    # ---- connection ---------------------------------------------------------------------
    def connect(self) -> str:
        """Connect, authenticate both ways, pin the device key. Returns the device id."""
        self.close()
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        try:
            conn.connect()
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            # closed before the handshake finished: the device was busy (its connection slots are
            # bounded) or the link dropped, not a refusal of this dock: worth trying again
            conn.close()
            raise LinkInterrupted(f"{self.host}:{self.port} closed the connection during the TLS "
                                  f"handshake: {exc}") from exc
        except ssl.SSLError as exc:
            conn.close()
            raise DeviceRefused(f"TLS handshake with {self.host}:{self.port} failed: {exc}") from exc
        except OSError as exc:
            conn.close()
            raise LinkInterrupted(f"cannot reach {self.host}:{self.port}: {exc}") from exc
        self._await_session(conn)
        # CERT_REQUIRED: the handshake succeeded, so the device presented a certificate
        cert = x509.load_der_x509_certificate(cast(bytes, conn.sock.getpeercert(binary_form=True)))
        key = _ed25519_key(cert)
        device_id = device_id_for(key) if key is not None else None
        pinned = self.known_key(device_id) if device_id else None
        if key is None or device_id is None or pinned is None:
            conn.close()
            raise DeviceRefused(f"device {device_id or '(non-Ed25519 key)'} is not in this dock's registry")
        if raw_public_key(load_public_key_pem(pinned)) != raw_public_key(key):
            conn.close()
            raise DeviceRefused(f"device {device_id} presented a key other than the registered one")
        self.conn, self.device_id, self.device_pem = conn, device_id, pinned
        self.device_cert_der = cast(bytes, conn.sock.getpeercert(binary_form=True))
        self.served = set()
        return device_id

    def _await_session(self, conn: http.client.HTTPSConnection) -> None:
        """TLS 1.3: the client is done with the handshake before the device has checked its
        certificate. The device then sends its session tickets, or closes (busy, revoked,
        evicted while the link is flooded): wait briefly for either, so a close is a
        LinkInterrupted here (retried by ``--wait``) rather than a cut first request."""
        sock = conn.sock
        ready, _, _ = select.select([sock], [], [], min(self.timeout, 2.0))
        if not ready:
            return
        sock.setblocking(False)
        try:
            data = sock.recv(1)
        except ssl.SSLWantReadError:
            data = None                    # tickets read, no application data: the session is up
        except ssl.SSLError as exc:        # an alert: the device refused this dock
            conn.close()
            raise DeviceRefused(f"the device refused this dock: {exc}") from exc
        except OSError as exc:
            conn.close()
            raise LinkInterrupted(f"{self.host}:{self.port} closed the connection after the TLS "
                                  f"handshake: {exc}") from exc
        finally:
            if conn.sock is not None:
                conn.sock.settimeout(self.timeout)
        if data == b"":
            conn.close()
            raise LinkInterrupted(f"{self.host}:{self.port} closed the connection after the TLS handshake "
                                  "(busy, or this dock is not accepted)")
        if data:
            conn.close()
            raise DeviceProtocolError("the device sent data before any request")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        if self.conn is None or self.conn.sock is None:
            # never let http.client reopen the connection by itself: a new TLS session is a
            # new connect() (device key pinned again, served files counted afresh)
            self.connect()
        conn = cast(http.client.HTTPSConnection, self.conn)   # connect() set it (or raised)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            return conn.getresponse()
        except ssl.SSLError as exc:   # TLS 1.3: the device rejects a client certificate after the handshake
            self.close()
            raise DeviceRefused(f"the device refused this dock: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise LinkInterrupted(f"{method} {path}: {exc}") from exc

    def _json(self, method: str, path: str, parse: Callable[[int, bytes], _T],
              body: bytes | None = None) -> tuple[int, _T]:
        """One request whose answer is a JSON body of the protocol, parsed strictly by ``parse``."""
        resp = self._request(method, path, body,
                             {"Content-Type": protocol.JSON_CONTENT_TYPE} if body else None)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise LinkInterrupted(f"{method} {path}: {exc}") from exc
        try:
            return resp.status, parse(resp.status, data)
        except protocol.ProtocolViolation as exc:
            raise DeviceProtocolError(f"{method} {path}: answer ({resp.status}) is not the dock protocol: "
                                      f"{exc.reason}: {exc}; {data[:300]!r}") from exc

    # ---- protocol ------------------------------------------------------------------------
    def manifest(self) -> protocol.Manifest:
        status, doc = self._json("GET", protocol.MANIFEST_PATH, protocol.parse_manifest_answer)
        if not isinstance(doc, protocol.Manifest) or doc.device != self.device_id:
            raise DeviceProtocolError(f"bad manifest ({status}): {doc}")
        return doc

    def get_raw(self, rel: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request for a path as given (attack tests, diagnostics)."""
        resp = self._request("GET", protocol.file_path(rel, quoted=False), headers=headers)
        return resp.status, resp.read()

    def request_raw(self, method: str, path: str) -> tuple[int, bytes]:
        resp = self._request(method, path)
        data = resp.read()
        if resp.will_close:
            self.close()
        return resp.status, data

    def fetch(self, rel: str, dest: Path, size: int, on_bytes: Callable[[int], None] = lambda n: None,
              wait: bool = True) -> tuple[int, int]:
        """Bring ``dest`` to ``size`` bytes of ``rel``, resuming from what is there.

        Returns (bytes transferred now, bytes already there). Raises LinkInterrupted on a cut
        (what arrived so far is fsynced and kept), StoreWriteError if the disk refuses.
        The bytes are written by a thread of the client's; with ``wait`` (the default) they are
        on disk when this returns, else the next ``drain()`` waits for them (and the fsync and
        the read-back hash of this file overlap the next download).
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        have = dest.stat().st_size if dest.exists() else 0
        if have > size:
            log.warning("%s: partial copy longer than the file (%d > %d); starting again", rel, have, size)
            os.truncate(dest, 0)
            have = 0
        if have == size:
            return 0, have
        resp = self._request("GET", protocol.file_path(rel), headers={"Range": f"bytes={have}-{size - 1}"})
        if resp.status == 416 and have:
            resp.read()            # the device's file is now shorter than what we hold: start again
            log.warning("%s: partial copy longer than the file on the device; starting again", rel)
            os.truncate(dest, 0)
            return self.fetch(rel, dest, size, on_bytes)
        total = _range_total(resp.getheader("Content-Range")) if resp.status == 206 else None
        if total is not None and total != size:
            self.close()           # do not read a body of the wrong length; the next request reconnects
            raise FileSizeDiffers(rel, size, total)
        if resp.status != 206:
            body = resp.read()
            raise DeviceProtocolError(f"GET {rel}: status {resp.status}: {body[:200]!r}")
        got = 0
        w = self.writer
        out = open(dest, "ab")
        try:
            while have + got < size:
                buf = w.take()
                try:
                    with memoryview(buf) as view:
                        n = resp.readinto(view[:min(_CHUNK, size - have - got)])
                except (OSError, http.client.HTTPException, socket.timeout) as exc:
                    w.free.put(buf)
                    self.close()
                    raise LinkInterrupted(f"{rel}: cut at {have + got} of {size} bytes: {exc}") from exc
                if not n:
                    w.free.put(buf)
                    self.close()
                    raise LinkInterrupted(f"{rel}: connection closed at {have + got} of {size} bytes")
                try:
                    w.submit(w.write, out, buf, n)
                except BaseException:
                    w.free.put(buf)
                    raise
                got += n
                on_bytes(n)
        finally:
            complete = have + got == size
            w.jobs.put((w.finish, (out, dest, complete)))
            if not complete or wait:
                w.drain()          # a cut: what arrived is on disk (fsynced) before anyone resumes it
        if have == 0 and got == size:
            self.served.add(rel)
        return got, have

    def reread(self, rel: str, sha256: str, size: int) -> bool:
        """Have the device serve ``rel`` in full again in this session (the device purges only
        files served in full in the receipt's session: after a cut, a resume or a reconnect),
        checking it is still ``sha256``/``size``. True if it is (then it is in ``served``)."""
        resp = self._request("GET", protocol.file_path(rel), headers={"Range": f"bytes=0-{max(size - 1, 0)}"})
        if resp.status != 206:
            resp.read()
            return False
        h, n = hashlib.sha256(), 0
        try:
            while n < size:
                chunk = resp.read(min(_CHUNK, size - n))
                if not chunk:
                    raise LinkInterrupted(f"{rel}: connection closed at {n} of {size} bytes")
                h.update(chunk)
                n += len(chunk)
        except (OSError, http.client.HTTPException, socket.timeout) as exc:
            self.close()
            raise LinkInterrupted(f"{rel}: cut at {n} of {size} bytes: {exc}") from exc
        if n == size and h.hexdigest() == sha256:
            self.served.add(rel)
            return True
        return False

    def push_crl(self, crl: bytes) -> tuple[int, protocol.CrlAnswer]:
        """Hand the device the agency's current CRL (it keeps it if the CA signed it and it is newer)."""
        return self._json("POST", protocol.CRL_PATH, protocol.parse_crl_answer, crl)

    def send_receipt(self, wire: bytes) -> tuple[int, protocol.ReceiptAnswer]:
        """Hand the device a signed receipt (``recorder.receipt.sign_receipt``); its answer."""
        return self._json("POST", protocol.RECEIPT_PATH, protocol.parse_receipt_answer, wire)

    def send_assignment(self, wire: bytes) -> tuple[int, protocol.AssignmentAnswer]:
        """Hand the device a signed assignment or release (``recorder.assignment``); its answer."""
        return self._json("POST", protocol.ASSIGNMENT_PATH, protocol.parse_assignment_answer, wire)


def _ed25519_key(cert: x509.Certificate) -> Ed25519PublicKey | None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    key = cert.public_key()
    return key if isinstance(key, Ed25519PublicKey) else None

