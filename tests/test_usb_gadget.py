"""The USB gadget against a configfs emulated on a plain directory.

No USB device controller exists here, so configfs is the one thing emulated,
and only as thinly as the kernel's documented rules require
(Documentation/usb/gadget_configfs.rst, Documentation/filesystems/configfs.rst):

* mkdir of a gadget/config/function/strings dir creates the attribute files
  and default groups the kernel documents (``KERNEL_DOCUMENTED`` below, written
  from the documentation, not from the code under test; and, as a second kernel,
  ``KERNEL_NEWER`` with the entries later kernels add); a test then checks the
  code's own ``hw.usb_gadget.KERNEL_CREATED`` against it;
* attribute files cannot be created, removed, or (read-only ones) written;
* numeric attributes must parse, UDC must name an existing controller;
* symlinks only from a configuration to a function, never dangling;
* rmdir refuses default groups (EPERM), items that still hold links or have
  user-made children (ENOTEMPTY) and items something links to (EBUSY).

So a wrong teardown order or a write to a file the kernel would not have made
fails here as it would on a Pi.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hw.usb_gadget import (
    KERNEL_CREATED,
    ConfigFs,
    GadgetConfigError,
    GadgetError,
    GadgetSettings,
    UsbGadget,
    UsbHostLink,
    derived_mac,
    load_settings,
    main,
)

REPO = Path(__file__).resolve().parents[1]
U16_ATTRS = {"idVendor", "idProduct", "bcdDevice", "bcdUSB"}
U8_ATTRS = {"bDeviceClass", "bDeviceSubClass", "bDeviceProtocol", "bMaxPacketSize0", "bmAttributes"}


@dataclass(frozen=True)
class Made:
    """What the kernel creates in a configfs directory on mkdir: attribute files, which of
    them are read-only, and default groups (sub-directories, each with its own attributes)."""

    attributes: frozenset = frozenset()
    read_only: frozenset = frozenset()
    groups: dict = field(default_factory=dict)   # name -> frozenset of its attributes


def made(attributes="", read_only="", **groups) -> Made:
    return Made(frozenset(attributes.split()), frozenset(read_only.split()),
                {name: frozenset(attrs.split()) for name, attrs in groups.items()})


# Written from the kernel's documentation, independently of hw.usb_gadget:
# Documentation/ABI/testing/configfs-usb-gadget (gadget, configs, strings),
# configfs-usb-gadget-ncm, -ecm ("ifname", "qmult", "host_addr", "dev_addr"; ifname is
# what the kernel named the interface), configfs-usb-gadget-acm ("port_num  (RO)") and
# Documentation/usb/gadget_configfs.rst. The set every kernel since the gadget's configfs
# interface has: what the code may rely on. Paths are relative to the configfs root.
KERNEL_DOCUMENTED: dict[str, Made] = {
    "usb_gadget/*": made("bDeviceClass bDeviceSubClass bDeviceProtocol bMaxPacketSize0 "
                         "idVendor idProduct bcdDevice bcdUSB UDC",
                         configs="", functions="", strings=""),
    "usb_gadget/*/strings/*": made("manufacturer product serialnumber"),
    "usb_gadget/*/configs/*": made("bmAttributes MaxPower", strings=""),
    "usb_gadget/*/configs/*/strings/*": made("configuration"),
    "usb_gadget/*/functions/ncm.*": made("ifname qmult host_addr dev_addr", read_only="ifname"),
    "usb_gadget/*/functions/ecm.*": made("ifname qmult host_addr dev_addr", read_only="ifname"),
    "usb_gadget/*/functions/acm.*": made("port_num", read_only="port_num"),
}

# What later kernels add (same ABI documents): max_speed, the os_desc and webusb groups
# with their attributes, the NCM max_segment_size. Code that only relies on the documented
# minimum must work here too, teardown included (default groups cannot be removed).
KERNEL_NEWER: dict[str, Made] = {
    **KERNEL_DOCUMENTED,
    "usb_gadget/*": made("bDeviceClass bDeviceSubClass bDeviceProtocol bMaxPacketSize0 "
                         "idVendor idProduct bcdDevice bcdUSB UDC max_speed",
                         configs="", functions="", strings="",
                         os_desc="b_vendor_code qw_sign use",
                         webusb="bcdVersion bVendorCode landingPage use"),
    "usb_gadget/*/functions/ncm.*": made("ifname qmult host_addr dev_addr max_segment_size",
                                         read_only="ifname"),
}


def kernel_made(kernel: dict[str, Made], rel: str) -> Made | None:
    parts = rel.strip("/").split("/")
    for pattern, entries in kernel.items():
        pattern_parts = pattern.split("/")
        if len(parts) == len(pattern_parts) and all(
                fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern_parts, strict=True)):
            return entries
    return None


def test_the_codes_kernel_table_is_the_documented_one():
    """hw.usb_gadget.KERNEL_CREATED (what the code believes) against the documentation."""
    assert set(KERNEL_CREATED) == set(KERNEL_DOCUMENTED)
    for pattern, documented in KERNEL_DOCUMENTED.items():
        code = KERNEL_CREATED[pattern]
        assert set(code.attributes) == documented.attributes, pattern
        assert set(code.read_only) == documented.read_only, pattern
        assert set(code.groups) == set(documented.groups), pattern


class EmulatedConfigFs(ConfigFs):
    """configfs rules on a plain directory; every call is logged for order checks."""

    def __init__(self, root: Path, udc_class_dir: Path,
                 kernel: dict[str, Made] = KERNEL_DOCUMENTED) -> None:
        super().__init__(root)
        self.udc_class_dir = udc_class_dir
        self.kernel = kernel
        self.calls: list[tuple[str, str]] = []
        self.default_groups: set[str] = set()
        self.read_only: set[str] = set()
        (root / "usb_gadget").mkdir(parents=True)
        self.default_groups.add("usb_gadget")

    def _rel(self, rel: str) -> str:
        return rel.strip("/")

    def mkdir(self, rel: str) -> None:
        rel = self._rel(rel)
        parent = rel.rsplit("/", 1)[0]
        allowed_parent = (parent == "usb_gadget" or parent.endswith(("/configs", "/functions", "/strings")))
        if not allowed_parent:
            raise OSError(errno.EPERM, "configfs: cannot mkdir here", str(self.path(rel)))
        base = rel.rsplit("/", 1)[1]
        if parent.endswith("/functions") and kernel_made(self.kernel, rel) is None:
            raise OSError(errno.ENOENT, "no such function driver", str(self.path(rel)))
        if parent.endswith("/configs") and not (
                "." in base and base.rsplit(".", 1)[1].isdigit() and int(base.rsplit(".", 1)[1]) > 0):
            raise OSError(errno.EINVAL, "config name must be <name>.<number>", str(self.path(rel)))
        super().mkdir(rel)
        self.calls.append(("mkdir", rel))
        entries = kernel_made(self.kernel, rel)
        if entries:
            for attr in entries.attributes:
                self.path(f"{rel}/{attr}").write_text("")
            for ro in entries.read_only:
                self.read_only.add(f"{rel}/{ro}")
            for group, group_attrs in entries.groups.items():
                os.mkdir(self.path(f"{rel}/{group}"))
                self.default_groups.add(f"{rel}/{group}")
                for attr in group_attrs:
                    self.path(f"{rel}/{group}/{attr}").write_text("")
            if "/functions/acm." in rel:
                self.path(f"{rel}/port_num").write_text("0\n")
            if "/functions/ncm." in rel or "/functions/ecm." in rel:
                self.path(f"{rel}/ifname").write_text("usb0\n")

    def write(self, rel: str, value: str) -> None:
        rel = self._rel(rel)
        name = rel.rsplit("/", 1)[1]
        if rel in self.read_only:
            raise OSError(errno.EACCES, "read-only attribute", str(self.path(rel)))
        if not self.path(rel).is_file():
            raise OSError(errno.ENOENT, "configfs: no such attribute", str(self.path(rel)))
        if name in U16_ATTRS | U8_ATTRS | {"MaxPower"}:
            limit = 0xFF if name in U8_ATTRS else 0xFFFF
            number = int(value.strip(), 0)   # the kernel's kstrtou16/kstrtou8(..., 0, ...)
            if not 0 <= number <= limit:
                raise OSError(errno.ERANGE, "out of range", str(self.path(rel)))
        if name in ("host_addr", "dev_addr"):
            octets = value.strip().split(":")
            if len(octets) != 6 or any(len(o) != 2 or int(o, 16) < 0 for o in octets):
                raise OSError(errno.EINVAL, "bad MAC", str(self.path(rel)))
        if name == "UDC" and value.strip():
            if not (self.udc_class_dir / value.strip()).exists():
                raise OSError(errno.ENODEV, "no such UDC", str(self.path(rel)))
            if self.read(rel):
                raise OSError(errno.EBUSY, "already bound", str(self.path(rel)))
        if name == "UDC" and not value.strip() and not self.read(rel):
            raise OSError(errno.ENODEV, "not bound", str(self.path(rel)))
        super().write(rel, value)
        self.calls.append(("write", rel))

    def symlink(self, target_rel: str, link_rel: str) -> None:
        target_rel, link_rel = self._rel(target_rel), self._rel(link_rel)
        link_parent = link_rel.rsplit("/", 1)[0]
        if "/configs/" not in link_parent or link_parent.count("/") != 3:
            raise OSError(errno.EPERM, "links only from a configuration", str(self.path(link_rel)))
        if "/functions/" not in target_rel or not self.is_dir(target_rel):
            raise OSError(errno.ENOENT, "link target must be an existing function", str(self.path(target_rel)))
        super().symlink(target_rel, link_rel)
        self.calls.append(("symlink", link_rel))

    def unlink(self, rel: str) -> None:
        rel = self._rel(rel)
        if not self.is_link(rel):
            raise OSError(errno.EPERM, "configfs attributes cannot be removed", str(self.path(rel)))
        super().unlink(rel)
        self.calls.append(("unlink", rel))

    def _link_targets(self) -> set[str]:
        targets = set()
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if p.is_symlink():
                    targets.add(str(Path(os.readlink(p)).relative_to(self.root)))
        return targets

    def rmdir(self, rel: str) -> None:
        rel = self._rel(rel)
        if rel in self.default_groups:
            raise OSError(errno.EPERM, "default groups cannot be removed", str(self.path(rel)))
        if rel in self._link_targets():
            raise OSError(errno.EBUSY, "an item links to this one", str(self.path(rel)))
        entries = kernel_made(self.kernel, rel) or Made()
        for child in self.listdir(rel):
            full = f"{rel}/{child}"
            if self.is_link(full):
                raise OSError(errno.ENOTEMPTY, "item still links to another", str(self.path(rel)))
            if self.is_dir(full):
                if full not in self.default_groups:
                    raise OSError(errno.ENOTEMPTY, "user-made child group", str(self.path(rel)))
                if set(self.listdir(full)) - entries.groups.get(child, frozenset()):
                    raise OSError(errno.ENOTEMPTY, "default group not empty", str(self.path(rel)))
            elif child not in entries.attributes:
                raise OSError(errno.ENOTEMPTY, f"unexpected file {child}", str(self.path(rel)))
        # The kernel drops the attributes and default groups with the item.
        for child in self.listdir(rel):
            full = f"{rel}/{child}"
            if self.is_dir(full):
                for attr in self.listdir(full):
                    os.unlink(self.path(f"{full}/{attr}"))
                os.rmdir(self.path(full))
                self.default_groups.discard(full)
            else:
                os.unlink(self.path(full))
        self.read_only = {r for r in self.read_only if not r.startswith(rel + "/")}
        super().rmdir(rel)
        self.calls.append(("rmdir", rel))


@pytest.fixture
def udc_dir(tmp_path: Path) -> Path:
    d = tmp_path / "class_udc"
    (d / "fe980000.usb").mkdir(parents=True)
    (d / "fe980000.usb" / "state").write_text("not attached\n")
    return d


@pytest.fixture(params=["documented", "newer"])
def fs(request, tmp_path: Path, udc_dir: Path) -> EmulatedConfigFs:
    kernel = KERNEL_DOCUMENTED if request.param == "documented" else KERNEL_NEWER
    return EmulatedConfigFs(tmp_path / "configfs", udc_dir, kernel)


def settings(udc_dir: Path, fs: ConfigFs, **kw) -> GadgetSettings:
    return GadgetSettings(serial="BWC-0042", configfs_root=fs.root, udc_class_dir=udc_dir, **kw)


def tree(root: Path) -> dict[str, str]:
    """Relative path -> file content, '->target' for links, '/' for dirs."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "->" + str(Path(os.readlink(p)).relative_to(root))
            elif p.is_dir():
                out[rel] = "/"
            else:
                out[rel] = p.read_text()
    return out


