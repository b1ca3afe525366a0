"""The dock protocol is one definition (recorder/dock_protocol.py) for both ends.

The device's link service builds its answers from those types and the station's client
parses them with the same module, strictly. Checked here over a real TLS link with a
real recorded device: what the device sends is, byte for byte, what the shared type
serialises; its content is what the journal and the disk say (computed here without the
protocol module); and a body with a field the protocol does not define, or without one
it requires, is refused by the station with the named failure, so the docking stops and
nothing is purged. Also: one named-failure base for the verifier, the receipts and the
protocol, with the reasons (class names) that are journaled unchanged.
"""
import json
import logging
import os
import time

import pytest

from recorder import dock_protocol as protocol
from recorder import receipt, records, verify
from recorder.failures import NamedFailure
from recorder.journal import iter_records
from station import config as dock_config  # noqa: E402
from station.dock import pki
from station.dock.ingest import Docking
from station.dock.link import DeviceClient, DeviceProtocolError
from tests.netns import DockWorld


@pytest.fixture()
def world(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="firmware.dock_link")
    w = DockWorld.create(tmp_path)
    link = w.serve_recorded_device()
    yield w
    link.stop()


def client(w) -> DeviceClient:
    d = w.dock_dir
    c = DeviceClient("127.0.0.1", w.port, str(d / "agency-ca.pem"), str(d / "dock-cert.pem"),
                     str(d / "dock-key.pem"), lambda i: w.dev.pem if i == w.dev.journal.device_id else None,
                     timeout=5)
    c.connect()
    return c


