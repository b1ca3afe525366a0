"""Named places where a test can make the recorder die the way a power cut would.

Like etcd's failpoints: off unless the environment says
``BODYCAM_CRASHPOINT=NAME:N``; then the N-th time the process reaches the
point called NAME it runs ``before`` (e.g. writes half a journal line) and
kills itself with SIGKILL. Crash tests use this to land exactly mid-seal or
mid-journal-write instead of hoping a timer does. Costs one comparison when off.
"""
from __future__ import annotations

import os
import signal
from typing import Callable

_name, _, _n = (os.environ.get("BODYCAM_CRASHPOINT") or "").partition(":")
_target = int(_n) if _n.isdigit() else 1
_hits = 0


def crashpoint(name: str, before: Callable[[], object] | None = None) -> None:
    global _hits
    if name != _name:
        return
    _hits += 1
    if _hits == _target:
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)
