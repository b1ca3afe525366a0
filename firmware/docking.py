"""Docking on the running device: a dock host configures the USB gadget, the device docks.

Polls the USB device controller's state (``configured`` once a host has
enumerated the gadget, i.e. the officer put the camera in the dock), then
moves the service to *docked* (recording is not possible there) and starts
the dock link; when the host goes away, stops the link and undocks. A
controller that cannot be read counts as not docked and is logged once.

The host configures the gadget before the device's end of the link has its
address (NetworkManager assigns it once the interface has carrier), so a link
that could not start is started again on later polls while docked (seen in
the USB gadget VM test, tests/test_usb_gadget_vm.py).
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
    @property
    def running(self) -> bool: ...


class DockWatcher:
    def __init__(self, host: HostLink, dock: Callable[[], None], undock: Callable[[], None],
                 make_link: Callable[[], Link], poll_s: float = 1.0) -> None:
        self.host, self.dock, self.undock, self.make_link = host, dock, undock, make_link
        self.poll_ns = int(poll_s * 1e9)
        self._next_ns: int | None = None
        self.link: Link | None = None
        self._unreadable = False
        self._start_failed = False

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
        elif present and self.link is not None and not self.link.running:
            self._start(self.link)

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
        self.link = self.make_link()
        self._start_failed = False
        self._start(self.link)

    def _start(self, link: Link) -> None:
        try:
            link.start()
        except Exception as exc:
            if not self._start_failed:
                log.error("dock link did not start: %s (device stays docked, not recording; "
                          "retrying while docked)", exc)
                self._start_failed = True
            return
        log.info("docked: dock link up%s", " (after retrying)" if self._start_failed else "")
        self._start_failed = False

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
