"""One writer of a device's part of the store at a time: ``devices/<id>/dock.lock`` (flock).

A docking holds it from start to end (it builds a new mirror from the old one and swaps it in),
and a purge holds it while it commits and removes that device's files. Without it a purge that
ran while a docking of the same device was building its candidate mirror had its files brought
back by the swap (the candidate held hard links to them). The kernel releases the lock when
the process dies, so it never outlives a killed docking or purge. Never waited for: the
holder's work may take minutes, and the caller can say so and try again.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

LOCK_NAME = "dock.lock"


class DeviceLocked(Exception):
    """Another process of this station holds the device's lock right now."""


@contextlib.contextmanager
def device_lock(dev_dir: Path) -> Iterator[None]:
    """Hold ``dev_dir/dock.lock`` (made if need be); DeviceLocked at once if another holds it."""
    dev_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(dev_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeviceLocked(str(dev_dir)) from None
        yield
    finally:
        os.close(fd)