def test_up_builds_the_documented_layout_and_binds_first_udc(fs, udc_dir):
    s = settings(udc_dir, fs)
    assert UsbGadget(s, fs).up() == "fe980000.usb"
    t = tree(fs.root / "usb_gadget" / "bodycam")
    assert t["idVendor"] == "0x1d6b\n"
    assert t["idProduct"] == "0x0104\n"
    assert t["bcdDevice"] == "0x0100\n"
    assert t["bcdUSB"] == "0x0200\n"
    assert (t["bDeviceClass"], t["bDeviceSubClass"], t["bDeviceProtocol"]) == ("0xef\n", "0x02\n", "0x01\n")
    assert t["strings/0x409/serialnumber"] == "BWC-0042\n"
    assert t["strings/0x409/manufacturer"] == "Bodycam\n"
    assert t["strings/0x409/product"] == "Body-worn camera\n"
    assert t["configs/c.1/MaxPower"] == "500\n"
    assert t["configs/c.1/strings/0x409/configuration"] == "NCM + serial console\n"
    assert t["configs/c.2/strings/0x409/configuration"] == "ECM + serial console\n"
    assert t["configs/c.1/ncm.usb0"] == "->functions/ncm.usb0"
    assert t["configs/c.1/acm.GS0"] == "->functions/acm.GS0"
    assert t["configs/c.2/ecm.usb0"] == "->functions/ecm.usb0"
    assert t["configs/c.2/acm.GS0"] == "->functions/acm.GS0"
    assert "configs/c.1/ecm.usb0" not in t and "configs/c.2/ncm.usb0" not in t
    assert t["functions/ncm.usb0/host_addr"] == derived_mac("BWC-0042", "ncm-host") + "\n"
    assert t["functions/ncm.usb0/dev_addr"] == derived_mac("BWC-0042", "ncm-device") + "\n"
    assert t["UDC"] == "fe980000.usb\n"
    # No mass storage or anything else a host could copy recordings from (D10).
    assert sorted(k for k in t if k.startswith("functions/") and k.count("/") == 1) == [
        "functions/acm.GS0", "functions/ecm.usb0", "functions/ncm.usb0"]
    # The network function is linked first: it becomes the first interface.
    links = [rel for op, rel in fs.calls if op == "symlink" and "/c.1/" in rel]
    assert links == ["usb_gadget/bodycam/configs/c.1/ncm.usb0", "usb_gadget/bodycam/configs/c.1/acm.GS0"]
    # Binding is the very last step.
    assert fs.calls[-1] == ("write", "usb_gadget/bodycam/UDC")


