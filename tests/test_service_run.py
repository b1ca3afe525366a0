"""``bodycam run``, the command systemd runs, as a real process on the simulator.

The service is started the way its unit starts it: ``NOTIFY_SOCKET`` names a unix datagram
socket (bound here, standing in for systemd) and ``WATCHDOG_USEC`` asks for pings. Checked:
READY=1 after boot, WATCHDOG=1 while the loop runs, the pid-file lock (a second ``run`` is
refused), ``bodycam status`` answered by the running service (SIGUSR1), and SIGTERM ending
in STOPPING=1, a ``shutdown`` record and a journal that verifies. Every wait is bounded.

The dock watcher is not wired with ``--sim`` (no USB controller to watch), so its wiring is
checked in process against a sysfs-like controller directory.
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recorder import age
from recorder.journal import iter_records
from recorder.verify import verify_directory

REPO = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_FAIL = 0, 1
START_S = 60          # boot: key, journal, self-check, warm-up (a busy CI core)
STOP_S = 30


def bodycam(*args) -> list[str]:
    return [sys.executable, "-m", "firmware", *map(str, args)]


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: a real bound datagram socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout_s: float, proc: subprocess.Popen) -> str:
        """The first message (after those seen) with ``line`` among its lines."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {line!r} from the service in {timeout_s} s; "
                                     f"got {self.messages}")
            self.sock.settimeout(min(left, 0.5))
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                if proc.poll() is not None:
                    raise AssertionError(f"service exited {proc.returncode} before {line!r}: "
                                         f"{proc.stderr.read()}") from None
                continue
            self.messages.append(msg)
            if line in msg.splitlines():
                return msg

    def drain(self) -> list[str]:
        """Messages already sent and not read yet (after the service has exited)."""
        self.sock.setblocking(False)
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return self.messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def device(tmp_path):
    run_dir = tmp_path / "run"
    cfg = tmp_path / "bodycam.toml"
    # a provisioned device: the agency key installed, so the self-check's encryption item passes (D1, D13)
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(age.Identity.generate().recipient + "\n")
    cfg.write_text("[video]\nwidth = 160\nheight = 120\nfps = 10\nbitrate_kbps = 300\n"
                   "[audio]\nsample_rate = 16000\n[segment]\nseconds = 2\n"
                   "[storage]\nreserve_mb = 0\n"
                   f"[service]\nruntime_dir = \"{run_dir}\"\nwarmup_s = 0.2\n"
                   f"[encryption]\nmode = \"required\"\nrecipients_file = \"{recipients}\"\n")
    return cfg, tmp_path / "ev", tmp_path / "key", run_dir


