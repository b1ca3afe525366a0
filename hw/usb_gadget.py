"""The device's USB personality: a composite gadget built through configfs (D10, D11).

The dock station reaches the device over one USB cable.  The gadget offers:

* a network function for the dock link (offload, D11): **NCM** in configuration
  ``c.1`` and, by default, **ECM** in configuration ``c.2``.  NCM is the faster,
  modern CDC class; ECM is the one every host has had for twenty years.  A USB
  device can only offer alternatives to the host as separate *configurations*,
  so ``network = "ncm+ecm"`` builds two.  Linux hosts (the dock station) take
  the first configuration whose first interface is not vendor-specific, i.e.
  ``c.1``/NCM; a host without ``cdc_ncm`` can be moved to ECM by writing ``2``
  to the device's ``bConfigurationValue`` in its sysfs, and ``network = "ecm"``
  offers ECM alone for hosts that cannot be told.  Only one configuration is
  ever active, so the two never run side by side.
* an **ACM** serial port (``/dev/ttyGS0`` on the device) for the bench console,
  present in every configuration; ``serial_console = false`` leaves it out.

There is deliberately no mass-storage function: recordings leave the device
only through the dock's authorised, verified path (D10), never as a drive a
host could copy from.

The serial number is the device ID, so the dock knows which personally issued
device it is talking to (D12); the MAC addresses are derived from it too, so
they are stable across boots.

Everything goes through :class:`ConfigFs`, a thin seam over the configfs tree
rooted at a configurable directory.  In real configfs the *kernel* creates the
attribute files when a directory is made; userspace can only write them.
:data:`KERNEL_CREATED` lists what the kernel makes (from the kernel's
``Documentation/usb/gadget_configfs.rst`` and ``Documentation/ABI/testing/
configfs-usb-gadget*``), so a test can emulate it on a plain directory.
:meth:`ConfigFs.write` never creates a file, so writing an attribute the kernel
would not have made fails here exactly as it would on a Pi.
"""
from __future__ import annotations

import argparse
import errno
import fnmatch
import hashlib
import logging
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from common.settings import read_toml

log = logging.getLogger(__name__)

DEFAULT_CONFIGFS_ROOT = Path("/sys/kernel/config")
DEFAULT_UDC_CLASS_DIR = Path("/sys/class/udc")
LANG_EN_US = "0x409"
NETWORK_MODES = ("ncm+ecm", "ncm", "ecm")
# USB string descriptors hold at most 126 UTF-16 code units (bLength is one byte).
MAX_USB_STRING = 126
# USB 2.0 bus-powered devices may draw at most 500 mA once configured.
MAX_POWER_LIMIT_MA = 500


class GadgetError(RuntimeError):
    """The gadget could not be built, bound or removed; the message says which step."""


class GadgetConfigError(ValueError):
    """A ``[gadget]`` setting is invalid; the message names the setting."""


@dataclass(frozen=True)
class KernelEntries:
    """What the kernel creates inside a configfs directory when userspace makes it."""

    attributes: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()   # default sub-directories; userspace cannot remove them


# Patterns are relative to the configfs root.  Newer kernels add more entries
# (max_speed, os_desc/, webusb/, max_segment_size, ...); this code writes none
# of them, so the documented minimum is what it relies on.
KERNEL_CREATED: dict[str, KernelEntries] = {
    "usb_gadget/*": KernelEntries(
        attributes=("UDC", "bDeviceClass", "bDeviceProtocol", "bDeviceSubClass",
                    "bMaxPacketSize0", "bcdDevice", "bcdUSB", "idProduct", "idVendor"),
        groups=("configs", "functions", "strings"),
    ),
    "usb_gadget/*/strings/*": KernelEntries(attributes=("manufacturer", "product", "serialnumber")),
    "usb_gadget/*/configs/*": KernelEntries(attributes=("MaxPower", "bmAttributes"), groups=("strings",)),
    "usb_gadget/*/configs/*/strings/*": KernelEntries(attributes=("configuration",)),
    "usb_gadget/*/functions/ncm.*": KernelEntries(
        attributes=("dev_addr", "host_addr", "ifname", "qmult"), read_only=("ifname",)),
    "usb_gadget/*/functions/ecm.*": KernelEntries(
        attributes=("dev_addr", "host_addr", "ifname", "qmult"), read_only=("ifname",)),
    "usb_gadget/*/functions/acm.*": KernelEntries(attributes=("port_num",), read_only=("port_num",)),
}


