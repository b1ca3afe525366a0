"""Real chronyd instances for tests, that never touch the machine's clock.

Each :class:`Chronyd` runs ``chronyd -x -d`` (``-x``: no control of the system
clock) with its own config, pidfile, driftfile and command socket in a
private 0700 directory, no NTP port unless it serves one on 127.0.0.1, and
is killed when the context exits (and at interpreter exit, as a backstop).
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

CHRONYD = shutil.which("chronyd") or "/usr/sbin/chronyd"
CHRONYC = shutil.which("chronyc") or "/usr/bin/chronyc"

_running: set[subprocess.Popen] = set()


def _kill_all() -> None:
    for proc in list(_running):
        _kill(proc)


atexit.register(_kill_all)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    _running.discard(proc)


def require_chronyd() -> None:
    """Skip (with the reason) where a real chronyd cannot run."""
    if not (os.path.exists(CHRONYD) and os.path.exists(CHRONYC)):
        pytest.skip("chronyd/chronyc not installed (Debian package chrony)")
    if os.geteuid() != 0:
        pytest.skip("chronyd needs root to start, even with -x")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Chronyd:
    """One chronyd with ``extra`` config lines (``{dir}`` is its directory).

    ``cmd_socket`` is for ``chronyc -h``; ``ntp_port`` > 0 serves NTP on 127.0.0.1.
    """

    def __init__(self, extra: str, name: str = "chronyd", ntp_port: int = 0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"bodycam-{name}-"))
        os.chmod(self.dir, 0o700)  # chronyd refuses a command socket in an open dir
        self.cmd_socket = str(self.dir / "chronyd.sock")
        self.gps_socket = str(self.dir / "gps.sock")
        self.log_path = self.dir / "chronyd.log"
        self.config = self.dir / "chronyd.conf"
        body = extra.replace("{dir}", str(self.dir))
        # No NTP port at all, or one on loopback only when serving.
        body += f"\nport {ntp_port}\n"
        if ntp_port:
            body += "bindaddress 127.0.0.1\n"
        self.config.write_text(
            f"{body}\n"
            f"bindcmdaddress {self.cmd_socket}\n"
            "cmdport 0\n"
            f"pidfile {self.dir}/chronyd.pid\n"
            f"driftfile {self.dir}/drift\n")
        self.proc: subprocess.Popen | None = None

    def start(self, wait_s: float = 15.0) -> "Chronyd":
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([CHRONYD, "-x", "-d", "-u", "root", "-f", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        _running.add(self.proc)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chronyd exited: {self.log()}")
            if os.path.exists(self.cmd_socket) and self.chronyc("tracking").returncode == 0:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"chronyd did not answer within {wait_s} s: {self.log()}")

    def chronyc(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CHRONYC, "-h", self.cmd_socket, "-n", *args],
                              capture_output=True, text=True, timeout=5)

    def report(self) -> str:
        """Everything useful for a failure message."""
        parts = []
        for cmd in ("tracking", "sources", "sourcestats"):
            r = self.chronyc(cmd)
            parts.append(f"--- chronyc {cmd}\n{r.stdout}{r.stderr}")
        parts.append(f"--- log\n{self.log()}")
        return "\n".join(parts)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None:
            _kill(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Chronyd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(predicate, timeout_s: float, describe, interval_s: float = 0.25):
    """Poll ``predicate()`` until truthy; fail with ``describe()`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s:.0f} s\n{describe()}")
        time.sleep(interval_s)