def test_run_speaks_systemd_holds_the_lock_answers_status_and_stops_on_sigterm(tmp_path, device):
    cfg, ev, key, run_dir = device
    systemd = FakeSystemd(tmp_path / "notify.sock")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(NOTIFY_SOCKET=str(systemd.path), WATCHDOG_USEC="1000000")   # WatchdogSec=1
    # --duration is only a backstop: the test stops it with SIGTERM long before.
    proc = subprocess.Popen(bodycam("run", "--sim", "--config", cfg, "--out", ev, "--key-dir", key,
                                    "--provision", "--duration", 300),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=env)
    try:
        ready = systemd.wait_for("READY=1", START_S, proc)
        assert ready == "READY=1\nSTATUS=recording service up\n"
        # The watchdog pings while the service loop goes round (half of WATCHDOG_USEC).
        systemd.wait_for("WATCHDOG=1", 10, proc)
        systemd.wait_for("WATCHDOG=1", 10, proc)
        assert (run_dir / "service.pid").read_text() == f"{proc.pid}\n"

        # A second service on the same runtime directory is refused by the pid-file lock
        # before it opens anything (same evidence directory, same key).
        journal_before = (ev / "journal.log").read_bytes()
        second = subprocess.run(bodycam("run", "--sim", "--config", cfg, "--out", ev,
                                        "--key-dir", key, "--duration", 5),
                                capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
        assert second.returncode == EXIT_FAIL, second.stderr
        assert second.stderr.strip() == (f"bodycam: error: a service is already running "
                                         f"({run_dir / 'service.pid'})")
        assert (ev / "journal.log").read_bytes().startswith(journal_before)
        assert (run_dir / "service.pid").read_text() == f"{proc.pid}\n"

        # ``bodycam status`` asks the running service (SIGUSR1) and prints its fresh answer.
        status = subprocess.run(bodycam("status", "--config", cfg, "--timeout", 30),
                                capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
        assert status.returncode == EXIT_OK, status.stdout + status.stderr
        lines = status.stdout.splitlines()
        assert lines[0] == "self-check: GO"
        assert {ln.split()[1] for ln in lines[1:]} == {"battery", "storage", "time", "camera",
                                                       "microphone", "journal", "encryption"}
        assert (run_dir / "status.txt").read_text() == status.stdout

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=STOP_S)
        systemd.drain()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        systemd.close()
    assert proc.returncode == EXIT_OK, err
    assert out == f"{ev}\n"
    assert "Traceback" not in err
    assert any("STOPPING=1" in m.splitlines() for m in systemd.messages), systemd.messages

    recs = list(iter_records(ev / "journal.log"))
    types = [r.type for r in recs]
    assert types.count("boot") == 1                      # the refused second run added nothing
    assert types[-1] == "shutdown" and recs[-1].payload == {"cause": "stop"}
    checks = [r for r in recs if r.type == "state" and r.payload["cause"] == "check-requested"]
    assert len(checks) == 1                              # the status request, journaled
    assert recs[-2].type == "state" and recs[-2].payload["to"] == "off"
    result = verify_directory(ev, (key / "device-key.pub.pem").read_bytes())
    assert result.ok, result.failure

    with open(run_dir / "service.pid") as f:             # the lock went with the process
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_status_with_no_service_running_checks_the_simulator_itself(tmp_path, device):
    cfg, ev, key, run_dir = device
    r = subprocess.run(bodycam("status", "--sim", "--config", cfg, "--out", ev, "--key-dir", key,
                               "--provision"),
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "self-check: GO"
    recs = list(iter_records(ev / "journal.log"))
    assert [x.type for x in recs].count("self-check") == 1
    assert recs[-1].type == "shutdown" and recs[-1].payload == {"cause": "status"}


# ------------------------------------------------------------ dock watcher wiring

class _StubService:
    def __init__(self) -> None:
        self.tick_hooks: list = []
        self.ev = object()
        self.calls: list[str] = []

    def dock(self) -> None:
        self.calls.append("dock")

    def undock(self) -> None:
        self.calls.append("undock")


class _StubLink:
    made: list = []

    def __init__(self, settings, evidence, key_file) -> None:
        self.settings, self.evidence, self.key_file = settings, evidence, key_file
        self.started = self.stopped = False
        _StubLink.made.append(self)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


def _udc(root: Path, name: str, state: str) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "state").write_text(state + "\n")


def _config(tmp_path, extra: str = ""):
    from firmware import config as config_mod
    path = tmp_path / "dock.toml"
    path.write_text(f"[identity]\nkey_dir = \"{tmp_path / 'key'}\"\n" + extra)
    return config_mod.load(path)


def test_dock_watcher_is_ticked_by_the_service_loop_and_docks_on_a_configured_host(
        tmp_path, monkeypatch):
    from firmware import cli, dock_link
    from firmware.docking import DockWatcher
    from hw.usb_gadget import UsbHostLink

    _StubLink.made.clear()
    monkeypatch.setattr(dock_link, "DockLink", _StubLink)
    service = _StubService()
    watcher = cli._dock_watcher(_config(tmp_path), service)
    assert isinstance(watcher, DockWatcher) and isinstance(watcher.host, UsbHostLink)
    assert service.tick_hooks == [watcher.tick]
    udc = tmp_path / "udc"
    watcher.host.udc_class_dir = udc          # sysfs stand-in (the configured path: test below)
    _udc(udc, "fe980000.usb", "configured")
    service.tick_hooks[0](10**9)
    assert service.calls == ["dock"] and watcher.docked
    link = _StubLink.made[-1]
    assert link.started and link.evidence is service.ev
    assert link.key_file == tmp_path / "key" / "device-key.pem"
    _udc(udc, "fe980000.usb", "not attached")
    service.tick_hooks[0](3 * 10**9)
    assert service.calls == ["dock", "undock"] and link.stopped and not watcher.docked


def test_dock_watcher_is_not_wired_when_docking_is_disabled(tmp_path):
    from firmware import cli
    service = _StubService()
    assert cli._dock_watcher(_config(tmp_path, "[dock]\nenabled = false\n"), service) is None
    assert service.tick_hooks == []


def test_dock_watcher_watches_the_configured_controller(tmp_path):
    from firmware import cli
    udc = tmp_path / "udc"
    _udc(udc, "a.usb", "not attached")
    _udc(udc, "b.usb", "configured")
    cfg = _config(tmp_path, f"[gadget]\nudc = \"b.usb\"\nudc_class_dir = \"{udc}\"\n")
    watcher = cli._dock_watcher(cfg, _StubService())
    assert watcher.host.state_path() == udc / "b.usb" / "state"
