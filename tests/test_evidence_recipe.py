"""The shell recipe of docs/evidence-format.md, run exactly as printed, agrees with recorder.verify.

The recipe is the fenced block right after the ``<!-- recipe: check-evidence.sh -->``
marker; the device-certificate commands are the block after
``<!-- recipe: device-certificate.sh -->``. Both are cut out of the Markdown and run
with ``sh`` (dash) and a PATH of /usr/bin:/bin only, so python3 there is the system one
with its standard library and nothing from this repository.

Differential: every ``verify_directory`` call made by the tamper tests of
tests/test_verify_tamper.py, the random mutations of tests/test_verify_fuzz.py, the
verifier tests of tests/test_dock_receipt.py and the format-version tests of
tests/test_format_v2.py is
shadowed by a run of the recipe on the same directory, key and anchor, and the verdicts
must agree (a tamper test added there is checked here too). On top of that, a real
``bodycam record --sim --fast`` journal (config-change record, camera-stall interruption)
and forgeries the earlier recipe let through.
"""
import base64
import dataclasses
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import tests.test_dock_receipt as tdr
import tests.test_format_v2 as tfv
import tests.test_verify_fuzz as tvf
import tests.test_verify_tamper as tvt
from recorder import records, verify
from recorder.identity import FileSigner
from recorder.journal import JOURNAL_NAME
from station.dock import pki  # noqa: E402  (path set up by tests.netns)
from tests.test_dock_receipt import env  # noqa: F401  (fixture)
from tests.test_verify_fuzz import pristine  # noqa: F401  (fixture)
from tests.test_verify_tamper import ev, recorded  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "evidence-format.md"
SYSTEM_PATH = "/usr/bin:/bin"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t, path=SYSTEM_PATH) for t in ("sh", "openssl", "sha256sum", "python3")),
    reason="needs sh, openssl, sha256sum and python3 in /usr/bin:/bin")


def doc_block(marker: str) -> str:
    """The fenced code block that directly follows ``<!-- recipe: MARKER -->`` in the document."""
    text = DOC.read_text(encoding="utf-8")
    tag = f"<!-- recipe: {marker} -->"
    assert text.count(tag) == 1, f"{DOC.name} must hold exactly one {tag}"
    m = re.compile(r"\s*```sh\n(.*?)^```$", re.S | re.M).match(text, text.index(tag) + len(tag))
    assert m, f"no ```sh block right after {tag}"
    return m.group(1)


@pytest.fixture(scope="session")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "check-evidence.sh"
    path.write_text(doc_block("check-evidence.sh"), encoding="utf-8")
    return path


def run_recipe(recipe: Path, root: Path, key: Path, anchor=None) -> subprocess.CompletedProcess:
    args = ["sh", str(recipe), str(root), str(key)]
    if anchor is not None:
        args.append(f"{anchor[0]}:{anchor[1]}")
    return subprocess.run(args, capture_output=True, text=True, timeout=120,
                          env={"PATH": SYSTEM_PATH, "LC_ALL": "C"})


def passes(r: subprocess.CompletedProcess) -> bool:
    assert r.returncode in (0, 1), f"usage error or crash ({r.returncode}): {r.stderr}"
    if r.returncode == 0:
        assert r.stdout.startswith("PASS device "), r.stdout
        return True
    assert r.stderr.startswith("FAIL "), r.stderr
    return False


def head_of(r: subprocess.CompletedProcess) -> tuple[int, str]:
    seq, digest = r.stdout.strip().rsplit(" ", 1)[1].split(":")
    return int(seq), digest


@dataclasses.dataclass
class Shadow:
    compared: int = 0
    verdicts: list = dataclasses.field(default_factory=list)


