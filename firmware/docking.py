"""Docking on the running device: a dock host configures the USB gadget, the device docks.

Polls the USB device controller's state (``configured`` once a host has
enumerated the gadget, i.e. the officer put the camera in the dock), then
moves the service to *docked* (recording is not possible there) and starts
the dock link; when the host goes away, stops the link and undocks. A
controller that cannot be read counts as not docked and is logged once.
"""
from __future__ import annotations

import logging
from typing import Callable, Protocol

log = logging.getLogger(__name__)


class HostLink(Protocol):
    def host_configured(self) -> bool: ...


class Link(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class DockWatcher:
    def __init__(self, host: HostLink, dock: Callable[[], None], undock: Callable[[], None],
                 make_link: Callable[[], Link], poll_s: float = 1.0) -> None:
        self.host, self.dock, self.undock, self.make_link = host, dock, undock, make_link
        self.poll_ns = int(poll_s * 1e9)
        self._next_ns: int | None = None
        self.link: Link | None = None
        self._unreadable = False

    @property
    def docked(self) -> bool:
        return self.link is not None

    def tick(self, now_ns: int) -> None:
        """Call from the service loop; acts at most once per ``poll_s``."""
        if self._next_ns is not None and now_ns < self._next_ns:
            return
        self._next_ns = now_ns + self.poll_ns
        present = self._host_present()
        if present and self.link is None:
            self._enter()
        elif not present and self.link is not None:
            self._leave(self.link)

    def _host_present(self) -> bool:
        try:
            present = self.host.host_configured()
        except Exception as exc:  # no controller, sysfs gone: not docked, say so once
            if not self._unreadable:
                log.warning("cannot read the USB controller state: %s (treated as not docked)", exc)
                self._unreadable = True
            return False
        self._unreadable = False
        return present

    def _enter(self) -> None:
        try:
            self.dock()
        except Exception as exc:  # e.g. the state machine refuses from its current state
            log.error("dock host present but the device cannot dock now: %s", exc)
            return
        link = self.make_link()
        try:
            link.start()
        except Exception as exc:
            log.error("dock link did not start: %s (device stays docked, not recording)", exc)
        self.link = link
        log.info("docked: dock link up")

    def _leave(self, link: Link) -> None:
        self.link = None
        try:
            link.stop()
        finally:
            self.undock()
        log.info("undocked")

    def close(self) -> None:
        if self.link is not None:
            self._leave(self.link)
