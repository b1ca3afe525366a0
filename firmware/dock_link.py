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
  Only files served in full *in this TLS session* are purged (bytes served are
  counted per file per connection, from one same unchanged file); the rest of the
  receipt is refused by name. Such a file still the inode, size, mtime and ctime it was
  served as is not hashed again before it is purged: the dock verified those very bytes
  (``recorder.receipt.ServedIdentity``); any other is.
* ``POST /v1/crl``: the agency's current CRL (kept if the CA signed it and it is newer).
* ``POST /v1/assignment``: a dock-signed assignment of the device to an officer, or its
  release (check-out / check-in at the station, D12; ``firmware.handover``). Checked like a
  receipt (agency dock of this session, signature, this device, this session's nonce) and
  journaled (``assignment`` / ``assignment-end``, refused: ``assignment-refused``).

The paths and every JSON body (manifest, answers, refusals) are defined once, for this
end and the dock station's, in ``recorder.dock_protocol``.

Anything else is refused: ``DELETE``/``PUT``/``PATCH`` go to the store's own
refusals (journaled ``tamper-attempt``), and a request for a path outside the
evidence directory is journaled the same way; repeats are counted, not journaled
one by one (``RefusalJournal``). Clients without an agency-issued, unrevoked dock
(clientAuth) certificate never get past the TLS handshake (journaled ``dock-auth-refused``).

Under attack: at most ``max_handshakes`` connections not yet authenticated (a new
one evicts the oldest silent one) and ``max_sessions`` authenticated ones; the
handshake, each request's arrival and each response have whole deadlines (not
per socket operation), enforced by the serve loop; accept() errors back off.

Bind address: the gadget interface's address only (``[dock] listen_address``);
wildcard addresses are refused by the settings, and ``interface`` additionally
pins the socket to that network device (SO_BINDTODEVICE, needs CAP_NET_RAW).

Service integration::

    link = DockLink(settings, evidence, key_file=identity_key_dir / "device-key.pem")
    link.start()      # when the USB host configured the gadget (docked)
    link.stop()       # when undocked, or on shutdown
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import signal
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from firmware.dock_settings import DockSettings as DockSettings  # re-exported: the link is built from it
from firmware.handover import Handover
from recorder import assignment as assignment_mod
from recorder import dock_protocol as protocol
from recorder import receipt, records
from recorder.journal import JOURNAL_NAME, JournalError
from recorder.records import MalformedLine
from recorder.store import StoreError, TamperRefused

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import (
        CertificateIssuerPublicKeyTypes,
        CertificatePublicKeyTypes,
        PublicKeyTypes,
    )

    from firmware.evidence import Evidence
    from recorder.journal import Journal

log = logging.getLogger(__name__)

_CHUNK = 1 << 20                  # bytes per read and TLS write of a served file (one reused buffer)
ACCEPT_BACKOFF_MIN_S = 0.05       # accept() failing (EMFILE, ...): sleep, doubling up to the max
ACCEPT_BACKOFF_MAX_S = 1.0
HANDSHAKE_GRACE_S = 0.1           # a pending handshake younger than this is never evicted
BUSY_PAUSE_S = 0.002               # after turning a connection away (all slots busy), accept nothing this long
MAX_JOURNALED_CHARS = 256         # paths and reasons in refusal records are cut to this
REFUSAL_WINDOW_S = 60.0           # repeated refusals within a window are journaled as one count
REFUSAL_RECORDS_PER_WINDOW = 16   # at most this many individual refusal records per window
REFUSAL_KEYS_PER_WINDOW = 32      # distinct (action, actor) counted per window; more share one count
DOCK_AUTH_REFUSED = "dock-auth-refused"     # TLS/certificate refusals (failed, revoked, busy)
DOCK_CRL_INSTALLED = "dock-crl-installed"


class DockLinkError(RuntimeError):
    """The link cannot start (bad certificate, key mismatch, address not available)."""