@pytest.mark.parametrize("network,configs", [("ncm", ["c.1"]), ("ecm", ["c.1"])])
def test_single_network_modes(fs, udc_dir, network, configs):
    UsbGadget(settings(udc_dir, fs, network=network, serial_console=False), fs).up()
    g = fs.root / "usb_gadget" / "bodycam"
    assert sorted(os.listdir(g / "configs")) == configs
    assert sorted(os.listdir(g / "functions")) == [f"{network}.usb0"]
    assert (g / "configs/c.1" / f"{network}.usb0").is_symlink()
    assert (g / "configs/c.1/strings/0x409/configuration").read_text() == f"{network.upper()}\n"


def test_down_removes_everything_in_kernel_order(fs, udc_dir):
    gadget = UsbGadget(settings(udc_dir, fs), fs)
    gadget.up()
    fs.calls.clear()
    gadget.down()
    assert os.listdir(fs.root / "usb_gadget") == []
    ops = [(op, rel.removeprefix("usb_gadget/bodycam")) for op, rel in fs.calls]
    assert ops[0] == ("write", "/UDC")
    kinds = []
    for op, rel in ops[1:]:
        if op == "unlink":
            kinds.append("unlink config->function")
        elif rel.startswith("/configs/") and "/strings/" in rel:
            kinds.append("rmdir config strings")
        elif rel.startswith("/configs/"):
            kinds.append("rmdir config")
        elif rel.startswith("/functions/"):
            kinds.append("rmdir function")
        elif rel.startswith("/strings/"):
            kinds.append("rmdir gadget strings")
        else:
            kinds.append("rmdir gadget")
    # Per configuration: links, its strings, the config; then functions, strings, gadget.
    per_config = ["unlink config->function"] * 2 + ["rmdir config strings", "rmdir config"]
    assert kinds == per_config * 2 + ["rmdir function"] * 3 + ["rmdir gadget strings", "rmdir gadget"]
    gadget.down()   # nothing left: a no-op, not an error
    assert gadget.bound_udc() == ""


