"""One writer per evidence directory (issue 9, B3).

A second ``record`` (or ``run``, ``status``, ``scenario``, ``dock serve``) on a directory
another process is writing would salvage that process's open segment and interleave
journal records. Every writer opens the root through ``Journal.open``, which takes an
exclusive flock on ``journal.log``: the second one exits 5 naming the holder's pid and
touches nothing; the lock dies with its holder, however it dies.
"""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recorder.journal import EvidenceInUse, Journal, iter_records
from recorder.verify import verify_directory
from tests.media_fixture import new_device

REPO = Path(__file__).resolve().parents[1]
EXIT_IN_USE = 5


def bodycam(*args) -> list[str]:
    return [sys.executable, "-m", "firmware", *map(str, args)]


@pytest.fixture
def bench(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[video]\nwidth = 320\nheight = 240\nbitrate_kbps = 600\n[segment]\nseconds = 2\n"
                   f"[storage]\nreserve_mb = 0\n[service]\nruntime_dir = \"{tmp_path / 'run'}\"\n")
    return tmp_path, cfg, tmp_path / "ev", tmp_path / "key"


def start_recording(cfg, ev, key, duration):
    """A real-time ``bodycam record`` into ``ev``; returns once its first segment is being written."""
    proc = subprocess.Popen(bodycam("record", "--sim", "--duration", duration, "--config", cfg,
                                    "--out", ev, "--key-dir", key, "--provision"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 60
    while not list(ev.glob("recordings/*/*.part")):
        if proc.poll() is not None:
            raise AssertionError(f"first recorder exited early: {proc.stderr.read()}")
        assert time.monotonic() < deadline, "first recorder never started a segment"
        time.sleep(0.05)
    return proc


def part_sizes(ev: Path) -> list[int]:
    """Sizes of the open segments now (one may be sealed and renamed while we look)."""
    out = []
    for p in ev.rglob("*.part"):
        try:
            out.append(p.stat().st_size)
        except FileNotFoundError:
            pass
    return out


def journal_bytes(ev: Path) -> bytes:
    return (ev / "journal.log").read_bytes()


def assert_refused(r: subprocess.CompletedProcess, ev: Path, holder_pid: int) -> None:
    assert r.returncode == EXIT_IN_USE, (r.returncode, r.stderr)
    assert (f"bodycam: error: evidence directory {ev} is in use by another process "
            f"(pid {holder_pid})") in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_every_writer_is_refused_while_one_records_and_the_first_evidence_verifies(bench):
    tmp, cfg, ev, key = bench
    first = start_recording(cfg, ev, key, 14)
    try:
        seconds = [
            bodycam("record", "--sim", "--fast", "--duration", 2, "--config", cfg, "--out", ev,
                    "--key-dir", key),
            bodycam("run", "--sim", "--duration", 2, "--config", cfg, "--out", ev, "--key-dir", key),
            bodycam("status", "--sim", "--config", cfg, "--out", ev, "--key-dir", key),
            bodycam("dock", "serve", "--config", cfg, "--evidence", ev, "--key-dir", key,
                    "--listen-address", "127.0.0.1", "--port", 0),
        ]
        for cmd in seconds:
            before = journal_bytes(ev)
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)
            assert first.poll() is None, "the first recorder must still be recording"
            assert_refused(r, ev, first.pid)
            # nothing journaled by the second one: the journal only grew by the first one's lines
            assert journal_bytes(ev).startswith(before)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err
    recs = list(iter_records(ev / "journal.log"))
    assert [r.type for r in recs].count("boot") == 1                      # only the first one's
    assert not [r for r in recs if r.type == "segment" and r.payload.get("recovered")]
    v = subprocess.run(bodycam("verify", ev, "--pubkey", key / "device-key.pub.pem"),
                       capture_output=True, text=True, cwd=REPO)
    assert v.returncode == 0, v.stdout + v.stderr
    assert v.stdout.splitlines()[-1].startswith("PASS device ")


def test_a_running_scenario_holds_the_lock(tmp_path):
    script = tmp_path / "long.txt"
    script.write_text("set video.width 160\nset video.height 120\nset video.fps 5\n"
                      "set audio.sample_rate 16000\nset segment.seconds 10\n"
                      "00:01 double-press record\n12:00 hold record 3s\nend 12:30\n")
    ev = tmp_path / "ev"
    scen = subprocess.Popen(bodycam("scenario", script, "--out", ev), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not list(ev.glob("recordings/*/*.part")):
            if scen.poll() is not None:
                raise AssertionError(f"scenario ended before it was caught recording: "
                                     f"{scen.stdout.read()} {scen.stderr.read()}")
            assert time.monotonic() < deadline, "scenario never started recording"
            time.sleep(0.02)
        r = subprocess.run(bodycam("record", "--sim", "--fast", "--duration", 2, "--out", ev,
                                   "--key-dir", tmp_path / "ev-key"),
                           capture_output=True, text=True, cwd=REPO, timeout=60)
        assert scen.poll() is None, "the scenario ended before the second writer was refused"
        assert_refused(r, ev, scen.pid)
        out, err = scen.communicate(timeout=300)
    finally:
        if scen.poll() is None:
            scen.kill()
            scen.wait()
    assert scen.returncode == 0, out + err
    assert "verify: OK" in out


def test_lock_goes_with_a_killed_holder_and_the_next_writer_salvages(bench):
    tmp, cfg, ev, key = bench
    first = start_recording(cfg, ev, key, 60)
    try:
        refused = subprocess.run(bodycam("record", "--sim", "--fast", "--duration", 2, "--config", cfg,
                                         "--out", ev, "--key-dir", key),
                                 capture_output=True, text=True, cwd=REPO, timeout=60)
        assert_refused(refused, ev, first.pid)
        # killed once media has reached its open segment (the muxer writes in 32 KB blocks:
        # on a loaded machine the part may still be empty when the refusal is seen)
        deadline = time.monotonic() + 60
        while not any(size >= 188 * 10 for size in part_sizes(ev)):
            assert first.poll() is None and time.monotonic() < deadline, "no media reached the part"
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert list(ev.rglob("*.part")), "the killed recorder left an open segment"
    r = subprocess.run(bodycam("record", "--sim", "--fast", "--duration", 2, "--config", cfg,
                               "--out", ev, "--key-dir", key),
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not list(ev.rglob("*.part"))
    recs = list(iter_records(ev / "journal.log"))
    assert [x.payload["previous_session"]["ended"] for x in recs if x.type == "boot"] == \
        ["none", "abnormally"]
    assert [x for x in recs if x.type == "segment" and x.payload.get("recovered")]
    result = verify_directory(ev, (key / "device-key.pub.pem").read_bytes())
    assert result.ok, result.failure


def test_journal_open_takes_the_lock_and_close_gives_it_back(tmp_path):
    dev = new_device(tmp_path)
    dev.journal.append("boot", {})
    with pytest.raises(EvidenceInUse, match="already open for writing in this process"):
        Journal.open(dev.root, dev.signer, dev.journal._clock)
    before = journal_bytes(dev.root)
    dev.journal.close()
    again = Journal.open(dev.root, dev.signer, dev.journal._clock)
    assert journal_bytes(dev.root) == before
    again.close()
    # no lock file or pid file of its own: no file under the root but the journal
    assert [p.name for p in dev.root.rglob("*") if p.is_file()] == ["journal.log"]
