"""The agency PKI for docking: one CA, dock certificates, device certificates (x509, Ed25519).

* The **agency CA** is made once (ideally on an offline machine). Its certificate
  goes onto every device at provisioning (``[dock] ca_file``) and onto every dock.
* A **dock certificate** (EKU clientAuth) lets a dock station log in to a device's
  link service and sign receipts. A device accepts no other client.
* A **device certificate** (EKU serverAuth) binds the device's own journal-signing
  Ed25519 key to its device id, so the TLS server key *is* the evidence key: the
  dock pins exactly the key it verifies the journal with.

The two roles are told apart by EKU, so a device certificate can never act as a dock.

* **Revocation**: ``revoke`` puts a dock certificate's serial on the CA's list
  (``revoked.txt`` in the CA directory); ``issue_crl`` signs the current list as an
  X.509 CRL (``agency-crl.pem``, CRL number one higher each time). The CRL goes onto
  every device at provisioning, next to the CA certificate (``[dock] crl_file``), and
  onto every dock station (``[dock_station] crl_file``), which pushes it to the device
  at each docking; the device keeps it if the CA signed it and its number is higher.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

CA_KEY, CA_CERT = "agency-ca-key.pem", "agency-ca.pem"
CRL_FILE, REVOKED_LIST, CRL_NUMBER = "agency-crl.pem", "revoked.txt", "crl-number"
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


def _builder(subject: x509.Name, issuer: x509.Name, public_key: CertificatePublicKeyTypes,
             days: int) -> x509.CertificateBuilder:
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


def _leaf(ca_key: Ed25519PrivateKey, ca_cert: x509.Certificate, public_key: CertificatePublicKeyTypes,
          common_name: str, unit: str, eku: x509.ObjectIdentifier, days: int,
          san: list[x509.GeneralName] | None = None) -> x509.Certificate:
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


def issue_dock(ca_key: Ed25519PrivateKey, ca_cert: x509.Certificate, name: str, unit: str = "", days: int = 825
               ) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """A new dock key and its clientAuth certificate."""
    key = Ed25519PrivateKey.generate()
    return key, _leaf(ca_key, ca_cert, key.public_key(), name, unit, ExtendedKeyUsageOID.CLIENT_AUTH, days)


def issue_device(ca_key: Ed25519PrivateKey, ca_cert: x509.Certificate, device_public_key: Ed25519PublicKey,
                 device_id: str, unit: str = "", days: int = 3650, address: str | None = None) -> x509.Certificate:
    """A serverAuth certificate for the device's own (journal) public key."""
    if not isinstance(device_public_key, Ed25519PublicKey):
        raise PkiError("the device key must be the device's Ed25519 identity key")
    san: list[x509.GeneralName] = [x509.DNSName(f"{device_id}.bodycam.invalid")]
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
    issue_crl(ca_dir)            # CRL number 1, nothing revoked: installed on devices with the CA
    return Path(ca_dir) / CA_CERT


# ---- revocation ---------------------------------------------------------------------------
def make_crl(ca_key: Ed25519PrivateKey, ca_cert: x509.Certificate, revoked: list[tuple[int, dt.datetime]],
             number: int, days: int = 30) -> x509.CertificateRevocationList:
    """A CRL signed by the CA: ``revoked`` = (serial, revocation time); ``number`` increases."""
    now = _now()
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
         .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=days))
         .add_extension(x509.CRLNumber(number), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                        critical=False))
    for serial, when in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(when).build())
    return b.sign(ca_key, None)


def _revoked_list(ca_dir: Path) -> list[tuple[int, dt.datetime]]:
    path = Path(ca_dir) / REVOKED_LIST
    out = []
    if path.exists():
        for line in path.read_text(encoding="ascii").splitlines():
            if line.strip() and not line.startswith("#"):
                serial, when = line.split()[:2]
                out.append((int(serial, 16), dt.datetime.fromisoformat(when)))
    return out


def revoke(ca_dir: Path, cert_file: Path) -> int:
    """Put the certificate in ``cert_file`` (issued by this CA) on the revocation list; its serial.
    Run ``issue_crl`` afterwards and hand the new CRL to the dock stations."""
    ca_cert, cert = load_cert(Path(ca_dir) / CA_CERT), load_cert(cert_file)
    if cert.issuer != ca_cert.subject:
        raise PkiError(f"{cert_file} was not issued by this CA")
    if cert.serial_number not in {s for s, _ in _revoked_list(ca_dir)}:
        with open(Path(ca_dir) / REVOKED_LIST, "a", encoding="ascii") as f:
            f.write(f"{cert.serial_number:x} {_now().replace(microsecond=0).isoformat()} "
                    f"{cert.subject.rfc4514_string().encode('ascii', 'replace').decode()}\n")
            f.flush()
            os.fsync(f.fileno())
    return cert.serial_number


def issue_crl(ca_dir: Path, out: Path | None = None, days: int = 30) -> Path:
    """Sign the current revocation list as ``CA/agency-crl.pem`` (and copy it to ``out``)."""
    ca_dir = Path(ca_dir)
    ca_key, ca_cert = load_key(ca_dir / CA_KEY), load_cert(ca_dir / CA_CERT)
    num_file = ca_dir / CRL_NUMBER
    number = int(num_file.read_text().strip()) + 1 if num_file.exists() else 1
    pem = make_crl(ca_key, ca_cert, _revoked_list(ca_dir), number, days).public_bytes(
        serialization.Encoding.PEM)
    for path, data in ((num_file, f"{number}\n".encode()), (ca_dir / CRL_FILE, pem),
                       *(((Path(out), pem),) if out else ())):
        tmp = path.with_name(path.name + ".new")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return Path(out) if out else ca_dir / CRL_FILE


def init_dock(ca_dir: Path, out_dir: Path, name: str, unit: str = "") -> Path:
    ca_key, ca_cert = load_key(Path(ca_dir) / CA_KEY), load_cert(Path(ca_dir) / CA_CERT)
    key, cert = issue_dock(ca_key, ca_cert, name, unit)
    write_new(Path(out_dir) / DOCK_KEY, key_pem(key), 0o600)
    write_new(Path(out_dir) / DOCK_CERT, cert_pem(cert), 0o644)
    write_new(Path(out_dir) / CA_CERT, cert_pem(ca_cert), 0o644)
    if (Path(ca_dir) / CRL_FILE).exists():
        write_new(Path(out_dir) / CRL_FILE, (Path(ca_dir) / CRL_FILE).read_bytes(), 0o644)
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
