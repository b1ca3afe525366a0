"""Device assignments over the dock link (D12): signed by the dock, checked and journaled by the device.

A real device journal and dock link (TLS 1.3, client certificates, loopback), the agency PKI
of the station's tooling, and the station's own client. Proven here: an assignment signed by
the dock of the session is journaled as an ``assignment`` record holding the signed document
(its signature checks again from the journal alone), its release as ``assignment-end``; a
forged one (another CA's dock, a key that is not the certificate's, another device, a replay
in the same or a later session, a stale nonce, a second assignment while one is in force, a
release of one not in force, a malformed body) is refused by name, journaled as
``assignment-refused`` and changes nothing; the journal with the new record types verifies
with ``recorder.verify`` and with the documented shell recipe; the answers are parsed strictly.
"""
import json
import uuid

import pytest

from recorder import assignment as asg
from recorder import dock_protocol as protocol
from recorder import receipt
from recorder.journal import iter_records
from recorder.verify import verify_directory
from station.dock import pki
from station.dock.link import DeviceClient
from tests.media_fixture import new_device
from tests.netns import DockWorld

OFFICER = ("031337", "王警官", "厦门市城市管理行政执法局")


@pytest.fixture()
def world(tmp_path):
    w = DockWorld.create(tmp_path)
    w.dev = new_device(tmp_path)
    w.dev.journal.append("boot", {"firmware": "test"})
    w.link = w.start_link(w.dev)
    yield w
    w.link.stop()


def client(w, dock_dir=None) -> DeviceClient:
    d = dock_dir or w.dock_dir
    c = DeviceClient("127.0.0.1", w.link.address[1], str(w.dock_dir / "agency-ca.pem"), str(d / "dock-cert.pem"),
                     str(d / "dock-key.pem"), lambda i: w.dev.pem if i == w.dev.journal.device_id else None,
                     timeout=5)
    c.connect()
    return c


def doc(w, nonce, kind=asg.KIND_ASSIGN, assignment_id=None, dock_dir=None, **over) -> asg.Assignment:
    d = dock_dir or w.dock_dir
    fields = dict(kind=kind, assignment_id=assignment_id or uuid.uuid4().hex, device=w.dev.journal.device_id,
                  dock=receipt.dock_id_for_cert(pki.load_cert(d / "dock-cert.pem")), station="station-1",
                  nonce=nonce, counter=0, issued_wall_ns=1_790_000_000_000_000_000)
    if kind == asg.KIND_ASSIGN:
        fields.update(officer_id=OFFICER[0], officer_name=OFFICER[1], unit=OFFICER[2])
    fields.update(over)
    return asg.Assignment(**fields)


def sign(w, a, dock_dir=None, key_dir=None) -> bytes:
    d, k = dock_dir or w.dock_dir, key_dir or dock_dir or w.dock_dir
    return asg.sign_assignment(a, pki.load_key(k / "dock-key.pem"), (d / "dock-cert.pem").read_bytes())


def last(dev):
    return list(iter_records(dev.journal.path))[-1]


def in_force(dev):
    return asg.AssignmentTrack.read(dev.journal.path).in_force


def assign(w, c):
    a = doc(w, c.manifest().nonce)
    status, answer = c.send_assignment(sign(w, a))
    assert status == 200 and isinstance(answer, protocol.AssignmentAccepted), answer
    return a, answer


