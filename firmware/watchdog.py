"""systemd readiness and watchdog, fed only by real progress of the pipeline.

systemd restarts the service when the watchdog is not pinged within
``WatchdogSec``.  Pinging from a timer alone would keep a hung pipeline alive
forever (a camera that stopped delivering frames, an encoder stuck on a lock):
the officer would believe they are recording while nothing is written (D3).
So :class:`Watchdog` pings only while every watched :class:`Heartbeat` has
beaten recently; the pipeline beats once per frame / audio block and the
firmware's main loop beats once per iteration.

Why no library: the notify protocol is one datagram of ``KEY=VALUE`` lines to
the ``AF_UNIX`` socket named in ``$NOTIFY_SOCKET`` (``@`` meaning the abstract
namespace).  ``sdnotify`` on PyPI has had no release since 2017 and swallows
every error; ``systemd-python`` needs libsystemd headers to build.  Twenty
lines here are easier to review and are tested against a real socket.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")


class NotifyError(ValueError):
    """``$NOTIFY_SOCKET`` (or a message) is not something this protocol can send."""


def _socket_address(value: str) -> str:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise NotifyError(f"unsupported NOTIFY_SOCKET address {value!r} (only unix paths and @abstract)")


class SystemdNotifier:
    """Sends sd_notify(3) messages; a no-op when not started by systemd (``address`` None)."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._target = _socket_address(address) if address else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> "SystemdNotifier":
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self._target is not None

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram with ``fields``; True if it was sent.

        A failed send is logged, not raised: losing the notify socket must
        not stop the recording (systemd will act on the missing message).
        """
        lines = []
        for key, value in fields.items():
            if not _KEY.match(key):
                raise NotifyError(f"invalid sd_notify field name {key!r}")
            text = str(value)
            if "\n" in text or "\r" in text or "\0" in text:
                # A newline would start a new field: STATUS text must not inject WATCHDOG=1.
                text = " ".join(text.replace("\0", " ").splitlines())
            lines.append(f"{key}={text}")
        if self._target is None:
            return False
        message = ("\n".join(lines) + "\n").encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(message, self._target)
            except OSError as exc:
                log.error("sd_notify to %s failed: %s", self.address, exc)
                self._close_locked()
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog_ping(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time (e.g. a long self-check before READY)."""
        return self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_period_from_environment(env: Mapping[str, str] | None = None,
                                     pid: int | None = None) -> float | None:
    """``WatchdogSec`` in seconds if systemd expects pings from this process, else None.

    Mirrors sd_watchdog_enabled(3): ``WATCHDOG_USEC`` must be a positive
    integer and ``WATCHDOG_PID``, if set, must be our pid.
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        if not owner.isdigit():
            log.error("ignoring malformed WATCHDOG_PID=%r", owner)
            return None
        if int(owner) != (os.getpid() if pid is None else pid):
            return None
    if not raw.isdigit() or int(raw) == 0:
        log.error("ignoring malformed WATCHDOG_USEC=%r", raw)
        return None
    return int(raw) / 1_000_000


class Heartbeat:
    """A progress counter one producer bumps (per frame, per audio block, per loop).

    ``beat`` is two attribute stores, cheap enough for every frame; readers in
    other threads see a consistent (count, time) pair because it is one tuple.
    """

    def __init__(self, name: str, clock: Clock = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._last: tuple[int, float | None] = (0, None)

    def beat(self) -> None:
        count, _ = self._last
        self._last = (count + 1, self._clock())

    @property
    def count(self) -> int:
        return self._last[0]

    @property
    def last_beat(self) -> float | None:
        return self._last[1]

    def __repr__(self) -> str:
        return f"Heartbeat({self.name!r}, count={self.count})"


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str


class Watchdog:
    """Pings systemd's watchdog only while every watched heartbeat is fresh.

    ``stall_after``: a heartbeat older than this many seconds (or one that has
    never beaten) means the pipeline is stuck, so pings stop and systemd
    restarts the service after ``WatchdogSec``.  ``interval``: seconds between
    checks; None takes half of ``WATCHDOG_USEC`` (as sd_watchdog_enabled(3)
    advises) and leaves the thread off if systemd set no watchdog.  With no
    heartbeat watched nothing proves progress, so nothing is pinged.
    """

    def __init__(self, notifier: SystemdNotifier, *, stall_after: float = 5.0,
                 interval: float | None = None, clock: Clock = time.monotonic,
                 env: Mapping[str, str] | None = None) -> None:
        if not stall_after > 0:
            raise ValueError(f"watchdog.stall_after_s must be > 0, got {stall_after!r}")
        if interval is not None and not interval > 0:
            raise ValueError(f"watchdog.interval_s must be > 0, got {interval!r}")
        period = watchdog_period_from_environment(env)
        if interval is None and period is not None:
            interval = period / 2
        if period is not None and stall_after >= period:
            log.warning("stall_after (%.1f s) >= WatchdogSec (%.1f s): a hang is noticed late",
                        stall_after, period)
        self.notifier = notifier
        self.stall_after = stall_after
        self.interval = interval
        self._clock = clock
        self._heartbeats: dict[str, Heartbeat] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stalled_reason: str | None = None

    def watch(self, heartbeat: Heartbeat) -> None:
        with self._lock:
            self._heartbeats[heartbeat.name] = heartbeat

    def unwatch(self, heartbeat: Heartbeat | str) -> None:
        name = heartbeat if isinstance(heartbeat, str) else heartbeat.name
        with self._lock:
            self._heartbeats.pop(name, None)

    def health(self) -> Health:
        with self._lock:
            beats = list(self._heartbeats.values())
        if not beats:
            return Health(False, "no heartbeat is watched")
        now = self._clock()
        for hb in beats:
            last = hb.last_beat
            if last is None:
                return Health(False, f"{hb.name} has not beaten yet")
            age = now - last
            if age > self.stall_after:
                return Health(False, f"{hb.name} stalled for {age:.1f} s")
        return Health(True, "ok")

    def check(self) -> bool:
        """One round: ping if healthy; on a change of health, log and set STATUS. True if pinged."""
        health = self.health()
        if health.ok:
            if self._stalled_reason is not None:
                log.warning("pipeline progressing again; resuming watchdog pings")
                self.notifier.status("recording pipeline progressing")
                self._stalled_reason = None
            return self.notifier.watchdog_ping()
        if health.reason != self._stalled_reason:
            log.error("not pinging the systemd watchdog: %s", health.reason)
            self.notifier.status(f"stalled: {health.reason}")
            self._stalled_reason = health.reason
        return False

    def start(self) -> None:
        """Run :meth:`check` every ``interval`` seconds in a daemon thread (if there is one)."""
        if self.interval is None or not self.notifier.enabled:
            log.info("systemd watchdog not active; heartbeats are not reported")
            return
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:   # never let the thread die silently: no pings = restart anyway
                log.exception("watchdog check failed")
            self._stop.wait(self.interval)

    def __enter__(self) -> "Watchdog":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