def _spki(public_key: PublicKeyTypes | CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


class _Conn:
    """One accepted connection as the server's reaper sees it: its socket, phase and deadline."""

    __slots__ = ("sock", "addr", "accepted", "phase", "deadline", "lock", "closed", "hello")

    def __init__(self, sock: ssl.SSLSocket, addr: tuple[Any, ...], deadline: float) -> None:
        self.sock, self.addr = sock, addr
        self.accepted = time.monotonic()
        self.phase = "handshake"           # -> "session" once authenticated (holds a session slot)
        self.deadline: float | None = deadline
        self.lock = threading.Lock()
        self.closed = False
        self.hello = False                 # a whole TLS ClientHello has arrived (evicted last)

    def cut(self) -> None:
        """Shut the socket down from another thread: the handler's blocked read/write returns."""
        with self.lock:
            if not self.closed:
                try:   # the plain socket's shutdown (SSLSocket.shutdown would drop its SSL object)
                    socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                try:
                    self.sock.close()
                except OSError:
                    pass


_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Server(ThreadingHTTPServer):
    """One thread per connection, but few connections: at most ``max_handshakes`` not yet
    authenticated and ``max_sessions`` authenticated at once; every phase has a whole deadline
    (enforced by ``service_actions``, which shuts the socket down), and accept errors back off."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128   # queued in the kernel, no descriptor: a flood waits there, SYNs are not dropped

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], link: DockLink) -> None:
        self.link = link
        self._conns: dict[int, _Conn] = {}
        self._conns_lock = threading.Lock()
        self._accept_backoff = 0.0
        self._accept_errors = 0
        self._last_accept_log = 0.0
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
            # non-blocking: a connection reset between select() and accept() must not block the
            # serve loop in accept() (then it would never see shutdown or run its deadlines)
            self.socket.setblocking(False)
        except OSError:
            self.server_close()
            raise

    # ---- accepting ------------------------------------------------------------------------
    # The requests of this server are the _Conn objects get_request makes; typeshed fixes
    # BaseServer's request type to a socket, hence the override ignores below.
    def get_request(self) -> tuple[_Conn, Any]:   # type: ignore[override]
        try:
            sock, addr = self.socket.accept()
        except OSError as exc:
            if exc.errno in _ACCEPT_ERRNOS:
                # out of descriptors/buffers: do not spin on the still-readable listening socket
                self._accept_errors += 1
                self._accept_backoff = min(ACCEPT_BACKOFF_MAX_S,
                                           max(ACCEPT_BACKOFF_MIN_S, self._accept_backoff * 2))
                now = time.monotonic()
                if now - self._last_accept_log >= 10:
                    self._last_accept_log = now
                    log.error("dock link: accept failed (%s), %d times; backing off %.2f s",
                              exc.strerror, self._accept_errors, self._accept_backoff)
                time.sleep(self._accept_backoff)
            raise
        self._accept_backoff = 0.0
        s = self.link.settings
        try:
            sock.settimeout(min(s.handshake_timeout_s, s.idle_timeout_s))
            tls = self.link.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError):
            sock.close()
            raise OSError("could not set up the accepted connection") from None
        return _Conn(tls, addr, time.monotonic() + s.handshake_timeout_s), addr

    def verify_request(self, request: _Conn, client_address: Any) -> bool:   # type: ignore[override]
        """Admit the connection if a handshake slot is free; else evict the oldest pending
        handshake if it had its grace time, else turn the newcomer away."""
        s = self.link.settings
        now = time.monotonic()
        with self._conns_lock:
            pending = [c for c in self._conns.values() if c.phase == "handshake"]
            if len(pending) >= s.max_handshakes:
                # silent ones (no whole ClientHello yet) go first: a dock sends its hello at once
                silent = [c for c in pending if not c.hello]
                oldest = min(silent or pending, key=lambda c: c.accepted)
                if now - oldest.accepted < HANDSHAKE_GRACE_S:
                    refuse = True
                else:
                    refuse = False
                    oldest.phase = "evicted"
                    oldest.cut()
            else:
                refuse = False
            if not refuse:
                self._conns[id(request)] = request
        if refuse:
            self.link.note_refusal("dock-link-busy", f"ip:{client_address[0]}",
                                   {"reason": "all handshake slots busy"})
            time.sleep(BUSY_PAUSE_S)   # leave the rest in the listen backlog for a moment: no churn
            return False
        return True

    def close_request(self, request: _Conn) -> None:   # type: ignore[override]
        request.close()

    def shutdown_request(self, request: _Conn) -> None:   # type: ignore[override]
        with self._conns_lock:
            self._conns.pop(id(request), None)
        request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a cut or reset connection; not journaled (an authenticated dock's), and rate-limited
        now = time.monotonic()
        if now - getattr(self, "_last_error_log", 0.0) >= 1.0:
            self._last_error_log = now
            log.warning("dock link: connection from %s ended with an error", client_address[0],
                        exc_info=log.isEnabledFor(logging.DEBUG))

    # ---- slots and deadlines -------------------------------------------------------------------
    def open_session(self, conn: _Conn) -> bool:
        with self._conns_lock:
            if sum(1 for c in self._conns.values() if c.phase == "session") >= self.link.settings.max_sessions:
                return False
            conn.phase = "session"
            return True

    def service_actions(self) -> None:
        """Called by serve_forever every poll interval: cut connections past their deadline."""
        now = time.monotonic()
        with self._conns_lock:
            late = [c for c in self._conns.values() if c.deadline is not None and now > c.deadline]
        for c in late:
            c.deadline = None
            log.debug("dock link: %s from %s over its time limit; closed", c.phase, c.addr[0])
            c.cut()
        self.link.refusals.tick()

    def connection_count(self) -> dict[str, int]:
        with self._conns_lock:
            out: dict[str, int] = {}
            for c in self._conns.values():
                out[c.phase] = out.get(c.phase, 0) + 1
            return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bodycam-dock-link"
    sys_version = ""
    server: _Server

    # ---- session --------------------------------------------------------------
    def setup(self) -> None:
        self.conn: _Conn = self.request
        self.request = self.conn.sock
        link, s = self.server.link, self.server.link.settings
        self.dock_id: str | None = None
        self.nonces = receipt.NonceBook(s.receipt_ttl_s, max_outstanding=16)
        self.served: dict[str, list[list[int]]] = {}    # path -> merged [start, end) ranges sent
        self.idents: dict[str, receipt.ServedIdentity | None] = {}   # path -> the file those ranges came from
        self.session_end = 0.0
        peer = f"ip:{self.client_address[0]}"
        try:
            self._await_hello()
            self.request.do_handshake()
            der = self.request.getpeercert(binary_form=True)
            cert = x509.load_der_x509_certificate(der)
            receipt.check_dock_certificate(cert, link.ca)
            dock_id = receipt.dock_id_for_cert(cert)
            if link.is_revoked(cert):
                log.warning("dock link: refused revoked dock %s (serial %x) from %s",
                            dock_id, cert.serial_number, self.client_address[0])
                link.note_refusal("dock-revoked", f"dock:{dock_id}",
                                  {"serial": format(cert.serial_number, "x")})
                return self._drop()
        except (ssl.SSLError, OSError, ValueError, receipt.UntrustedDock) as exc:
            evicted = self.conn.phase == "evicted"
            first = link.note_refusal("dock-auth-failed", peer,
                                      {"reason": "evicted: handshake not finished" if evicted else _short(exc)})
            # logged like it is journaled: the first of a window, then counted (a flood must not
            # turn into a log flood either)
            (log.warning if first else log.debug)("dock link: refused connection from %s: %s%s",
                                                  self.client_address[0], exc,
                                                  "" if first else " (repeated; counted)")
            return self._drop()
        if not self.server.open_session(self.conn):
            log.warning("dock link: dock %s turned away: %d sessions already open", dock_id, s.max_sessions)
            link.note_refusal("dock-link-busy", f"dock:{dock_id}", {"reason": "all session slots busy"})
            return self._drop()
        self.dock_id = dock_id
        self.session_end = time.monotonic() + s.session_max_s
        # the handshake's short limit ends with it: from here each request has idle_timeout_s
        # (enforced whole by the reaper's deadlines), and a dock may pause that long between them
        self.request.settimeout(s.idle_timeout_s)
        super().setup()

    def _await_hello(self) -> None:
        """Wait (peeking, nothing consumed) until the client's first TLS record is here whole."""
        sock = self.request
        head = socket.socket.recv(sock, 5, socket.MSG_PEEK | socket.MSG_WAITALL)
        if len(head) == 5 and head[0] == 0x16:
            need = 5 + int.from_bytes(head[3:5], "big")
            if need <= 16389 and len(socket.socket.recv(sock, need, socket.MSG_PEEK | socket.MSG_WAITALL)) == need:
                self.conn.hello = True

    def _drop(self) -> None:   # before super().setup(): no rfile/wfile exist, handle() and finish() skip
        self.close_connection = True

    def handle(self) -> None:
        if self.dock_id is None:
            return
        super().handle()

    def handle_one_request(self) -> None:
        # the next request (line, headers and body) must arrive whole within idle_timeout_s
        s = self.server.link.settings
        self.conn.deadline = min(time.monotonic() + s.idle_timeout_s, self.session_end)
        super().handle_one_request()
        self.conn.deadline = min(time.monotonic() + s.idle_timeout_s, self.session_end)

    def _respond_within(self, nbytes: int) -> None:
        s = self.server.link.settings
        self.conn.deadline = min(time.monotonic() + s.request_timeout_s + nbytes / s.min_rate_bps,
                                 self.session_end)

    def finish(self) -> None:
        if self.dock_id is not None:
            super().finish()

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("dock link %s: " + fmt, self.dock_id, *args)

    # ---- responses --------------------------------------------------------------
    def _json(self, status: int, body: protocol._Body) -> None:
        data = body.to_json()
        self._respond_within(len(data))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        detail = detail if len(detail) <= 300 else detail[:300] + "..."
        log.warning("dock link: %s %s refused (%s): %s", self.command, self.path[:200], reason, detail)
        self._json(status, protocol.Refusal(reason, detail))

    # ---- methods --------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == protocol.MANIFEST_PATH:
            return self._json(200, self.server.link.manifest(self.nonces.issue))
        rel = protocol.file_rel(path)
        if rel is not None:
            return self._get_file(rel)
        self._refuse(404, protocol.NOT_FOUND, "no such endpoint")

    def _body(self, limit: int) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._refuse(411, protocol.LENGTH_REQUIRED, "a body needs Content-Length")
            return None
        if not 0 < length <= limit:
            self.close_connection = True
            self._refuse(413, protocol.TOO_LARGE, f"a body here is 1..{limit} bytes")
            return None
        return self.rfile.read(length)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == protocol.CRL_PATH:
            body = self._body(protocol.MAX_CRL_BYTES)
            if body is not None:
                self._json(*self.server.link.install_crl(body, self.dock_id))
            return
        if path == protocol.ASSIGNMENT_PATH:
            body = self._body(protocol.MAX_ASSIGNMENT_BYTES)
            if body is not None:
                self._json(*self.server.link.accept_assignment(body, self.dock_id, self.nonces))
            return
        if path != protocol.RECEIPT_PATH:
            return self._write_attempt()
        body = self._body(protocol.MAX_RECEIPT_BYTES)
        if body is None:
            return
        self.conn.deadline = None          # the device may hash files again: no client time counts
        served = self.served_in_full()
        status, result = self.server.link.accept_receipt(body, self.dock_id, self.nonces, served,
                                                         {p: i for p in served if (i := self.idents.get(p))})
        self._json(status, result)

    def do_DELETE(self) -> None:
        self._write_attempt()

    do_PUT = do_PATCH = do_DELETE

    def _write_attempt(self) -> None:
        """Every write or delete is refused; journaled (D9), repeated ones counted (``note_refusal``)."""
        self.close_connection = True   # never read an unwanted body
        target = unquote(urlsplit(self.path).path)
        if target.startswith(protocol.FILES_PREFIX):
            target = target[len(protocol.FILES_PREFIX):]
        link = self.server.link
        action = "remove" if self.command == "DELETE" else "overwrite"
        if not link.refusals.first(action, f"dock:{self.dock_id}", target):
            return self._refuse(405, protocol.READ_ONLY, "evidence is never deleted or modified on the device (D9)")
        store = link.evidence.store
        actor = f"dock:{self.dock_id}"
        try:
            if self.command == "DELETE":
                store.remove(target, actor=actor)
            else:
                store.overwrite(target, actor=actor)
        except TamperRefused as exc:
            return self._refuse(405, protocol.READ_ONLY, str(exc))
        except StoreError as exc:   # pragma: no cover - remove/overwrite always raise TamperRefused
            return self._refuse(405, protocol.READ_ONLY, str(exc))

    def served_in_full(self) -> frozenset[str]:
        return frozenset(p for p, ranges in self.served.items()
                         if ranges and ranges[0][0] == 0 and (i := self.idents.get(p)) and ranges[0][1] >= i.size)

    def _count_served(self, rel: str, ident: receipt.ServedIdentity, start: int, end: int,
                      unchanged: bool = True) -> None:
        """Count ``[start, end)`` of ``rel`` as sent from the file ``ident``. Ranges count together
        only while they come from one same, unchanged file: another inode, size or time (or a file
        that changed while it was sent: ``unchanged`` False) starts the count again."""
        if not unchanged:
            self.served[rel], self.idents[rel] = [], None
            return
        if end <= start:
            return
        if self.idents.get(rel) != ident:     # the file changed: what was sent before no longer counts
            self.served[rel] = []
            self.idents[rel] = ident
        merged: list[list[int]] = []
        for a, b in sorted(self.served[rel] + [[start, end]]):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.served[rel] = merged[:64]

    def _buffer(self) -> bytearray:
        """This connection's read buffer for file bodies (one, reused: no allocation per chunk)."""
        buf: bytearray | None = getattr(self, "_read_buf", None)
        if buf is None:
            buf = self._read_buf = bytearray(_CHUNK)
        return buf

    def _cork(self, on: bool) -> bool:
        """TCP_CORK on the connection (Linux); False where it is not available."""
        try:
            socket.socket.setsockopt(self.request, socket.IPPROTO_TCP, socket.TCP_CORK, int(on))
        except (AttributeError, OSError):
            return False
        return True

    def _get_file(self, rel: str) -> None:
        link = self.server.link
        if not records.safe_relpath(rel):
            link.journal_refused_read(rel, self.dock_id)
            shown = rel if len(rel) <= 100 else rel[:100] + "..."
            return self._refuse(403, protocol.OUTSIDE_EVIDENCE,
                                f"{shown!r} is not a path inside the evidence directory")
        if rel != JOURNAL_NAME and rel not in link.servable():
            return self._refuse(404, protocol.NOT_ATTESTED, f"{rel} is not a file the journal attests")
        path = link.root / rel
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            return self._refuse(404, protocol.NOT_FOUND, f"{rel}: {exc.strerror}")
        try:
            opened = receipt.ServedIdentity.of_stat(os.fstat(fd))
            size = opened.size
            header = self.headers.get("Range")
            try:
                start, end = _parse_range(header, size)
            except _BadRange as exc:
                return self._refuse(400, protocol.BAD_RANGE, str(exc))
            if start is None:
                return self._refuse(416, protocol.BAD_RANGE, f"range not satisfiable for {size} bytes")
            self._respond_within(end - start)
            self.send_response(206 if header else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            if header:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}" if end > start
                                 else f"bytes */{size}")
            # the body goes out corked: the 16 KiB TLS records leave in full-size TCP segments
            # (fewer packets for both ends to handle); uncorking in the end flushes the tail
            corked = self._cork(True) if end - start > _CHUNK else False
            self.end_headers()
            pos = start
            try:
                buf = self._buffer()
                view = memoryview(buf)
                while pos < end:
                    n = os.preadv(fd, [view[:min(_CHUNK, end - pos)]], pos)
                    if not n:
                        break
                    self.request.sendall(view[:n])
                    pos += n
            finally:
                if corked:
                    self._cork(False)
                if rel != JOURNAL_NAME:
                    self._count_served(rel, opened, start, pos,
                                       receipt.ServedIdentity.of_stat(os.fstat(fd)) == opened)
        finally:
            os.close(fd)