@pytest.fixture()
def shadow(recipe, tmp_path_factory):
    """Every verify_directory call also runs the recipe; the verdicts must agree."""
    real = verify.verify_directory
    seen = Shadow()
    keys = tmp_path_factory.mktemp("shadow-keys")

    def both(root, public_key_pem, **kw):
        result = real(root, public_key_pem, **kw)
        if kw.get("allow_open_parts"):      # the recipe checks as verify does by default
            return result
        key = keys / f"{hashlib.sha256(public_key_pem).hexdigest()[:16]}.pub.pem"
        key.write_bytes(public_key_pem)
        r = run_recipe(recipe, Path(root), key, kw.get("anchor"))
        assert passes(r) == result.ok, (f"recipe and verifier disagree on {root}: verifier "
                                        f"{result.failure or 'PASS'}; recipe {r.stdout}{r.stderr}")
        if result.ok and result.head:
            assert head_of(r) == result.head
        seen.compared += 1
        seen.verdicts.append(result.ok)
        return result

    with pytest.MonkeyPatch.context() as mp:   # not the test's own monkeypatch: it may undo() it
        mp.setattr(verify, "verify_directory", both)
        mp.setattr(tdr, "verify_directory", both)
        yield seen


def _cases(module, wanted):
    """(test name, parametrize kwargs) for the module's tests whose fixtures we provide."""
    out = []
    for name, fn in sorted(vars(module).items()):
        if not name.startswith("test_") or not callable(fn) or not wanted(fn):
            continue
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        if not marks:
            out.append(pytest.param(name, {}, id=name))
            continue
        names = [n.strip() for n in marks[0].args[0].split(",")] if isinstance(marks[0].args[0], str) \
            else list(marks[0].args[0])
        for i, values in enumerate(marks[0].args[1]):
            values = values.values if hasattr(values, "values") else values
            values = values if len(names) > 1 else (values,)
            out.append(pytest.param(name, dict(zip(names, values, strict=True)), id=f"{name}[{i}]"))
    return out


def _call(request, fn, params):
    kwargs = {n: params[n] if n in params else request.getfixturevalue(n)
              for n in inspect.signature(fn).parameters}
    fn(**kwargs)


TAMPER_CASES = _cases(tvt, lambda fn: "capsys" not in inspect.signature(fn).parameters)
RECEIPT_CASES = _cases(tdr, lambda fn: "verify_directory" in inspect.getsource(fn)
                       or "assert_refused" in inspect.getsource(fn))


FORMAT_CASES = _cases(tfv, lambda fn: "verify.verify_directory" in inspect.getsource(fn))


@pytest.mark.parametrize("name,params", TAMPER_CASES)
def test_recipe_agrees_with_verifier_on_tamper_tests(request, shadow, name, params):
    _call(request, getattr(tvt, name), params)
    assert shadow.compared, f"{name} made no verify_directory call to compare"
    if name != "test_untouched_directory_passes":
        assert False in shadow.verdicts, f"{name}: no tampered state was compared"


@pytest.mark.parametrize("name,params", RECEIPT_CASES)
def test_recipe_agrees_with_verifier_on_purge_tests(request, shadow, name, params):
    _call(request, getattr(tdr, name), params)
    assert shadow.compared, f"{name} made no verify_directory call to compare"


FUZZ_CASES = _cases(tvf, lambda fn: "verify.verify_directory" in inspect.getsource(fn))


@pytest.mark.parametrize("name,params", FUZZ_CASES)
def test_recipe_agrees_with_verifier_on_random_mutations(request, shadow, name, params):
    """The hypothesis tests of tests/test_verify_fuzz.py: every example is compared."""
    _call(request, getattr(tvf, name), params)
    assert shadow.compared, f"{name} made no verify_directory call to compare"


@pytest.mark.parametrize("name,params", FORMAT_CASES)
def test_recipe_agrees_with_verifier_on_format_version_tests(request, shadow, name, params):
    _call(request, getattr(tfv, name), params)
    assert shadow.compared, f"{name} made no verify_directory call to compare"


def test_the_shadow_covers_the_tamper_list():
    names = {p.values[0] for p in TAMPER_CASES}
    assert {"test_flip_one_byte_in_a_segment", "test_truncate_a_segment", "test_delete_a_segment",
            "test_add_any_stray_file", "test_delete_a_journal_record", "test_reorder_journal_records",
            "test_duplicate_a_journal_record", "test_edit_a_journal_record",
            "test_resign_a_record_with_another_key", "test_torn_journal_tail"} <= names
    assert {p.values[0] for p in RECEIPT_CASES} >= {
        "test_valid_receipt_purges_journals_and_device_still_verifies",
        "test_verifier_does_not_accept_a_purge_record_without_a_dock_receipt",
        "test_verifier_still_checks_a_released_file_that_is_present"}