def test_up_replaces_a_leftover_gadget(fs, udc_dir):
    UsbGadget(settings(udc_dir, fs, network="ecm"), fs).up()
    UsbGadget(settings(udc_dir, fs), fs).up()   # e.g. after a crash or an upgrade
    g = fs.root / "usb_gadget" / "bodycam"
    assert sorted(os.listdir(g / "functions")) == ["acm.GS0", "ecm.usb0", "ncm.usb0"]
    assert (g / "UDC").read_text() == "fe980000.usb\n"


def test_emulator_rejects_the_wrong_teardown_order(fs, udc_dir):
    """The emulation is strict enough to catch a wrong order (so the order test means something)."""
    UsbGadget(settings(udc_dir, fs), fs).up()
    with pytest.raises(OSError) as busy:
        fs.rmdir("usb_gadget/bodycam/functions/ncm.usb0")
    assert busy.value.errno == errno.EBUSY
    with pytest.raises(OSError) as linked:
        fs.rmdir("usb_gadget/bodycam/configs/c.1")
    assert linked.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as default_group:
        fs.rmdir("usb_gadget/bodycam/configs")
    assert default_group.value.errno == errno.EPERM
    with pytest.raises(OSError):
        fs.write("usb_gadget/bodycam/no_such_attribute", "1")
    if "os_desc" in kernel_made(fs.kernel, "usb_gadget/bodycam").groups:
        with pytest.raises(OSError) as os_desc:
            fs.rmdir("usb_gadget/bodycam/os_desc")          # a newer kernel's default group
        assert os_desc.value.errno == errno.EPERM


