"""The device service (``bodycam run``): one loop from power-on to shutdown.

off -> self-check -> ready (pre-event buffering) -> recording -> ready;
recording -> interrupted -> ready (abnormal end: a reason is asked, D5);
recording -> paused -> recording/ready (lawfully not recording, D6); ready <-> docked.

Everything runs in one thread, paced by the camera (one iteration per frame
or stall timeout), on one injected clock, so a scenario on the simulator's
virtual clock runs a shift in seconds and gives the same journal as real time.
Button callbacks only queue gestures; the loop acts on them.

Officer controls (defaults, see [controls]):
* record double-press: start (ready); pause request (recording: then choose a
  not-recording reason by mark presses within ``pause_request_s``, else recording
  simply continues); resume (paused); retry the self-check (fault).
* record 3 s hold: stop (recording); end the pause (paused).
* mark short presses: N presses = reason N while a reason is asked for (until it is journaled
  missing), else a bookmark.
* mark long press: voice note while held (sealed, attested, linked to the reason it answers).
"""
from __future__ import annotations

import collections
import datetime as dt
import hashlib
import logging
import math
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from firmware import config as config_mod
from firmware import reasons as reasons_mod
from firmware.reasons import ReasonKind, UnknownReason
from firmware.reminder import RecordingReminder
from firmware.selfcheck import Probes, SelfCheckResult, rms_dbfs, run_self_check
from firmware.service_config import ServiceConfig
from firmware.states import NoReasonPending, PendingReason, State, StateMachine
from hw.battery import BatteryError, estimate_hours_left
from hw.buttons import Gesture, GestureButtons, GestureKind
from hw.indicators import Indicators
from recorder.journal import JournalError, iter_records
from recorder.pipeline import Pipeline, RecordingResult
from recorder.segmenter import StorageError
from recorder.verify import verify_directory
from recorder.voice_note import VoiceNoteError, VoiceNoteWriter, seal_orphans

log = logging.getLogger(__name__)

NS = 1_000_000_000
SOUNDS_DIR = Path(__file__).parent / "sounds"
DEFAULT_NOTICE = SOUNDS_DIR / "notice-zh.wav"
RECENT_AUDIO_S = 3.0   # sound kept in RAM so a voice note starts at the press, not at the hold threshold


class AudioOut(Protocol):
    def play(self, path: Path) -> None: ...


class LoggedAudioOut:
    """The simulator's speaker: remembers what it was asked to play."""

    def __init__(self) -> None:
        self.played: list[Path] = []

    def play(self, path: Path) -> None:
        log.info("audio out: %s", path)
        self.played.append(Path(path))


class AplayAudioOut:
    """The Pi's speaker through ALSA ``aplay`` (non-blocking: recording never waits for it)."""

    def play(self, path: Path) -> None:
        import subprocess
        subprocess.Popen(["aplay", "-q", str(path)], stdin=subprocess.DEVNULL)


@dataclass
class Board:
    """What the service runs on besides camera and microphone."""

    battery: Any                          # hw.battery.BatteryGauge
    pin_factory: Any = None               # gpiozero pin factory (MockFactory in sim; None = default)
    audio_out: AudioOut = field(default_factory=LoggedAudioOut)
    storage_free: Callable[[], int] | None = None   # free bytes; default: the evidence filesystem


