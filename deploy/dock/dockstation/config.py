"""The dock station's settings (``[dock_station]`` in its TOML file), validated strictly."""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.settings import Section, read_toml

PLACEHOLDER = "未标注"


class DockConfigError(ValueError):
    """A setting is missing or impossible; the message names it."""


@dataclass(frozen=True)
class DockStationConfig(Section):
    """Where the dock finds devices, keeps evidence, and whom it is."""

    SECTION = "dock_station"
    ERROR = DockConfigError

    unit: str = ""
    store_dir: str = "/srv/dock/evidence"
    device_address: str = "10.77.0.1"
    port: int = 8443
    ca_file: str = "/etc/dockstation/agency-ca.pem"
    cert_file: str = "/etc/dockstation/dock-cert.pem"
    key_file: str = "/etc/dockstation/dock-key.pem"
    crl_file: str = "/etc/dockstation/agency-crl.pem"   # pushed to the device at each docking; "" = never
    timezone: str = "Asia/Shanghai"
    counterpart_placeholder: str = PLACEHOLDER
    content_placeholder: str = PLACEHOLDER
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.unit, str) or not self.unit.strip():
            raise DockConfigError("[dock_station] unit (the agency unit name, S3) must be set")
        try:
            ipaddress.ip_address(self.device_address)
        except (ValueError, TypeError):
            raise DockConfigError(f"[dock_station] device_address must be an IP address, "
                                  f"got {self.device_address!r}") from None
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise DockConfigError(f"[dock_station] port must be 1..65535, got {self.port!r}")
        if not isinstance(self.crl_file, str):
            raise DockConfigError("[dock_station] crl_file must be a string (\"\": never push a CRL)")
        for k in ("store_dir", "ca_file", "cert_file", "key_file", "counterpart_placeholder",
                  "content_placeholder"):
            if not isinstance(getattr(self, k), str) or not getattr(self, k):
                raise DockConfigError(f"[dock_station] {k} must be a non-empty string")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise DockConfigError(f"[dock_station] timezone {self.timezone!r} is not known") from None
        t = self.timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise DockConfigError(f"[dock_station] timeout_s must be a positive number, got {t!r}")


    def with_overrides(self, **values: Any) -> "DockStationConfig":
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    @property
    def store(self) -> Path:
        return Path(self.store_dir)


def load(path: Path | None, **overrides: Any) -> DockStationConfig:
    table: dict[str, Any] = {}
    if path is not None:
        doc = read_toml(path, DockConfigError)
        extra = sorted(set(doc) - {"dock_station"})
        if extra:
            raise DockConfigError(f"{path}: unknown section(s) {', '.join(extra)}")
        table = dict(doc.get("dock_station", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    config: DockStationConfig = DockStationConfig.from_mapping(table)   # from_mapping returns cls(...)
    return config