def test_assignment_and_release_are_journaled_with_the_signed_document_and_verify(world, tmp_path):
    from tests.test_evidence_recipe import doc_block, passes, run_recipe
    w, c = world, client(world)
    a, answer = assign(w, c)
    rec = last(w.dev)
    assert (rec.type, rec.seq, rec.hash) == (asg.ASSIGNMENT, answer.record_seq, answer.record_hash)
    assert answer.kind == asg.KIND_ASSIGN and answer.assignment_id == a.assignment_id
    assert rec.payload["assignment"] == a.as_dict() and rec.payload["assignment"]["officer_id"] == "031337"
    # the journal alone proves the agency's dock signed it for this device
    signed = asg.from_record(rec)
    dock_id = asg.check_signature(signed, pki.load_cert(w.ca_file))
    assert dock_id == a.dock and signed.assignment == a
    assert in_force(w.dev).assignment.officer_id == "031337"
    assert w.link.handover.officer_id("000000") == "031337"

    rel = doc(w, c.manifest().nonce, asg.KIND_RELEASE, a.assignment_id, counter=1)
    status, answer = c.send_assignment(sign(w, rel))
    c.close()
    assert status == 200 and answer.kind == asg.KIND_RELEASE
    end = last(w.dev)
    assert end.type == asg.ASSIGNMENT_END and end.payload["assignment_seq"] == rec.seq
    assert end.payload["officer_id"] == "031337" and end.payload["assignment"] == rel.as_dict()
    asg.check_signature(asg.from_record(end), pki.load_cert(w.ca_file))
    assert in_force(w.dev) is None and w.link.handover.officer_id("000000") == "000000"

    result = verify_directory(w.dev.root, w.dev.pem)
    assert result.ok, result.failure
    script, key = tmp_path / "check.sh", tmp_path / "device.pub.pem"
    script.write_text(doc_block("check-evidence.sh"), encoding="utf-8")
    key.write_bytes(w.dev.pem)
    assert passes(run_recipe(script, w.dev.root, key)), "the documented recipe refused assignment records"


def refused(w, c, wire, name):
    before = (in_force(w.dev), [r.type for r in iter_records(w.dev.journal.path)])
    status, answer = c.send_assignment(wire)
    assert status == 403 and isinstance(answer, protocol.AssignmentRefusal), answer
    assert answer.refused == name, answer
    rec = last(w.dev)
    assert rec.type == asg.ASSIGNMENT_REFUSED and rec.payload["reason"] == name
    assert answer.record_seq == rec.seq
    assert (in_force(w.dev), [r.type for r in iter_records(w.dev.journal.path)][:-1]) == before
    assert verify_directory(w.dev.root, w.dev.pem).ok
    return rec


def test_assignment_from_a_dock_outside_the_agency_is_refused(world, tmp_path):
    w, c = world, client(world)
    rogue = DockWorld.create(tmp_path / "rogue")    # its own CA: well formed, but not this agency's
    rec = refused(w, c, sign(w, doc(w, c.manifest().nonce, dock_dir=rogue.dock_dir), rogue.dock_dir),
                  "AssignmentUntrustedDock")
    assert rec.payload["officer_id"] == "031337" and rec.payload["kind"] == "assign"


def test_assignment_signed_with_another_key_than_the_dock_certificate_is_refused(world, tmp_path):
    w, c = world, client(world)
    other = tmp_path / "other-dock"
    pki.init_dock(w.ca_dir, other, "dock-2", "")     # an agency dock, but not the key of this certificate
    refused(w, c, sign(w, doc(w, c.manifest().nonce), key_dir=other), "BadAssignmentSignature")


def test_assignment_signed_by_another_agency_dock_than_the_session_is_refused(world, tmp_path):
    w, c = world, client(world)
    other = tmp_path / "other-dock"
    pki.init_dock(w.ca_dir, other, "dock-2", "")
    refused(w, c, sign(w, doc(w, c.manifest().nonce, dock_dir=other), other), "AssignmentUntrustedDock")


def test_assignment_for_another_device_is_refused(world):
    w, c = world, client(world)
    rec = refused(w, c, sign(w, doc(w, c.manifest().nonce, device="0" * 32)), "AssignmentWrongDevice")
    assert rec.payload["claimed_device"] == "0" * 32


def test_replayed_assignment_is_refused_in_the_same_and_in_a_later_session(world):
    w, c = world, client(world)
    a, _ = assign(w, c)
    rel = sign(w, doc(w, c.manifest().nonce, asg.KIND_RELEASE, a.assignment_id))
    assert c.send_assignment(rel)[0] == 200
    journal_before = w.dev.journal.path.read_bytes()
    # the same signed assignment again, same session: its nonce is used up
    again = sign(w, a)
    refused(w, c, again, "AssignmentReplayed")
    c.close()
    # a later session: the nonce was never issued there (and the id was journaled before)
    c2 = client(w)
    refused(w, c2, again, "AssignmentReplayed")
    # a fresh nonce but an assignment id already journaled
    refused(w, c2, sign(w, doc(w, c2.manifest().nonce, assignment_id=a.assignment_id)), "AssignmentReplayed")
    c2.close()
    assert w.dev.journal.path.read_bytes().startswith(journal_before) and in_force(w.dev) is None


