"""``bodycam bench send|events``: a rig script's end of the bench socket.

``send`` writes each command (one per argument, or one per line of ``--file``/stdin with
``-``), prints each JSON reply line as it comes, and exits 1 at the first refused command
(0 when all were done). ``events`` subscribes and prints event lines until ``--count`` have
come, ``--until TYPE`` is seen, the service ends, or ``--timeout`` passes (exit 1).
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any, TypeVar

_P = TypeVar("_P", bound=argparse.ArgumentParser)

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class BenchClient:
    """One connection to ``--bench-socket``: ``send(line)`` returns its reply; events that
    arrive meanwhile are kept for ``next_event``."""

    def __init__(self, path: Path, timeout_s: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        self.sock.connect(str(path))
        self.timeout_s = timeout_s
        self._buf = b""
        self.events: list[dict[str, Any]] = []

    def _line(self, deadline: float) -> dict[str, Any] | None:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the bench socket in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        obj: dict[str, Any] = json.loads(line)
        return obj

    def send(self, line: str) -> dict[str, Any]:
        self.sock.sendall(line.strip().encode() + b"\n")
        return self.reply()

    def reply(self) -> dict[str, Any]:
        """The next reply line (events read on the way are kept)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            obj = self._line(deadline)
            if obj is None:
                raise ConnectionError("the bench socket closed before replying")
            if "event" in obj:
                self.events.append(obj)
                continue
            return obj

    def next_event(self, timeout_s: float) -> dict[str, Any] | None:
        """The next event (None: the service closed the connection)."""
        if self.events:
            return self.events.pop(0)
        obj = self._line(time.monotonic() + timeout_s)
        return obj

    def close(self) -> None:
        self.sock.close()


def _default_socket(config: Path | None) -> Path:
    from firmware import config as config_mod
    cfg = config_mod.load(config)
    return Path(config_mod.section(cfg, "service").runtime_dir) / "bench.sock"


def _lines(args: argparse.Namespace, stdin: IO[str]) -> list[str]:
    if args.file is None:
        return [" ".join(args.command)]
    text = stdin.read() if str(args.file) == "-" else args.file.read_text()
    return [ln for ln in (raw.split("#", 1)[0].strip() for raw in text.splitlines()) if ln]


def cmd_send(args: argparse.Namespace) -> int:
    if not args.command and args.file is None:
        print("bodycam: error: bench send: give a command, or --file FILE (- for stdin)", file=sys.stderr)
        return EXIT_USAGE
    path = args.socket or _default_socket(args.config)
    try:
        client = BenchClient(path, args.timeout)
    except OSError as exc:
        print(f"bodycam: error: cannot reach the bench console at {path}: {exc} "
              "(is 'bodycam run --sim --bench-socket' running?)", file=sys.stderr)
        return EXIT_FAIL
    try:
        for line in _lines(args, sys.stdin):
            reply = client.send(line)
            print(json.dumps(reply, ensure_ascii=False), flush=True)
            if not reply.get("ok"):
                return EXIT_FAIL
    except (OSError, TimeoutError, ConnectionError) as exc:
        print(f"bodycam: error: bench socket {path}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        client.close()
    return EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    path = args.socket or _default_socket(args.config)
    try:
        client = BenchClient(path, args.timeout)
        client.send("events")
    except (OSError, TimeoutError, ConnectionError) as exc:
        print(f"bodycam: error: cannot subscribe at {path}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    deadline = time.monotonic() + args.timeout
    seen = 0
    try:
        while args.count is None or seen < args.count:
            event = client.next_event(max(0.0, deadline - time.monotonic()))
            if event is None:
                return EXIT_OK
            print(json.dumps(event, ensure_ascii=False), flush=True)
            seen += 1
            if args.until is not None and args.until in (event.get("type"), event.get("event"), event.get("name")):
                return EXIT_OK
            if event.get("event") == "closed":
                return EXIT_OK
    except TimeoutError:
        print(f"bodycam: error: no more events within {args.timeout:g} s", file=sys.stderr)
        return EXIT_FAIL
    finally:
        client.close()
    return EXIT_OK


def add_subcommands(subparsers: argparse._SubParsersAction[_P], common: _P) -> None:
    b = subparsers.add_parser("bench", parents=[common], help="drive a running 'run --bench-socket' service",
                              description="Send bench console commands to a running service, or "
                                          "follow its events (docs/bench-console.md).")
    bsub = b.add_subparsers(dest="bench_command", required=True, metavar="ACTION")
    for name, func, what in (("send", cmd_send, "send command(s); print one JSON reply per line"),
                             ("events", cmd_events, "print the device's events as JSON lines")):
        p = bsub.add_parser(name, parents=[common], help=what, description=what)
        p.add_argument("--socket", type=Path, help="the bench socket (default: service.runtime_dir/bench.sock)")
        p.add_argument("--config", type=Path, help="TOML configuration (for the default socket path)")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for answers (default 30)")
        if name == "send":
            p.add_argument("--file", type=Path, help="commands, one per line ('-': stdin)")
            p.add_argument("command", nargs="*", help="one command, e.g. press record")
        else:
            p.add_argument("--count", type=int, help="stop after this many events")
            p.add_argument("--until", help="stop after an event of this kind, journal type or cue name")
        p.set_defaults(func=func)
