"""Checking pooled devices out and in at the station (S9, D12), on SQLite and PostgreSQL.

Real components throughout: a simulated device with its signed journal serving the real dock
link on loopback (TLS 1.3, client certificates), the ``station`` command as a subprocess, and
real dockings. Proven here: ``station device checkout`` sends a dock-signed assignment that
the device verifies and journals; segments recorded afterwards are attributed, at the next
docking, to the checked-out officer (from the device's journal: the station checks the
dock's signature there again); after ``checkin`` (a signed release, journaled
``assignment-end``) later recordings are not; the assignment row keeps the signed documents
and the device's answers, every step is audited, and the ledger reads with ISO 8601 times.
A forged assignment in a device journal attributes nothing; a device that refuses the
assignment leaves a refused row (exit 3); an unknown officer is exit 5, a device already
checked out exit 6, a non-clerk exit 3.
"""
import json
import uuid

import pytest
from sqlalchemy import select

from recorder import assignment as asg
from recorder import receipt
from recorder.identity import device_id_for_pem
from recorder.journal import iter_records
from station import config as station_config
from station.app import Station
from station.audit.integrity import verify_station
from station.db import models as m
from station.dock import pki
from station.errors import Conflict, NotAllowed, NotFound, Unavailable
from station.handover import assignment as handover
from tests.netns import DockWorld
from tests.station_fixture import OFFICER2_NO, OFFICER_NO, station_world  # noqa: F401


def station_at(w, port) -> Station:
    """The station reaching the device on ``port`` (as ``--port`` does), on the test's clock."""
    return Station.open(station_config.load(w.config_path, device_address="127.0.0.1", port=port), w.clock)


def journal(dev):
    return list(iter_records(dev.journal.path))


def recordings(w):
    with w.st.db.session() as s:
        return {r.recording_id: r.officer_id for r in s.scalars(select(m.Recording))}


def assignments(w):
    with w.st.db.session() as s:
        return list(s.scalars(select(m.Assignment).order_by(m.Assignment.id)))


def audit_types(w):
    with w.st.db.session() as s:
        return [e.type for e in s.scalars(select(m.AuditEntry).order_by(m.AuditEntry.seq))]


def test_checkout_attributes_later_recordings_until_checkin(station_world):
    w = station_world
    dev = w.record("dev", {"r0": 1}, officer=None)        # a pooled device: issued to nobody
    device_id = device_id_for_pem(dev.pem)

    with w.link() as port:
        r = w.cli("device", "checkout", device_id[:8], "--officer", OFFICER_NO, "--port", str(port), "--json",
                  user="clerk")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        # already checked out: refused before the device is asked (Conflict: exit 6)
        st = station_at(w, port)
        with pytest.raises(Conflict, match="check it in first"):
            handover.checkout(st, w.user("clerk"), device_id, OFFICER2_NO)
        st.close()
    rec = journal(dev)[-1]
    assert rec.type == asg.ASSIGNMENT and rec.seq == out["record_seq"]
    a = asg.from_record(rec)
    assert asg.check_signature(a, pki.load_cert(w.dock.ca_file)) == a.assignment.dock
    assert (a.assignment.device, a.assignment.officer_id, a.assignment.officer_name) == (device_id, OFFICER_NO, "wang")
    assert out["officer_id"] == OFFICER_NO and out["checked_out"].endswith("+08:00")
    [row] = assignments(w)
    assert row.checked_in_ns is None and handover.state(row) == "open"
    assert json.loads(row.assignment)["assignment"] == rec.payload["assignment"]    # the signed document as sent
    assert handover.acks(row)["checkout"]["answer"]["record_hash"] == rec.hash

    listed = handover.devices(w.st)
    assert [(d["device"], d["status"], d["officer_id"]) for d in listed] == [(device_id, "checked-out", OFFICER_NO)]

    w.record("dev", {"r1": 2}, officer=None)
    w.dock_device("dev")          # r0 (before the check-out) and r1 (after it) in one docking
    assert recordings(w) == {"r0": None, "r1": OFFICER_NO}

    with w.link() as port:
        r = w.cli("device", "checkin", device_id, "--port", str(port), user="clerk")
        assert r.returncode == 0, r.stderr
        assert "归还" in r.stdout
    end = journal(dev)[-1]
    assert end.type == asg.ASSIGNMENT_END and end.payload["assignment"]["assignment_id"] == out["assignment_id"]
    w.record("dev", {"r2": 1}, officer=None)
    w.dock_device("dev")
    assert recordings(w) == {"r0": None, "r1": OFFICER_NO, "r2": None}

    [row] = assignments(w)
    assert row.checked_in_ns is not None and row.checked_in_by == "clerk" and handover.state(row) == "closed"
    assert handover.acks(row)["checkin"]["release"]["assignment"]["kind"] == "release"
    types = audit_types(w)
    assert [t for t in types if t.startswith("device-")] == ["device-register", "device-checkout",
                                                             "device-checkout-confirmed", "device-checkin"]

    hist = w.cli_json("device", "history", "--device", device_id, user="auditor")
    assert [(h["officer_id"], h["state"], h["recordings"]) for h in hist] == [(OFFICER_NO, "closed", 1)]
    assert hist[0]["checked_out"].endswith("+08:00") and hist[0]["checked_in"].endswith("+08:00")
    assert handover.devices(w.st)[0]["status"] == "available"
    # the raw ledger of the table reads too: ISO times, the signed documents summed up
    led = w.cli("ledger", "--table", "assignments", check=True)
    [line] = [json.loads(x) for x in led.stdout.splitlines()]
    assert line["officer_id"] == OFFICER_NO and line["officer_name"] == "wang" and line["state"] == "closed"
    assert line["checked_out"].endswith("+08:00") and "BEGIN CERTIFICATE" not in led.stdout
    assert verify_station(w.st).ok


