"""The device service (``bodycam run``): one loop from power-on to shutdown.

off -> self-check -> ready (pre-event buffering) -> recording -> ready;
recording -> interrupted -> ready (abnormal end: a reason is asked, D5);
recording -> paused -> recording/ready (lawfully not recording, D6); ready <-> docked.

Everything runs in one thread, paced by the camera (one iteration per frame
or stall timeout, :meth:`recorder.pipeline.Pipeline.step`), on one injected
clock, so a scenario on the simulator's virtual clock runs a shift in seconds
and gives the same journal as real time. Button callbacks only queue
gestures; the loop acts on them.

This module only wires and sequences; each concern lives in its own module:
what a gesture means (``firmware.intents``), the states and the questions in
flight (``firmware.states``), voice notes (``firmware.voice_notes``), battery
and storage (``firmware.watches``), the spoken notice
(``firmware.announcement``), a reason owed across a reboot
(``firmware.pending_reasons``), the speaker (``hw.audio_out``).

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
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from gpiozero.pins import Factory

from firmware import config as config_mod
from firmware import reasons as reasons_mod
from firmware.announcement import announce
from firmware.evidence import Evidence
from firmware.hardware import Devices
from firmware.intents import Intent, intent_for
from firmware.pending_reasons import pending_from_journal
from firmware.reasons import Reason, ReasonKind, UnknownReason
from firmware.reminder import RecordingReminder, ReminderConfig
from firmware.selfcheck import Probes, SelfCheckResult, SelfCheckThresholds, run_self_check
from firmware.service_config import ServiceConfig
from firmware.states import Answered, State, StateMachine
from firmware.voice_notes import RecentSound, note_id
from firmware.watches import MB, BatteryWatch, Power, StorageWatch
from hw.audio_out import AudioOut, LoggedAudioOut
from hw.battery import BatteryConfig, BatteryGauge, estimate_hours_left
from hw.buttons import ControlsConfig, Gesture, GestureButtons
from hw.indicators import IndicatorConfig, Indicators
from recorder.journal import JournalError
from recorder.pipeline import Pipeline, PipelineSettings, RecordingResult
from recorder.segmenter import StorageError
from recorder.verify import verify_directory
from recorder.voice_note import VoiceNoteError, VoiceNoteWriter, seal_orphans

log = logging.getLogger(__name__)

NS = 1_000_000_000


@dataclass
class Board:
    """What the service runs on besides camera and microphone."""

    battery: BatteryGauge                 # Max17048 on the Pi, sim.battery.SimulatedBattery
    pin_factory: Factory | None = None    # gpiozero pin factory (MockFactory in sim; None = default)
    audio_out: AudioOut = field(default_factory=LoggedAudioOut)
    storage_free: Callable[[], int] | None = None   # free bytes; default: the evidence filesystem


@dataclass(frozen=True)
class ServiceSettings:
    """Every setting the service reads, already validated and typed (one object, not a dict)."""

    pipeline: PipelineSettings
    controls: ControlsConfig
    indicators: IndicatorConfig
    battery: BatteryConfig
    selfcheck: SelfCheckThresholds
    reminder: ReminderConfig
    service: ServiceConfig
    reserve_bytes: int                    # [storage] reserve_mb: never recorded into
    # the self-check's encryption item (D1, D13): (mode, recipients), read afresh at each check
    encryption: Callable[[], tuple[str, int]] | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, dict[str, Any]],
                    service: ServiceConfig | None = None) -> ServiceSettings:
        """From a validated configuration (``firmware.config.load``/``validate``); ``service``
        overrides its ``[service]`` section (scenarios)."""
        sc: ServiceConfig = service or (config_mod.section(cfg, "service") if "service" in cfg
                                        else ServiceConfig())
        pipeline = replace(config_mod.pipeline_settings(cfg), prebuffer_s=sc.prebuffer_s,
                           prebuffer_audio=sc.prebuffer_audio)
        return cls(pipeline, config_mod.section(cfg, "controls"), config_mod.section(cfg, "indicators"),
                   config_mod.section(cfg, "battery"), config_mod.section(cfg, "selfcheck"),
                   config_mod.section(cfg, "reminder"), sc, cfg["storage"]["reserve_mb"] * MB,
                   config_mod.encryption_probe(cfg))

    @property
    def bitrate_bps(self) -> int:
        return (self.pipeline.video.bitrate_kbps + self.pipeline.audio.bitrate_kbps) * 1000


class Service:
    def __init__(self, settings: ServiceSettings, evidence: Evidence, devices: Devices, board: Board,
                 on_dock: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.sc = sc = settings.service
        self.ev, self.dev, self.board = evidence, devices, board
        self.clock = devices.timebase.now_ns
        self.on_dock = on_dock or (lambda phase: None)
        self.stop_event = threading.Event()
        self.check_requested = threading.Event()
        self.tick_hooks: list[Callable[[int], None]] = []   # scenario: drive pins etc. at loop time
        self.status_sink: Callable[[SelfCheckResult], None] | None = None
        free = board.storage_free or evidence.store.free_bytes
        self.storage = StorageWatch(free, settings.reserve_bytes, sc.storage_warn_mb * MB,
                                    self._journal, sc.storage_poll_s)
        self.battery = BatteryWatch(board.battery, settings.battery, self._journal,
                                    sc.power_poll_s, sc.low_battery_repeat_s)
        self.pipeline = Pipeline(settings.pipeline, devices.camera, devices.microphone, devices.timebase,
                                 devices.wall_clock, evidence.store.root, sink=evidence.sealer,
                                 position=devices.position,
                                 on_event=self._journal, storage_low=self.storage.at_reserve)
        self.sound = RecentSound()
        self.pipeline.audio_tap = lambda blocks: self.sound.feed(blocks, self.clock())
        self.states = StateMachine(self._journal, self.clock, sc.reason_timeout_s,
                                   pending=pending_from_journal(evidence.journal.path, self.clock()),
                                   pause_request_s=sc.pause_request_s, note_answer_s=sc.note_answer_s)
        self.notes = VoiceNoteWriter(evidence.store, evidence.journal, settings.pipeline.audio.sample_rate,
                                     settings.pipeline.audio.bitrate_kbps, recipients=settings.pipeline.recipients)
        self._gestures: collections.deque[Gesture] = collections.deque()
        self.buttons = GestureButtons(settings.controls, self._gestures.append, clock=self.clock,
                                      pin_factory=board.pin_factory)
        self.indicators = Indicators(settings.indicators, clock=self.clock, pin_factory=board.pin_factory)
        self.reminder = RecordingReminder.from_config(settings.reminder, self._remind, self.clock)
        self.last_check: SelfCheckResult | None = None
        self.cues: list[str] = []   # every cue played, in order (for the scenario report)

    # -- journal ----------------------------------------------------------------
    def _journal(self, kind: str, payload: dict[str, Any]) -> object:
        """Journal a fact; a journal that fails is logged, never allowed to stop recording."""
        try:
            return self.ev.journal.append(kind, payload)
        except (JournalError, OSError, ValueError) as exc:
            log.error("could not journal %s: %s", kind, exc)
            return None

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

    def mic_level_dbfs(self, seconds: float = 1.0) -> float:
        return self.sound.level_dbfs(self.clock(), seconds)

    # -- self-check (D1) -------------------------------------------------------------
    def _probes(self) -> Probes:
        def battery() -> tuple[float, float | None]:
            reading = self.board.battery.read()
            return reading.percent, estimate_hours_left(reading, self.settings.battery.nominal_drain_pct_per_h)

        def camera() -> bool:
            last = self.pipeline.last_frame_ns
            return last is not None and self.clock() - last <= 2 * self.pipeline.s.stall_timeout_s * NS

        def journal() -> bool:
            if not self.sc.verify_journal:
                return True
            result = verify_directory(self.ev.store.root, self.ev.signer.public_key_pem(),
                                      allow_open_parts=True)
            if not result.ok:
                log.error("self-check: evidence does not verify: %s", result.failure)
            return result.ok

        return Probes(battery=battery, storage=self.storage.usable_bytes,
                      time=lambda: self.dev.wall_clock.at(self.clock()), camera=camera,
                      microphone=self.mic_level_dbfs, journal=journal, encryption=self.settings.encryption)

    def self_check(self) -> SelfCheckResult:
        result = run_self_check(self._probes(), self.settings.selfcheck, self.settings.bitrate_bps)
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
        elif frame_ns is not None and self.states.camera_returned():
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
        if self.sound.holding and now - (self.sound.pressed_ns or now) >= self.sc.voice_note_max_s * NS:
            log.warning("voice note longer than %.0f s: cut", self.sc.voice_note_max_s)
            self._end_note(now)
        for done in self.states.poll_requests():
            self._cue("reason-accepted" if done is Answered.NOTE_ANSWERED else "reason-missing")
        power = self.battery.poll(now, self.states.state is State.RECORDING)
        if power is Power.CRITICAL:
            self._interrupted("low-battery", permille=self.battery.permille)
            self._cue("low-battery")
        elif power is Power.LOW:
            self._cue("low-battery")
        if self.storage.poll(now):
            self._cue("fault")

    # -- gestures ------------------------------------------------------------------------
    def _handle(self, g: Gesture) -> None:
        states = self.states
        pending = states.pending
        intent = intent_for(g, states.state, states.pause_requested,
                            reason_asked=pending is not None and not pending.missing_logged)
        log.debug("gesture %s in %s: %s", g.kind.value, states.state.value, intent.value)
        if intent is Intent.START:
            self._start("officer", g)
        elif intent is Intent.START_AFTER_INTERRUPTION:
            states.recover()
            self._start("officer", g)
        elif intent is Intent.REQUEST_PAUSE:
            states.request_pause(g.pressed_ns)
            self._cue("reason-required")
        elif intent is Intent.RESUME:
            self._resume(g)
        elif intent is Intent.RETRY_CHECK:
            self._run_check_in_state()
        elif intent is Intent.STOP:
            self._stop_recording()
        elif intent is Intent.END_PAUSE:
            states.end_pause()
            self._after_state_change()
        elif intent is Intent.PAUSE_REASON:
            reason = self._reason_from_presses(ReasonKind.NOT_RECORDING, g.count)
            if reason is not None:
                self._pause(reason.code)
        elif intent is Intent.INTERRUPTION_REASON:
            reason = self._reason_from_presses(ReasonKind.INTERRUPTION, g.count)
            if reason is not None and states.answer_with_code(reason.code):
                self._cue("reason-accepted")
        elif intent is Intent.BOOKMARK:
            self._journal("mark", {"count": g.count, "pressed_ns": g.pressed_ns, "mono_ns": g.at_ns,
                                   "state": states.state.value,
                                   "recording_id": self.pipeline.current_recording_id})
            self._cue("bookmark")
        elif intent is Intent.NOTE_START:
            self.sound.hold(g.pressed_ns if g.pressed_ns is not None else g.at_ns)
            self._cue("voice-note-start")
        elif intent is Intent.NOTE_END:
            self._end_note(g.released_ns if g.released_ns is not None else g.at_ns)
        else:
            log.info("%s ignored in %s", g.kind.value, states.state.value)

    def _reason_from_presses(self, kind: ReasonKind, count: int) -> Reason | None:
        """The reason ``count`` presses select, or None (journaled, officer cued to try again)."""
        try:
            return reasons_mod.by_press_count(kind, count)
        except UnknownReason as exc:
            self._journal("reason-invalid", {"kind": kind.value, "count": count, "error": str(exc)})
            self._cue("reason-required")
            return None

    def _end_note(self, released_ns: int) -> None:
        held = self.sound.release(released_ns)
        if held is None:
            return
        pressed_ns, pcm = held
        self._cue("voice-note-end")
        wall = self.dev.wall_clock
        vn_id = note_id(wall.at(pressed_ns).wall_ns)
        pending = self.states.pending
        link = {"state": self.states.state.value, "answers": self.states.note_answers(),
                "cause": pending.cause if pending else None,
                "interrupted_ns": pending.interrupted_ns if pending else None,
                "recording_id": self.pipeline.current_recording_id}
        try:
            self.notes.seal(vn_id, pcm, wall.at(pressed_ns), wall.at(released_ns), link)
        except (VoiceNoteError, JournalError, OSError) as exc:
            log.error("voice note not kept: %s", exc)
            self._journal("voice-note-failed", {"error": str(exc), "pressed_ns": pressed_ns})
            return
        self.states.note_recorded(vn_id)

    # -- recording -------------------------------------------------------------------------
    def _start(self, how: str, g: Gesture | None = None) -> None:
        due = self.states.start_recording()
        detail: dict[str, Any] = {"how": how}
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
            announce(self.board.audio_out, self.sc.announce_file, self._journal, self.clock)
        self._after_state_change()

    def _end_pipeline_recording(self, cause: str) -> None:
        self.reminder.stop()
        try:
            self.pipeline.end_recording(cause)
        except StorageError as exc:
            log.error("storage failed while ending the recording: %s", exc)

    def _stop_recording(self) -> None:
        self._end_pipeline_recording("stop")
        self.states.stop_recording()
        self._cue("recording-stopped")
        self._after_state_change()

    def _pause(self, code: str) -> None:
        self._end_pipeline_recording("pause")
        self.states.pause(code)
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

    def _interrupted(self, cause: str, **detail: object) -> None:
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
            if self.sc.auto_resume_after_stall:
                self.states.await_camera()
        else:
            self.states.interrupt("storage-full" if cause == "storage-full" else "fault", detail=cause)
            self.states.recover()
        self._cue("fault")
        self._after_state_change()

    def _after_state_change(self) -> None:
        self.pipeline.set_buffering(self.states.state is State.READY)
        self._show()

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
        if self.sound.holding:
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