def test_explicit_udc_and_missing_udc(fs, udc_dir):
    (udc_dir / "3f980000.usb").mkdir()
    assert UsbGadget(settings(udc_dir, fs, udc="fe980000.usb"), fs).up() == "fe980000.usb"
    with pytest.raises(GadgetError, match="not found; available: 3f980000.usb, fe980000.usb"):
        UsbGadget(settings(udc_dir, fs, udc="nope.usb"), fs).up()
    empty = udc_dir.parent / "empty_udc"
    empty.mkdir()
    with pytest.raises(GadgetError, match="dtoverlay=dwc2"):
        UsbGadget(settings(empty, fs), fs).up()


def test_missing_libcomposite_is_a_clear_error(tmp_path, udc_dir):
    bare = ConfigFs(tmp_path / "no_configfs")
    with pytest.raises(GadgetError, match="libcomposite"):
        UsbGadget(settings(udc_dir, bare), bare).up()


def test_failed_bind_removes_the_partial_gadget(fs, udc_dir):
    class BindFails(EmulatedConfigFs):
        def write(self, rel, value):
            if rel.endswith("/UDC") and value:
                raise OSError(errno.EBUSY, "Device or resource busy", str(self.path(rel)))
            super().write(rel, value)

    broken = BindFails(fs.root.parent / "configfs2", udc_dir, fs.kernel)
    with pytest.raises(GadgetError, match="bind to UDC .* Device or resource busy"):
        UsbGadget(settings(udc_dir, broken), broken).up()
    assert os.listdir(broken.root / "usb_gadget") == []


def test_missing_function_driver_is_named(fs, udc_dir):
    class NoNcm(EmulatedConfigFs):
        def mkdir(self, rel):
            if "/functions/ncm." in rel:
                raise OSError(errno.ENOENT, "No such file or directory", str(self.path(rel)))
            super().mkdir(rel)

    broken = NoNcm(fs.root.parent / "configfs3", udc_dir, fs.kernel)
    with pytest.raises(GadgetError, match=r"functions/ncm.usb0 failed.*usb_f_\* function module"):
        UsbGadget(settings(udc_dir, broken), broken).up()
    assert os.listdir(broken.root / "usb_gadget") == []


def test_derived_macs_are_stable_unicast_and_local():
    mac = derived_mac("BWC-0042", "ncm-host")
    assert mac == derived_mac("BWC-0042", "ncm-host")
    assert mac != derived_mac("BWC-0043", "ncm-host")
    assert mac != derived_mac("BWC-0042", "ncm-device")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01


