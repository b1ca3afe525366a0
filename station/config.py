"""The station's settings: one TOML file, one dataclass per ``[section]``, validated strictly.

``station init`` writes a commented copy of every default (``example_toml``); a typo in a
key is an error naming it, never a silent default. Sections:

* ``[station]``   who and where: unit (S3), store, database, signing key, time zone
* ``[dock]``      how the dock reaches a device over the USB link (docs/docking.md)
* ``[naming]``    the placeholders an S3 name carries until the recording is labelled
* ``[labels]``    the enforcement categories (执法类别) and the labelling deadline (S2)
* ``[retention]`` retention periods per category (S5)
* ``[access]``    the access rules (S8)
* ``[web]``       the web interface: address, HTTPS certificate, session lifetimes
* ``[agency]``    the agency's central store (station/docs/agency.md): local only, or S3 Object Lock
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.settings import Section, read_toml, setting

PLACEHOLDER = "未标注"
DEFAULT_CATEGORIES = ("行政检查", "行政处罚", "行政强制", "行政许可", "现场处置", "其他")


class StationConfigError(ValueError):
    """A setting is missing or impossible; the message names it."""


# the name older code and tests use for it
DockConfigError = StationConfigError


def _positive_int(section: str, name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise StationConfigError(f"[{section}] {name} must be a positive whole number, got {v!r}")


def _text(section: str, name: str, v: Any, *, empty: bool = False) -> None:
    if not isinstance(v, str) or (not empty and not v.strip()):
        raise StationConfigError(f"[{section}] {name} must be a{'' if empty else ' non-empty'} string")


@dataclass(frozen=True)
class StationSection(Section):
    SECTION = "station"
    ERROR = StationConfigError

    unit: str = setting("", "the agency unit name (单位名称), first part of every S3 name; required")
    name: str = setting("station-1", "this station's name in the audit journal and the shared catalogue")
    store_dir: str = setting("/srv/station", "evidence store: mirrors, named view, audit journal, exports")
    database_url: str = setting("", 'SQLAlchemy URL; "" = SQLite file <store_dir>/station.sqlite; '
                                "PostgreSQL: postgresql+psycopg://user@/db?host=/run/postgresql")
    key_file: str = setting("", 'the station signing key (audit journal, device assignments); '
                            '"" = <store_dir>/keys/station-key.pem')
    timezone: str = setting("Asia/Shanghai", "time zone of dates in names, lists and printouts")

    def __post_init__(self) -> None:
        _text("station", "unit (the agency unit name, S3)", self.unit)
        for k in ("name", "store_dir"):
            _text("station", k, getattr(self, k))
        for k in ("database_url", "key_file"):
            _text("station", k, getattr(self, k), empty=True)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise StationConfigError(f"[station] timezone {self.timezone!r} is not known") from None


@dataclass(frozen=True)
class DockSection(Section):
    SECTION = "dock"
    ERROR = StationConfigError

    device_address: str = setting("10.77.0.1", "the docked device's address on the USB link")
    port: int = setting(8443, "the device's dock service port")
    ca_file: str = setting("/etc/station/agency-ca.pem", "the agency CA certificate")
    cert_file: str = setting("/etc/station/dock-cert.pem", "this dock's certificate (from `station pki issue-dock`)")
    key_file: str = setting("/etc/station/dock-key.pem", "this dock's TLS key (mode 0600)")
    crl_file: str = setting("/etc/station/agency-crl.pem", 'pushed to the device at each docking; "" = never')
    timeout_s: float = setting(10.0, "a link silent this long is a cut: run again to resume")

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.device_address)
        except (ValueError, TypeError):
            raise StationConfigError(f"[dock] device_address must be an IP address, "
                                     f"got {self.device_address!r}") from None
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise StationConfigError(f"[dock] port must be 1..65535, got {self.port!r}")
        _text("dock", "crl_file", self.crl_file, empty=True)
        for k in ("ca_file", "cert_file", "key_file"):
            _text("dock", k, getattr(self, k))
        t = self.timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise StationConfigError(f"[dock] timeout_s must be a positive number, got {t!r}")


@dataclass(frozen=True)
class NamingSection(Section):
    SECTION = "naming"
    ERROR = StationConfigError

    counterpart_placeholder: str = setting(PLACEHOLDER, "S3 name part until the counterpart is labelled")
    content_placeholder: str = setting(PLACEHOLDER, "S3 name part until the content is labelled")

    def __post_init__(self) -> None:
        for f in fields(self):
            _text("naming", f.name, getattr(self, f.name))


@dataclass(frozen=True)
class LabelsSection(Section):
    SECTION = "labels"
    ERROR = StationConfigError

    categories: tuple[str, ...] = setting(DEFAULT_CATEGORIES, "the enforcement categories (执法类别) a label "
                                          "may name")
    deadline_hours: int = setting(48, "a recording unlabelled this long after its transfer is overdue (S2)")

    def __post_init__(self) -> None:
        cats = self.categories
        if not isinstance(cats, (list, tuple)) or not cats or not all(isinstance(c, str) and c.strip()
                                                                       for c in cats):
            raise StationConfigError("[labels] categories must be a non-empty list of names")
        if len(set(cats)) != len(cats):
            raise StationConfigError("[labels] categories has a name twice")
        object.__setattr__(self, "categories", tuple(cats))
        _positive_int("labels", "deadline_hours", self.deadline_hours)


@dataclass(frozen=True)
class RetentionSection(Section):
    SECTION = "retention"
    ERROR = StationConfigError

    default_days: int = setting(365, "how long an original is kept when nothing else says longer (S5)")
    by_category: dict[str, int] = field(default_factory=dict, metadata={
        "doc": 'per-category periods in days, e.g. { "行政处罚" = 730 }; the longest applies'})
    after_case_closed_days: int = setting(365, "recordings of a case are kept this long after it is closed")

    def __post_init__(self) -> None:
        _positive_int("retention", "default_days", self.default_days)
        _positive_int("retention", "after_case_closed_days", self.after_case_closed_days)
        if not isinstance(self.by_category, dict):
            raise StationConfigError("[retention] by_category must be a table of category = days")
        for k, v in self.by_category.items():
            _positive_int("retention", f"by_category.{k}", v)


@dataclass(frozen=True)
class AccessSection(Section):
    SECTION = "access"
    ERROR = StationConfigError

    officer_views_own: bool = setting(True, "an officer may view (not copy) their own recordings without "
                                      "an approval (S8)")
    grant_hours: int = setting(24, "how long an approved request stays valid")

    def __post_init__(self) -> None:
        if not isinstance(self.officer_views_own, bool):
            raise StationConfigError("[access] officer_views_own must be true or false")
        _positive_int("access", "grant_hours", self.grant_hours)


@dataclass(frozen=True)
class WebSection(Section):
    SECTION = "web"
    ERROR = StationConfigError

    listen_address: str = setting("127.0.0.1", "address the web interface listens on (the office network's "
                                  "interface address, or 0.0.0.0)")
    port: int = setting(8444, "HTTPS port of the web interface")
    cert_file: str = setting("", 'the HTTPS certificate (ECDSA or RSA: browsers do not take Ed25519); '
                             '"" = <store_dir>/keys/web-cert.pem, made self-signed by `station init`')
    key_file: str = setting("", '"" = <store_dir>/keys/web-key.pem')
    session_idle_minutes: int = setting(30, "a session unused this long is signed out")
    session_max_hours: int = setting(12, "a session ends this long after sign-in, used or not")

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.listen_address)
        except (ValueError, TypeError):
            raise StationConfigError(f"[web] listen_address must be an IP address, "
                                     f"got {self.listen_address!r}") from None
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise StationConfigError(f"[web] port must be 0..65535, got {self.port!r}")
        for k in ("cert_file", "key_file"):
            _text("web", k, getattr(self, k), empty=True)
        _positive_int("web", "session_idle_minutes", self.session_idle_minutes)
        _positive_int("web", "session_max_hours", self.session_max_hours)


AGENCY_STORE_KINDS = ("local", "s3")


@dataclass(frozen=True)
class AgencySection(Section):
    SECTION = "agency"
    ERROR = StationConfigError

    kind: str = setting("local", 'where verified evidence is kept for the agency: "local" = this station\'s '
                        'store_dir only (one office); "s3" = also pushed by `station sync` to the agency\'s '
                        "S3 Object Lock store (station/docs/agency.md)")
    endpoint_url: str = setting("", 'the S3 gateway, e.g. "https://store.agency.example:8333"; required for s3')
    bucket: str = setting("evidence", "the bucket (created with object lock by deploy/agency/)")
    prefix: str = setting("", 'key prefix inside the bucket, e.g. "xiamen/"; "" = none')
    region: str = setting("us-east-1", "the S3 region name the gateway expects")
    access_key: str = setting("", "the agency's S3 access key for stations; required for s3")
    secret_key_file: str = setting("/etc/station/store-secret", "a file (mode 0600) holding the secret key")
    connect_timeout_s: float = setting(5.0, "a store that does not answer this fast is down: the station "
                                       "keeps ingesting and `station sync` catches up later")
    read_timeout_s: float = setting(120.0, "longest wait for one request to the store")

    def __post_init__(self) -> None:
        if self.kind not in AGENCY_STORE_KINDS:
            raise StationConfigError(f"[agency] kind must be one of {', '.join(AGENCY_STORE_KINDS)}, got {self.kind!r}")
        for k in ("endpoint_url", "prefix", "access_key", "secret_key_file"):
            _text("agency", k, getattr(self, k), empty=True)
        for k in ("bucket", "region"):
            _text("agency", k, getattr(self, k))
        for k in ("connect_timeout_s", "read_timeout_s"):
            t = getattr(self, k)
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
                raise StationConfigError(f"[agency] {k} must be a positive number, got {t!r}")
        if self.kind == "s3":
            if not self.endpoint_url.startswith(("http://", "https://")):
                raise StationConfigError("[agency] endpoint_url must be an http(s) URL when kind is s3")
            if not self.access_key or not self.secret_key_file:
                raise StationConfigError("[agency] access_key and secret_key_file are required when kind is s3")
        if self.prefix and (self.prefix.startswith("/") or not self.prefix.endswith("/")):
            raise StationConfigError("[agency] prefix must not start with / and must end with /")


SECTIONS: tuple[type[Section], ...] = (StationSection, DockSection, NamingSection, LabelsSection,
                                       RetentionSection, AccessSection, WebSection, AgencySection)


@dataclass(frozen=True)
class StationConfig:
    """The whole file, one attribute per section."""

    station: StationSection
    dock: DockSection = field(default_factory=DockSection)
    naming: NamingSection = field(default_factory=NamingSection)
    labels: LabelsSection = field(default_factory=LabelsSection)
    retention: RetentionSection = field(default_factory=RetentionSection)
    access: AccessSection = field(default_factory=AccessSection)
    web: WebSection = field(default_factory=WebSection)
    agency: AgencySection = field(default_factory=AgencySection)
    path: Path | None = None

    ATTRS: ClassVar[dict[str, str]] = {"station": "station", "dock": "dock", "naming": "naming",
                                       "labels": "labels", "retention": "retention", "access": "access",
                                       "web": "web", "agency": "agency"}

    # ---- short names used all over ---------------------------------------------------
    @property
    def store(self) -> Path:
        return Path(self.station.store_dir)

    @property
    def unit(self) -> str:
        return self.station.unit

    @property
    def timezone(self) -> str:
        return self.station.timezone

    @property
    def database_url(self) -> str:
        return self.station.database_url or f"sqlite:///{self.store / 'station.sqlite'}"

    @property
    def key_path(self) -> Path:
        return Path(self.station.key_file) if self.station.key_file else self.store / "keys" / "station-key.pem"

    @property
    def web_cert_path(self) -> Path:
        return Path(self.web.cert_file) if self.web.cert_file else self.store / "keys" / "web-cert.pem"

    @property
    def web_key_path(self) -> Path:
        return Path(self.web.key_file) if self.web.key_file else self.store / "keys" / "web-key.pem"

    def with_overrides(self, section: str, **values: Any) -> "StationConfig":
        """A copy with some settings of one section replaced (None = keep); re-validated."""
        current = getattr(self, section)
        vals = {k: v for k, v in values.items() if v is not None}
        if not vals:
            return self
        return replace(self, **{section: replace(current, **vals)})


def load(path: Path | str | None, *, store_dir: str | None = None, **dock_overrides: Any) -> StationConfig:
    """Read and validate the file (None: defaults, which need ``store_dir`` and fail on ``unit``)."""
    doc: dict[str, Any] = {}
    if path is not None:
        doc = read_toml(path, StationConfigError)
    known = {s.SECTION: s for s in SECTIONS}
    extra = sorted(set(doc) - set(known))
    if extra:
        raise StationConfigError(f"{path}: unknown section(s) {', '.join(extra)} "
                                 f"(known: {', '.join(known)})")
    for name, table in doc.items():
        if not isinstance(table, dict):
            raise StationConfigError(f"{path}: [{name}] must be a table")
    station_table = dict(doc.get("station", {}))
    if store_dir is not None:
        station_table["store_dir"] = store_dir
    dock_table = dict(doc.get("dock", {}))
    dock_table.update({k: v for k, v in dock_overrides.items() if v is not None})
    built: dict[str, Any] = {}
    for attr, cls in zip(StationConfig.ATTRS, SECTIONS, strict=True):
        table = station_table if attr == "station" else dock_table if attr == "dock" else doc.get(attr, {})
        built[attr] = cls.from_mapping(table)
    return StationConfig(path=Path(path) if path is not None else None, **built)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_value(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def example_toml(values: dict[str, dict[str, Any]] | None = None) -> str:
    """Every setting with its meaning, as a commented TOML file; ``values`` fills some in."""
    values = values or {}
    out = ["# Evidence station configuration (station init). Every setting is shown with its",
           "# default; see station/README.md. A key this file does not know is an error.", ""]
    for cls in SECTIONS:
        out.append(f"[{cls.SECTION}]")
        for f in fields(cls):
            doc = f.metadata.get("doc", "")
            default = f.default
            if default is MISSING and callable(f.default_factory):
                default = f.default_factory()
            v = values.get(cls.SECTION, {}).get(f.name, default)
            if doc:
                out.append(f"# {doc}")
            out.append(f"{f.name} = {_toml_value(v)}")
        out.append("")
    return "\n".join(out)
