"""The README's first command: record on simulated hardware, verify, print where it is."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_run_sim_records_verifies_and_prints_the_directory(tmp_path):
    r = subprocess.run([sys.executable, "-m", "firmware.simrun", "--fast", "--duration", "4",
                        "--out", str(tmp_path / "sim")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == str(tmp_path / "sim" / "evidence")
    assert lines[-1].startswith("PASS device ")
    assert list((tmp_path / "sim" / "evidence" / "recordings").glob("*/*.ts"))
    assert (tmp_path / "sim" / "identity" / "device-key.pub.pem").exists()
