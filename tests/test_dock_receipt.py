"""Receipt-gated purge (D9, D10, S1): only a valid, fresh, complete dock receipt frees space.

Real Ed25519 keys and x509 certificates from the agency PKI tooling, a real
journal and real MPEG-TS segments; no network here (see test_dock_link.py).
"""
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder import receipt
from recorder.journal import iter_records
from recorder.store import ReclaimRequiresDockReceipt
from recorder.verify import SegmentMissing, verify_directory
from station.dock import pki  # noqa: E402  (path set up by tests.netns)
from tests.media_fixture import new_device, record_session
from tests.netns import DockWorld


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture()
def env(tmp_path):
    world = DockWorld.create(tmp_path)
    dev = new_device(tmp_path)
    record_session(dev, {"r1": 2, "r2": 1})
    clock = Clock()
    nonces = receipt.NonceBook(ttl_s=60, monotonic=clock)
    validator = receipt.ReceiptValidator(dev.journal.device_id, pki.load_cert(world.ca_file), nonces)
    return world, dev, validator, nonces, clock


def segments(dev):
    return [r.payload for r in iter_records(dev.journal.path) if r.type == "segment"]


def make_receipt(world, dev, nonce, files=None, **over):
    seq, head = dev.journal.head
    files = files if files is not None else [
        receipt.ReceiptFile(p["path"], p["sha256"], p["size"]) for p in segments(dev)]
    dock_cert = pki.load_cert(world.dock_dir / "dock-cert.pem")
    fields = dict(device=dev.journal.device_id, dock=receipt.dock_id_for_cert(dock_cert), nonce=nonce,
                  counter=0, issued_wall_ns=1, head_seq=seq, head_hash=head, files=tuple(files))
    fields.update(over)
    return receipt.Receipt(**fields)


def sign(world, r, key_dir=None):
    d = key_dir or world.dock_dir
    return receipt.sign_receipt(r, pki.load_key(d / "dock-key.pem"), (d / "dock-cert.pem").read_bytes())


def present(dev):
    return sorted(p.name for p in (dev.root / "recordings").rglob("*.ts"))


def types(dev):
    return [r.type for r in iter_records(dev.journal.path)]


def assert_refused(dev, validator, wire, exc_type):
    before = present(dev)
    with pytest.raises(exc_type):
        dev.store.reclaim(wire, validator=validator)
    assert present(dev) == before, "a refused receipt removed files"
    last = list(iter_records(dev.journal.path))[-1]
    assert last.type == receipt.DOCK_RECEIPT_REFUSED
    assert last.payload["reason"] == exc_type.__name__
    assert verify_directory(dev.root, dev.pem).ok


def test_valid_receipt_purges_journals_and_device_still_verifies(env):
    world, dev, validator, nonces, _ = env
    segs = segments(dev)
    result = dev.store.reclaim(sign(world, make_receipt(world, dev, nonces.issue())), validator=validator)
    assert present(dev) == []
    assert sorted(f.path for f in result.removed) == sorted(p["path"] for p in segs)
    assert result.bytes_freed == sum(p["size"] for p in segs)
    recs = list(iter_records(dev.journal.path))
    accepted, purge = recs[-2], recs[-1]
    assert accepted.type == receipt.DOCK_RECEIPT and purge.type == receipt.PURGE
    assert purge.payload["receipt_seq"] == accepted.seq
    assert sorted(f["path"] for f in purge.payload["files"]) == sorted(p["path"] for p in segs)
    # the accepted receipt is kept verbatim: an auditor can re-check the dock's signature
    kept = receipt.parse_signed(json.dumps({"receipt": accepted.payload["receipt"],
                                            "signature": accepted.payload["signature"],
                                            "dock_cert": accepted.payload["dock_cert"]}).encode())
    pki.load_cert(world.dock_dir / "dock-cert.pem").public_key().verify(kept.signature, kept.message)
    result = verify_directory(dev.root, dev.pem)
    assert result.ok, result.failure
    assert any(c.startswith("released: 3 files") for c in result.checks)


def test_partial_purge_of_some_files_only(env):
    world, dev, validator, nonces, _ = env
    first = segments(dev)[0]
    r = make_receipt(world, dev, nonces.issue(),
                     files=[receipt.ReceiptFile(first["path"], first["sha256"], first["size"])])
    dev.store.reclaim(sign(world, r), validator=validator)
    assert present(dev) == ["r1_00001.ts", "r2_00000.ts"]
    assert verify_directory(dev.root, dev.pem).ok


def test_forged_receipt_from_a_dock_outside_the_agency_is_refused(env, tmp_path):
    world, dev, validator, nonces, _ = env
    rogue = DockWorld.create(tmp_path / "rogue")      # its own CA: a perfectly formed but foreign dock
    r = make_receipt(world, dev, nonces.issue(),
                     dock=receipt.dock_id_for_cert(pki.load_cert(rogue.dock_dir / "dock-cert.pem")))
    assert_refused(dev, validator, sign(rogue, r), receipt.UntrustedDock)


def test_receipt_signed_with_a_key_not_matching_the_dock_cert_is_refused(env):
    world, dev, validator, nonces, _ = env
    r = make_receipt(world, dev, nonces.issue())
    wire = receipt.sign_receipt(r, Ed25519PrivateKey.generate(),
                                (world.dock_dir / "dock-cert.pem").read_bytes())
    assert_refused(dev, validator, wire, receipt.BadReceiptSignature)


