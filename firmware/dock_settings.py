"""The [dock] section: where the device's dock link listens and whom it trusts.

Apart from ``firmware.dock_link`` so that reading the configuration (every command does)
does not load TLS and the HTTP server: a recording never pays for them.
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from common.settings import Section


@dataclass(frozen=True)
class DockSettings(Section):
    """The dock link on the device: where it listens and whom it trusts (D10, D11)."""

    SECTION = "dock"

    enabled: bool = True
    listen_address: str = "10.77.0.1"
    port: int = 8443
    interface: str = ""
    ca_file: str = "/etc/bodycam/dock/agency-ca.pem"
    cert_file: str = "/etc/bodycam/dock/device-cert.pem"
    key_file: str = ""
    crl_file: str = "/var/lib/bodycam/dock/agency-crl.pem"
    receipt_ttl_s: float = 900.0
    idle_timeout_s: float = 30.0       # whole time for the next request (line, headers, body) to arrive
    handshake_timeout_s: float = 5.0   # whole TLS handshake, from accept()
    request_timeout_s: float = 30.0    # whole response: this + its size / min_rate_bps
    min_rate_bps: int = 65536
    session_max_s: float = 3600.0      # one authenticated connection at most this long
    max_sessions: int = 2              # authenticated connections at once (one dock is the use)
    max_handshakes: int = 8            # connections not yet authenticated at once

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError("[dock] enabled must be true or false")
        try:
            addr = ipaddress.ip_address(self.listen_address)
        except (ValueError, TypeError):
            raise ValueError(f"[dock] listen_address must be an IP address, got {self.listen_address!r}") \
                from None
        if addr.is_unspecified or addr.is_multicast:
            raise ValueError(f"[dock] listen_address {addr} would listen beyond the dock link; "
                             "give the gadget interface's own address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"[dock] port must be 0..65535 (0: any free port), got {self.port!r}")
        for k in ("interface", "ca_file", "cert_file", "key_file", "crl_file"):
            if not isinstance(getattr(self, k), str):
                raise ValueError(f"[dock] {k} must be a string")
        if "/" in self.interface or len(self.interface) > 15:
            raise ValueError(f"[dock] interface must be a network interface name, got {self.interface!r}")
        for k, lo in (("receipt_ttl_s", 10), ("idle_timeout_s", 1), ("handshake_timeout_s", 0.5),
                      ("request_timeout_s", 0.1), ("session_max_s", 1)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
                raise ValueError(f"[dock] {k} must be a number >= {lo}, got {v!r}")
        for k, lo, hi in (("max_sessions", 1, 16), ("max_handshakes", 1, 64), ("min_rate_bps", 1024, 1 << 40)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"[dock] {k} must be an integer {lo}..{hi}, got {v!r}")