def kernel_entries_for(rel: str) -> KernelEntries | None:
    """The entries the kernel would create on ``mkdir rel`` (None: a plain group)."""
    parts = rel.strip("/").split("/")
    for pattern, entries in KERNEL_CREATED.items():
        pattern_parts = pattern.split("/")
        if len(parts) == len(pattern_parts) and all(
                fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern_parts, strict=True)):
            return entries
    return None


class ConfigFs:
    """The only code that touches the configfs tree: mkdir, write, symlink, unlink, rmdir.

    Paths are relative to ``root``.  ``write`` opens without ``O_CREAT`` (configfs
    files cannot be created by userspace) and stores the value in one
    ``write(2)``, which is what configfs attribute stores expect.
    """

    def __init__(self, root: Path | str = DEFAULT_CONFIGFS_ROOT) -> None:
        self.root = Path(root)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def is_dir(self, rel: str) -> bool:
        p = self.path(rel)
        return p.is_dir() and not p.is_symlink()

    def is_link(self, rel: str) -> bool:
        return self.path(rel).is_symlink()

    def listdir(self, rel: str) -> list[str]:
        return sorted(os.listdir(self.path(rel)))

    def mkdir(self, rel: str) -> None:
        os.mkdir(self.path(rel))

    def rmdir(self, rel: str) -> None:
        os.rmdir(self.path(rel))

    def write(self, rel: str, value: str) -> None:
        data = (value + "\n").encode("utf-8")
        fd = os.open(self.path(rel), os.O_WRONLY | os.O_TRUNC)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(errno.EIO, f"short write to {rel}: {written} of {len(data)} bytes")

    def read(self, rel: str) -> str:
        return self.path(rel).read_text(encoding="utf-8").strip()

    def symlink(self, target_rel: str, link_rel: str) -> None:
        """``ln -s <root>/target <root>/link``, as the kernel documentation does it."""
        os.symlink(self.path(target_rel), self.path(link_rel))

    def unlink(self, rel: str) -> None:
        os.unlink(self.path(rel))


def derived_mac(serial: str, role: str) -> str:
    """A stable, locally administered unicast MAC for ``role`` on the device ``serial``."""
    digest = bytearray(hashlib.sha256(f"bodycam-usb:{serial}:{role}".encode()).digest()[:6])
    digest[0] = (digest[0] | 0x02) & 0xFE   # locally administered, not multicast
    return ":".join(f"{b:02x}" for b in digest)


def _check_usb_string(name: str, value: str, *, ascii_only: bool = False) -> None:
    if not isinstance(value, str) or not value.strip():
        raise GadgetConfigError(f"gadget.{name} must be a non-empty string, got {value!r}")
    if len(value.encode("utf-16-le")) // 2 > MAX_USB_STRING:
        raise GadgetConfigError(f"gadget.{name} is longer than {MAX_USB_STRING} characters")
    if any(not ch.isprintable() for ch in value):
        raise GadgetConfigError(f"gadget.{name} contains control characters: {value!r}")
    if ascii_only and not value.isascii():
        raise GadgetConfigError(f"gadget.{name} must be ASCII (hosts mangle others): {value!r}")


