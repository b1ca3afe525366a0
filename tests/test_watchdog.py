"""Watchdog and readiness over a real AF_UNIX datagram socket standing in for systemd.

systemd's side of sd_notify is exactly this: a bound SOCK_DGRAM socket whose
path is in $NOTIFY_SOCKET.  Time for staleness comes from an injected clock,
so no test depends on how fast this machine is.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.watchdog import (
    Heartbeat,
    NotifyError,
    SystemdNotifier,
    Watchdog,
    watchdog_period_from_environment,
)

REPO = Path(__file__).resolve().parents[1]


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: a real bound datagram socket."""

    def __init__(self, address: str, bind_to: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)

    def receive(self, timeout: float = 10.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def drain(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return out
        finally:
            self.sock.setblocking(True)


@pytest.fixture
def systemd(tmp_path):
    path = str(tmp_path / "notify.sock")
    fake = FakeSystemd(path, path)
    yield fake
    fake.sock.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ready_status_stopping_and_ping_datagrams(systemd):
    n = SystemdNotifier(systemd.address)
    assert n.enabled
    assert n.ready("self-check passed")
    assert systemd.receive() == "READY=1\nSTATUS=self-check passed\n"
    assert n.watchdog_ping()
    assert systemd.receive() == "WATCHDOG=1\n"
    assert n.extend_timeout(2.5)
    assert systemd.receive() == "EXTEND_TIMEOUT_USEC=2500000\n"
    assert n.stopping()
    assert systemd.receive() == "STOPPING=1\n"
    n.close()


def test_status_text_cannot_inject_fields(systemd):
    n = SystemdNotifier(systemd.address)
    n.status("camera error\nWATCHDOG=1")
    assert systemd.receive() == "STATUS=camera error WATCHDOG=1\n"
    with pytest.raises(NotifyError, match="field name"):
        n.notify(**{"bad key": 1})


def test_abstract_namespace_socket():
    name = f"bodycam-test-{os.getpid()}"
    fake = FakeSystemd("@" + name, "\0" + name)
    try:
        assert SystemdNotifier("@" + name).ready()
        assert fake.receive() == "READY=1\n"
    finally:
        fake.sock.close()


def test_not_under_systemd_is_a_quiet_noop():
    n = SystemdNotifier.from_environment({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog_ping() is False


def test_unsupported_address_is_refused():
    with pytest.raises(NotifyError, match="unsupported NOTIFY_SOCKET"):
        SystemdNotifier("vsock:2:1234")


def test_vanished_socket_is_logged_not_raised(tmp_path, caplog):
    n = SystemdNotifier(str(tmp_path / "gone.sock"))
    assert n.watchdog_ping() is False
    assert any("sd_notify" in r.message for r in caplog.records)


def test_watchdog_period_from_environment():
    assert watchdog_period_from_environment({}) is None
    assert watchdog_period_from_environment({"WATCHDOG_USEC": "10000000"}) == 10.0
    env = {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}
    assert watchdog_period_from_environment(env, pid=42) == 10.0
    assert watchdog_period_from_environment(env, pid=43) is None   # meant for another process
    assert watchdog_period_from_environment({"WATCHDOG_USEC": "ten"}) is None
    assert watchdog_period_from_environment({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_period_from_environment({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "x"}) is None


def test_pings_only_while_every_heartbeat_progresses(systemd):
    clock = Clock()
    wd = Watchdog(SystemdNotifier(systemd.address), stall_after=5.0, interval=1.0, clock=clock)
    video, audio = Heartbeat("video", clock), Heartbeat("audio", clock)

    assert wd.check() is False                      # nothing watched: nothing proves progress
    assert systemd.receive() == "STATUS=stalled: no heartbeat is watched\n"
    wd.watch(video)
    wd.watch(audio)
    assert wd.check() is False                      # watched but never beaten
    assert systemd.receive() == "STATUS=stalled: video has not beaten yet\n"

    video.beat()
    audio.beat()
    assert wd.check() is True
    assert systemd.drain() == ["STATUS=recording pipeline progressing\n", "WATCHDOG=1\n"]

    clock.now += 4.0
    audio.beat()                                    # audio fine, video frozen 4 s: still within 5
    assert wd.check() is True
    assert systemd.drain() == ["WATCHDOG=1\n"]

    clock.now += 2.0                                # video frozen 6 s: hung pipeline
    audio.beat()
    assert wd.check() is False
    assert wd.check() is False                      # the stall is announced once, not every round
    assert systemd.drain() == ["STATUS=stalled: video stalled for 6.0 s\n"]
    assert wd.health().reason == "video stalled for 6.0 s"

    video.beat()                                    # recovers before systemd gave up
    assert wd.check() is True
    assert systemd.drain() == ["STATUS=recording pipeline progressing\n", "WATCHDOG=1\n"]

    wd.unwatch("video")
    clock.now += 10.0
    audio.beat()
    assert wd.check() is True                       # video no longer part of the verdict
    assert (video.count, audio.count) == (2, 4)


def test_thread_stops_pinging_a_hung_pipeline(systemd):
    """The background thread: pings while beats come, none after the stall is seen."""
    clock = Clock()
    wd = Watchdog(SystemdNotifier(systemd.address), stall_after=5.0, interval=0.01, clock=clock)
    frames = Heartbeat("video", clock)
    frames.beat()
    wd.watch(frames)
    with wd:
        assert systemd.receive() == "WATCHDOG=1\n"
        clock.now += 30.0                           # the pipeline hangs
        messages = []
        while (m := systemd.receive()) == "WATCHDOG=1\n":
            messages.append(m)
        assert m == "STATUS=stalled: video stalled for 30.0 s\n"
    assert "WATCHDOG=1\n" not in systemd.drain()    # nothing pinged after the stall was seen


def test_watchdog_takes_half_of_watchdogsec_from_environment(systemd):
    wd = Watchdog(SystemdNotifier(systemd.address), env={"WATCHDOG_USEC": "10000000"})
    assert wd.interval == 5.0
    quiet = Watchdog(SystemdNotifier(systemd.address), env={})
    assert quiet.interval is None
    quiet.start()                                   # no watchdog requested: no thread
    assert quiet._thread is None


@pytest.mark.parametrize("kw", [{"stall_after": 0}, {"stall_after": -1}, {"interval": 0}])
def test_bad_watchdog_settings(kw, systemd):
    with pytest.raises(ValueError, match="watchdog"):
        Watchdog(SystemdNotifier(systemd.address), **kw)


def test_child_process_reports_ready_through_its_environment(systemd):
    """As systemd runs us: a separate process finds the socket in NOTIFY_SOCKET."""
    code = ("from firmware.watchdog import SystemdNotifier as N; "
            "import sys; sys.exit(0 if N.from_environment().ready('up') else 1)")
    env = {**os.environ, "NOTIFY_SOCKET": systemd.address}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)
    assert systemd.receive() == "READY=1\nSTATUS=up\n"