class _BadRange(ValueError):
    """A Range header that is not ``bytes=N-`` or ``bytes=N-M`` in ASCII digits (answered 400)."""


_RANGE = re.compile(r"bytes=([0-9]{1,19})-([0-9]{0,19})", re.ASCII)


def _parse_range(header: str | None, size: int) -> tuple[int | None, int]:
    """(start, end) of the bytes to send; (None, 0) if not satisfiable; _BadRange if malformed."""
    if not header:
        return 0, size
    m = _RANGE.fullmatch(header.strip())
    if not m:
        raise _BadRange("Range must be bytes=N- or bytes=N-M (ASCII digits, at most 19)")
    start = int(m.group(1))
    end = int(m.group(2)) + 1 if m.group(2) else size
    if start > size or end < start:
        return None, 0
    return start, min(end, size)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit]


class DockLink:
    """The link service. ``start()`` when docked, ``stop()`` when undocked; both idempotent."""

    def __init__(self, settings: DockSettings, evidence: Evidence, key_file: Path | str | None = None) -> None:
        self.settings = settings
        self.evidence = evidence
        self.root = Path(evidence.store.root)
        self.key_file = Path(settings.key_file or key_file or "")
        self.ca_cert: x509.Certificate | None = None
        self.refusals = RefusalJournal(evidence.journal)
        self.handover = Handover(evidence.journal)
        self._crl: x509.CertificateRevocationList | None = None
        self._revoked: frozenset[int] = frozenset()
        self._crl_lock = threading.Lock()
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
        self._load_crl()
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
            self._thread = threading.Thread(target=_serve_without_signals, args=(server,),
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
        self.refusals.flush()
        log.info("dock link stopped")

    @property
    def tls(self) -> ssl.SSLContext:
        """The server's TLS context; loaded by ``start()`` before anything is served."""
        if self._tls is None:
            raise DockLinkError("the dock link is not started (no TLS context)")
        return self._tls

    @property
    def ca(self) -> x509.Certificate:
        """The agency CA certificate; loaded by ``start()`` before anything is served."""
        if self.ca_cert is None:
            raise DockLinkError("the dock link is not started (no agency CA loaded)")
        return self.ca_cert

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return self.settings.listen_address, self.settings.port
        return cast("tuple[str, int]", self._server.server_address[:2])   # an AF_INET or AF_INET6 server

    # ---- what the handler asks ------------------------------------------------------------
    def _scan(self) -> tuple[int, str | None, int, dict[str, int]]:
        """(whole-line journal size, head hash, head seq, attested files present -> size)."""
        journal = self.root / JOURNAL_NAME
        data = journal.read_bytes()
        data = data[:data.rfind(b"\n") + 1]
        present: dict[str, int] = {}
        head_seq, head_hash = -1, None
        released: set[str | None] = set()
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

    def manifest(self, issue_nonce: Callable[[], str]
                 ) -> protocol.Manifest | protocol.ManifestUnavailable:
        """What the device holds now, with a nonce from ``issue_nonce`` (the session's book;
        none is issued if the journal cannot be read)."""
        try:
            size, head_hash, head_seq, present = self._scan()
        except (OSError, MalformedLine) as exc:
            log.error("dock link: cannot read the journal for the manifest: %s", exc)
            return protocol.ManifestUnavailable(f"journal unreadable: {exc}")
        self._servable = ((self.root / JOURNAL_NAME).stat().st_size, frozenset(present))
        return protocol.Manifest(
            device=self.evidence.journal.device_id,
            journal=protocol.ManifestJournal(size, protocol.JournalHead(head_seq, head_hash)),
            files=tuple(protocol.ManifestFile(p, s) for p, s in sorted(present.items())),
            nonce=issue_nonce())

    def accept_receipt(self, wire: bytes, dock_id: str | None, nonces: receipt.NonceBook,
                       served: frozenset[str] | None = None,
                       served_as: dict[str, receipt.ServedIdentity] | None = None,
                       ) -> tuple[int, protocol.ReceiptAccepted | protocol.ReceiptRefusal]:
        """Validate and act on a receipt from this session (its ``nonces``; ``served``: paths
        served in full in it; only those are purged; ``served_as``: their identities as served,
        so one unchanged since is not hashed again, ``receipt.ServedIdentity``)."""
        validator = receipt.ReceiptValidator(self.evidence.journal.device_id, self.ca, nonces)
        validator.revoked = self.is_revoked
        try:
            if served is None:
                result = self.evidence.store.reclaim(wire, validator=validator, peer_dock_id=dock_id)
            else:
                result = self.evidence.store.reclaim(wire, validator=validator, peer_dock_id=dock_id,
                                                     served=served, served_as=served_as)
        except receipt.ReceiptRefused as exc:
            return 403, protocol.ReceiptRefusal(exc.reason, str(exc))
        except (JournalError, StoreError, OSError) as exc:
            log.error("dock link: receipt could not be processed: %s", exc)
            return 500, protocol.ReceiptRefusal(protocol.DEVICE_ERROR, str(exc))
        return 200, protocol.ReceiptAccepted(
            receipt_seq=result.receipt_seq, purge_seq=result.purge_seq,
            removed=tuple(f.path for f in result.removed), not_removed=tuple(result.not_removed),
            not_served=tuple(result.refused), bytes_freed=result.bytes_freed)

    def accept_assignment(self, wire: bytes, dock_id: str | None, nonces: receipt.NonceBook
                          ) -> tuple[int, protocol.AssignmentAccepted | protocol.AssignmentRefusal]:
        """A signed assignment or release from this session (its ``nonces``): journaled, answered."""
        validator = assignment_mod.AssignmentValidator(self.evidence.journal.device_id, self.ca, nonces,
                                                       self.is_revoked)
        return self.handover.accept(wire, validator, dock_id)

    def journal_refused_read(self, rel: str, dock_id: str | None) -> None:
        self.refusals.note(records.TAMPER_ATTEMPT, "dock-read-outside", f"dock:{dock_id}",
                           {"path": str(rel)}, {"exists": None, "refused": True})

    def note_refusal(self, action: str, actor: str, payload: dict[str, Any]) -> bool:
        """A refused connection (TLS failure, revoked dock, no free slot): journaled, aggregated.
        True if this one was journaled by itself (the first of its kind in the window)."""
        return self.refusals.note(DOCK_AUTH_REFUSED, action, actor, payload, {"refused": True})

    # ---- revocation --------------------------------------------------------------------------
    def _check_crl(self, data: bytes) -> x509.CertificateRevocationList:
        """The CRL in ``data`` (PEM or DER) if the agency CA signed it; ValueError otherwise."""
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
               else x509.load_der_x509_crl(data))
        ca = self.ca
        ca_key = cast("CertificateIssuerPublicKeyTypes", ca.public_key())
        try:
            signed = crl.issuer == ca.subject and crl.is_signature_valid(ca_key)
        except TypeError:   # a CA key that cannot sign (e.g. X25519): no CRL can be its
            signed = False
        if not signed:
            raise ValueError("the CRL is not signed by the agency CA")
        _crl_number(crl)
        return crl

    def _load_crl(self) -> None:
        path = Path(self.settings.crl_file) if self.settings.crl_file else None
        if path is None or not path.exists():
            log.warning("dock link: no CRL installed (%s); no dock certificate is revoked until the "
                        "agency pushes one", path)
            self._crl, self._revoked = None, frozenset()
            return
        try:
            crl = self._check_crl(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise DockLinkError(f"the installed CRL {path} is not usable: {exc}") from exc
        self._crl, self._revoked = crl, frozenset(r.serial_number for r in crl)

    def is_revoked(self, cert: x509.Certificate) -> bool:
        return cert.serial_number in self._revoked

    def install_crl(self, data: bytes, dock_id: str | None) -> tuple[int, protocol.CrlAnswer]:
        """A CRL pushed by the dock: installed if the CA signed it and it is newer (higher CRL number)."""
        try:
            crl = self._check_crl(data)
        except ValueError as exc:
            self.refusals.note(DOCK_AUTH_REFUSED, "dock-crl-refused", f"dock:{dock_id}",
                               {"reason": str(exc)}, {"refused": True})
            return 422, protocol.CrlRefusal(protocol.BAD_CRL, str(exc)[:300])
        number = _crl_number(crl)
        with self._crl_lock:
            current = _crl_number(self._crl) if self._crl is not None else -1
            if number < current:
                return 409, protocol.CrlRefusal(protocol.STALE_CRL,
                                                f"CRL number {number} < installed {current}", current)
            if number == current:
                return 200, protocol.CrlInstalled(False, current)
            path = Path(self.settings.crl_file)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".new")
                with open(tmp, "wb") as f:
                    f.write(crl.public_bytes(serialization.Encoding.PEM))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except OSError as exc:
                log.error("dock link: cannot install the CRL at %s: %s", path, exc)
                return 500, protocol.CrlRefusal(protocol.DEVICE_ERROR, f"cannot install the CRL: {exc}")
            self._crl, self._revoked = crl, frozenset(r.serial_number for r in crl)
        try:
            self.evidence.journal.append(DOCK_CRL_INSTALLED, {
                "crl_number": number, "revoked": len(self._revoked), "dock": str(dock_id),
                "this_update_ns": int(crl.last_update_utc.timestamp()) * 1_000_000_000,
                "crl_sha256": hashlib.sha256(crl.public_bytes(serialization.Encoding.DER)).hexdigest()})
        except (JournalError, ValueError) as exc:
            log.error("dock link: could not journal the CRL update: %s", exc)
        log.info("dock link: CRL %d installed (%d revoked)", number, len(self._revoked))
        return 200, protocol.CrlInstalled(True, number)


