"""Which recording a clerk means: one grammar for every command and page.

``#12``, ``12`` or ``recording:12``: the catalogue number (unless the bare number is also a
device's recording id or a name: then it is ambiguous, say ``#12``); ``DEVICE/RECORDING_ID``;
the S3 name; the device's recording id alone when only one device has it. An ambiguous
reference is refused with the candidates listed, never guessed.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from station import naming
from station.db import models as m
from station.errors import InvalidInput, NotFound

MAX_ID = 2**31 - 1          # catalogue ids are 32-bit integers (PostgreSQL refuses a bigger one)


def find_recording(s: Session, ref: str | int) -> m.Recording:
    """The recording ``ref`` names (module docstring); NotFound, or InvalidInput when ambiguous."""
    text = str(ref).strip().removeprefix("recording:")
    if not text:
        raise InvalidInput("which recording? give its number (#N), DEVICE/RECORDING_ID or its name")
    if text.startswith("#"):
        if not text[1:].isdigit() or int(text[1:]) > MAX_ID:
            raise InvalidInput(f"{text!r}: a catalogue number is #<number>")
        rec = s.get(m.Recording, int(text[1:]))
        if rec is None:
            raise NotFound(f"no recording #{text[1:]} in the catalogue")
        return rec
    if "/" in text:
        dev, rid = text.split("/", 1)
        rec = s.scalars(select(m.Recording).where(m.Recording.device_id == dev,
                                                  m.Recording.recording_id == rid)).first()
        if rec is None:
            raise NotFound(f"no recording {rid} of device {dev}")
        return rec
    found = {r.id: r for r in s.scalars(select(m.Recording).where(
        (m.Recording.recording_id == text) | (m.Recording.name == text)))}
    if text.isdigit() and int(text) <= MAX_ID:
        by_id = s.get(m.Recording, int(text))
        if by_id is not None:
            found[by_id.id] = by_id
    if not found:
        raise NotFound(f"no recording {text!r} (neither a catalogue number, a name nor a device recording id)")
    if len(found) > 1:
        forms = ", ".join(f"#{r.id} = {r.device_id}/{r.recording_id}" for r in found.values())
        raise InvalidInput(f"{text!r} is ambiguous: {forms}; name it as #N or DEVICE/RECORDING_ID")
    return next(iter(found.values()))


def free_name(s: Session, unit: str, counterpart: str, date: str, content: str, recording_id: str,
              device_id: str, recording: int | None = None) -> str:
    """The S3 name for these parts (``naming.labelled_name``). Recording ids are only unique per
    device, so when another recording (not ``recording``) already carries the name, the device's
    id is added: two devices' recordings never share a named view."""
    name = naming.labelled_name(unit, counterpart, date, content, recording_id)
    others = select(m.Recording.id).where(m.Recording.name == name)
    if recording is not None:
        others = others.where(m.Recording.id != recording)
    if s.scalars(others).first() is None:
        return name
    return naming.labelled_name(unit, counterpart, date, content, recording_id, device_id)
