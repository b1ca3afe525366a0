"""The habits that keep the code as it is: ruff (lint, import order), mypy (strict for the
core and the evidence-format layer) and import-linter (the arrows between the packages),
all configured in pyproject.toml and run here so `./run-tests` and CI run them too."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*cmd: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(extra_env or {})}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_ruff():
    r = _run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy():
    r = _run(str(BIN / "mypy"), "--no-incremental", "--cache-dir", os.devnull)
    assert r.returncode == 0, r.stdout[-20000:] + r.stderr


def test_import_contracts():
    r = _run(str(BIN / "lint-imports"), "--no-cache")
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout + r.stderr


def test_import_contracts_can_fail(tmp_path):
    """The contracts are not vacuous: a recorder module importing the simulator breaks two."""
    probe = REPO / "recorder" / "_contract_probe.py"
    probe.write_text("import sim.camera  # a forbidden arrow, written only for this test\n")
    try:
        r = _run(str(BIN / "lint-imports"), "--no-cache")
    finally:
        probe.unlink()
    assert r.returncode != 0
    assert "recorder knows no GPIO, serial port, configfs, policy or simulator BROKEN" in r.stdout
    assert "production code reaches the simulator only through firmware.hardware BROKEN" in r.stdout