def test_refusals_of_the_station(station_world):
    w = station_world
    dev = w.record("dev", {}, officer=None)
    device_id = device_id_for_pem(dev.pem)
    unknown = w.cli("device", "checkout", device_id, "--officer", "999999", user="clerk")
    assert unknown.returncode == 5 and "999999" in unknown.stderr
    clerk, st = w.user("clerk"), station_at(w, 9)          # nothing listens on port 9
    try:
        with pytest.raises(NotFound):
            handover.checkout(st, clerk, "f" * 32, OFFICER_NO)          # no such device
        with pytest.raises(NotAllowed):
            handover.checkout(st, w.user("wang"), device_id, OFFICER_NO)   # an officer is no clerk
        with pytest.raises(Conflict, match="not checked out"):
            handover.checkin(st, clerk, device_id)
        with pytest.raises(Unavailable, match="is it docked"):
            handover.checkout(st, clerk, device_id, OFFICER_NO)
    finally:
        st.close()
    assert assignments(w) == []
    assert "not-allowed" in audit_types(w)


def test_device_refusal_and_forged_journal_assignment(station_world):
    """The device already holds an assignment (journaled from a dock outside this agency: forged):
    the station's check-out is refused by the device (exit 3, a refused row); the forged record
    attributes nothing at the docking."""
    w = station_world
    rogue = DockWorld.create(w.dock.base / "rogue")
    box = {}

    def forge(dev):
        # what a tampered device could write: a perfectly formed assignment from a foreign dock
        a = asg.Assignment(asg.KIND_ASSIGN, uuid.uuid4().hex, device_id_for_pem(dev.pem),
                           receipt.dock_id_for_cert(pki.load_cert(rogue.dock_dir / "dock-cert.pem")), "rogue",
                           "0" * 32, 0, 1, "666666", "冒名", "")
        wire = asg.sign_assignment(a, pki.load_key(rogue.dock_dir / "dock-key.pem"),
                                   (rogue.dock_dir / "dock-cert.pem").read_bytes())
        box["seq"] = dev.journal.append(asg.ASSIGNMENT, asg.parse_signed(wire).record_payload()).seq
        dev.journal.append("recording-start", {"recording_id": "r9"})
        from tests.media_fixture import make_recording
        for info in make_recording(dev.store.recording_dir("r9"), "r9", 1):
            dev.sealer.segment_closed(info)

    dev = w.record("dev", {}, officer=None, extra=forge)
    device_id = device_id_for_pem(dev.pem)
    w.dock_device("dev")
    assert recordings(w) == {"r9": None}            # the foreign "assignment" is not believed

    with w.link() as port:
        st = station_at(w, port)
        try:
            with pytest.raises(NotAllowed, match="AssignmentInForce"):        # exit 3
                handover.checkout(st, w.user("clerk"), device_id, OFFICER_NO)
        finally:
            st.close()
    last = journal(dev)[-1]
    assert last.type == asg.ASSIGNMENT_REFUSED and last.payload["reason"] == "AssignmentInForce"
    [row] = assignments(w)
    assert handover.state(row) == "refused" and row.checked_in_ns is not None
    assert handover.acks(row)["checkout"]["answer"]["refused"] == "AssignmentInForce"
    assert "device-checkout-refused" in audit_types(w)
    assert handover.devices(w.st)[0]["status"] == "available"
