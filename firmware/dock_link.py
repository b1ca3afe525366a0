"""The device end of the dock link: read-only evidence over mutually authenticated TLS (D10, D11).

While the device sits in its dock, the dock station (the only authorised path
out, D10) pulls the journal and sealed segments from here, verifies them, and
hands back a signed receipt; only that receipt frees space (``EvidenceStore.reclaim``).

Why HTTPS from the standard library (``ssl`` + ``http.server``): TLS 1.3 with
client certificates gives both-way authentication with a well-reviewed
implementation (OpenSSL), HTTP ``Range`` gives resumable downloads for free,
and neither end needs a dependency beyond ``cryptography``. The server key is
the device's own Ed25519 identity key, so the dock pins the very key it
verifies the journal with.

What is served, and nothing else:

* ``GET /v1/manifest``: device id, journal size and head, a fresh one-time
  receipt nonce, and the attested files present on the device.
* ``GET /v1/files/<path>`` (``Range: bytes=N-`` or ``N-M``): ``journal.log`` or a
  file the journal attests. Nothing unattested (``.part`` files being written),
  no symlinks, no path outside the evidence directory.
* ``POST /v1/receipt``: a signed dock receipt; the purge result or the named refusal.

Anything else is refused: ``DELETE``/``PUT``/``PATCH`` go to the store's own
refusals (journaled ``tamper-attempt``), and a request for a path outside the
evidence directory is journaled the same way. Clients without an agency-issued
dock (clientAuth) certificate never get past the TLS handshake.

Bind address: the gadget interface's address only (``[dock] listen_address``);
wildcard addresses are refused by the settings, and ``interface`` additionally
pins the socket to that network device (SO_BINDTODEVICE, needs CAP_NET_RAW).

Service integration::

    link = DockLink(settings, evidence, key_file=identity_key_dir / "device-key.pem")
    link.start()      # when the USB host configured the gadget (docked)
    link.stop()       # when undocked, or on shutdown
"""
from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from recorder import records, receipt
from recorder.journal import JOURNAL_NAME, JournalError
from recorder.records import MalformedLine
from recorder.store import StoreError, TamperRefused
from recorder.settings import Section

log = logging.getLogger(__name__)

API = "/v1"
_CHUNK = 256 * 1024


class DockLinkError(RuntimeError):
    """The link cannot start (bad certificate, key mismatch, address not available)."""


