"""The device link service over real TLS on loopback: mutual authentication, read-only, resumable.

Attack cases: a dock without an agency certificate, a device unknown to the
dock, path traversal, write/delete requests, tampered evidence (quarantine).
The two-host run over a veth pair is in test_dock_e2e.py.
"""
import base64
import logging
import os
import stat
import time

import pytest

from firmware import config as config_mod
from firmware.dock_link import DockLink, DockLinkError, DockSettings
from recorder import records
from recorder.journal import iter_records
from recorder.verify import verify_directory
from station import config as dock_config  # noqa: E402
from station.dock.ingest import Docking
from station.dock.link import DeviceClient, DeviceRefused, LinkInterrupted
from tests.media_fixture import new_device
from tests.netns import DockWorld


@pytest.fixture()
def world(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="firmware.dock_link")
    w = DockWorld.create(tmp_path)
    link = w.serve_recorded_device()
    yield w
    link.stop()


def client(w, dock_dir=None, known=None):
    d = dock_dir or w.dock_dir
    c = DeviceClient("127.0.0.1", w.port, str(d / "agency-ca.pem"), str(d / "dock-cert.pem"),
                     str(d / "dock-key.pem"), known or (lambda i: w.dev.pem if i == w.dev.journal.device_id
                                                         else None), timeout=5)
    c.connect()
    return c


def docking(w, **over):
    cfg = dock_config.load(w.dock_config("127.0.0.1", w.port, **over))
    return Docking(w.station(cfg), progress=False)


def tamper_records(dev):
    return [r for r in iter_records(dev.journal.path) if r.type == records.TAMPER_ATTEMPT]


def test_dock_offloads_verifies_names_and_device_purges(world):
    w = world
    w.register(w.dev.pem)
    report = docking(w).run()
    assert report.status == "ok", report.detail
    assert len(report.purged) == 3 and not list((w.dev.root / "recordings").rglob("*.ts"))
    assert verify_directory(w.dev.root, w.dev.pem).ok
    mirror = w.store / "devices" / w.dev.journal.device_id / "mirror"
    assert verify_directory(mirror, w.dev.pem).ok
    assert sorted(p.name for p in (w.store / "recordings").iterdir()) == [
        "厦门市城市管理行政执法局_未标注_20260921_未标注_r1", "厦门市城市管理行政执法局_未标注_20260921_未标注_r2"]
    ledger = w.ledger()
    [row] = ledger.rows("dockings")
    assert row["status"] == "ok" and row["officer_id"] == "031337" and row["purged"] == 3
    assert row["checked_in_ns"] <= row["checked_out_ns"]
    assert {r["recording_id"] for r in ledger.rows("recordings")} == {"r1", "r2"}
    assert len(ledger.rows("receipts")) == 1
    # second docking: nothing new to fetch, the journal (with the purge) still verifies at the dock
    # anchored at the head verified before
    report = docking(w).run()
    assert report.status == "ok" and report.files_new == 0 and report.purged == []
    assert verify_directory(mirror, w.dev.pem, anchor=(row["head_seq"], row["head_hash"])).ok


def device_refused_a_dock(caplog) -> bool:
    """The device's own log says it turned the client away at the TLS layer (waits for its thread)."""
    for _ in range(100):
        if any("refused connection" in r.getMessage() for r in caplog.records):
            return True
        time.sleep(0.05)
    return False


def test_dock_without_an_agency_certificate_is_refused(world, tmp_path, caplog):
    rogue = DockWorld.create(tmp_path / "rogue")
    # the rogue dock trusts the agency CA for the device but holds a certificate of its own CA
    (rogue.base / "mixed").mkdir()
    for name in ("dock-cert.pem", "dock-key.pem"):
        (rogue.base / "mixed" / name).write_bytes((rogue.dock_dir / name).read_bytes())
    (rogue.base / "mixed" / "agency-ca.pem").write_bytes(world.ca_file.read_bytes())
    with pytest.raises((DeviceRefused, LinkInterrupted)):
        client(world, rogue.base / "mixed").manifest()
    assert device_refused_a_dock(caplog)
    assert list((world.dev.root / "recordings").rglob("*.ts"))


def test_device_cert_cannot_log_in_as_a_dock(world, tmp_path, caplog):
    d = tmp_path / "as-device"
    d.mkdir()
    (d / "dock-cert.pem").write_bytes(world.device_cert(world.dev.pem, "dev2").read_bytes())
    (d / "dock-key.pem").write_bytes((world.dev.key_dir / "device-key.pem").read_bytes())
    (d / "agency-ca.pem").write_bytes(world.ca_file.read_bytes())
    with pytest.raises((DeviceRefused, LinkInterrupted)):
        client(world, d).manifest()
    assert device_refused_a_dock(caplog)


def test_device_unknown_to_the_dock_is_refused_before_any_evidence_is_read(world):
    with pytest.raises(DeviceRefused, match="not in this dock's registry"):
        docking(world).run()
    assert not (world.store / "devices").exists()
    assert world.ledger().rows("dockings") == []


