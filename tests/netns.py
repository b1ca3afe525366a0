"""Two hosts on one machine for docking tests: network namespaces joined by a veth pair.

``VethPair`` makes namespaces ``<prefix>d`` (device) and ``<prefix>k`` (dock)
with a veth pair between them (10.77.x.1/30 and .2 by default) and removes
everything again in ``close()`` (call it from a fixture finalizer). Names are
unique per run. ``netns_available()`` says whether this process may create
namespaces, with the reason if not, for ``pytest.skip``.

Also here: ``DockWorld``, the PKI and file layout shared by the docking tests
(an agency CA, a dock certificate, a provisioned device with its certificate).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PYTHON = sys.executable


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_available() -> tuple[bool, str]:
    name = f"bcprobe{uuid.uuid4().hex[:8]}"
    try:
        r = _ip("netns", "add", name, check=False)
    except FileNotFoundError:
        return False, "iproute2 'ip' is not installed"
    if r.returncode != 0:
        return False, f"'ip netns add' is not permitted here: {r.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return True, ""


class VethPair:
    def __init__(self, subnet: int | None = None) -> None:
        tag = uuid.uuid4().hex[:6]
        self.dev_ns, self.dock_ns = f"bcd{tag}", f"bck{tag}"
        self.dev_if, self.dock_if = f"vd{tag}", f"vk{tag}"
        octet = subnet if subnet is not None else int(tag[:2], 16) % 250 + 1
        self.dev_addr, self.dock_addr = f"10.77.{octet}.1", f"10.77.{octet}.2"
        self._made: list[str] = []
        try:
            for ns in (self.dev_ns, self.dock_ns):
                _ip("netns", "add", ns)
                self._made.append(ns)
            _ip("link", "add", self.dev_if, "netns", self.dev_ns, "type", "veth",
                "peer", "name", self.dock_if, "netns", self.dock_ns)
            for ns, ifname, addr in ((self.dev_ns, self.dev_if, self.dev_addr),
                                     (self.dock_ns, self.dock_if, self.dock_addr)):
                self.run(ns, "ip", "addr", "add", f"{addr}/30", "dev", ifname)
                self.run(ns, "ip", "link", "set", ifname, "up")
                self.run(ns, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def run(self, ns: str, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                              check=check, **kw)

    def popen(self, ns: str, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kw)

    def link(self, up: bool) -> None:
        self.run(self.dev_ns, "ip", "link", "set", self.dev_if, "up" if up else "down")

    def limit_rate(self, rate: str) -> None:
        """Slow the device's sending side (token bucket) so a transfer can be cut midway."""
        self.run(self.dev_ns, "tc", "qdisc", "add", "dev", self.dev_if, "root", "tbf", "rate", rate,
                 "burst", "16kb", "latency", "400ms")

    def unlimit(self) -> None:
        self.run(self.dev_ns, "tc", "qdisc", "del", "dev", self.dev_if, "root", check=False)

    def close(self) -> None:
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)   # deleting a namespace removes its veth end too
        self._made.clear()


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    return e


@dataclass
class DockWorld:
    """Agency CA + a dock identity + dock config, under ``base``."""

    base: Path
    ca_dir: Path
    dock_dir: Path
    store: Path

    @classmethod
    def create(cls, base: Path, unit: str = "厦门市城市管理行政执法局") -> "DockWorld":
        from station.dock import pki
        ca_dir, dock_dir = base / "ca", base / "dock-id"
        pki.init_ca(ca_dir, unit)
        pki.init_dock(ca_dir, dock_dir, "dock-1", unit)
        return cls(base, ca_dir, dock_dir, base / "dock-store")

    @property
    def ca_file(self) -> Path:
        return self.ca_dir / "agency-ca.pem"

    def device_cert(self, pubkey_pem: bytes, name: str = "dev") -> Path:
        from station.dock import pki
        pub = self.base / f"{name}.pub.pem"
        pub.write_bytes(pubkey_pem)
        out = self.base / f"{name}-cert.pem"
        pki.init_device(self.ca_dir, pub, out)
        return out

    def dock_config(self, device_address: str, port: int, unit: str = "厦门市城市管理行政执法局",
                    name: str = "dock.toml", dock_dir: Path | None = None) -> Path:
        d = dock_dir or self.dock_dir
        path = self.base / name
        path.write_text(
            "[station]\n"
            f'unit = "{unit}"\nstore_dir = "{self.store}"\n'
            "[dock]\n"
            f'device_address = "{device_address}"\nport = {port}\n'
            f'ca_file = "{d / "agency-ca.pem"}"\ncert_file = "{d / "dock-cert.pem"}"\n'
            f'key_file = "{d / "dock-key.pem"}"\ntimeout_s = 2.0\n', encoding="utf-8")
        from station.setup import init_station
        init_station(path)
        self.config_path = path
        return path

    def start_link(self, dev, **settings):
        """Start ``dev``'s dock link on loopback with a device certificate of this CA (its own:
        one per device key, so a second device in the same world never presents the first's);
        any DockSettings field may be overridden (the CRL file sits under ``base``)."""
        from firmware.dock_link import DockLink, DockSettings
        name = "dev-" + hashlib.sha256(dev.pem).hexdigest()[:16]
        cert = self.base / f"{name}-cert.pem"
        if not cert.exists() and "cert_file" not in settings:
            self.device_cert(dev.pem, name)
        s = dict(listen_address="127.0.0.1", port=0, ca_file=str(self.ca_file),
                 cert_file=str(cert), crl_file=str(self.base / "device-crl.pem"))
        s.update(settings)
        link = DockLink(DockSettings(**s), dev, key_file=dev.key_dir / "device-key.pem")
        link.start()
        return link

    def serve_recorded_device(self, **settings):
        """A new device with two recordings (r1: 2 segments, r2: 1) serving its dock link:
        sets ``dev``, ``link`` and ``port``; the caller stops ``link``."""
        from tests.media_fixture import new_device, record_session
        dev = new_device(self.base)
        record_session(dev, {"r1": 2, "r2": 1})
        link = self.start_link(dev, **settings)
        self.dev, self.link, self.port = dev, link, link.address[1]
        return link

    def station(self, cfg=None):
        """The station of the last config written (or of ``cfg``, a loaded StationConfig)."""
        from station import config as station_config
        from station.app import Station
        if cfg is None:
            if getattr(self, "config_path", None) is None:
                self.dock_config("127.0.0.1", 8443)
            cfg = station_config.load(self.config_path)
        return Station.open(cfg)

    def ledger(self):
        from station.dock.ledger import Ledger
        return Ledger(self.station())

    def register(self, pubkey_pem: bytes, officer: str = "031337") -> str:
        from recorder.identity import device_id_for_pem
        device_id = device_id_for_pem(pubkey_pem)
        self.ledger().register(device_id, pubkey_pem, officer)
        return device_id
