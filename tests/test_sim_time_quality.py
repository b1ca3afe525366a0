"""Issue 9 B6: the simulator has one time quality. ``bodycam status --sim`` must not report a
synced clock while ``bodycam record --sim`` on the same simulator stamps and journals another."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recorder.journal import iter_records

REPO = Path(__file__).resolve().parents[1]


def bodycam(*args):
    return subprocess.run([sys.executable, "-m", "firmware", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("fast", [False, True], ids=["realtime", "fast"])
def test_status_sim_reports_the_quality_that_record_sim_stamps(tmp_path, fast):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[video]\nwidth = 320\nheight = 240\n[segment]\nseconds = 1\n"
                   f"[storage]\nreserve_mb = 0\n[service]\nruntime_dir = \"{tmp_path / 'run'}\"\n")
    ev, key = tmp_path / "ev", tmp_path / "key"
    rec = bodycam("record", "--sim", *(["--fast"] if fast else []), "--duration", 1, "--config", cfg,
                  "--out", ev, "--key-dir", key, "--provision")
    assert rec.returncode == 0, rec.stderr
    journal = list(iter_records(ev / "journal.log"))
    segs = [r.payload for r in journal if r.type == "segment"]
    assert segs
    stamped = {s[k]["time_quality"] for s in segs for k in ("wall_start", "wall_end")}
    stamped |= {r.message["time_quality"] for r in journal if r.type in ("recording-start", "segment")}
    assert len(stamped) == 1, stamped
    [recorded] = stamped

    st = bodycam("status", "--sim", "--config", cfg, "--out", ev, "--key-dir", key)
    assert st.returncode in (0, 1), st.stderr
    [line] = [ln for ln in st.stdout.splitlines() if re.match(r"\s+\w+\s+time\s", ln)]
    shown = re.search(r"\((GPS|NTP|RTC|UNSYNCED)\)|(never synced)|(RTC only)", line)
    assert shown, line
    reported = shown.group(1) or ("UNSYNCED" if shown.group(2) else "RTC")
    [check] = [r.payload for r in iter_records(ev / "journal.log") if r.type == "self-check"]
    [item] = [i for i in check["items"] if i["name"] == "time"]
    assert item["measured"]["quality"] == reported
    assert reported == recorded, f"status --sim says {line.strip()!r}, recordings say {recorded}"
