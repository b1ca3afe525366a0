"""The ``[service]`` settings: pre-event buffer, reason prompts, watches, announcement.

Registered in firmware/config.py ``SECTIONS``; read with ``config.section(cfg, "service")``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from common.settings import Section


@dataclass(frozen=True)
class ServiceConfig(Section):
    """The ``[service]`` settings (seconds unless named otherwise)."""

    SECTION = "service"

    prebuffer_s: float = 30.0            # pre-event video kept in RAM while ready (0-120; 0 = off)
    prebuffer_audio: bool = False        # keep sound in the pre-event buffer too (else counted silence)
    reason_timeout_s: float = 60.0       # after a resumed start, an unanswered reason is reason-missing
    pause_request_s: float = 20.0        # after a pause request, time to choose a not-recording reason
    note_answer_s: float = 5.0           # after a voice note, time to add a reason code by presses
    voice_note_max_s: float = 120.0      # a longer hold is cut here
    power_poll_s: float = 5.0            # battery gauge read interval
    storage_poll_s: float = 5.0          # free-space check interval
    storage_warn_mb: int = 1024          # above storage.reserve_mb: warn cue and record
    low_battery_repeat_s: float = 300.0  # repeat the low-battery cue this often
    warmup_s: float = 1.0                # capture before the boot self-check (camera, mic level)
    verify_journal: bool = True          # self-check verifies the whole evidence directory
    announce: bool = False               # play the spoken notice at each start (D7)
    announce_file: str = ""              # WAV; empty: the shipped firmware/sounds/notice-zh.wav
    auto_resume_after_stall: bool = True  # camera back after a stall: recording resumes by itself
    runtime_dir: str = "/run/bodycam"    # pid/lock and status file for 'bodycam status'

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(f.default, bool):
                if not isinstance(v, bool):
                    raise ValueError(f"[service] {f.name} must be true or false, got {v!r}")
            elif isinstance(f.default, str):
                if not isinstance(v, str):
                    raise ValueError(f"[service] {f.name} must be a string, got {v!r}")
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"[service] {f.name} must be a number >= 0, got {v!r}")
        if self.prebuffer_s > 120:
            raise ValueError(f"[service] prebuffer_s must be 0-120, got {self.prebuffer_s!r}")
        for name in ("reason_timeout_s", "pause_request_s", "note_answer_s", "voice_note_max_s",
                     "power_poll_s", "storage_poll_s", "low_battery_repeat_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"[service] {name} must be > 0")
        if not self.runtime_dir.strip():
            raise ValueError("[service] runtime_dir must not be empty")