def raw(c: DeviceClient, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request on the station's connection, the answer's bytes exactly as the device sent them."""
    resp = c._request(method, path, body)
    return resp.status, resp.read()


def journal_facts(dev) -> tuple[int, int, str, dict[str, int]]:
    """(journal size, head seq, head hash, attested files present -> size), from the journal and
    the disk alone (no protocol code)."""
    recs = list(iter_records(dev.journal.path))
    files = {f["path"]: os.stat(dev.root / f["path"]).st_size
             for r in recs for f in records.attested_files(r)}
    return dev.journal.path.stat().st_size, recs[-1].seq, recs[-1].hash, files


def docking(w) -> Docking:
    return Docking(w.station(dock_config.load(w.dock_config("127.0.0.1", w.port))), progress=False)


def serve_altered_manifest(w, monkeypatch, alter) -> None:
    """Make the real device send its real manifest, altered as a dict by ``alter``."""
    real = w.link.manifest

    class Altered:
        def __init__(self, m):
            self.doc = m.to_dict()
            alter(self.doc)

        def to_json(self) -> bytes:
            return json.dumps(self.doc, sort_keys=True).encode("utf-8")

    monkeypatch.setattr(w.link, "manifest", lambda issue_nonce: Altered(real(issue_nonce)))


# ---- what the device sends is the shared definition --------------------------------------------
def test_a_real_manifest_is_the_shared_type_byte_for_byte_and_says_what_the_journal_says(world):
    w = world
    c = client(w)
    status, body = raw(c, "GET", protocol.MANIFEST_PATH)
    assert status == 200
    m = protocol.Manifest.parse(body)
    assert m.to_json() == body                       # the device's bytes are the type's serialisation
    size, head_seq, head_hash, files = journal_facts(w.dev)
    assert m.device == w.dev.journal.device_id and m.v == 1
    assert (m.journal.path, m.journal.size, m.journal.head.seq, m.journal.head.hash) == (
        "journal.log", size, head_seq, head_hash)
    assert {f.path: f.size for f in m.files} == files and len(files) == 3
    # the station's client returns the same definition (its own nonce: one per request)
    typed = c.manifest()
    assert isinstance(typed, protocol.Manifest)
    assert typed.journal == m.journal and typed.files == m.files and typed.nonce != m.nonce


def test_real_answers_to_receipts_refusals_and_crls_are_the_shared_types(world):
    w = world
    c = client(w)
    m = c.manifest()
    for f in m.files:
        c.fetch(f.path, w.base / "got" / f.path, f.size)
    recs = list(iter_records(w.dev.journal.path))
    att = {f["path"]: f for r in recs for f in records.attested_files(r)}
    dock_cert = w.dock_dir / "dock-cert.pem"
    r = receipt.Receipt(device=m.device, dock=receipt.dock_id_for_cert(pki.load_cert(dock_cert)),
                        nonce=m.nonce, counter=1, issued_wall_ns=time.time_ns(), head_seq=recs[-1].seq,
                        head_hash=recs[-1].hash,
                        files=tuple(receipt.ReceiptFile(p, a["sha256"], a["size"]) for p, a in att.items()))
    wire = receipt.sign_receipt(r, pki.load_key(w.dock_dir / "dock-key.pem"), dock_cert.read_bytes())
    status, body = raw(c, "POST", protocol.RECEIPT_PATH, wire)
    answer = protocol.parse_receipt_answer(status, body)
    assert status == 200 and isinstance(answer, protocol.ReceiptAccepted) and answer.to_json() == body
    assert sorted(answer.removed) == sorted(att) and not any((w.dev.root / p).exists() for p in att)
    assert answer.bytes_freed == sum(a["size"] for a in att.values())
    # the same receipt again: refused by name, the ReceiptRefused class's
    status, body = raw(c, "POST", protocol.RECEIPT_PATH, wire)
    answer = protocol.parse_receipt_answer(status, body)
    assert status == 403 and isinstance(answer, protocol.ReceiptRefusal) and answer.to_json() == body
    assert answer.refused == receipt.ReplayedReceipt.__name__
    # a write: the generic refusal
    status, body = raw(c, "DELETE", protocol.file_path("journal.log"))
    answer = protocol.Refusal.parse(body)
    assert status == 405 and answer.refused == "read-only" and answer.to_json() == body
    # the CRL push and its answers
    c.connect()
    crl = (w.ca_dir / "agency-crl.pem").read_bytes()
    for expected in (protocol.CrlInstalled(True, 1), protocol.CrlInstalled(False, 1)):
        status, body = raw(c, "POST", protocol.CRL_PATH, crl)
        assert status == 200 and protocol.parse_crl_answer(status, body) == expected
        assert expected.to_json() == body
    status, body = raw(c, "POST", protocol.CRL_PATH, b"not a CRL")
    answer = protocol.parse_crl_answer(status, body)
    assert status == 422 and answer.refused == "bad-crl" and answer.to_json() == body


# ---- the station reads strictly, with named failures ----------------------------------------------
@pytest.mark.parametrize("alter, failure, named", [
    (lambda d: d.update(purge_all=True), protocol.UnknownFields, "purge_all"),
    (lambda d: d["files"][0].update(sha256="0" * 64), protocol.UnknownFields, "sha256"),
    (lambda d: d.pop("nonce"), protocol.MissingFields, "nonce"),
    (lambda d: d["journal"].update(size=str(d["journal"]["size"])), protocol.BadField, "manifest.journal.size"),
    (lambda d: d["files"][0].update(path="../../etc/shadow"), protocol.BadField, "manifest.files[].path"),
    (lambda d: d.update(v=2), protocol.UnsupportedVersion, None),
])
def test_station_refuses_a_manifest_that_is_not_the_protocol_and_the_docking_purges_nothing(
        world, monkeypatch, alter, failure, named):
    w = world
    serve_altered_manifest(w, monkeypatch, alter)
    with pytest.raises(DeviceProtocolError) as err:
        client(w).manifest()
    cause = err.value.__cause__
    assert type(cause) is failure and isinstance(cause, NamedFailure)
    assert cause.reason == failure.__name__ and failure.__name__ in str(err.value)
    if failure is protocol.UnknownFields:
        assert cause.details["unknown"] == [named]
    elif failure is protocol.MissingFields:
        assert cause.details["missing"] == [named]
    elif named:
        assert cause.details["field"] == named
    # a whole docking: refused, nothing stored, nothing purged on the device
    w.register(w.dev.pem)
    before = sorted(p.relative_to(w.dev.root) for p in (w.dev.root / "recordings").rglob("*.ts"))
    report = docking(w).run()
    assert report.status == "refused" and failure.__name__ in report.detail
    assert report.purged == [] and len(before) == 3
    assert sorted(p.relative_to(w.dev.root) for p in (w.dev.root / "recordings").rglob("*.ts")) == before
    assert not list(w.store.glob("recordings/*"))


def test_answers_with_fields_the_protocol_does_not_define_are_refused_by_name():
    ok = protocol.ReceiptAccepted(receipt_seq=5, purge_seq=6, removed=("recordings/r1/r1_00000.ts",),
                                  bytes_freed=10)
    doc = ok.to_dict()
    assert protocol.parse_receipt_answer(200, ok.to_json()) == ok
    with pytest.raises(protocol.UnknownFields):
        protocol.parse_receipt_answer(200, json.dumps({**doc, "also_removed": []}))
    with pytest.raises(protocol.UnexpectedStatus):         # an acceptance is a 200 only
        protocol.parse_receipt_answer(403, ok.to_json())
    with pytest.raises(protocol.BadField):                 # a refusal frees nothing
        protocol.parse_receipt_answer(403, json.dumps({"refused": "X", "detail": "", "removed": ["a"]}))
    with pytest.raises(protocol.UnknownFields):
        protocol.parse_crl_answer(409, json.dumps({"refused": "stale-crl", "detail": "", "crl_number": 1,
                                                   "x": 1}))
    with pytest.raises(protocol.NotJson):
        protocol.parse_crl_answer(200, b"[1]")


# ---- one named-failure base ----------------------------------------------------------------------
def test_verifier_receipt_and_protocol_failures_share_one_named_base_and_keep_their_reasons():
    for base in (verify.VerificationFailure, receipt.ReceiptRefused, protocol.ProtocolViolation):
        assert issubclass(base, NamedFailure)
    e = verify.SegmentHashMismatch("digest differs", seq=7, file="a.ts", expected="x", found="y")
    assert e.reason == "SegmentHashMismatch"
    assert str(e) == "SegmentHashMismatch: record #7, file a.ts: digest differs (expected 'x', found 'y')"
    assert e.details == {"seq": 7, "line_no": None, "file": "a.ts", "expected": "x", "found": "y"}
    assert (e.seq, e.file, e.expected, e.found) == (7, "a.ts", "x", "y")
    r = receipt.RevokedDock("on the CRL")
    assert r.reason == "RevokedDock" and str(r) == "on the CRL" and isinstance(r, receipt.UntrustedDock)
