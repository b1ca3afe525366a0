"""The newcomer's first look (./run-sim --station): shift → dock over the real link → station → web interface.

Run with the short power-cut scenario and ``--check`` (starts the web interface, checks it
answers, stops); the store it leaves verifies and holds the docked recordings.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_run_sim_station_builds_a_working_office(tmp_path):
    out = tmp_path / "office"
    r = subprocess.run([str(ROOT / "run-sim"), "--station", "--out", str(out), "--scenario",
                        str(ROOT / "sim" / "scenarios" / "power-cut.txt"), "--port", "0", "--check"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"status": "ok", "station": "station-1"}
    assert "6/6 the web interface" in r.stderr
    summary = json.loads((out / "dock-summary.json").read_text())
    assert summary["status"] == "ok" and summary["files_new"] >= 10 and summary["purged"] >= 10
    env = {**os.environ, "STATION_CONFIG": str(out / "station.toml"), "STATION_USER": "auditor",
           "STATION_PASSWORD": "demo-password-2026"}
    v = subprocess.run([sys.executable, "-m", "station", "verify", "--files", "--json"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stdout + v.stderr
    assert json.loads(v.stdout)["files_checked"] >= 10
    users = subprocess.run([sys.executable, "-m", "station", "user", "list", "--json"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert {u["username"] for u in json.loads(users.stdout)} == {"admin", "chief", "clerk", "auditor", "wang"}
