"""The checks run inside the USB gadget VM (tests/test_usb_gadget_vm.py boots it once).

``python -m tests.vm.inside <share>`` reads ``<share>/job.json`` (written on the host: the
device's key and evidence, its certificate, the station's dock config) and writes what it
saw to ``<share>/results.json`` after every step, so a failure still reports how far it
got. The host test asserts; this script only observes, with every wait bounded.

Device side = the VM's root network namespace (as on the Pi: ``usb0``, 10.77.0.1/30, what
deploy/network/bodycam-dock.nmconnection sets). Dock side = namespace ``dock-link`` with
the host's NCM interface at 10.77.0.2/30 (what deploy/station/station-dock-link@.service
does), where the real ``station dock`` command runs, as station-dock@.service runs it.
"""
from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import termios
import time
import traceback
import tty
from pathlib import Path
from typing import Any, Callable, TypeVar

from hw.usb_gadget import GadgetSettings, UsbGadget, UsbHostLink

USB_DEVICES = Path("/sys/bus/usb/devices")
UDC_CLASS = Path("/sys/class/udc")
DEVICE_ATTRS = ("idVendor", "idProduct", "bcdDevice", "version", "bDeviceClass", "manufacturer", "product",
                "serial", "bNumConfigurations", "bConfigurationValue", "speed")
T = TypeVar("T")


class Results:
    def __init__(self, path: Path) -> None:
        self.path, self.data = path, dict[str, Any]()
        self.t0 = time.monotonic()

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.data.setdefault("steps", []).append([key, round(time.monotonic() - self.t0, 2)])
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.path)


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, step_s: float = 0.05) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: nothing after {timeout_s} s")
        time.sleep(step_s)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip()


def usb_device(vendor: int, product: int, serial: str) -> Path | None:
    """The host side's sysfs directory of the device with these IDs (root hubs excluded)."""
    for d in sorted(USB_DEVICES.iterdir()):
        try:
            if (int(read(d / "idVendor"), 16), int(read(d / "idProduct"), 16), read(d / "serial")) \
                    == (vendor, product, serial):
                return d
        except (FileNotFoundError, ValueError):
            continue
    return None


