import os
from pathlib import Path

import pytest
from hypothesis import settings

from common.clock import SimulatedWallClock
from recorder.encode import VideoSettings
from recorder.pipeline import Pipeline, PipelineSettings
from sim.camera import CameraFaults, SimCamera
from sim.clock import SimTime
from sim.microphone import MicFaults, SimMicrophone

# ------------------------------------------------------------------ CI switches
#
# CI=true (set by .ci/run) or BODYCAM_STRICT=1 turns both on:
# * strict skips: CI runs as root after deploy/bootstrap-dev.sh, so every tool a test needs
#   (chronyd, tesseract, namespaces, tmpfs, useradd, systemd-analyze...) is there, and a
#   skip means a broken set-up. Each skipped test is reported as failed, with its skip
#   reason, and the run exits non-zero. (xfail is not a skip and is left alone.)
# * the Hypothesis "ci" profile: derandomised, so a failure found in CI reproduces with
#   the same examples; the failing example's blob is printed; a fixed deadline.
#   HYPOTHESIS_PROFILE=<name> picks a profile explicitly.

def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


STRICT = _truthy(os.environ.get("CI")) or _truthy(os.environ.get("BODYCAM_STRICT"))

settings.register_profile("ci", derandomize=True, print_blob=True, deadline=2000)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if STRICT else "dev"))

# The self-check warns when encryption is on and swap is active (firmware.selfcheck): a
# simulated device judges an empty stand-in for /proc/swaps, not the host's swap.
os.environ.setdefault("BODYCAM_PROC_SWAPS", os.devnull)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped in strict mode (CI=true or BODYCAM_STRICT=1), which CI "
                           f"does not allow: {reason}\nInstall what the test needs "
                           f"(deploy/bootstrap-dev.sh) or run it as root.")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if STRICT and terminalreporter.stats.get("skipped"):   # e.g. a module skipped at collection
        terminalreporter.write_line("strict mode: skips are failures in CI", red=True)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped") if reporter is not None else None
    if STRICT and skipped and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# 2026-11-23 08:00:00 +08:00, a fixed wall time so stamps are predictable
WALL_START_NS = 1_795_392_000 * 1_000_000_000


def sim_pipeline(out: Path, width=320, height=240, fps=30, segment_seconds=10, bitrate_kbps=800,
                 camera_faults=None, mic_faults=None, wav=None, wall=None, **settings):
    t = SimTime(realtime=False, start_ns=5_000_000_000)
    cam = SimCamera(width, height, fps, t, camera_faults or CameraFaults())
    mic = SimMicrophone(48000, time_source=t, faults=mic_faults or MicFaults(), wav=wav)
    wall = wall or SimulatedWallClock(WALL_START_NS, t.now_ns())
    s = PipelineSettings(video=VideoSettings(width, height, fps, bitrate_kbps=bitrate_kbps),
                         segment_seconds=segment_seconds, device_id="BWC-0042",
                         officer_id="031337", timezone="Asia/Shanghai", **settings)
    return Pipeline(s, cam, mic, t, wall, out)


@pytest.fixture
def record(tmp_path):
    """Record on the simulator, as fast as possible; returns (pipeline, results)."""
    def _record(duration, **kw):
        p = sim_pipeline(tmp_path / "evidence", **kw)
        return p, p.run(duration)
    return _record


# one throwaway PostgreSQL cluster per session, for the station tests that run on both backends
from tests.pg import pg_cluster  # noqa: E402,F401

# the scripted one-hour shift, run once per session for the scenario and shift-report tests
from tests.shift_fixture import shift_1h  # noqa: E402,F401
