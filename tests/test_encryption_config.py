"""Provisioning the agency key on the device, ``[encryption]`` and the self-check item (D1, D13)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from firmware import config
from firmware.encryption_cli import install_recipients
from firmware.selfcheck import Probes, SelfCheckThresholds, Status, run_self_check
from recorder import age

REPO = Path(__file__).resolve().parents[1]
RECIPIENT = age.Identity.generate().recipient
ESCROW = age.Identity.generate().recipient


def cfg_with(tmp_path, mode="auto", body=None):
    path = tmp_path / "recipients.txt"
    if body is not None:
        path.write_text(body)
    c = config.defaults()
    c["encryption"] = {"mode": mode, "recipients_file": str(path)}
    return c


def bodycam(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "firmware", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_off_until_a_key_is_provisioned_then_on_by_default(tmp_path):
    c = cfg_with(tmp_path)
    assert config.encryption_recipients(c) == ()                 # auto, nothing installed: clear
    assert config.pipeline_settings(c).recipients == ()
    install_recipients(tmp_path / "recipients.txt", [RECIPIENT, ESCROW])
    assert config.pipeline_settings(c).recipients == (RECIPIENT, ESCROW)
    assert (tmp_path / "recipients.txt").stat().st_mode & 0o777 == 0o644
    c["encryption"]["mode"] = "off"
    assert config.encryption_recipients(c) == ()


@pytest.mark.parametrize("mode, body, problem", [
    ("required", None, "missing"),                       # configured, key missing
    ("auto", "", "holds no age recipient"),              # a key file that is there but empty
    ("auto", "age1notakey\n", "unusable"),               # a typo in the key
    ("required", "# only a comment\n", "holds no age recipient"),
])
def test_a_missing_or_bad_key_refuses_and_fails_the_self_check(tmp_path, mode, body, problem):
    c = cfg_with(tmp_path, mode, body)
    with pytest.raises(config.EncryptionKeyMissing, match=problem):
        config.pipeline_settings(c)
    result = run_self_check(Probes(encryption=config.encryption_probe(c)), SelfCheckThresholds(), 4_000_000)
    item = result.item("encryption")
    assert item.status is Status.FAIL and problem in item.detail and not result.go


def test_self_check_item_passes_with_a_key_and_warns_without(tmp_path):
    c = cfg_with(tmp_path)
    item = run_self_check(Probes(encryption=config.encryption_probe(c)), SelfCheckThresholds(),
                          4_000_000).item("encryption")
    assert item.status is Status.WARN and "no agency key" in item.detail
    install_recipients(tmp_path / "recipients.txt", [RECIPIENT])
    item = run_self_check(Probes(encryption=config.encryption_probe(c)), SelfCheckThresholds(),
                          4_000_000).item("encryption")
    assert item.status is Status.PASS and item.measured == {"recipients": 1, "swaps": []}
    # a key removed after start is noticed at the next check (read afresh each time)
    (tmp_path / "recipients.txt").unlink()
    c["encryption"]["mode"] = "required"
    item = run_self_check(Probes(encryption=config.encryption_probe(c)), SelfCheckThresholds(),
                          4_000_000).item("encryption")
    assert item.status is Status.FAIL
    # an unusable probe answer fails, as for every item
    item = run_self_check(Probes(encryption=lambda: "yes"), SelfCheckThresholds(), 4_000_000).item("encryption")
    assert item.status is Status.FAIL and "unusable" in item.detail


def test_encryption_install_and_status_commands(tmp_path):
    target = tmp_path / "etc" / "recipients.txt"
    r = bodycam("encryption", "install", "--recipient", RECIPIENT, "--escrow", ESCROW, "--file", str(target))
    assert r.returncode == 0, r.stderr
    assert age.parse_recipients(target.read_text()) == [RECIPIENT, ESCROW]
    r = bodycam("encryption", "install", "--recipient", RECIPIENT, "--file", str(target))
    assert r.returncode == 1 and "--replace" in r.stderr               # rotation is deliberate
    r = bodycam("encryption", "install", "--recipient", RECIPIENT[:-1] + "x", "--file", str(tmp_path / "b"))
    assert r.returncode == 2 and "not an age X25519 recipient" in r.stderr and not (tmp_path / "b").exists()
    new = age.Identity.generate().recipient
    r = bodycam("encryption", "install", "--recipient", new, "--replace", "--file", str(target))
    assert r.returncode == 0 and age.parse_recipients(target.read_text()) == [new]
    r = bodycam("encryption", "status", "--file", str(target), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "on"
    toml = tmp_path / "c.toml"
    toml.write_text(f'[encryption]\nmode = "required"\nrecipients_file = "{tmp_path / "none.txt"}"\n')
    r = bodycam("encryption", "status", "--config", str(toml))
    assert r.returncode == 1 and "missing" in r.stderr


def test_record_refuses_to_record_in_clear_when_encryption_is_required(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[video]\nwidth = 320\nheight = 240\n"
                    f'[encryption]\nmode = "required"\nrecipients_file = "{tmp_path / "none.txt"}"\n')
    r = bodycam("record", "--sim", "--fast", "--duration", "1", "--config", str(toml), "--out",
                str(tmp_path / "ev"), "--key-dir", str(tmp_path / "key"), "--provision")
    assert r.returncode == 3 and "bodycam encryption install" in r.stderr
    assert not list((tmp_path / "ev").rglob("*.ts*"))


def test_the_service_encrypts_its_voice_notes_and_self_checks_the_key(tmp_path):
    """The running service, not only ``bodycam record``: its voice notes go to the same recipients
    as its segments, and its self-check reads the key afresh (a key removed after start fails D1)."""
    from firmware import hardware

    c = cfg_with(tmp_path, mode="required")
    install_recipients(tmp_path / "recipients.txt", [RECIPIENT])
    devices = hardware.simulated(c, realtime=False)
    service = hardware.build_service(c, devices, tmp_path / "ev", tmp_path / "key", sim=True, provision=True)
    try:
        assert service.notes.recipients == (RECIPIENT,)
        assert service.pipeline.s.recipients == (RECIPIENT,)
        item = service.self_check().item("encryption")
        assert item.status is Status.PASS and item.measured == {"recipients": 1, "swaps": []}
        (tmp_path / "recipients.txt").unlink()
        after = service.self_check()
        assert after.item("encryption").status is Status.FAIL and "missing" in after.item("encryption").detail
        assert not after.go
    finally:
        service.shutdown()
        devices.close()
