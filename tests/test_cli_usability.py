"""What a new user trips on (issue 9, B4, B5, B9): the command line says what is wrong, in one
voice, with the README's exit codes, and creates nothing when it refuses."""
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.media_fixture import new_device, record_session
from tests.tmpfs import tmpfs

REPO = Path(__file__).resolve().parents[1]
SMALL = "[video]\nwidth = 320\nheight = 240\n[segment]\nseconds = 2\n"


def bodycam(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "firmware", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def small_config(tmp_path, extra=""):
    f = tmp_path / "c.toml"
    f.write_text(SMALL + f"[service]\nruntime_dir = \"{tmp_path / 'run'}\"\n" + extra)
    return f


# ---- B4: a duration that records nothing is a usage error ---------------------------------

@pytest.mark.parametrize("duration", ["0", "-5", "nan", "inf"])
@pytest.mark.parametrize("command", ["record", "run"])
def test_zero_negative_and_non_finite_durations_are_usage_errors(tmp_path, command, duration):
    cfg = small_config(tmp_path)
    r = bodycam(command, "--sim", f"--duration={duration}", "--config", cfg, "--out", tmp_path / "ev",
                "--key-dir", tmp_path / "key", "--provision")
    assert r.returncode == 2, r.stderr
    assert "bodycam: error: argument --duration: must be a number of seconds greater than 0" in r.stderr
    assert not (tmp_path / "ev").exists() and not (tmp_path / "key").exists()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("duration", ["0", "-1"])
def test_run_sim_refuses_a_duration_that_records_nothing(tmp_path, duration):
    r = subprocess.run([sys.executable, "-m", "firmware.simrun", "--fast", f"--duration={duration}",
                        "--out", str(tmp_path / "sim")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "PASS" not in r.stdout
    assert "--duration: must be a number of seconds greater than 0" in r.stderr
    assert not (tmp_path / "sim").exists()


# ---- B5: a config file that is not UTF-8 is a configuration error naming the file ---------

NOT_UTF8 = b'[device]\nid = "BWC-\xe9\xff"\n'


def test_non_utf8_config_is_a_configuration_error_naming_the_file(tmp_path):
    f = tmp_path / "latin1.toml"
    f.write_bytes(NOT_UTF8)
    for args in (("config", "check", f),
                 ("record", "--sim", "--fast", "--duration", 1, "--config", f, "--out", tmp_path / "ev"),
                 ("dock", "serve", "--config", f, "--evidence", tmp_path / "ev"),
                 ("scenario", REPO / "sim/scenarios/shift-1h.txt", "--config", f,
                  "--out", tmp_path / "sc")):
        r = bodycam(*args)
        assert r.returncode == 3, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert f"bodycam: error: {f}: not valid TOML: not UTF-8 text (byte 0xe9 on line 2)" in r.stderr
    assert not (tmp_path / "ev").exists() and not (tmp_path / "sc").exists()


def test_non_utf8_gadget_and_dock_station_configs_are_their_config_errors(tmp_path):
    from hw.usb_gadget import GadgetConfigError, load_settings
    from station import config as dock_config

    f = tmp_path / "latin1.toml"
    f.write_bytes(NOT_UTF8)
    with pytest.raises(GadgetConfigError, match=f"{f}: not valid TOML: not UTF-8"):
        load_settings(f)
    with pytest.raises(dock_config.DockConfigError, match=f"{f}: not valid TOML: not UTF-8"):
        dock_config.load(f)


# ---- B9 ----------------------------------------------------------------------------------

def test_version():
    r = bodycam("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"bodycam {version('bodycam')}"


def test_global_options_before_the_command(tmp_path):
    cfg = small_config(tmp_path)
    r = bodycam("-v", "record", "--sim", "--fast", "--duration", 1, "--out", tmp_path / "ev",
                "--key-dir", tmp_path / "key", "--provision", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert "INFO " in r.stderr                       # -v before the command took effect
    bad = tmp_path / "bad.toml"
    bad.write_text("[video]\nwidth = 641\n")
    r = bodycam("--config", bad, "-q", "record", "--sim", "--fast", "--duration", 1,
                "--out", tmp_path / "ev", "--key-dir", tmp_path / "key")
    assert r.returncode == 3 and f"{bad}: video.width = 641 must be even" in r.stderr
    r = bodycam("-v", "status", "--sim", "--out", tmp_path / "ev", "--key-dir", tmp_path / "nokey")
    assert r.returncode == 1 and "no device key" in r.stderr     # not a usage error
    r = bodycam("--config", cfg, "verify", tmp_path / "ev", "--pubkey", tmp_path / "key" / "x.pem")
    assert r.returncode == 2 and "bodycam: error: --config does not apply to 'verify'" in r.stderr


def test_verify_summary_counts_in_the_singular(tmp_path):
    dev = new_device(tmp_path)
    record_session(dev, {"r1": 1})
    dev.journal.close()
    pub = tmp_path / "pub.pem"
    pub.write_bytes(dev.pem)
    r = bodycam("verify", dev.root, "--pubkey", pub)
    assert r.returncode == 0, r.stderr
    assert "ok  media: 1 recording continuous" in r.stdout
    assert "ok  files: 1 attested file present" in r.stdout
    for wrong in ("1 recordings", "1 attested files", "1 records", "1 valid Ed25519 signatures"):
        assert wrong not in r.stdout


@pytest.mark.parametrize("args", [
    ("record", "--bogus"),
    ("record", "--duration", "soon"),
    ("identity", "export", "--key-dir", "/nonexistent/bodycam-key"),
    ("verify", "/nonexistent/evidence", "--pubkey", "/nonexistent/key.pem"),
    ("config", "check", "/nonexistent/bodycam.toml"),
])
def test_one_error_prefix(args):
    r = bodycam(*args)
    assert r.returncode in (2, 3), r.stderr
    problems = [line for line in r.stderr.splitlines() if not line.startswith((" ", "usage:"))]
    assert problems and all(line.startswith("bodycam: error: ") for line in problems), r.stderr


def test_read_only_output_directory_is_a_storage_error(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        for out in (ro, ro / "evidence"):
            r = bodycam("record", "--sim", "--fast", "--duration", 1, "--out", out,
                        "--key-dir", tmp_path / "key", "--provision")
            assert r.returncode == 4, r.stderr
            assert r.stderr.startswith("bodycam: error: --out: ") and str(out) in r.stderr


@pytest.mark.parametrize("command", ["status", "record", "run"])
def test_missing_key_fails_before_creating_anything_and_says_how_to_get_one(tmp_path, command):
    state = tmp_path / "state"               # stands for /var/lib/bodycam
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL + f"[service]\nruntime_dir = \"{state / 'run'}\"\n")
    args = [command, "--sim", "--config", cfg, "--out", state / "evidence", "--key-dir", state / "identity"]
    r = bodycam(*args, *(["--duration", 1] if command != "status" else []))
    assert r.returncode == 1, r.stderr
    assert not state.exists(), sorted(state.rglob("*"))
    message = r.stderr.strip()
    assert message.startswith(f"bodycam: error: no device key in {state / 'identity'}")
    for words in (f"bodycam identity init --key-dir {state / 'identity'}", "--key-dir", "--provision"):
        assert words in message