class _VoiceNote:
    def __init__(self, pressed_ns: int, blocks: list) -> None:
        self.pressed_ns = pressed_ns
        self.blocks = [b for b in blocks if b.mono_ns + len(b.samples) * NS // b.sample_rate > pressed_ns]


class Service:
    def __init__(self, cfg: dict, evidence, devices, board: Board,
                 service_cfg: ServiceConfig | None = None,
                 on_dock: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.sc = service_cfg or ServiceConfig()
        self.ev, self.dev, self.board = evidence, devices, board
        self.clock = devices.timebase.now_ns
        self.on_dock = on_dock or (lambda phase: None)
        self.stop_event = threading.Event()
        self.check_requested = threading.Event()
        self.tick_hooks: list[Callable[[int], None]] = []   # scenario: drive pins etc. at loop time
        self.status_sink: Callable[[SelfCheckResult], None] | None = None
        self.rate = cfg["audio"]["sample_rate"]
        self.reserve = cfg["storage"]["reserve_mb"] * 1024 * 1024
        self.battery_cfg = config_mod.section(cfg, "battery")
        self.thresholds = config_mod.section(cfg, "selfcheck")
        controls = config_mod.section(cfg, "controls")
        settings = config_mod.pipeline_settings(cfg)
        from dataclasses import replace
        settings = replace(settings, prebuffer_s=self.sc.prebuffer_s, prebuffer_audio=self.sc.prebuffer_audio)
        self.bitrate = (cfg["video"]["bitrate_kbps"] + cfg["audio"]["bitrate_kbps"]) * 1000
        self.pipeline = Pipeline(settings, devices.camera, devices.microphone, devices.timebase,
                                 devices.wall_clock, evidence.store.root, sink=evidence.sealer,
                                 position=devices.position,
                                 on_event=self._pipeline_event, storage_low=self._storage_at_reserve)
        self.pipeline.audio_tap = self._audio_in
        self.states = StateMachine(self._journal, self.clock, self.sc.reason_timeout_s,
                                   pending=self._pending_from_journal())
        self.notes = VoiceNoteWriter(evidence.store, evidence.journal, self.rate,
                                     cfg["audio"]["bitrate_kbps"])
        self._gestures: collections.deque[Gesture] = collections.deque()
        self.buttons = GestureButtons(controls, self._gestures.append, clock=self.clock,
                                      pin_factory=board.pin_factory)
        self.indicators = Indicators(config_mod.section(cfg, "indicators"), clock=self.clock,
                                     pin_factory=board.pin_factory)
        self.reminder = RecordingReminder.from_config(config_mod.section(cfg, "reminder"),
                                                      self._remind, self.clock)
        self._recent: collections.deque = collections.deque()
        self._note: _VoiceNote | None = None
        self._note_for_reason: tuple[str, int] | None = None    # (note id, answer by)
        self._pause_request: int | None = None                  # deadline
        self._pause_note: str | None = None
        self._resume_after_stall = False
        self._last_power_ns = self._last_storage_ns = None
        self._battery_low_cued_ns: int | None = None
        self._gauge_failed = False
        self._storage_warned = False
        self.last_check: SelfCheckResult | None = None
        self.cues: list[str] = []   # every cue played, in order (for the scenario report)

    # -- journal ----------------------------------------------------------------
    def _journal(self, kind: str, payload: dict):
        """Journal a fact; a journal that fails is logged, never allowed to stop recording."""
        try:
            return self.ev.journal.append(kind, payload)
        except (JournalError, OSError, ValueError) as exc:
            log.error("could not journal %s: %s", kind, exc)
            return None

    def _pipeline_event(self, kind: str, payload: dict) -> None:
        self._journal(kind, payload)

    def _pending_from_journal(self) -> PendingReason | None:
        """An interruption left unanswered before a restart is still owed (states.py: persist-worthy)."""
        pending = None
        for rec in iter_records(self.ev.journal.path):
            if rec.type == "reason-pending":
                pending = PendingReason(rec.payload.get("cause", "fault"), self.clock())
            elif rec.type in ("reason-given", "reason-missing"):
                pending = None
        return pending

    # -- cues and lamps ----------------------------------------------------------------
    def _cue(self, name: str) -> None:
        self.cues.append(name)
        try:
            self.indicators.cue(name)
        except Exception:
            log.exception("cue %s failed", name)

    def _show(self) -> None:
        self.indicators.show_state(self.states.state.value)

    def _remind(self) -> None:
        self._cue("reminder")

    # -- sound -----------------------------------------------------------------------
    def _audio_in(self, blocks: list) -> None:
        self._recent.extend(blocks)
        horizon = self.clock() - int(RECENT_AUDIO_S * NS)
        while self._recent and self._recent[0].mono_ns < horizon and (
                self._note is None or self._recent[0].mono_ns < self._note.pressed_ns - NS):
            self._recent.popleft()
        if self._note is not None:
            self._note.blocks.extend(blocks)

    def mic_level_dbfs(self, seconds: float = 1.0) -> float:
        if not self._recent:
            return -math.inf
        since = self.clock() - int(seconds * NS)
        pcm = [b.samples for b in self._recent if b.mono_ns >= since] or [self._recent[-1].samples]
        return rms_dbfs(np.concatenate(pcm))

    # -- self-check (D1) -------------------------------------------------------------
    def _probes(self) -> Probes:
        def battery():
            reading = self.board.battery.read()
            return reading.percent, estimate_hours_left(reading, self.battery_cfg.nominal_drain_pct_per_h)

        def camera():
            last = self.pipeline.last_frame_ns
            return last is not None and self.clock() - last <= 2 * self.pipeline.s.stall_timeout_s * NS

        def journal():
            if not self.sc.verify_journal:
                return True
            result = verify_directory(self.ev.store.root, self.ev.signer.public_key_pem(),
                                      allow_open_parts=True)
            if not result.ok:
                log.error("self-check: evidence does not verify: %s", result.failure)
            return result.ok

        return Probes(battery=battery, storage=lambda: max(0, self._free_bytes() - self.reserve),
                      time=lambda: self.dev.wall_clock.at(self.clock()), camera=camera,
                      microphone=self.mic_level_dbfs, journal=journal)

    def self_check(self) -> SelfCheckResult:
        result = run_self_check(self._probes(), self.thresholds, self.bitrate)
        self.last_check = result
        if self.status_sink is not None:
            self.status_sink(result)
        log.info("%s", result.to_text())
        return result

    def _run_check_in_state(self) -> None:
        state = self.states.state
        if state in (State.READY, State.FAULT):
            self.states.run_self_check()
            self._show()
            result = self.self_check()
            self.states.self_check_done(result)
        else:   # recording, paused, docked: check and journal without leaving the state
            result = self.self_check()
            self._journal("self-check", {**result.to_dict(), "state": state.value})
        self._cue("self-check-go" if result.go else "self-check-no-go")
        self._after_state_change()

    # -- power-up ----------------------------------------------------------------------
    def boot(self) -> SelfCheckResult:
        for rec in seal_orphans(self.ev.store, self.ev.journal):
            log.warning("recovered voice note record %d", rec.seq)
        self.states.power_on()
        self._show()
        if self.ev.salvaged:
            self.states.require_reason("power-loss")
            self._cue("reason-required")
        self.pipeline.open()
        self.pipeline.set_buffering(False)   # nothing buffered until the check says ready
        end = self.clock() + int(self.sc.warmup_s * NS)
        while self.clock() < end:
            self.pipeline.step()
            self.indicators.poll()
        result = self.self_check()
        self.states.self_check_done(result)
        self._cue("self-check-go" if result.go else "self-check-no-go")
        self._after_state_change()
        return result

    # -- the loop ------------------------------------------------------------------------
    def run(self, until_ns: int | None = None) -> None:
        """Loop until stop() (or the monotonic instant ``until_ns``, for scenarios)."""
        while not self.stop_event.is_set():
            if until_ns is not None and self.clock() >= until_ns:
                break
            self.iterate()

    def iterate(self) -> None:
        try:
            frame_ns, ended = self.pipeline.step()
        except StorageError as exc:
            log.error("storage failed: %s", exc)
            self._interrupted("fault", detail=f"storage error: {exc}")
            return
        now = self.clock()
        if ended is not None:
            self._recording_ended_by_itself(ended)
        elif frame_ns is not None and self._resume_after_stall and self.states.state is State.READY:
            self._resume_after_stall = False
            self._start("auto-resume")
        for hook in self.tick_hooks:
            hook(now)
        self.buttons.poll()
        while self._gestures:
            self._handle(self._gestures.popleft())
        if self.check_requested.is_set():
            self.check_requested.clear()
            self._run_check_in_state()
        self._timers(now)
        self.indicators.poll()

    def _timers(self, now: int) -> None:
        if self.states.poll():
            self._cue("reason-missing")
        self.reminder.poll()
        if self._note is not None and now - self._note.pressed_ns >= self.sc.voice_note_max_s * NS:
            log.warning("voice note longer than %.0f s: cut", self.sc.voice_note_max_s)
            self._end_note(now)
        if self._note_for_reason and now >= self._note_for_reason[1]:
            note_id, _ = self._note_for_reason
            self._note_for_reason = None
            self._give_reason(None, note_id)
        if self._pause_request is not None and now >= self._pause_request:
            self._pause_request = None
            self._journal("pause-request-expired", {"mono_ns": now, "note_id": self._pause_note})
            self._pause_note = None
            self._cue("reason-missing")
        if self._last_power_ns is None or now - self._last_power_ns >= self.sc.power_poll_s * NS:
            self._last_power_ns = now
            self._watch_battery(now)
        if self._last_storage_ns is None or now - self._last_storage_ns >= self.sc.storage_poll_s * NS:
            self._last_storage_ns = now
            self._watch_storage()

    # -- gestures ------------------------------------------------------------------------
    def _handle(self, g: Gesture) -> None:
        state = self.states.state
        log.debug("gesture %s in %s", g.kind.value, state.value)
        if g.kind is GestureKind.RECORD_START:
            if state is State.READY:
                self._start("officer", g)
            elif state is State.INTERRUPTED:
                self.states.recover()
                self._start("officer", g)
            elif state is State.RECORDING:
                self._pause_request = self.clock() + int(self.sc.pause_request_s * NS)
                self._journal("pause-requested", {"mono_ns": self.clock(), "pressed_ns": g.pressed_ns})
                self._cue("reason-required")
            elif state is State.PAUSED:
                self._resume(g)
            elif state is State.FAULT:
                self._run_check_in_state()
            else:
                log.info("record start ignored in %s", state.value)
        elif g.kind is GestureKind.RECORD_STOP:
            if state is State.RECORDING:
                self._stop_recording(g)
            elif state is State.PAUSED:
                self.states.end_pause()
                self._after_state_change()
        elif g.kind is GestureKind.MARK:
            self._mark(g)
        elif g.kind is GestureKind.MARK_HOLD_START:
            self._note = _VoiceNote(g.pressed_ns, list(self._recent))
            self._cue("voice-note-start")
        elif g.kind is GestureKind.MARK_HOLD_END:
            self._end_note(g.released_ns)

    def _reason_from_presses(self, kind: ReasonKind, count: int):
        """The reason ``count`` presses select, or None (journaled, officer cued to try again)."""
        try:
            return reasons_mod.by_press_count(kind, count)
        except UnknownReason as exc:
            self._journal("reason-invalid", {"kind": kind.value, "count": count, "error": str(exc)})
            self._cue("reason-required")
            return None

    def _mark(self, g: Gesture) -> None:
        state = self.states.state
        if self._pause_request is not None and state is State.RECORDING:
            reason = self._reason_from_presses(ReasonKind.NOT_RECORDING, g.count)
            if reason is not None:
                self._pause(reason.code)
            return
        pending = self.states.pending
        if pending is not None and not pending.missing_logged:   # after reason-missing: a bookmark
            reason = self._reason_from_presses(ReasonKind.INTERRUPTION, g.count)
            if reason is None:
                return
            note = self._note_for_reason[0] if self._note_for_reason else None
            self._note_for_reason = None
            self._give_reason(reason.code, note)
            return
        rid = self.pipeline.rec.id if self.pipeline.recording and hasattr(self.pipeline.rec, "id") else None
        self._journal("mark", {"count": g.count, "pressed_ns": g.pressed_ns, "mono_ns": g.at_ns,
                               "state": state.value, "recording_id": rid})
        self._cue("bookmark")

    def _give_reason(self, code: str | None, note_id: str | None) -> None:
        try:
            self.states.give_reason(code, note_id)
        except NoReasonPending:
            self._journal("mark", {"note_id": note_id, "code": code, "state": self.states.state.value,
                                   "mono_ns": self.clock(), "unsolicited_reason": True})
            return
        self._cue("reason-accepted")

    def _end_note(self, released_ns: int) -> None:
        note, self._note = self._note, None
        if note is None:
            return
        self._cue("voice-note-end")
        pcm = []
        for b in note.blocks:
            n = len(b.samples)
            start = max(0, (note.pressed_ns - b.mono_ns) * b.sample_rate // NS)
            stop = min(n, max(0, (released_ns - b.mono_ns) * b.sample_rate // NS))
            if stop > start:
                pcm.append(b.samples[start:stop])
        wall = self.dev.wall_clock
        t = dt.datetime.fromtimestamp(wall.at(note.pressed_ns).wall_ns / 1e9, dt.timezone.utc)
        note_id = f"VN-{t:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        pending = self.states.pending
        link = {"state": self.states.state.value,
                "answers": ("pause-request" if self._pause_request is not None
                            else "interruption" if pending is not None else None),
                "cause": pending.cause if pending else None,
                "interrupted_ns": pending.interrupted_ns if pending else None,
                "recording_id": getattr(self.pipeline.rec, "id", None)}
        try:
            self.notes.seal(note_id, np.concatenate(pcm) if pcm else np.zeros(0, np.int16),
                            wall.at(note.pressed_ns), wall.at(released_ns), link)
        except (VoiceNoteError, JournalError, OSError) as exc:
            log.error("voice note not kept: %s", exc)
            self._journal("voice-note-failed", {"error": str(exc), "pressed_ns": note.pressed_ns})
            return
        if self._pause_request is not None:
            self._pause_note = note_id
        elif pending is not None:
            self._note_for_reason = (note_id, self.clock() + int(self.sc.note_answer_s * NS))

    # -- recording -------------------------------------------------------------------------
    def _start(self, how: str, g: Gesture | None = None) -> None:
        due = self.states.start_recording()
        detail = {"how": how}
        if g is not None:
            detail["press_mono_ns"] = g.pressed_ns
        try:
            self.pipeline.begin_recording(detail)
        except StorageError as exc:
            log.error("cannot start recording: %s", exc)
            self._interrupted("storage-full", detail=str(exc))
            return
        self.reminder.start()
        self._cue("recording-started")
        if due:
            self._cue("reason-required")
        if self.sc.announce:
            self._announce()
        self._after_state_change()

    def _announce(self) -> None:
        path = Path(self.sc.announce_file) if self.sc.announce_file else DEFAULT_NOTICE
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            self.board.audio_out.play(path)
        except OSError as exc:
            log.error("announcement %s not played: %s", path, exc)
            self._journal("announcement-failed", {"file": path.name, "error": str(exc)})
            return
        self._journal("announcement", {"file": path.name, "sha256": digest, "mono_ns": self.clock()})

    def _end_pipeline_recording(self, cause: str) -> None:
        self.reminder.stop()
        try:
            self.pipeline.end_recording(cause)
        except StorageError as exc:
            log.error("storage failed while ending the recording: %s", exc)

    def _stop_recording(self, g: Gesture | None = None) -> None:
        self._pause_request = None
        self._end_pipeline_recording("stop")
        self.states.stop_recording()
        self._cue("recording-stopped")
        self._after_state_change()

    def _pause(self, code: str) -> None:
        note, self._pause_note, self._pause_request = self._pause_note, None, None
        self._end_pipeline_recording("pause")
        self.states.pause(code, note_id=note)
        self._cue("reason-accepted")
        self._after_state_change()

    def _resume(self, g: Gesture) -> None:
        self.states.resume()
        try:
            self.pipeline.begin_recording({"how": "resume", "press_mono_ns": g.pressed_ns})
        except StorageError as exc:
            self._interrupted("storage-full", detail=str(exc))
            return
        self.reminder.start()
        self._cue("recording-started")
        self._after_state_change()

    def _interrupted(self, cause: str, **detail) -> None:
        """End the recording for a cause other than the officer's stop: a reason is owed (D5)."""
        if self.pipeline.recording:
            self._end_pipeline_recording(cause)
        self.reminder.stop()
        if self.states.state is State.RECORDING:
            self.states.interrupt(cause, **detail)
            self.states.recover()
            self._cue("reason-required" if cause == "camera-stall" else "fault")
        self._after_state_change()

    def _recording_ended_by_itself(self, result: RecordingResult) -> None:
        cause = result.cause
        self.reminder.stop()
        if self.states.state is not State.RECORDING:
            return
        if cause == "camera-stall":
            self.states.interrupt("camera-stall")
            self.states.recover()
            self._resume_after_stall = self.sc.auto_resume_after_stall
            self._cue("fault")
        else:
            self.states.interrupt("storage-full" if cause == "storage-full" else "fault", detail=cause)
            self.states.recover()
            self._cue("fault")
        self._after_state_change()

    def _after_state_change(self) -> None:
        self.pipeline.set_buffering(self.states.state is State.READY)
        self._show()

    # -- power and storage -------------------------------------------------------------------
    def _free_bytes(self) -> int:
        return self.board.storage_free() if self.board.storage_free else self.ev.store.free_bytes()

    def _storage_at_reserve(self) -> bool:
        return self._free_bytes() <= self.reserve

    def _watch_storage(self) -> None:
        free = self._free_bytes()
        low = free <= self.reserve + self.sc.storage_warn_mb * 1024 * 1024
        if low and not self._storage_warned:
            self._storage_warned = True
            self._journal("storage-low", {"free_bytes": free, "reserve_bytes": self.reserve})
            self._cue("fault")
        elif not low:
            self._storage_warned = False

    def _watch_battery(self, now: int) -> None:
        try:
            reading = self.board.battery.read()
        except BatteryError as exc:
            if not self._gauge_failed:
                self._gauge_failed = True
                self._journal("battery-gauge-error", {"error": str(exc)})
                log.error("battery gauge: %s", exc)
            return
        self._gauge_failed = False
        pct = reading.percent
        if pct <= self.battery_cfg.critical_percent and self.states.state is State.RECORDING:
            self._journal("battery-critical", {"percent": pct})
            self._interrupted("low-battery", percent=pct)
            self._cue("low-battery")
        elif pct <= self.battery_cfg.low_percent and not reading.charging:
            repeat = int(self.sc.low_battery_repeat_s * NS)
            if self._battery_low_cued_ns is None or now - self._battery_low_cued_ns >= repeat:
                if self._battery_low_cued_ns is None:
                    self._journal("battery-low", {"percent": pct})
                self._battery_low_cued_ns = now
                self._cue("low-battery")
        elif pct > self.battery_cfg.low_percent:
            self._battery_low_cued_ns = None

    # -- docking hook ------------------------------------------------------------------------
    def dock(self) -> None:
        """The device was docked (dock link): stop recording normally, stop buffering."""
        if self.states.state is State.RECORDING:
            self._stop_recording()
        if self.states.state is State.PAUSED:
            self.states.end_pause()
        self.states.dock()
        self._after_state_change()
        self.on_dock("start")

    def undock(self) -> None:
        self.states.undock()
        self._after_state_change()
        self.on_dock("stop")

    # -- shutdown ---------------------------------------------------------------------------
    def stop(self) -> None:
        self.stop_event.set()

    def shutdown(self, cause: str = "stop") -> None:
        if self._note is not None:
            self._end_note(self.clock())
        if self.states.state is State.RECORDING:
            self._end_pipeline_recording("stop")
            self.states.stop_recording()
        if self.states.state is State.PAUSED:
            self.states.end_pause()
        if self.states.state is State.INTERRUPTED:
            self.states.recover()
        try:
            self.states.power_off("shutdown")
        except Exception as exc:
            log.error("power-off transition: %s", exc)
        self.pipeline.close()
        self.buttons.close()
        self.indicators.close()
        self.ev.close(cause)
