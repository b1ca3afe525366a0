"""The station's signing key: signs its audit journal and the device assignments it hands out.

An Ed25519 key in a 0600 PEM file, the same ``Signer`` the device journal uses (so the
audit journal is written and verified by the same code); its public key is kept in the
catalogue (``stations``) and beside the journal, for anyone checking it.
"""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder.identity import FileSigner, IdentityError, IdentityExists, IdentityInsecure, IdentityMissing


def make_key(path: Path) -> FileSigner:
    """Generate the station key at ``path`` (never replacing one) and its ``.pub.pem`` beside it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityExists(f"{path} already exists; a station key is never replaced") from None
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    signer = FileSigner(key)
    public_path(path).write_bytes(signer.public_key_pem())
    return signer


def public_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".pem") + ".pub.pem")


def load_key(path: Path) -> FileSigner:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IdentityMissing(f"no station key at {path}; run `station init` first") from None
    if st.st_mode & 0o077:
        raise IdentityInsecure(f"{path} has mode {st.st_mode & 0o777:o}; it must be 0600")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path} is not an Ed25519 private key")
    return FileSigner(key)
