"""The device's signing identity: one Ed25519 key pair, made once at provisioning.

Everything the device attests (journal records) is signed through the small
``Signer`` interface, so a secure element (e.g. an ATECC608 on I2C) can take
the place of the key file later without touching the journal or the verifier.

The device id is derived from the public key (``device_id_for``), so anyone
holding the public key can tell which device a record claims to come from
without trusting any other file.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

log = logging.getLogger(__name__)

PRIVATE_KEY_NAME = "device-key.pem"
PUBLIC_KEY_NAME = "device-key.pub.pem"


class IdentityError(Exception):
    """Base class for identity problems."""


class IdentityExists(IdentityError):
    """Provisioning was asked to make a key where one already exists."""


class IdentityMissing(IdentityError):
    """No key where one was expected (device not provisioned)."""


class IdentityInsecure(IdentityError):
    """The private key file is readable by others than its owner."""


class BadPublicKey(IdentityError):
    """A public key that is not an Ed25519 PEM key."""


class Signer(Protocol):
    """Signs messages as the device. A file key or a secure element."""

    def sign(self, message: bytes) -> bytes: ...

    def public_key_pem(self) -> bytes: ...


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def device_id_for(public_key: Ed25519PublicKey) -> str:
    """A stable device id: first 16 bytes of SHA-256 over the raw 32-byte public key, hex."""
    return hashlib.sha256(raw_public_key(public_key)).hexdigest()[:32]


def load_public_key_pem(pem: bytes) -> Ed25519PublicKey:
    """Parse an Ed25519 public key from PEM, with a clear error for anything else."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise BadPublicKey(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BadPublicKey(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def device_id_for_pem(pem: bytes) -> str:
    return device_id_for(load_public_key_pem(pem))


class FileSigner:
    """An Ed25519 private key kept in a 0600 PEM file (unencrypted: the device boots unattended)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key()
        self.device_id = device_id_for(self._public)

    @classmethod
    def load(cls, key_dir: Path | str) -> "FileSigner":
        path = Path(key_dir) / PRIVATE_KEY_NAME
        try:
            st = path.stat()
        except FileNotFoundError:
            raise IdentityMissing(f"no device key at {path}; run 'identity init' first") from None
        if st.st_mode & 0o077:
            raise IdentityInsecure(
                f"{path} has mode {st.st_mode & 0o777:o}; it must be readable only by its owner (0600)")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{path} is not an Ed25519 private key")
        return cls(key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def public_key_pem(self) -> bytes:
        return self._public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def provision(key_dir: Path | str, owner: tuple[int, int] | None = None) -> FileSigner:
    """Generate the device key pair. Refuses if a key (or its public half) is already there.

    The private key is created with O_EXCL and mode 0600 in one step, so it is never
    readable by others, not even for an instant, and an existing key is never replaced.
    ``owner`` (uid, gid) hands the key to the service user when provisioning runs as root.
    """
    key_dir = Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    priv_path = key_dir / PRIVATE_KEY_NAME
    pub_path = key_dir / PUBLIC_KEY_NAME
    for p in (priv_path, pub_path):
        if p.exists():
            raise IdentityExists(f"{p} already exists; a device key is never replaced")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityExists(f"{priv_path} already exists; a device key is never replaced") from None
    try:
        os.fchmod(fd, 0o600)  # umask cannot widen it, but be explicit
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    signer = FileSigner(key)
    fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, signer.public_key_pem())
        os.fsync(fd)
    finally:
        os.close(fd)
    if owner is not None:
        os.chown(key_dir, *owner)
    dfd = os.open(key_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    log.info("provisioned device key %s in %s", signer.device_id, key_dir)
    return signer


def export_public_pem(key_dir: Path | str) -> bytes:
    """The public key as PEM, derived from the private key (the .pub file is only a convenience)."""
    return FileSigner.load(key_dir).public_key_pem()