def test_tampered_receipt_is_refused(env):
    world, dev, validator, nonces, _ = env
    wire = sign(world, make_receipt(world, dev, nonces.issue()))
    doc = json.loads(wire)
    doc["receipt"]["files"] = doc["receipt"]["files"][:1]     # drop what the dock signed for
    assert_refused(dev, validator, json.dumps(doc).encode(), receipt.BadReceiptSignature)


def test_replayed_receipt_purges_nothing_more(env):
    world, dev, validator, nonces, _ = env
    first = segments(dev)[0]
    wire = sign(world, make_receipt(world, dev, nonces.issue(),
                                    files=[receipt.ReceiptFile(first["path"], first["sha256"], first["size"])]))
    dev.store.reclaim(wire, validator=validator)
    assert_refused(dev, validator, wire, receipt.ReplayedReceipt)


def test_receipt_with_a_nonce_never_issued_is_refused(env):
    world, dev, validator, _, _ = env
    assert_refused(dev, validator, sign(world, make_receipt(world, dev, "0" * 32)), receipt.ReplayedReceipt)


def test_stale_receipt_is_refused(env):
    world, dev, validator, nonces, clock = env
    nonce = nonces.issue()
    clock.t += 61
    assert_refused(dev, validator, sign(world, make_receipt(world, dev, nonce)), receipt.StaleReceipt)


def test_receipt_not_stating_verified_and_stored_is_refused(env):
    world, dev, validator, nonces, _ = env
    assert_refused(dev, validator, sign(world, make_receipt(world, dev, nonces.issue(), stored=False)),
                   receipt.IncompleteReceipt)


def test_receipt_for_another_device_is_refused(env):
    world, dev, validator, nonces, _ = env
    assert_refused(dev, validator, sign(world, make_receipt(world, dev, nonces.issue(), device="f" * 32)),
                   receipt.WrongDevice)


def test_receipt_with_a_head_not_in_the_journal_is_refused(env):
    world, dev, validator, nonces, _ = env
    assert_refused(dev, validator, sign(world, make_receipt(world, dev, nonces.issue(), head_hash="a" * 64)),
                   receipt.HeadMismatch)


def test_receipt_with_a_wrong_hash_is_refused(env):
    world, dev, validator, nonces, _ = env
    p = segments(dev)[0]
    r = make_receipt(world, dev, nonces.issue(), files=[receipt.ReceiptFile(p["path"], "b" * 64, p["size"])])
    assert_refused(dev, validator, sign(world, r), receipt.FileMismatch)


def test_receipt_naming_files_after_the_verified_head_is_refused(env):
    world, dev, validator, nonces, _ = env
    p = segments(dev)[-1]
    # the dock claims to have verified only up to record 1, before any segment was sealed
    recs = list(iter_records(dev.journal.path))
    r = make_receipt(world, dev, nonces.issue(), head_seq=1, head_hash=recs[1].hash,
                     files=[receipt.ReceiptFile(p["path"], p["sha256"], p["size"])])
    assert_refused(dev, validator, sign(world, r), receipt.FileMismatch)


def test_receipt_signed_with_a_device_certificate_is_refused(env):
    world, dev, validator, nonces, _ = env
    device_cert = world.device_cert(dev.pem)       # serverAuth: a device, not a dock
    r = make_receipt(world, dev, nonces.issue(), dock=receipt.dock_id_for_cert(pki.load_cert(device_cert)))
    wire = receipt.sign_receipt(r, dev.signer._key, device_cert.read_bytes())
    assert_refused(dev, validator, wire, receipt.UntrustedDock)


@pytest.mark.parametrize("wire", [
    b"", b"not json", b"[]", b'{"receipt": {}, "signature": "", "dock_cert": ""}', b"\xff\xfe",
])
def test_malformed_receipts_are_refused(env, wire):
    _, dev, validator, _, _ = env
    assert_refused(dev, validator, wire, receipt.ReceiptMalformed)


def test_receipt_with_a_path_outside_the_evidence_is_refused(env):
    world, dev, validator, nonces, _ = env
    r = make_receipt(world, dev, nonces.issue(), files=[receipt.ReceiptFile("../dev-key/device-key.pem",
                                                                           "c" * 64, 10)])
    assert_refused(dev, validator, sign(world, r), receipt.ReceiptMalformed)


def test_reclaim_without_receipt_still_refused(env):
    _, dev, validator, _, _ = env
    with pytest.raises(ReclaimRequiresDockReceipt):
        dev.store.reclaim(None, validator=validator)


def test_verifier_does_not_accept_a_purge_record_without_a_dock_receipt(env):
    """A purge record alone (no dock-receipt naming the file) does not excuse a missing file."""
    _, dev, _, _, _ = env
    p = segments(dev)[0]
    dev.journal.append(receipt.PURGE, {"receipt_seq": 0, "files": [
        {"path": p["path"], "sha256": p["sha256"], "size": p["size"]}]})
    (dev.root / p["path"]).unlink()
    assert isinstance(verify_directory(dev.root, dev.pem).failure, SegmentMissing)


def test_verifier_still_checks_a_released_file_that_is_present(env):
    """Released but not yet unlinked (power cut between purge record and unlink): still verified."""
    world, dev, validator, nonces, _ = env
    dev.store.reclaim(sign(world, make_receipt(world, dev, nonces.issue())), validator=validator)
    assert verify_directory(dev.root, dev.pem).ok
    p = segments(dev)[0]
    target = dev.root / p["path"]
    target.write_bytes(b"\x47" * p["size"])        # a different file put back at the released path
    assert verify_directory(dev.root, dev.pem).failure.reason == "SegmentHashMismatch"
