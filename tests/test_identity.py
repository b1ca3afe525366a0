"""Device identity: key made once, 0600, never replaced; signatures check with openssl."""
import os
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from firmware import evidence_cli
from recorder import identity


def test_provision_makes_private_key_readable_only_by_owner(tmp_path):
    signer = identity.provision(tmp_path / "id")
    priv = tmp_path / "id" / identity.PRIVATE_KEY_NAME
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert len(signer.device_id) == 32
    pub = (tmp_path / "id" / identity.PUBLIC_KEY_NAME).read_bytes()
    assert pub == signer.public_key_pem()
    assert identity.device_id_for_pem(pub) == signer.device_id


def test_provision_refuses_to_replace_existing_key(tmp_path):
    identity.provision(tmp_path / "id")
    before = (tmp_path / "id" / identity.PRIVATE_KEY_NAME).read_bytes()
    with pytest.raises(identity.IdentityExists):
        identity.provision(tmp_path / "id")
    assert (tmp_path / "id" / identity.PRIVATE_KEY_NAME).read_bytes() == before


def test_provision_refuses_when_only_public_half_exists(tmp_path):
    (tmp_path / "id").mkdir()
    (tmp_path / "id" / identity.PUBLIC_KEY_NAME).write_bytes(b"old")
    with pytest.raises(identity.IdentityExists):
        identity.provision(tmp_path / "id")
    assert not (tmp_path / "id" / identity.PRIVATE_KEY_NAME).exists()


def test_load_refuses_group_or_world_readable_key(tmp_path):
    identity.provision(tmp_path / "id")
    os.chmod(tmp_path / "id" / identity.PRIVATE_KEY_NAME, 0o644)
    with pytest.raises(identity.IdentityInsecure):
        identity.FileSigner.load(tmp_path / "id")


def test_load_missing_key_says_so(tmp_path):
    with pytest.raises(identity.IdentityMissing, match="identity init"):
        identity.FileSigner.load(tmp_path / "nothing")


def test_loaded_key_signs_like_the_provisioned_one(tmp_path):
    a = identity.provision(tmp_path / "id")
    b = identity.FileSigner.load(tmp_path / "id")
    assert a.device_id == b.device_id
    a.public_key().verify(b.sign(b"msg"), b"msg")


def test_signature_verifies_with_openssl(tmp_path):
    signer = identity.provision(tmp_path / "id")
    (tmp_path / "msg").write_bytes(b"hello evidence")
    (tmp_path / "sig").write_bytes(signer.sign(b"hello evidence"))
    (tmp_path / "pub.pem").write_bytes(signer.public_key_pem())
    ok = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin",
                         "-in", "msg", "-sigfile", "sig"], cwd=tmp_path, capture_output=True)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "msg").write_bytes(b"hello evidencf")
    bad = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin",
                          "-in", "msg", "-sigfile", "sig"], cwd=tmp_path, capture_output=True)
    assert bad.returncode != 0


def test_non_ed25519_public_key_is_refused():
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key() \
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(identity.BadPublicKey, match="Ed25519"):
        identity.load_public_key_pem(rsa_pem)
    with pytest.raises(identity.BadPublicKey):
        identity.load_public_key_pem(b"not a key")


def _run_cli(argv):
    return evidence_cli.main(argv)


def test_cli_identity_init_and_export(tmp_path, capsys):
    assert _run_cli(["identity", "init", "--key-dir", str(tmp_path / "id")]) == 0
    capsys.readouterr()
    assert _run_cli(["identity", "export", "--key-dir", str(tmp_path / "id")]) == 0
    out = capsys.readouterr().out.encode()
    assert out == identity.FileSigner.load(tmp_path / "id").public_key_pem()
    assert _run_cli(["identity", "init", "--key-dir", str(tmp_path / "id")]) == 2
    assert "never replaced" in capsys.readouterr().err


def test_cli_export_without_key_fails_cleanly(tmp_path, capsys):
    assert _run_cli(["identity", "export", "--key-dir", str(tmp_path / "none")]) == 2
    assert "identity init" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root (as at provisioning)")
def test_provision_can_hand_the_key_to_the_service_user(tmp_path):
    identity.provision(tmp_path / "id", owner=(4242, 4243))
    st = (tmp_path / "id" / identity.PRIVATE_KEY_NAME).stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4243, 0o600)


def test_cli_init_with_unknown_owner_fails_without_making_a_key(tmp_path, capsys):
    assert _run_cli(["identity", "init", "--key-dir", str(tmp_path / "id"),
                     "--owner", "no-such-user-xyz"]) == 2
    assert "no such user" in capsys.readouterr().err
    assert not (tmp_path / "id" / identity.PRIVATE_KEY_NAME).exists()