@dataclass(frozen=True)
class DockSettings(Section):
    """The dock link on the device: where it listens and whom it trusts (D10, D11)."""

    SECTION = "dock"

    enabled: bool = True
    listen_address: str = "10.77.0.1"
    port: int = 8443
    interface: str = ""
    ca_file: str = "/etc/bodycam/dock/agency-ca.pem"
    cert_file: str = "/etc/bodycam/dock/device-cert.pem"
    key_file: str = ""
    receipt_ttl_s: float = 900.0
    idle_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError("[dock] enabled must be true or false")
        try:
            addr = ipaddress.ip_address(self.listen_address)
        except (ValueError, TypeError):
            raise ValueError(f"[dock] listen_address must be an IP address, got {self.listen_address!r}") \
                from None
        if addr.is_unspecified or addr.is_multicast:
            raise ValueError(f"[dock] listen_address {addr} would listen beyond the dock link; "
                             "give the gadget interface's own address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"[dock] port must be 0..65535 (0: any free port), got {self.port!r}")
        for k in ("interface", "ca_file", "cert_file", "key_file"):
            if not isinstance(getattr(self, k), str):
                raise ValueError(f"[dock] {k} must be a string")
        if "/" in self.interface or len(self.interface) > 15:
            raise ValueError(f"[dock] interface must be a network interface name, got {self.interface!r}")
        for k, lo in (("receipt_ttl_s", 10), ("idle_timeout_s", 1)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
                raise ValueError(f"[dock] {k} must be a number >= {lo}, got {v!r}")



def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 8

    def __init__(self, address, handler, link: "DockLink") -> None:
        self.link = link
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler, bind_and_activate=False)
        if link.settings.interface:
            try:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                       link.settings.interface.encode() + b"\0")
            except OSError as exc:
                self.socket.close()
                raise DockLinkError(f"cannot bind to interface {link.settings.interface}: {exc}") from exc
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(self.link.settings.idle_timeout_s)
        return self.link._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address) -> None:
        log.warning("dock link: connection from %s ended with an error", client_address[0],
                    exc_info=log.isEnabledFor(logging.DEBUG))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bodycam-dock-link"
    sys_version = ""
    server: _Server

    # ---- session --------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        self.dock_id = None
        try:
            self.request.do_handshake()
            der = self.request.getpeercert(binary_form=True)
            cert = x509.load_der_x509_certificate(der)
            receipt.check_dock_certificate(cert, self.server.link.ca_cert)
            self.dock_id = receipt.dock_id_for_cert(cert)
        except (ssl.SSLError, OSError, ValueError, receipt.UntrustedDock) as exc:
            log.warning("dock link: refused connection from %s: %s", self.client_address[0], exc)
            self.close_connection = True
            self.rfile = self.wfile = None

    def handle(self) -> None:
        if self.dock_id is None:
            return
        super().handle()

    def finish(self) -> None:
        if self.dock_id is not None:
            super().finish()

    def log_message(self, fmt: str, *args) -> None:
        log.debug("dock link %s: " + fmt, self.dock_id, *args)

    # ---- responses --------------------------------------------------------------
    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body, sort_keys=True).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        log.warning("dock link: %s %s refused (%s): %s", self.command, self.path, reason, detail)
        self._json(status, {"refused": reason, "detail": detail})

    # ---- methods --------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == f"{API}/manifest":
            return self._json(200, self.server.link.manifest())
        if path.startswith(f"{API}/files/"):
            return self._get_file(unquote(path[len(f"{API}/files/"):]))
        self._refuse(404, "not-found", "no such endpoint")

    def do_POST(self) -> None:
        if urlsplit(self.path).path != f"{API}/receipt":
            return self._write_attempt()
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._refuse(411, "length-required", "a receipt needs Content-Length")
        if not 0 < length <= receipt.MAX_WIRE_BYTES:
            self.close_connection = True
            return self._refuse(413, "too-large", f"a receipt is at most {receipt.MAX_WIRE_BYTES} bytes")
        body = self.rfile.read(length)
        status, result = self.server.link.accept_receipt(body, self.dock_id)
        self._json(status, result)

    def do_DELETE(self) -> None:
        self._write_attempt()

    do_PUT = do_PATCH = do_DELETE

    def _write_attempt(self) -> None:
        """Every write or delete is refused; through the store, so it is journaled (D9)."""
        self.close_connection = True   # never read an unwanted body
        target = unquote(urlsplit(self.path).path)
        if target.startswith(f"{API}/files/"):
            target = target[len(f"{API}/files/"):]
        store = self.server.link.evidence.store
        actor = f"dock:{self.dock_id}"
        try:
            if self.command == "DELETE":
                store.remove(target if records.safe_relpath(target) else str(target), actor=actor)
            else:
                store.overwrite(target if records.safe_relpath(target) else str(target), actor=actor)
        except TamperRefused as exc:
            return self._refuse(405, "read-only", str(exc))
        except StoreError as exc:   # pragma: no cover - remove/overwrite always raise TamperRefused
            return self._refuse(405, "read-only", str(exc))

    def _get_file(self, rel: str) -> None:
        link = self.server.link
        if not records.safe_relpath(rel):
            link.journal_refused_read(rel, self.dock_id)
            return self._refuse(403, "outside-evidence", f"{rel!r} is not a path inside the evidence directory")
        if rel != JOURNAL_NAME and rel not in link.servable():
            return self._refuse(404, "not-attested", f"{rel} is not a file the journal attests")
        path = link.root / rel
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            return self._refuse(404, "not-found", f"{rel}: {exc.strerror}")
        try:
            size = os.fstat(fd).st_size
            start, end = self._range(size)
            if start is None:
                return self._refuse(416, "bad-range", f"range not satisfiable for {size} bytes")
            self.send_response(206 if self.headers.get("Range") else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            if self.headers.get("Range"):
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}" if end > start
                                 else f"bytes */{size}")
            self.end_headers()
            pos = start
            while pos < end:
                chunk = os.pread(fd, min(_CHUNK, end - pos), pos)
                if not chunk:
                    break
                self.wfile.write(chunk)
                pos += len(chunk)
        finally:
            os.close(fd)

    def _range(self, size: int) -> tuple[int | None, int]:
        header = self.headers.get("Range")
        if not header:
            return 0, size
        unit, _, spec = header.partition("=")
        first, dash, last = spec.partition("-")
        if unit.strip() != "bytes" or not dash or "," in spec or not first.strip().isdigit():
            return None, 0
        start = int(first)
        end = int(last) + 1 if last.strip().isdigit() else size
        if start > size or end < start:
            return None, 0
        return start, min(end, size)


