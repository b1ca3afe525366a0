"""The agency key(s): a small interface over where the private keys live.

The device encrypts every segment to the agency's age public key (and an optional escrow
key); only the station can open them. What opens a file is the *file key* wrapped in its
header, so the interface is one method, ``unwrap(header) -> file key``: a file of age
identities implements it today (:class:`FileKeyring`); a PKCS#11 token holding the X25519
key can implement it later without the rest of the station changing (the token computes
the X25519 shared secret, the rest is public-key-free software in ``recorder.age``).

Key rotation: the file holds several identities, newest first; devices get the newest
recipient, and old recordings still open with the older identities kept below it. A key
is never removed while recordings encrypted to it are kept (``station keys`` lists which
recipients the catalogue's recordings use). Lost key: see docs/encryption.md.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol

from recorder import age
from station.errors import EXIT_FAILED, StationError

KEYS_ENV = "STATION_AGENCY_KEYS"
KEY_FILE = "agency-identities.txt"


class KeyUnavailable(StationError):
    """No agency key opens this recording (none installed, the wrong one, or the file is unsafe)."""

    exit_code = EXIT_FAILED


class Keyring(Protocol):
    def unwrap(self, header: age.Header) -> bytes:
        """The file key of an age header; ``age.NoIdentity`` when no key held opens it."""
        ...

    def recipients(self) -> list[str]:
        """The public keys (``age1...``) of the identities held, newest first."""
        ...


def key_path(store: Path | None) -> Path:
    """``$STATION_AGENCY_KEYS``, else ``<store>/keys/agency-identities.txt``."""
    env = os.environ.get(KEYS_ENV)
    if env:
        return Path(env)
    if store is None:
        raise KeyUnavailable(f"no agency key file: set {KEYS_ENV}")
    return Path(store) / "keys" / KEY_FILE


class FileKeyring:
    """Age identities in a file the station service alone may read (mode 0600 or 0400).

    Read at each use (a rotated key is picked up without a restart) and refused when group
    or others could read it: a private key the whole office can copy protects nothing."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _identities(self) -> list[age.Identity]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise KeyUnavailable(f"the agency key file {self.path} does not exist: recordings encrypted "
                                 "on the device cannot be opened (docs/encryption.md)") from None
        except OSError as exc:
            raise KeyUnavailable(f"cannot read the agency key file {self.path}: {exc.strerror}") from None
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_IMODE(mode) & 0o077:
                raise KeyUnavailable(f"the agency key file {self.path} is readable by others "
                                     f"(mode {stat.S_IMODE(mode):04o}): chmod 600 it; not used")
            with os.fdopen(fd, "r", encoding="ascii", closefd=False) as f:
                text = f.read()
        finally:
            os.close(fd)
        try:
            return age.parse_identities(text)
        except (age.AgeError, UnicodeDecodeError) as exc:
            raise KeyUnavailable(f"the agency key file {self.path} is not an age identity file: {exc}") from None

    def unwrap(self, header: age.Header) -> bytes:
        return age.unwrap(header, self._identities())

    def recipients(self) -> list[str]:
        return [i.recipient for i in self._identities()]


def create_key_file(path: Path, identity: age.Identity | None = None, *, rotate: bool = False) -> age.Identity:
    """Write a new identity (made here unless given) to ``path`` (0600, exclusive). With
    ``rotate`` the file may exist: the new identity goes first, the old ones stay below."""
    identity = identity or age.Identity.generate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = ""
    if path.exists():
        if not rotate:
            raise FileExistsError(f"{path} exists: rotate to add a new key (the old ones stay)")
        FileKeyring(path).recipients()          # refuses an unsafe or broken file before touching it
        old = path.read_text(encoding="ascii")
    body = f"# recipient: {identity.recipient}\n{identity}\n{old}"
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return identity
