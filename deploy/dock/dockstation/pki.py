"""The agency PKI for docking: one CA, dock certificates, device certificates (x509, Ed25519).

* The **agency CA** is made once (ideally on an offline machine). Its certificate
  goes onto every device at provisioning (``[dock] ca_file``) and onto every dock.
* A **dock certificate** (EKU clientAuth) lets a dock station log in to a device's
  link service and sign receipts. A device accepts no other client.
* A **device certificate** (EKU serverAuth) binds the device's own journal-signing
  Ed25519 key to its device id, so the TLS server key *is* the evidence key: the
  dock pins exactly the key it verifies the journal with.

The two roles are told apart by EKU, so a device certificate can never act as a dock.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_KEY, CA_CERT = "agency-ca-key.pem", "agency-ca.pem"
DOCK_KEY, DOCK_CERT = "dock-key.pem", "dock-cert.pem"


class PkiError(Exception):
    """A PKI file is missing, of the wrong kind, or would be overwritten."""


def _name(common_name: str, unit: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, unit))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = _now()
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


def make_ca(unit: str = "", days: int = 3650) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    key = Ed25519PrivateKey.generate()
    name = _name(f"{unit or 'Agency'} body-worn camera CA", unit)
    cert = (_builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, None))
    return key, cert


def _leaf(ca_key: Ed25519PrivateKey, ca_cert: x509.Certificate, public_key, common_name: str,
          unit: str, eku, days: int, san: list | None = None) -> x509.Certificate:
    b = (_builder(_name(common_name, unit), ca_cert.subject, public_key, days)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                        critical=True)
         .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                        critical=False))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(ca_key, None)


def issue_dock(ca_key, ca_cert, name: str, unit: str = "", days: int = 825
               ) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """A new dock key and its clientAuth certificate."""
    key = Ed25519PrivateKey.generate()
    return key, _leaf(ca_key, ca_cert, key.public_key(), name, unit, ExtendedKeyUsageOID.CLIENT_AUTH, days)


def issue_device(ca_key, ca_cert, device_public_key: Ed25519PublicKey, device_id: str,
                 unit: str = "", days: int = 3650, address: str | None = None) -> x509.Certificate:
    """A serverAuth certificate for the device's own (journal) public key."""
    if not isinstance(device_public_key, Ed25519PublicKey):
        raise PkiError("the device key must be the device's Ed25519 identity key")
    san: list = [x509.DNSName(f"{device_id}.bodycam.invalid")]
    if address:
        san.append(x509.IPAddress(ipaddress.ip_address(address)))
    return _leaf(ca_key, ca_cert, device_public_key, device_id, unit,
                 ExtendedKeyUsageOID.SERVER_AUTH, days, san)


# ---- files ------------------------------------------------------------------------------
def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (never replacing an existing file) with ``mode`` from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise PkiError(f"{path} already exists; not replacing it") from None
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path}: not a readable PEM certificate: {exc}") from None


def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"{path}: not a readable PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PkiError(f"{path}: expected an Ed25519 key")
    return key


def init_ca(ca_dir: Path, unit: str = "") -> Path:
    key, cert = make_ca(unit)
    write_new(Path(ca_dir) / CA_KEY, key_pem(key), 0o600)
    write_new(Path(ca_dir) / CA_CERT, cert_pem(cert), 0o644)
    return Path(ca_dir) / CA_CERT


def init_dock(ca_dir: Path, out_dir: Path, name: str, unit: str = "") -> Path:
    ca_key, ca_cert = load_key(Path(ca_dir) / CA_KEY), load_cert(Path(ca_dir) / CA_CERT)
    key, cert = issue_dock(ca_key, ca_cert, name, unit)
    write_new(Path(out_dir) / DOCK_KEY, key_pem(key), 0o600)
    write_new(Path(out_dir) / DOCK_CERT, cert_pem(cert), 0o644)
    write_new(Path(out_dir) / CA_CERT, cert_pem(ca_cert), 0o644)
    return Path(out_dir) / DOCK_CERT


def init_device(ca_dir: Path, device_pubkey_pem: Path, out: Path, unit: str = "",
                address: str | None = None) -> str:
    from recorder.identity import device_id_for, load_public_key_pem
    pub = load_public_key_pem(Path(device_pubkey_pem).read_bytes())
    device_id = device_id_for(pub)
    ca_key, ca_cert = load_key(Path(ca_dir) / CA_KEY), load_cert(Path(ca_dir) / CA_CERT)
    write_new(Path(out), cert_pem(issue_device(ca_key, ca_cert, pub, device_id, unit,
                                               address=address)), 0o644)
    return device_id