def _check_u16(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise GadgetConfigError(f"gadget.{name} must be an integer 0x0000..0xffff, got {value!r}")


@dataclass(frozen=True)
class GadgetSettings:
    """The ``[gadget]`` config table; ``serial`` is the device ID (D12)."""

    serial: str
    enabled: bool = True
    name: str = "bodycam"
    vendor_id: int = 0x1D6B     # Linux Foundation
    product_id: int = 0x0104    # Multifunction Composite Gadget
    device_version: int = 0x0100
    manufacturer: str = "Bodycam"
    product: str = "Body-worn camera"
    network: str = "ncm+ecm"
    serial_console: bool = True
    max_power_ma: int = MAX_POWER_LIMIT_MA
    udc: str = ""               # empty: the first controller in udc_class_dir
    configfs_root: Path = field(default=DEFAULT_CONFIGFS_ROOT)
    udc_class_dir: Path = field(default=DEFAULT_UDC_CLASS_DIR)

    def __post_init__(self) -> None:
        _check_usb_string("serial", self.serial, ascii_only=True)
        _check_usb_string("manufacturer", self.manufacturer)
        _check_usb_string("product", self.product)
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise GadgetConfigError(f"gadget.name must be a plain directory name, got {self.name!r}")
        for key in ("vendor_id", "product_id", "device_version"):
            _check_u16(key, getattr(self, key))
        if self.network not in NETWORK_MODES:
            raise GadgetConfigError(
                f"gadget.network must be one of {', '.join(NETWORK_MODES)}, got {self.network!r}")
        for key in ("enabled", "serial_console"):
            if not isinstance(getattr(self, key), bool):
                raise GadgetConfigError(f"gadget.{key} must be true or false")
        if (isinstance(self.max_power_ma, bool) or not isinstance(self.max_power_ma, int)
                or not 0 <= self.max_power_ma <= MAX_POWER_LIMIT_MA):
            raise GadgetConfigError(
                f"gadget.max_power_ma must be an integer 0..{MAX_POWER_LIMIT_MA}, got {self.max_power_ma!r}")
        if "/" in self.udc:
            raise GadgetConfigError(f"gadget.udc must be a controller name, got {self.udc!r}")
        object.__setattr__(self, "configfs_root", Path(self.configfs_root))
        object.__setattr__(self, "udc_class_dir", Path(self.udc_class_dir))

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, device_id: str | None = None) -> "GadgetSettings":
        """Build from a parsed ``[gadget]`` table; ``serial`` defaults to ``device_id``.

        Unknown keys are refused, so a typo cannot silently fall back to a default.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise GadgetConfigError(f"unknown [gadget] setting(s): {', '.join(unknown)}")
        values = dict(table)
        if not values.get("serial"):
            if not device_id:
                raise GadgetConfigError("gadget.serial is not set and no device ID is known")
            values["serial"] = device_id
        return cls(**values)

    @property
    def configurations(self) -> list[tuple[str, str, str]]:
        """(config dir, description, network function) in the order offered to the host."""
        console = " + serial console" if self.serial_console else ""
        modes = {"ncm+ecm": ["ncm", "ecm"], "ncm": ["ncm"], "ecm": ["ecm"]}[self.network]
        return [(f"c.{i}", f"{net.upper()}{console}", f"{net}.usb0")
                for i, net in enumerate(modes, start=1)]


class UsbGadget:
    """Builds, binds, unbinds and removes the composite gadget described by ``settings``."""

    def __init__(self, settings: GadgetSettings, configfs: ConfigFs | None = None) -> None:
        self.settings = settings
        self.fs = configfs if configfs is not None else ConfigFs(settings.configfs_root)
        self.dir = f"usb_gadget/{settings.name}"

    # -- public -----------------------------------------------------------
    def up(self) -> str:
        """Build the gadget and bind it to the UDC; returns the UDC name.

        A gadget left over from an earlier run (crash, previous version) is
        removed first, so ``up`` always yields exactly the configured layout.
        """
        if not self.fs.is_dir("usb_gadget"):
            raise GadgetError(
                f"{self.fs.path('usb_gadget')} is missing: configfs is not mounted or "
                "libcomposite is not loaded (see deploy/boot/modules-load.conf)")
        udc = self.choose_udc()
        if self.fs.exists(self.dir):
            log.warning("gadget %s already exists; removing it before rebuilding", self.dir)
            self.down()
        try:
            self.build()
            self.bind(udc)
        except Exception:
            log.error("gadget setup failed; removing the partial gadget")
            try:
                self.down()
            except GadgetError as cleanup:
                log.error("cleanup after failed setup also failed: %s", cleanup)
            raise
        log.info("USB gadget %s bound to %s (%s)", self.settings.name, udc, self.settings.network)
        return udc

    def build(self) -> None:
        """Create the directory tree and write every attribute (does not bind)."""
        s = self.settings
        g = self.dir
        self._mkdir(g)
        self._write("idVendor", f"0x{s.vendor_id:04x}")
        self._write("idProduct", f"0x{s.product_id:04x}")
        self._write("bcdDevice", f"0x{s.device_version:04x}")
        self._write("bcdUSB", "0x0200")
        # Miscellaneous / Common Class / Interface Association Descriptor: the
        # device class a composite with an ACM function must announce so hosts
        # (Windows in particular) group each function's interfaces correctly.
        self._write("bDeviceClass", "0xef")
        self._write("bDeviceSubClass", "0x02")
        self._write("bDeviceProtocol", "0x01")
        self._mkdir(f"{g}/strings/{LANG_EN_US}")
        self._write(f"strings/{LANG_EN_US}/serialnumber", s.serial)
        self._write(f"strings/{LANG_EN_US}/manufacturer", s.manufacturer)
        self._write(f"strings/{LANG_EN_US}/product", s.product)

        functions = [net for _, _, net in s.configurations]
        for fn in functions:
            kind = fn.split(".")[0]
            self._mkdir(f"{g}/functions/{fn}")
            self._write(f"functions/{fn}/host_addr", derived_mac(s.serial, f"{kind}-host"))
            self._write(f"functions/{fn}/dev_addr", derived_mac(s.serial, f"{kind}-device"))
        if s.serial_console:
            self._mkdir(f"{g}/functions/acm.GS0")

        for config, description, net in s.configurations:
            c = f"{g}/configs/{config}"
            self._mkdir(c)
            self._write(f"configs/{config}/MaxPower", str(s.max_power_ma))
            self._mkdir(f"{c}/strings/{LANG_EN_US}")
            self._write(f"configs/{config}/strings/{LANG_EN_US}/configuration", description)
            # Link order is interface order: the network function comes first.
            linked = [net] + (["acm.GS0"] if s.serial_console else [])
            for fn in linked:
                self._symlink(f"{g}/functions/{fn}", f"{c}/{fn}")

    def down(self) -> None:
        """Unbind and remove the gadget in the order the kernel requires.

        Works on whatever is there (not only on the layout this version
        builds): unbind, remove config->function links, config strings,
        configs, functions, gadget strings, then the gadget itself.
        """
        g = self.dir
        if not self.fs.exists(g):
            return
        try:
            if self.fs.exists(f"{g}/UDC") and self.fs.read(f"{g}/UDC"):
                self.fs.write(f"{g}/UDC", "")
            for config in self._children(f"{g}/configs"):
                c = f"{g}/configs/{config}"
                for entry in self._children(c):
                    if self.fs.is_link(f"{c}/{entry}"):
                        self.fs.unlink(f"{c}/{entry}")
                for lang in self._children(f"{c}/strings"):
                    self.fs.rmdir(f"{c}/strings/{lang}")
                self.fs.rmdir(c)
            if self.fs.is_dir(f"{g}/os_desc"):
                for entry in self._children(f"{g}/os_desc"):
                    if self.fs.is_link(f"{g}/os_desc/{entry}"):
                        self.fs.unlink(f"{g}/os_desc/{entry}")
            for fn in self._children(f"{g}/functions"):
                self.fs.rmdir(f"{g}/functions/{fn}")
            for lang in self._children(f"{g}/strings"):
                self.fs.rmdir(f"{g}/strings/{lang}")
            self.fs.rmdir(g)
        except OSError as exc:
            raise GadgetError(f"removing gadget {g} failed at {exc.filename or '?'}: {exc.strerror}") from exc
        log.info("USB gadget %s removed", self.settings.name)

    def bind(self, udc: str) -> None:
        """Attach the built gadget to ``udc``: the host sees a device plugged in."""
        self._write("UDC", udc, step="bind to UDC")

    def unbind(self) -> None:
        """Detach the gadget from its controller (kept in configfs): the host sees it
        unplugged, as when the camera leaves the dock; :meth:`bind` plugs it in again."""
        if self.bound_udc():
            self._write("UDC", "", step="unbind from UDC")

    def bound_udc(self) -> str:
        """The UDC the gadget is bound to, or "" (also when the gadget does not exist)."""
        rel = f"{self.dir}/UDC"
        return self.fs.read(rel) if self.fs.exists(rel) else ""

    def available_udcs(self) -> list[str]:
        try:
            return sorted(os.listdir(self.settings.udc_class_dir))
        except FileNotFoundError:
            return []

    def choose_udc(self) -> str:
        """The configured UDC, or the first one the kernel lists."""
        available = self.available_udcs()
        if not available:
            raise GadgetError(
                f"no USB device controller in {self.settings.udc_class_dir}: is "
                "'dtoverlay=dwc2,dr_mode=peripheral' in config.txt and dwc2 loaded?")
        if self.settings.udc:
            if self.settings.udc not in available:
                raise GadgetError(
                    f"gadget.udc {self.settings.udc!r} not found; available: {', '.join(available)}")
            return self.settings.udc
        return available[0]

    # -- helpers ----------------------------------------------------------
    def _children(self, rel: str) -> list[str]:
        return self.fs.listdir(rel) if self.fs.is_dir(rel) else []

    def _mkdir(self, rel: str) -> None:
        try:
            self.fs.mkdir(rel)
        except OSError as exc:
            hint = ""
            if "/functions/" in rel and exc.errno in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                hint = " (is the usb_f_* function module available in this kernel?)"
            raise GadgetError(f"mkdir {rel} failed: {exc.strerror}{hint}") from exc

    def _write(self, attr: str, value: str, step: str | None = None) -> None:
        rel = f"{self.dir}/{attr}"
        try:
            self.fs.write(rel, value)
        except OSError as exc:
            raise GadgetError(f"{step or 'write'} {rel} = {value!r} failed: {exc.strerror}") from exc

    def _symlink(self, target: str, link: str) -> None:
        try:
            self.fs.symlink(target, link)
        except OSError as exc:
            raise GadgetError(f"linking {link} -> {target} failed: {exc.strerror}") from exc


class UsbHostLink:
    """Whether a USB host (the dock) has enumerated the device: the UDC's sysfs ``state``.

    ``configured`` means a host selected one of our configurations, i.e. the
    dock link can come up.  ``state`` files in ``/sys/class/udc/<udc>/state``
    read e.g. ``not attached``, ``powered``, ``default``, ``addressed``,
    ``configured``, ``suspended``.

    ``state`` alone is not enough: the kernel only changes it when the
    controller driver reports a change, and ``dummy_hcd`` (the gadget VM test)
    leaves it at ``configured`` after the gadget is unbound.  So a controller
    with no gadget bound (its ``function`` attribute, where the kernel has it,
    is empty) counts as not configured whatever ``state`` says.  The Pi's dwc2
    sets ``not attached`` itself on a disconnect or session-end interrupt.
    """

    def __init__(self, udc: str = "", udc_class_dir: Path | str = DEFAULT_UDC_CLASS_DIR) -> None:
        self.udc = udc
        self.udc_class_dir = Path(udc_class_dir)
        self._warned = False

    def state_path(self) -> Path:
        udc = self.udc
        if not udc:
            try:
                names = sorted(os.listdir(self.udc_class_dir))
            except FileNotFoundError:
                names = []
            if not names:
                raise GadgetError(f"no USB device controller in {self.udc_class_dir}")
            udc = names[0]
        return self.udc_class_dir / udc / "state"

    def state(self) -> str:
        """The controller's state string; raises :class:`GadgetError` if it cannot be read."""
        path = self.state_path()
        try:
            return path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise GadgetError(f"cannot read USB controller state {path}: {exc}") from exc

    def gadget_bound(self) -> bool:
        """False when the controller's ``function`` attribute says no gadget is bound
        (True where the kernel has no such attribute: then ``state`` is all there is)."""
        path = self.state_path().with_name("function")
        try:
            return bool(path.read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            return True
        except (OSError, UnicodeDecodeError) as exc:
            raise GadgetError(f"cannot read USB controller function {path}: {exc}") from exc

    def host_configured(self) -> bool:
        """True when a host has configured the gadget; False otherwise, and when the
        controller is missing (logged once, so a polling loop does not flood the log)."""
        try:
            state = self.state()
            bound = state == "configured" and self.gadget_bound()
        except GadgetError as exc:
            if not self._warned:
                log.warning("%s; treating as no host attached", exc)
                self._warned = True
            return False
        self._warned = False
        return bound


def load_settings(config_file: Path, *, serial: str | None = None) -> GadgetSettings:
    """Read ``[gadget]`` (and ``[device] id`` as the default serial) from the TOML config."""
    doc = read_toml(config_file, GadgetConfigError)
    table = dict(doc.get("gadget", {}))
    if serial:
        table["serial"] = serial
    device_id = doc.get("device", {}).get("id")
    return GadgetSettings.from_mapping(table, device_id=device_id)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hw.usb_gadget up|down|status`` (run as root by bodycam-gadget.service)."""
    parser = argparse.ArgumentParser(prog="python -m hw.usb_gadget", description=main.__doc__)
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--config", type=Path, help="bodycam TOML config ([gadget], [device] id)")
    parser.add_argument("--serial", help="device ID to use as USB serial number")
    parser.add_argument("--configfs-root", type=Path, help="override gadget.configfs_root")
    parser.add_argument("--udc-class-dir", type=Path, help="override gadget.udc_class_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.config:
            settings = load_settings(args.config, serial=args.serial)
        elif args.serial:
            settings = GadgetSettings(serial=args.serial)
        else:
            parser.error("give --config or --serial")
        overrides = {k: v for k, v in (("configfs_root", args.configfs_root),
                                       ("udc_class_dir", args.udc_class_dir)) if v is not None}
        if overrides:
            settings = GadgetSettings(**{**{f.name: getattr(settings, f.name) for f in fields(settings)},
                                         **overrides})
        gadget = UsbGadget(settings)
        if args.action == "up":
            if not settings.enabled:
                log.info("gadget.enabled is false: not creating the USB gadget")
                return 0
            gadget.up()
        elif args.action == "down":
            gadget.down()
        else:
            bound = gadget.bound_udc()
            state = UsbHostLink(bound, settings.udc_class_dir).state() if bound else "unbound"
            sys.stdout.write(f"gadget={settings.name} udc={bound or '-'} state={state}\n")
    except (GadgetError, GadgetConfigError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