def test_device_presenting_another_key_for_a_registered_id_is_refused(world, tmp_path):
    other = new_device(tmp_path, "other")
    with pytest.raises(DeviceRefused, match="other than the registered"):
        client(world, known=lambda i: other.pem)


@pytest.mark.parametrize("path", ["../dev-key/device-key.pem", "%2e%2e/%2e%2e/etc/passwd",
                                  "recordings/../../dev-key/device-key.pem", "/etc/passwd"])
def test_path_outside_the_evidence_is_refused_and_journaled(world, path):
    c = client(world)
    status, body = c.get_raw(path)
    assert status == 403 and b"outside-evidence" in body and b"PRIVATE" not in body
    [rec] = tamper_records(world.dev)
    assert rec.payload["action"] == "dock-read-outside"


def test_unattested_files_are_not_served(world):
    part = world.dev.store.recording_dir("r3") / "r3_00000.ts.part"
    part.write_bytes(b"being written")
    status, body = client(world).get_raw("recordings/r3/r3_00000.ts.part")
    assert status == 404 and b"not-attested" in body


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "POST"])
def test_write_and_delete_requests_are_refused_and_journaled(world, method):
    target = "recordings/r1/r1_00000.ts"
    before = (world.dev.root / target).read_bytes()
    status, body = client(world).request_raw(method, "/v1/files/" + target)
    assert status == 405 and b"read-only" in body
    assert (world.dev.root / target).read_bytes() == before
    [rec] = tamper_records(world.dev)
    assert rec.payload["path"] == target and rec.payload["refused"] is True


def test_range_requests_resume_exactly(world, tmp_path):
    c = client(world)
    rel = "recordings/r1/r1_00001.ts"
    data = (world.dev.root / rel).read_bytes()
    dest = tmp_path / "copy.ts"
    dest.write_bytes(data[:1000])
    got, had = c.fetch(rel, dest, len(data))
    assert (got, had) == (len(data) - 1000, 1000) and dest.read_bytes() == data
    status, body = c.get_raw(rel, {"Range": "bytes=99999999-"})
    assert status == 416


def test_tampered_device_evidence_is_quarantined_and_nothing_purged(world):
    """A damaged file *and* a broken journal chain: the whole docking is quarantined.

    (A damaged file alone, with a sound journal, is quarantined by itself and the rest
    is ingested and purged: issue 9 B7, tests/test_dock_partial.py.)
    """
    w = world
    w.register(w.dev.pem)
    target = w.dev.root / "recordings/r1/r1_00001.ts"
    os.chmod(target, stat.S_IWUSR | stat.S_IRUSR)
    data = bytearray(target.read_bytes())
    data[5000] ^= 0xFF
    target.write_bytes(bytes(data))
    # an insider with the device key rewrites r2's recording-start and re-signs it: the chain breaks after it
    lines = w.dev.journal.path.read_bytes().splitlines(keepends=True)
    [i] = [n for n, line in enumerate(lines) if b'"recording-start"' in line and b'"r2"' in line]
    lines[i] = lines[i].replace(b'"r2"', b'"r9"').split(b"\t")[0]
    lines[i] += b"\t" + base64.b64encode(w.dev.signer.sign(lines[i])) + b"\n"
    w.dev.journal.path.write_bytes(b"".join(lines))
    report = docking(w).run()
    assert report.status == "quarantined" and "ChainBroken" in report.detail
    assert report.purged == []
    assert len(list((w.dev.root / "recordings").rglob("*.ts"))) == 3
    assert (report.quarantine_dir / "REPORT.txt").read_text(encoding="utf-8").count("SegmentHashMismatch")
    assert not (w.store / "recordings").exists()
    ledger = w.ledger()
    assert ledger.rows("receipts") == []
    assert ledger.rows("dockings")[0]["status"] == "quarantined"


def test_link_refuses_a_certificate_for_another_key(world, tmp_path):
    other = new_device(tmp_path, "other")
    link = DockLink(DockSettings(listen_address="127.0.0.1", port=0, ca_file=str(world.ca_file),
                                 cert_file=str(world.device_cert(world.dev.pem, "x"))), other,
                    key_file=other.key_dir / "device-key.pem")
    with pytest.raises(DockLinkError, match="not a certificate for this device"):
        link.start()
    assert not link.running


@pytest.mark.parametrize("table, message", [
    ({"listen_address": "0.0.0.0"}, "beyond the dock link"),
    ({"listen_address": "::"}, "beyond the dock link"),
    ({"listen_address": "usb0"}, "must be an IP address"),
    ({"port": 70000}, "port"),
    ({"receipt_ttl_s": 1}, "receipt_ttl_s"),
    ({"lisen_address": "10.77.0.1"}, "unknown setting"),
])
def test_dock_settings_are_strict(table, message):
    with pytest.raises(ValueError, match=message):
        DockSettings.from_mapping(table)


def test_dock_section_is_part_of_the_device_config(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[dock]\nlisten_address = "0.0.0.0"\n')
    with pytest.raises(config_mod.ConfigError, match=r"\[dock\]"):
        config_mod.load(f)
    f.write_text('[dock]\nlisten_address = "10.77.0.1"\nport = 9443\n')
    assert config_mod.section(config_mod.load(f), "dock").port == 9443