def _serve_without_signals(server: _Server) -> None:
    """The serve loop, and the connection threads it starts (they inherit the mask), never
    take the process's SIGTERM/SIGINT: with many threads, a signal landing on one of them
    would leave the main thread's wait (``bodycam dock serve``, the service) unwoken."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except (AttributeError, OSError, ValueError):   # pragma: no cover - not POSIX
        pass
    server.serve_forever(poll_interval=0.2)


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise ValueError("the CRL has no CRL number") from None


class RefusalJournal:
    """Journals refusals without letting them flood the journal.

    The first refusal of a kind (action) from an actor in a window of ``REFUSAL_WINDOW_S`` is
    journaled at once (paths and reasons cut to ``MAX_JOURNALED_CHARS``, with the full
    length and SHA-256), up to ``REFUSAL_RECORDS_PER_WINDOW`` records per window; every
    other one is only counted, and when the window ends (or the link stops) one record per
    (action, actor) says how many there were (``count``, ``window_ms``, the last path/reason).
    """

    def __init__(self, journal: Journal, window_s: float = REFUSAL_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.journal = journal
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._seen: set[tuple[str, str]] = set()
        self._records = 0
        self._counts: dict[tuple[str, str, str], list[Any]] = {}   # (type, action, actor) -> [n, last fields, extra]

    def first(self, action: str, actor: str, path: str) -> bool:
        """For refusals journaled elsewhere (the store's own): True = journal this one there;
        False = it was counted here."""
        with self._lock:
            self._roll()
            key = (action, actor)
            if key not in self._seen and self._records < REFUSAL_RECORDS_PER_WINDOW:
                self._seen.add(key)
                self._records += 1
                return True
            self._count((records.TAMPER_ATTEMPT, action, actor), {"path": path}, {"refused": True})
            return False

    def note(self, type_: str, action: str, actor: str, fields: dict[str, Any], extra: dict[str, Any]) -> bool:
        """Journal (True) or count (False) one refusal."""
        with self._lock:
            self._roll()
            key = (action, actor)
            if key in self._seen or self._records >= REFUSAL_RECORDS_PER_WINDOW:
                self._count((type_, action, actor), fields, extra)
                return False
            self._seen.add(key)
            self._records += 1
        self._append(type_, {"action": action, "actor": _cut(actor), **_cut_fields(fields), **extra})
        return True

    def tick(self) -> None:
        with self._lock:
            due = self._clock() - self._start >= self.window_s
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            counts, window_ms = self._counts, int((self._clock() - self._start) * 1000)
            self._counts, self._seen, self._records, self._start = {}, set(), 0, self._clock()
        for (type_, action, actor), (n, fields, extra) in counts.items():
            self._append(type_, {"action": action, "actor": _cut(actor), **_cut_fields(fields), **extra,
                                 "aggregated": True, "count": n, "window_ms": window_ms})

    def _roll(self) -> None:   # with the lock held
        if self._clock() - self._start >= self.window_s and not self._counts:
            self._seen, self._records, self._start = set(), 0, self._clock()

    def _count(self, key: tuple[str, str, str], fields: dict[str, Any], extra: dict[str, Any]) -> None:   # lock held
        if key not in self._counts and len(self._counts) >= REFUSAL_KEYS_PER_WINDOW:
            key, fields = (key[0], key[1], "*"), {}
        entry = self._counts.setdefault(key, [0, fields, extra])
        entry[0] += 1
        entry[1] = fields

    def _append(self, type_: str, payload: dict[str, Any]) -> None:
        try:
            self.journal.append(type_, payload)
        except (JournalError, ValueError) as exc:
            log.error("dock link: could not journal a refusal (%s): %s", payload.get("action"), exc)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_JOURNALED_CHARS else text[:MAX_JOURNALED_CHARS]


def _cut_fields(fields: dict[str, Any]) -> dict[str, str | int]:
    out: dict[str, str | int] = {}
    for k, v in fields.items():
        v = str(v)
        out[k] = _cut(v)
        if len(v) > MAX_JOURNALED_CHARS:
            out[f"{k}_chars"] = len(v)
            out[f"{k}_sha256"] = hashlib.sha256(v.encode("utf-8", "surrogateescape")).hexdigest()
    return out