def test_second_assignment_while_one_is_in_force_and_foreign_release_are_refused(world):
    w, c = world, client(world)
    a, _ = assign(w, c)
    refused(w, c, sign(w, doc(w, c.manifest().nonce, officer_id="042042")), "AssignmentInForce")
    refused(w, c, sign(w, doc(w, c.manifest().nonce, asg.KIND_RELEASE, uuid.uuid4().hex)), "AssignmentNotInForce")
    assert in_force(w.dev).assignment.assignment_id == a.assignment_id
    c.close()


def test_malformed_assignments_are_refused_by_name(world):
    w, c = world, client(world)
    good = json.loads(sign(w, doc(w, c.manifest().nonce)))
    extra = dict(good, assignment=dict(good["assignment"], extra=1))
    refused(w, c, json.dumps(extra).encode(), "AssignmentMalformed")
    floaty = dict(good, assignment=dict(good["assignment"], counter=1.5))
    refused(w, c, json.dumps(floaty).encode(), "AssignmentMalformed")
    release_with_officer = dict(good, assignment=dict(good["assignment"], kind="release"))
    refused(w, c, json.dumps(release_with_officer).encode(), "AssignmentMalformed")
    refused(w, c, b"[1, 2]", "AssignmentMalformed")
    # the body limits of the link: an empty body is a plain refusal (not journaled)
    n = len(list(iter_records(w.dev.journal.path)))
    status, answer = c._json("POST", protocol.ASSIGNMENT_PATH, protocol.parse_assignment_answer, b"")
    assert status == 413 and isinstance(answer, protocol.Refusal) and answer.refused == protocol.TOO_LARGE
    assert len(list(iter_records(w.dev.journal.path))) == n
    c.close()
    assert in_force(w.dev) is None


def test_stale_nonce_is_refused(world):
    w = world

    class Clock:
        t = 0.0

        def __call__(self):
            return self.t

    clock = Clock()
    nonces = receipt.NonceBook(ttl_s=60, monotonic=clock)
    v = asg.AssignmentValidator(w.dev.journal.device_id, pki.load_cert(w.ca_file), nonces)
    nonce = nonces.issue()
    clock.t = 61.0
    with pytest.raises(asg.AssignmentStale):
        v.validate(sign(w, doc(w, nonce)), asg.AssignmentTrack.read(w.dev.journal.path))
    # and the device's own link refuses a revoked dock's assignment like its receipts
    v2 = asg.AssignmentValidator(w.dev.journal.device_id, pki.load_cert(w.ca_file), nonces,
                                 revoked=lambda cert: True)
    with pytest.raises(asg.AssignmentRevokedDock):
        v2.validate(sign(w, doc(w, nonces.issue())), asg.AssignmentTrack())


def test_assignment_answers_are_parsed_strictly():
    ok = protocol.AssignmentAccepted("assign", "a" * 32, 7, "b" * 64)
    assert protocol.parse_assignment_answer(200, ok.to_json()) == ok
    assert protocol.parse_assignment_answer(403, protocol.AssignmentRefusal("AssignmentReplayed", "x", 3).to_json()) \
        == protocol.AssignmentRefusal("AssignmentReplayed", "x", 3)
    bad = [
        (200, {**ok.to_dict(), "extra": 1}, protocol.UnknownFields),
        (200, {k: v for k, v in ok.to_dict().items() if k != "record_hash"}, protocol.MissingFields),
        (200, {**ok.to_dict(), "kind": "steal"}, protocol.BadField),
        (200, {**ok.to_dict(), "record_seq": True}, protocol.BadField),
        (403, ok.to_dict(), protocol.UnexpectedStatus),
        (200, {"accepted": False, "refused": "x", "detail": "", "record_seq": None}, protocol.UnexpectedStatus),
        (403, {"accepted": False, "refused": "x", "detail": "", "record_seq": -1}, protocol.BadField),
        (200, {"refused": "x", "detail": ""}, protocol.UnexpectedStatus),
    ]
    for status, body, exc in bad:
        with pytest.raises(exc):
            protocol.parse_assignment_answer(status, json.dumps(body))