def interface_drivers(dev: Path) -> dict[str, str]:
    return {i.name: os.readlink(i / "driver").rsplit("/", 1)[-1] if (i / "driver").exists() else ""
            for i in sorted(dev.glob(f"{dev.name}:*"))}


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def counters(ifname: str) -> dict[str, int]:
    stats = Path("/sys/class/net") / ifname / "statistics"
    return {k: int(read(stats / k)) for k in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")}


def serial_roundtrip(device_tty: str, host_tty: str) -> dict[str, str]:
    """A line each way over the ACM function, both ends raw."""
    fds = {}
    try:
        for name in (device_tty, host_tty):
            fds[name] = os.open(name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(fds[name])
            termios.tcflush(fds[name], termios.TCIOFLUSH)
        got = {}
        for src, dst, text in ((host_tty, device_tty, "dock->device ping"),
                               (device_tty, host_tty, "device->dock pong")):
            os.write(fds[src], text.encode() + b"\n")
            buf = b""
            deadline = time.monotonic() + 10
            while not buf.endswith(b"\n") and time.monotonic() < deadline:
                ready, _, _ = select.select([fds[dst]], [], [], 0.5)
                if ready:
                    buf += os.read(fds[dst], 256)
            got[f"{src}->{dst}"] = buf.decode(errors="replace").strip()
        return got
    finally:
        for fd in fds.values():
            os.close(fd)


class Service:
    """The device service's dock/undock transitions, recorded in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def dock(self) -> None:
        self.events.append("dock")

    def undock(self) -> None:
        self.events.append("undock")


def start_station(job: dict[str, Any], ns: str) -> subprocess.Popen[str]:
    """The real ``station dock`` in the dock's namespace, started first: under TCG its
    start-up (SQLAlchemy, Alembic) is the slowest step, so it overlaps the gadget checks;
    ``--wait`` makes it retry until the device answers, as after a udev start."""
    ip("netns", "add", ns)
    ip("-n", ns, "link", "set", "dev", "lo", "up")
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "station", "dock",
                             "--config", job["dock_config"], "--wait", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=job["repo"])


def run(share: Path, res: Results) -> None:
    job = json.loads((share / "job.json").read_text(encoding="utf-8"))
    res["kernel"] = os.uname().release
    # loopback up, as on any booted system: until some address exists the kernel has no local
    # routing table and lets a socket bind 10.77.0.1 before usb0 has it (a VM-only artefact)
    ip("link", "set", "lo", "up")
    ns = "dock-link"
    station = start_station(job, ns)
    try:
        run_device(job, res, ns, station)
    finally:
        if station.poll() is None:
            station.kill()
            station.wait(timeout=30)


def run_device(job: dict[str, Any], res: Results, ns: str, station: subprocess.Popen[str]) -> None:
    from common.clock import SystemWallClock
    from firmware.dock_link import DockLink, DockSettings
    from firmware.docking import DockWatcher
    from firmware.evidence import open_evidence

    settings = GadgetSettings(serial=job["serial"], udc=job["udc"])
    gadget = UsbGadget(settings)
    host = UsbHostLink(settings.udc, UDC_CLASS)
    t = time.monotonic()
    res["bound_udc"] = gadget.up()

    # 1. the host side enumerates it: IDs, strings, configuration chosen, drivers bound
    dev = wait_for(lambda: usb_device(settings.vendor_id, settings.product_id, settings.serial), 15,
                   "the host enumerates the gadget")
    drivers = wait_for(lambda: (d := interface_drivers(dev)) and all(d.values()) and d, 10,
                       "host drivers bind every interface")
    res["enumerated_s"] = round(time.monotonic() - t, 2)
    res["host_device"] = {a: read(dev / a) for a in DEVICE_ATTRS} | {"drivers": drivers}
    res["udc_state_docked"] = host.state()
    host_if = wait_for(lambda: [p.name for p in dev.glob(f"{dev.name}:*/net/*")], 10,
                       "the host's NCM network interface")[0]
    dev_if = gadget.fs.read(f"{gadget.dir}/functions/ncm.usb0/ifname")
    res["interfaces"] = {"device": dev_if, "dock": host_if}
    # the name the kernel gave each network function's interface (NCM and ECM: the host picks
    # one configuration, so the device's NetworkManager profile must match both)
    res["function_ifnames"] = {f: gadget.fs.read(f"{gadget.dir}/functions/{f}/ifname")
                               for f in ("ncm.usb0", "ecm.usb0")}
    res["macs"] = {"device": read(Path("/sys/class/net") / dev_if / "address"),
                   "dock": read(Path("/sys/class/net") / host_if / "address")}

    # 2. the device's docking detection, before its end of the link has an address
    service, links = Service(), []
    dock_settings = DockSettings(**job["dock_settings"])
    evidence = open_evidence(Path(job["evidence"]), Path(job["key_dir"]), SystemWallClock(), time.monotonic_ns,
                             boot_payload={"firmware": "usb-gadget-vm"})

    def make_link() -> DockLink:
        links.append(DockLink(dock_settings, evidence, key_file=Path(job["key_dir"]) / "device-key.pem"))
        return links[-1]

    watcher = DockWatcher(host, service.dock, service.undock, make_link, poll_s=0.1)
    watcher.tick(time.monotonic_ns())
    res["detected_dock"] = {"events": list(service.events), "link_running": bool(links and links[0].running)}

    # 3. the device's address (NetworkManager's bodycam-dock) and the dock's namespace
    ip("addr", "add", f"{job['device_address']}/30", "dev", dev_if)
    ip("link", "set", dev_if, "up")
    ip("link", "set", "dev", host_if, "netns", ns)
    ip("-n", ns, "addr", "add", f"{job['dock_address']}/30", "dev", host_if)
    ip("-n", ns, "link", "set", "dev", host_if, "up")

    def ticked(check: Callable[[], bool]) -> Callable[[], bool]:
        """A probe that polls the watcher as the service loop does, then checks."""
        def probe() -> bool:
            watcher.tick(time.monotonic_ns())
            return check()
        return probe

    wait_for(ticked(lambda: bool(links) and links[-1].running), 10,
             "the dock link starts once usb0 has its address", step_s=0.1)
    res["link_after_address"] = {"events": list(service.events), "links_made": len(links),
                                 "listening": list(links[-1].address)}

    # 4. the station (started first) docks the device over the USB NCM link: real TLS
    t = time.monotonic()
    out, err = station.communicate(timeout=400)
    res["station_dock"] = {"rc": station.returncode, "stdout": out[-4000:], "stderr": err[-4000:],
                           "waited_s": round(time.monotonic() - t, 2),
                           "usb0_since_created": counters(dev_if)}

    # 5. the serial console over ACM
    tty_dev = wait_for(lambda: [p.name for p in dev.glob(f"{dev.name}:*/tty/tty*")], 10, "ttyACM")[0]
    res["serial"] = {"host_tty": tty_dev,
                     "lines": serial_roundtrip("/dev/ttyGS0", f"/dev/{tty_dev}")}

    # 6. undocking: unbind (as the camera leaving the dock); the host side goes away
    t = time.monotonic()
    gadget.unbind()
    wait_for(lambda: not dev.exists(), 10, "the host side forgets the device")
    gone_s = round(time.monotonic() - t, 2)
    udc_state = host.state()
    wait_for(ticked(lambda: not watcher.docked), 5, "undock detected")
    res["undocked"] = {"host_gone_s": gone_s, "udc_state": udc_state,
                       "udc_function": read(UDC_CLASS / settings.udc / "function"),
                       "detected_s": round(time.monotonic() - t, 2), "events": list(service.events),
                       "link_running": links[-1].running}

    # 7. plugged in again (bind): enumerated and docked again; then the gadget removed
    t = time.monotonic()
    gadget.bind(settings.udc)
    wait_for(lambda: usb_device(settings.vendor_id, settings.product_id, settings.serial), 15,
             "the host enumerates the gadget again")
    wait_for(ticked(lambda: watcher.docked and links[-1].running), 10, "docked again")
    res["redocked"] = {"seconds": round(time.monotonic() - t, 2), "events": list(service.events),
                       "links_made": len(links)}
    gadget.down()
    wait_for(ticked(lambda: not watcher.docked), 5, "undock after removal")
    res["removed"] = {"configfs_left": gadget.fs.exists(gadget.dir), "events": list(service.events),
                      "udc_function": read(UDC_CLASS / settings.udc / "function")}
    watcher.close()
    evidence.close()


def main() -> int:
    share = Path(sys.argv[1])
    logging.basicConfig(level=logging.INFO, format="device %(relativeCreated)d ms %(levelname)s %(name)s: %(message)s")
    logging.getLogger("firmware.dock_link").setLevel(logging.DEBUG)
    res = Results(share / "results.json")
    try:
        run(share, res)
    except BaseException as exc:
        res["error"] = "".join(traceback.format_exception(exc))
        return 1
    res["done"] = True
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
