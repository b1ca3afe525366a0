"""Named failures: the one base for every "this is not intact evidence / not acceptable" answer.

The evidence-format layer answers with exceptions whose class *is* the answer: the
verifier's ``BadSignature``, ``ChainBroken``, ...; the device's ``ReplayedReceipt``,
``FileMismatch``, ...; the dock protocol's ``UnknownFields``, .... Their ``reason`` is
the class name, which is what is journaled, printed in reports and sent over the dock
link, so a class name here is part of the format: never rename one.

This module imports nothing of the project, so every module of the layer can use it.
"""
from __future__ import annotations

from typing import Any


class NamedFailure(Exception):
    """A failure named by its class. ``reason`` is the class name, ``message`` the text
    (``str(exc)``), ``details`` whatever structured facts the raiser gave (keyword arguments)."""

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    @property
    def reason(self) -> str:
        return type(self).__name__