@pytest.mark.parametrize("kw,message", [
    ({"serial": ""}, "gadget.serial"),
    ({"serial": "BWC\n42"}, "control characters"),
    ({"serial": "BWC-\u00e9"}, "ASCII"),
    ({"product": "x" * 127}, "longer than 126"),
    ({"vendor_id": 0x10000}, "vendor_id"),
    ({"product_id": -1}, "product_id"),
    ({"product_id": True}, "product_id"),
    ({"network": "rndis"}, "gadget.network must be one of"),
    ({"max_power_ma": 900}, "max_power_ma"),
    ({"name": "../evil"}, "gadget.name"),
    ({"udc": "a/b"}, "gadget.udc"),
    ({"serial_console": "yes"}, "serial_console"),
])
def test_bad_settings_are_refused_with_the_setting_named(kw, message):
    args = {"serial": "BWC-0042", **kw}
    with pytest.raises(GadgetConfigError, match=message):
        GadgetSettings(**args)


def test_from_mapping_defaults_serial_to_device_id_and_refuses_typos():
    s = GadgetSettings.from_mapping({"product_id": 0x0105}, device_id="BWC-7")
    assert (s.serial, s.product_id, s.vendor_id) == ("BWC-7", 0x0105, 0x1D6B)
    assert GadgetSettings.from_mapping({"serial": "X1"}, device_id="BWC-7").serial == "X1"
    with pytest.raises(GadgetConfigError, match="unknown \\[gadget\\] setting\\(s\\): netwrok"):
        GadgetSettings.from_mapping({"netwrok": "ecm"}, device_id="BWC-7")
    with pytest.raises(GadgetConfigError, match="no device ID"):
        GadgetSettings.from_mapping({})


def test_load_settings_reads_toml(tmp_path):
    cfg = tmp_path / "bodycam.toml"
    cfg.write_text('[device]\nid = "BWC-0099"\n\n[gadget]\nnetwork = "ecm"\nvendor_id = 0x1d6b\n')
    s = load_settings(cfg)
    assert (s.serial, s.network) == ("BWC-0099", "ecm")
    cfg.write_text("[gadget\n")
    with pytest.raises(GadgetConfigError, match="not valid TOML"):
        load_settings(cfg)
    with pytest.raises(GadgetConfigError, match="cannot read config"):
        load_settings(tmp_path / "missing.toml")


def test_host_link_reads_udc_state(udc_dir):
    state = udc_dir / "fe980000.usb" / "state"
    link = UsbHostLink(udc_class_dir=udc_dir)
    assert link.state() == "not attached"
    assert link.host_configured() is False
    for s, expected in [("powered", False), ("addressed", False), ("configured", True), ("suspended", False)]:
        state.write_text(s + "\n")
        assert link.host_configured() is expected, s
    state.write_text("configured\n")
    assert UsbHostLink("fe980000.usb", udc_dir).host_configured() is True


def test_host_link_missing_controller(tmp_path, caplog):
    link = UsbHostLink("fe980000.usb", tmp_path / "nothing")
    with pytest.raises(GadgetError, match="cannot read USB controller state"):
        link.state()
    assert link.host_configured() is False
    assert link.host_configured() is False
    assert sum("treating as no host attached" in r.message for r in caplog.records) == 1
    with pytest.raises(GadgetError, match="no USB device controller"):
        UsbHostLink(udc_class_dir=tmp_path / "nothing").state()


def test_cli_up_status_down_on_a_directory(tmp_path, udc_dir, capsys):
    """The CLI that bodycam-gadget.service runs, on plain ConfigFs with the tree pre-made."""
    root = tmp_path / "cfs"
    (root / "usb_gadget").mkdir(parents=True)
    cfg = tmp_path / "bodycam.toml"
    cfg.write_text(f'[device]\nid = "BWC-0001"\n[gadget]\nconfigfs_root = "{root}"\n'
                   f'udc_class_dir = "{udc_dir}"\nenabled = false\n')
    assert main(["up", "--config", str(cfg)]) == 0   # disabled: nothing made
    assert os.listdir(root / "usb_gadget") == []
    # Plain directories do not grow attribute files by themselves: the
    # honest outcome without the kernel (or the emulation) is a clear failure.
    cfg.write_text(f'[device]\nid = "BWC-0001"\n[gadget]\nconfigfs_root = "{root}"\n'
                   f'udc_class_dir = "{udc_dir}"\n')
    assert main(["up", "--config", str(cfg)]) == 1
    assert os.listdir(root / "usb_gadget") == []
    assert main(["status", "--config", str(cfg)]) == 0
    assert "udc=-" in capsys.readouterr().out
    assert main(["up", "--config", str(tmp_path / "missing.toml")]) == 1


def test_module_runs_as_a_script():
    out = subprocess.run([sys.executable, "-m", "hw.usb_gadget", "--help"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    assert "up,down,status" in out.stdout