# ---- a real journal from `bodycam record --sim --fast`: config-change, stall, two recordings ----
@dataclasses.dataclass
class Sim:
    root: Path
    key_dir: Path
    pub: Path
    head: tuple[int, str]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    base = tmp_path_factory.mktemp("sim")
    r = subprocess.run([sys.executable, "-m", "firmware", "record", "--sim", "--fast",
                        "--duration", "6", "--camera-stall", "2:1.5", "--out", str(base / "evidence"),
                        "--key-dir", str(base / "key"), "--provision"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    root, key_dir = base / "evidence", base / "key"
    types = [json.loads(line.split(b"\t")[0])["type"] for line in tvt.lines(root)]
    assert "config-change" in types and types.count("segment") >= 2, types
    assert any(json.loads(line.split(b"\t")[0])["payload"].get("cause") == "camera-stall"
               for line in tvt.lines(root))
    result = verify.verify_directory(root, FileSigner.load(key_dir).public_key_pem())
    assert result.ok, result.failure
    return Sim(root, key_dir, key_dir / "device-key.pub.pem", result.head)


def _segments(root):
    return sorted((root / "recordings").rglob("*.ts"))


def _writable(p):
    os.chmod(p, 0o644)
    return p


def _flip(root, key_dir):
    p = _writable(_segments(root)[-1])
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


def _truncate(root, key_dir):
    p = _segments(root)[0]
    os.truncate(p, p.stat().st_size - 188)


def _delete(root, key_dir):
    _writable(_segments(root)[0]).unlink()


def _extra_file(root, key_dir):
    shutil.copy(_segments(root)[0], _segments(root)[0].parent / "copy.ts")


def _open_part(root, key_dir):
    (_segments(root)[0].parent / "next.ts.part").write_bytes(b"\x47" * 188)


def _symlink_for_segment(root, key_dir):
    p = _segments(root)[0]
    shutil.copy(p, root.parent / "outside.ts")
    _writable(p).unlink()
    p.symlink_to(root.parent / "outside.ts")


def _journal(root, change):
    ls = tvt.lines(root)
    tvt.write_lines(root, change(ls) or ls)


def _record_index(root, type_):
    return next(i for i, line in enumerate(tvt.lines(root))
                if json.loads(line.split(b"\t")[0])["type"] == type_)


def _remove_record(root, key_dir):
    i = _record_index(root, "config-change")
    _journal(root, lambda ls: ls[:i] + ls[i + 1:])


def _reorder_records(root, key_dir):
    def swap(ls):
        ls[2], ls[3] = ls[3], ls[2]
    _journal(root, swap)


def _duplicate_record(root, key_dir):
    _journal(root, lambda ls: ls[:3] + ls[2:])


def _edit_record(root, key_dir):
    i = _record_index(root, "segment")

    def edit(ls):
        msg, sig = tvt._edit(ls[i], lambda m: m["payload"].update(video_frames=1))
        ls[i] = msg + b"\t" + sig + b"\n"
    _journal(root, edit)


def _other_key(root, key_dir):
    i = _record_index(root, "segment")

    def resign(ls):
        msg, _ = tvt._edit(ls[i], lambda m: None)
        ls[i] = msg + b"\t" + base64.b64encode(Ed25519PrivateKey.generate().sign(msg)) + b"\n"
    _journal(root, resign)


def _bytes_after_last_lf(root, key_dir):
    _journal(root, lambda ls: ls + [b'{"forged":true}'])


def _last_lf_removed(root, key_dir):
    """A whole, validly signed last record, only its LF gone: still a torn line."""
    (root / JOURNAL_NAME).write_bytes((root / JOURNAL_NAME).read_bytes()[:-1])


def _extra_tab_field(root, key_dir):
    def tab(ls):                            # the last line: no later prev to break
        ls[-1] = ls[-1][:-1] + b"\tforged\n"
    _journal(root, tab)


def _non_canonical_base64(root, key_dir):
    """Same 64 signature bytes, other base64 text (unused low bits of the last symbol set)."""
    def recode(ls):                         # the last line: no later prev to break
        msg, sig = ls[-1][:-1].split(b"\t")
        alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        last = sig[-3]                       # 'X==': 4 data bits + 2 unused bits
        forged = sig[:-3] + bytes([alphabet[alphabet.index(last) | 1]]) + b"=="
        assert forged != sig and base64.b64decode(forged) == base64.b64decode(sig)
        ls[-1] = msg + b"\t" + forged + b"\n"
    _journal(root, recode)


def _forge_last(root, key_dir, change):
    """A record appended and signed with the device key itself (an insider), seq and prev right."""
    ls = tvt.lines(root)
    m = json.loads(ls[-1].split(b"\t")[0])
    m.update(seq=m["seq"] + 1, prev=records.line_hash(ls[-1]), type="note", payload={})
    change(m)
    msg = records.canonical_json(m)
    ls.append(records.format_line(msg, FileSigner.load(key_dir).sign(msg)))
    tvt.write_lines(root, ls)


def _foreign_device_signed_by_key(root, key_dir):
    _forge_last(root, key_dir, lambda m: m.update(device="0" * 32))


def _seq_only_in_payload(root, key_dir):
    def change(m):
        m["payload"] = {"note": {"seq": m["seq"], "x": 1}}
        m["seq"] += 7
    _forge_last(root, key_dir, change)


def _attests_the_journal(root, key_dir):
    data = (root / JOURNAL_NAME).read_bytes()
    _forge_last(root, key_dir, lambda m: m["payload"].update(attachments=[records.file_attestation(
        JOURNAL_NAME, hashlib.sha256(data).hexdigest(), len(data), "x")]))


def _path_outside(root, key_dir):
    data = b"outside\n"
    (root.parent / "outside.txt").write_bytes(data)
    _forge_last(root, key_dir, lambda m: m["payload"].update(attachments=[records.file_attestation(
        "recordings/../../outside.txt", hashlib.sha256(data).hexdigest(), len(data), "x")]))


def _attests_a_segment_twice(root, key_dir):
    seg = json.loads(tvt.lines(root)[_record_index(root, "segment")].split(b"\t")[0])["payload"]
    _forge_last(root, key_dir, lambda m: m["payload"].update(attachments=[records.file_attestation(
        seg["path"], seg["sha256"], seg["size"], "x")]))


def _purge_without_receipt(root, key_dir):
    seg = json.loads(tvt.lines(root)[_record_index(root, "segment")].split(b"\t")[0])["payload"]
    _forge_last(root, key_dir, lambda m: m.update(type="purge", payload={
        "receipt_seq": 0, "files": [{k: seg[k] for k in ("path", "sha256", "size")}]}))
    _writable(root / seg["path"]).unlink()


def _purge_before_the_attestation(root, key_dir):
    """A receipt and purge naming a file, then a record attesting it: released before attested."""
    ghost = {"path": "recordings/ghost.ts", "sha256": "a" * 64, "size": 1}
    _forge_last(root, key_dir, lambda m: m.update(type="dock-receipt", payload={"receipt": {
        "files": [ghost]}}))
    _forge_last(root, key_dir, lambda m: m.update(type="purge", payload={
        "receipt_seq": m["seq"] - 1, "files": [ghost]}))
    _forge_last(root, key_dir, lambda m: m["payload"].update(attachments=[dict(ghost, role="x")]))


def _float_in_a_current_version_record(root, key_dir):
    _forge_last(root, key_dir, lambda m: m.update(v=records.FORMAT_VERSION, payload={"x": 0.5}))


def _not_integer_version(root, key_dir):
    _forge_last(root, key_dir, lambda m: m.update(v=float(records.FORMAT_VERSION)))


FORGERIES = [_flip, _truncate, _delete, _extra_file, _open_part, _symlink_for_segment,
             _remove_record, _reorder_records, _duplicate_record, _edit_record,
             _other_key, _bytes_after_last_lf, _last_lf_removed,
             _extra_tab_field,
             _non_canonical_base64, _foreign_device_signed_by_key, _seq_only_in_payload,
             _attests_the_journal, _path_outside, _attests_a_segment_twice, _purge_without_receipt,
             _purge_before_the_attestation,
             _float_in_a_current_version_record, _not_integer_version]


def test_untouched_real_recording_passes_both(sim, recipe):
    r = run_recipe(recipe, sim.root, sim.pub)
    assert passes(r), r.stderr
    assert head_of(r) == sim.head
    assert passes(run_recipe(recipe, sim.root, sim.pub, sim.head))


def test_cutting_the_tail_needs_the_anchor_in_the_recipe_too(sim, recipe, tmp_path):
    root = shutil.copytree(sim.root, tmp_path / "ev")
    tvt.write_lines(root, tvt.lines(root)[:-1])
    assert passes(run_recipe(recipe, root, sim.pub))
    assert verify.verify_directory(root, sim.pub.read_bytes()).ok
    r = run_recipe(recipe, root, sim.pub, sim.head)
    assert not passes(r) and "AnchorMismatch" in r.stderr
    assert not passes(run_recipe(recipe, sim.root, sim.pub, (sim.head[0], "0" * 64)))


def test_wrong_key_fails_and_a_bad_key_is_a_usage_error(sim, recipe, recorded, tmp_path):
    other = tmp_path / "other.pub.pem"
    other.write_bytes(recorded.pem)
    r = run_recipe(recipe, sim.root, other)
    assert not passes(r) and "ForeignDevice" in r.stderr
    (tmp_path / "bad.pem").write_text("nope")
    assert run_recipe(recipe, sim.root, tmp_path / "bad.pem").returncode == 2


@pytest.mark.parametrize("forge", FORGERIES, ids=[f.__name__.strip("_") for f in FORGERIES])
def test_forgery_of_a_real_recording_fails_both(sim, recipe, tmp_path, forge):
    root = shutil.copytree(sim.root, tmp_path / "ev", symlinks=True)
    forge(root, sim.key_dir)
    result = verify.verify_directory(root, sim.pub.read_bytes())
    r = run_recipe(recipe, root, sim.pub)
    assert not result.ok, f"{forge.__name__}: the verifier accepted it"
    assert not passes(r), f"{forge.__name__}: the recipe accepted it: {r.stdout}"


# ---- the device key is the device's: the agency CA's certificate over it ----------------------
def test_device_certificate_commands(sim, recipe, tmp_path, recorded):
    pki.init_ca(tmp_path / "ca", "Agency")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(sim.pub, work / "device-key.pub.pem")
    device_id = pki.init_device(tmp_path / "ca", work / "device-key.pub.pem", work / "device-cert.pem")
    shutil.copy(tmp_path / "ca" / "agency-ca.pem", work / "agency-ca.pem")
    script = tmp_path / "device-certificate.sh"
    script.write_text(doc_block("device-certificate.sh"), encoding="utf-8")

    def run():
        return subprocess.run(["sh", str(script)], cwd=work, capture_output=True, text=True,
                              env={"PATH": SYSTEM_PATH, "LC_ALL": "C"}, timeout=60)

    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert device_id in r.stdout
    # the key the certificate names is the one the recipe derives the device id from
    cert = pki.load_cert(work / "device-cert.pem")
    raw = cert.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert hashlib.sha256(raw).hexdigest()[:32] == device_id
    assert f"PASS device {device_id}" in run_recipe(recipe, sim.root, work / "device-key.pub.pem").stdout
    # another device's key against this certificate: refused
    (work / "device-key.pub.pem").write_bytes(recorded.pem)
    assert run().returncode != 0
    # a certificate from another CA: refused
    shutil.copy(sim.pub, work / "device-key.pub.pem")
    pki.init_ca(tmp_path / "rogue", "Rogue")
    (work / "device-cert.pem").unlink()
    pki.init_device(tmp_path / "rogue", work / "device-key.pub.pem", work / "device-cert.pem")
    assert run().returncode != 0


def test_marker_blocks_are_posix_sh():
    for marker in ("check-evidence.sh", "device-certificate.sh"):
        r = subprocess.run(["sh", "-n"], input=doc_block(marker), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