class DockLink:
    """The link service. ``start()`` when docked, ``stop()`` when undocked; both idempotent."""

    def __init__(self, settings: DockSettings, evidence, key_file: Path | str | None = None) -> None:
        self.settings = settings
        self.evidence = evidence
        self.root = Path(evidence.store.root)
        self.key_file = Path(settings.key_file or key_file or "")
        self.nonces = receipt.NonceBook(settings.receipt_ttl_s)
        self.ca_cert: x509.Certificate | None = None
        self._tls: ssl.SSLContext | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._servable: tuple[int, frozenset[str]] = (-1, frozenset())
        self._lock = threading.Lock()

    # ---- lifecycle ----------------------------------------------------------------------
    def _load_tls(self) -> None:
        s = self.settings
        if not str(self.key_file):
            raise DockLinkError("no device key file for the dock link (identity key_dir or [dock] key_file)")
        try:
            self.ca_cert = x509.load_pem_x509_certificate(Path(s.ca_file).read_bytes())
            cert = x509.load_pem_x509_certificate(Path(s.cert_file).read_bytes())
        except (OSError, ValueError) as exc:
            raise DockLinkError(f"cannot load the dock link certificates: {exc}") from exc
        if _spki(cert.public_key()) != _spki(
                serialization.load_pem_public_key(self.evidence.signer.public_key_pem())):
            raise DockLinkError(f"{s.cert_file} is not a certificate for this device's key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_cert_chain(s.cert_file, str(self.key_file))
            ctx.load_verify_locations(s.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise DockLinkError(f"cannot set up TLS: {exc}") from exc
        self._tls = ctx

    def start(self) -> None:
        """Listen on the configured address. Raises DockLinkError if that is impossible."""
        with self._lock:
            if self._server is not None:
                return
            self._load_tls()
            try:
                server = _Server((self.settings.listen_address, self.settings.port), _Handler, self)
            except OSError as exc:
                raise DockLinkError(f"cannot listen on {self.settings.listen_address}:"
                                    f"{self.settings.port}: {exc.strerror or exc}") from exc
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                            name="dock-link", daemon=True)
            self._thread.start()
        log.info("dock link listening on %s:%d", *self.address)

    def stop(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread:
            thread.join(timeout=5)
        log.info("dock link stopped")

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return self.settings.listen_address, self.settings.port
        return self._server.server_address[:2]

    # ---- what the handler asks ------------------------------------------------------------
    def _scan(self) -> tuple[int, str | None, int, dict[str, int]]:
        """(whole-line journal size, head hash, head seq, attested files present -> size)."""
        journal = self.root / JOURNAL_NAME
        data = journal.read_bytes()
        data = data[:data.rfind(b"\n") + 1]
        present: dict[str, int] = {}
        head_seq, head_hash = -1, None
        released: set[str] = set()
        for line in data.splitlines(keepends=True):
            rec = records.parse_line(line)
            head_seq, head_hash = rec.seq, rec.hash
            for f in records.attested_files(rec):
                present[f["path"]] = f["size"]
            if rec.type == receipt.PURGE:
                released |= {f.get("path") for f in rec.payload.get("files", []) if isinstance(f, dict)}
        present = {p: s for p, s in present.items() if p not in released
                   and (self.root / p).is_file() and not (self.root / p).is_symlink()}
        return len(data), head_hash, head_seq, present

    def servable(self) -> frozenset[str]:
        size = (self.root / JOURNAL_NAME).stat().st_size
        if self._servable[0] != size:
            _, _, _, present = self._scan()
            self._servable = (size, frozenset(present))
        return self._servable[1]

    def manifest(self) -> dict:
        try:
            size, head_hash, head_seq, present = self._scan()
        except (OSError, MalformedLine) as exc:
            log.error("dock link: cannot read the journal for the manifest: %s", exc)
            return {"error": f"journal unreadable: {exc}"}
        self._servable = ((self.root / JOURNAL_NAME).stat().st_size, frozenset(present))
        return {"v": 1, "device": self.evidence.journal.device_id,
                "journal": {"path": JOURNAL_NAME, "size": size,
                            "head": {"seq": head_seq, "hash": head_hash}},
                "files": [{"path": p, "size": s} for p, s in sorted(present.items())],
                "nonce": self.nonces.issue()}

    def accept_receipt(self, wire: bytes, dock_id: str) -> tuple[int, dict]:
        validator = receipt.ReceiptValidator(self.evidence.journal.device_id, self.ca_cert, self.nonces)
        try:
            result = self.evidence.store.reclaim(wire, validator=validator, peer_dock_id=dock_id)
        except receipt.ReceiptRefused as exc:
            return 403, {"refused": exc.reason, "detail": str(exc), "removed": []}
        except (JournalError, StoreError, OSError) as exc:
            log.error("dock link: receipt could not be processed: %s", exc)
            return 500, {"refused": "device-error", "detail": str(exc), "removed": []}
        return 200, {"accepted": True, "receipt_seq": result.receipt_seq, "purge_seq": result.purge_seq,
                     "removed": [f.path for f in result.removed], "not_removed": list(result.not_removed),
                     "bytes_freed": result.bytes_freed}

    def journal_refused_read(self, rel: str, dock_id: str | None) -> None:
        try:
            self.evidence.journal.append(records.TAMPER_ATTEMPT, {
                "action": "dock-read-outside", "path": str(rel)[:512], "actor": f"dock:{dock_id}",
                "exists": False, "refused": True})
        except (JournalError, ValueError) as exc:
            log.error("dock link: could not journal a refused read: %s", exc)
