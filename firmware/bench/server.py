"""The bench over a Unix socket: one command per line in, one JSON object per line out.

Any number of rig scripts may connect at once. Each line gets exactly one reply line
(``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``), in order. After ``events`` the
connection also receives event lines (``{"event": ..., "t": ...}``) as they happen,
interleaved with the replies to any further commands; a reply always has ``ok``, an event
always has ``event``. The socket is created owner-only (0600) and removed at shutdown; a
stale socket file left by a killed service is replaced, a live one is refused.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import socket
import stat
import threading
from pathlib import Path
from typing import Any

from firmware.bench.rig import Bench

log = logging.getLogger(__name__)

MAX_LINE = 4096


class SocketInUse(OSError):
    """Another bench console is already listening on the path."""


def _claim(path: Path) -> None:
    """Remove a stale socket file at ``path``; refuse a live socket or any other file."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketInUse(f"{path} exists and is not a socket; choose another --bench-socket path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)    # left behind by a service that was killed
        return
    finally:
        probe.close()
    raise SocketInUse(f"another bench console is listening on {path}")


class BenchServer:
    def __init__(self, bench: Bench, path: Path) -> None:
        self.bench, self.path = bench, path
        path.parent.mkdir(parents=True, exist_ok=True)
        _claim(path)
        # bound and listening under a temporary name, then renamed: the path appears only
        # once a connection to it is accepted (a rig waits for the file, then connects)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(tmp))
        finally:
            os.umask(old)
        self._sock.listen(8)
        os.rename(tmp, path)
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._pumps: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="bench-socket", daemon=True)
        self._thread.start()
        log.info("bench console listening on %s", path)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return   # closed
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), name="bench-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        write_lock = threading.Lock()
        events: queue.Queue[dict[str, Any]] | None = None

        def send(obj: dict[str, Any]) -> bool:
            data = (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode()
            try:
                with write_lock:
                    conn.sendall(data)
                return True
            except OSError:
                return False

        def pump_events(q: queue.Queue[dict[str, Any]]) -> None:
            while not self._stop.is_set():
                try:
                    event = q.get(timeout=0.5)
                except queue.Empty:
                    continue
                if not send(event) or event["event"] == "closed":
                    return
            while True:   # stopping: pass on what is already queued, up to "closed"
                try:
                    event = q.get_nowait()
                except queue.Empty:
                    return
                if not send(event) or event["event"] == "closed":
                    return

        try:
            with conn.makefile("rb") as lines:
                for raw in lines:
                    if len(raw) > MAX_LINE:
                        send({"ok": False, "error": f"line longer than {MAX_LINE} bytes"})
                        continue
                    try:
                        line = raw.decode("utf-8").strip()
                    except UnicodeDecodeError:
                        send({"ok": False, "error": "a command line must be UTF-8 text"})
                        continue
                    if not line:
                        continue
                    if line == "events":
                        if events is None:
                            events = self.bench.subscribe()
                            pump = threading.Thread(target=pump_events, args=(events,),
                                                    name="bench-events", daemon=True)
                            pump.start()
                            with self._lock:
                                self._pumps.append(pump)
                        send({"ok": True, "command": "events", "subscribed": True})
                        continue
                    if not send(self.bench.submit(line)):
                        return
        except OSError:
            pass
        finally:
            if events is not None:
                self.bench.unsubscribe(events)
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            conn.close()

    def close(self) -> None:
        """Stop listening, end every connection (after the bench's ``closed`` event) and
        remove the socket file."""
        self._stop.set()
        try:
            self._sock.close()
        finally:
            self.path.unlink(missing_ok=True)
        with self._lock:
            conns, pumps = list(self._conns), list(self._pumps)
        for pump in pumps:      # each ends once it has passed on the bench's "closed" event
            pump.join(timeout=2)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
