"""The scripted one-hour shift (``sim/scenarios/shift-1h.txt``), run once per test session by
the real runner as ``bodycam scenario`` runs it (``sim.scenario.run_file``: evidence, device key
and shift report), for the scenario tests and the shift-report tests alike: it is the suite's
longest simulation (about 45 s), and both read the same evidence without changing it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from recorder.identity import PUBLIC_KEY_NAME
from sim.scenario import run_file

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Shift:
    evidence: Path          # the device's evidence directory
    public_key: Path        # the device key's public half (beside it, never in it)
    report: Path            # the timeline SVG beside it (``OUT-report.svg``; the summary is .txt)


@pytest.fixture(scope="session")
def shift_1h(tmp_path_factory: pytest.TempPathFactory) -> Shift:
    base = tmp_path_factory.mktemp("shift-1h")
    out = base / "shift"
    cwd = os.getcwd()
    os.chdir(REPO)   # the script names its speech file relative to the repository
    try:
        status = run_file(REPO / "sim/scenarios/shift-1h.txt", out)
    finally:
        os.chdir(cwd)
    assert status == 0
    return Shift(out, base / "shift-key" / PUBLIC_KEY_NAME, base / "shift-report.svg")
