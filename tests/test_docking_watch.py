"""The device docks when a host configures its USB gadget and the dock link comes up with it."""
import socket

import pytest

from firmware.dock_link import DockLink, DockSettings
from firmware.docking import DockWatcher
from hw.usb_gadget import UsbHostLink
from tests.netns import DockWorld


@pytest.fixture
def udc(tmp_path):
    d = tmp_path / "udc" / "fe980000.usb"
    d.mkdir(parents=True)
    (d / "state").write_text("not attached\n")
    return d


class Device:
    """Just the service's dock/undock transitions, recorded in order."""

    def __init__(self):
        self.events = []

    def dock(self):
        self.events.append("dock")

    def undock(self):
        self.events.append("undock")


def test_gadget_state_drives_dock_and_link(tmp_path, udc):
    import time

    from common.clock import SystemWallClock
    from firmware.evidence import open_evidence
    ev = open_evidence(tmp_path / "ev", tmp_path / "key", SystemWallClock(), time.monotonic_ns,
                       provision=True)
    world = DockWorld.create(tmp_path / "agency")
    cert = world.device_cert(ev.signer.public_key_pem())
    settings = DockSettings(listen_address="127.0.0.1", port=0, ca_file=str(world.ca_file),
                            cert_file=str(cert))
    device = Device()
    links = []

    def make_link():
        links.append(DockLink(settings, ev, key_file=tmp_path / "key" / "device-key.pem"))
        return links[-1]

    w = DockWatcher(UsbHostLink(udc_class_dir=udc.parent), device.dock, device.undock, make_link,
                    poll_s=1.0)
    w.tick(0)
    assert device.events == [] and not w.docked
    (udc / "state").write_text("configured\n")
    w.tick(500_000_000)                      # polled at most once a second
    assert device.events == []
    w.tick(1_000_000_000)
    assert device.events == ["dock"] and w.docked and links[0].running
    host, port = links[0].address
    with socket.create_connection((host, port), timeout=5):
        pass                                  # the link listens while docked
    (udc / "state").write_text("not attached\n")
    w.tick(2_000_000_000)
    assert device.events == ["dock", "undock"] and not links[0].running
    ev.close()


def test_unreadable_controller_is_not_docked(tmp_path, caplog):
    device = Device()
    w = DockWatcher(UsbHostLink(udc_class_dir=tmp_path / "no-such"), device.dock, device.undock,
                    lambda: None)
    w.tick(0)
    w.tick(2_000_000_000)
    assert device.events == [] and not w.docked
    assert any("no USB device controller" in r.getMessage() for r in caplog.records)
