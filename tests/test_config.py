"""A corrupt or mistaken configuration is refused with the file and the key named."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware import config
from tests.tmpfs import tmpfs

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    f = tmp_path / "bodycam.toml"
    f.write_text(text)
    return f


def test_shipped_config_is_exactly_the_documented_defaults():
    assert config.load(REPO / "deploy" / "bodycam.toml") == config.defaults()
    assert (REPO / "deploy" / "bodycam.toml").read_text() == config.render_defaults()


def test_values_override_defaults(tmp_path):
    c = config.load(write(tmp_path, '[video]\nwidth = 1280\nheight = 720\n[device]\nid = "BWC-7"\n'))
    assert (c["video"]["width"], c["video"]["height"], c["device"]["id"]) == (1280, 720, "BWC-7")
    assert c["video"]["fps"] == 30
    s = config.pipeline_settings(c)
    assert (s.video.width, s.device_id, s.segment_seconds) == (1280, "BWC-7", 10)


@pytest.mark.parametrize("text, words", [
    ("[video]\nwidht = 640\n", ["unknown key video.widht", "width"]),
    ("[vidoe]\nwidth = 640\n", ["unknown section [vidoe]"]),
    ('[video]\nwidth = "640"\n', ["video.width must be int"]),
    ("[video]\nwidth = 641\n", ["video.width = 641 must be even"]),
    ("[video]\nheight = 722\n", ["video.height = 722 must be a multiple of 4"]),
    ("[video]\nwidth = 100000\n", ["video.width = 100000 must be between"]),
    ("[video]\nfps = 7\n", ["video.fps = 7 must divide 90000"]),
    ("[segment]\nseconds = 5\n[video]\nkeyframe_interval_s = 2\n", ["multiple of video.keyframe_interval_s"]),
    ('[stamp]\ntimezone = "Mars/Olympus"\n', ["stamp.timezone", "not a known time zone"]),
    ('[device]\nid = "  "\n', ["device.id", "must not be empty"]),
    ("[video]\npreset = 3\n", ["video.preset must be str"]),
    ("video = 3\n", ["[video] must be a table"]),
    ("[video\nwidth = 1\n", ["not valid TOML"]),
    ("[capture]\nstall_timeout_s = true\n", ["capture.stall_timeout_s must be float"]),
])
def test_bad_config_names_file_and_key(tmp_path, text, words):
    f = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as e:
        config.load(f)
    assert str(f) in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(config.ConfigError, match="no such configuration file"):
        config.load(tmp_path / "nope.toml")


def test_unwritable_output_dir_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(config.ConfigError, match="cannot create output directory"):
        config.check_output_dir(blocker / "evidence")


def test_read_only_output_dir_is_refused(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        with pytest.raises(config.ConfigError, match="not writable"):
            config.check_output_dir(ro)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "firmware", *args], capture_output=True, text=True,
                          cwd=REPO)


def test_cli_help_and_usage_errors():
    r = run_cli("--help")
    assert r.returncode == 0 and "record" in r.stdout
    r = run_cli("record", "--help")
    assert r.returncode == 0 and "--duration" in r.stdout
    r = run_cli("record", "--bogus")
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr


def test_cli_bad_config_exit_status_and_message(tmp_path):
    f = write(tmp_path, "[video]\nwidth = 641\n")
    r = run_cli("record", "--sim", "--config", str(f), "--out", str(tmp_path / "o"))
    assert r.returncode == 3
    assert f"{f}: video.width = 641 must be even" in r.stderr
    assert r.stdout == ""
    r = run_cli("config", "check", str(f))
    assert r.returncode == 3


def test_cli_records_quietly_and_prints_the_directory(tmp_path):
    f = write(tmp_path, "[video]\nwidth = 320\nheight = 240\n[segment]\nseconds = 2\n")
    r = run_cli("record", "--sim", "--fast", "--duration", "4", "--config", str(f),
                "--out", str(tmp_path / "ev"), "--key-dir", str(tmp_path / "key"), "--provision")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{tmp_path / 'ev'}\n"
    assert "provisioned a new device key" in r.stderr  # the one warning: a key was made
    assert len(list((tmp_path / "ev").glob("recordings/*/*.ts"))) == 2
    again = run_cli("record", "--sim", "--fast", "--duration", "2", "--config", str(f),
                    "--out", str(tmp_path / "ev"), "--key-dir", str(tmp_path / "key"))
    assert again.returncode == 0 and again.stderr == ""
    from recorder.journal import iter_records
    boots = [r.payload["previous_session"] for r in iter_records(tmp_path / "ev" / "journal.log")
             if r.type == "boot"]
    assert boots == [{"ended": "none"}, {"ended": "cleanly", "last_seq": boots[1]["last_seq"],
                                         "last_type": "shutdown"}]
    configs = [r.payload for r in iter_records(tmp_path / "ev" / "journal.log")
               if r.type == "config-change"]
    assert len(configs) == 1                     # same settings twice: journaled once
    assert configs[0]["config"]["video"]["width"] == 320 and "video.width" in configs[0]["changed"]
    f.write_text("[video]\nwidth = 640\nheight = 360\n[segment]\nseconds = 2\n")
    assert run_cli("record", "--sim", "--fast", "--duration", "2", "--config", str(f), "--out",
                   str(tmp_path / "ev"), "--key-dir", str(tmp_path / "key")).returncode == 0
    configs = [r.payload for r in iter_records(tmp_path / "ev" / "journal.log")
               if r.type == "config-change"]
    assert len(configs) == 2
    assert configs[1]["changed"] == ["video.height", "video.width"]
    assert configs[1]["previous_sha256"] == configs[0]["sha256"]


def test_relative_output_directory_records_verifiable_evidence(tmp_path):
    """Journal paths are relative to the evidence root, not to wherever the command ran."""
    f = write(tmp_path, "[video]\nwidth = 320\nheight = 240\n[segment]\nseconds = 2\n")
    cmd = [sys.executable, "-m", "firmware", "record", "--sim", "--fast", "--duration", "3",
           "--config", str(f), "--out", "rel/ev", "--key-dir", "rel/key", "--provision"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "rel" / "ev")
    from recorder.verify import verify_directory
    pub = (tmp_path / "rel" / "key" / "device-key.pub.pem").read_bytes()
    result = verify_directory(tmp_path / "rel" / "ev", pub)
    assert result.ok, result.failure
