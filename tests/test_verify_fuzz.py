"""Property: any change to a recorded evidence directory fails verification; no change passes.

The anchor (head of the untouched journal, as a dock receipt would hold it) is
passed, because cutting records off the end is otherwise invisible by design
(see recorder/verify.py).
"""
import base64
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder import records, verify
from recorder.journal import JOURNAL_NAME
from tests.media_fixture import new_device, record_session


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    dev = new_device(base, "a")
    record_session(dev, {"r1": 3, "r2": 1})
    other = new_device(base, "b")
    record_session(other, {"x1": 1})
    dev.journal.close()
    other.journal.close()
    head = verify.verify_directory(dev.root, dev.pem).head
    return dev.root, dev.pem, other.root, head


def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def segments(root: Path) -> list[Path]:
    return sorted((root / "recordings").rglob("*.ts"))


# A mutation is (kind, integers); integers are reduced modulo whatever they index.
mutation = st.tuples(
    st.sampled_from(["seg_flip", "seg_truncate", "seg_delete", "seg_add", "seg_append",
                     "rec_delete", "rec_swap", "rec_dup", "rec_byte", "rec_resign", "splice",
                     "tail_cut"]),
    st.integers(0, 2**31), st.integers(0, 2**31), st.integers(1, 255))


def apply(kind: str, a: int, b: int, c: int, root: Path, other: Path) -> None:
    jpath = root / JOURNAL_NAME
    ls = jpath.read_bytes().splitlines(keepends=True)
    segs = segments(root)
    if kind.startswith("seg") and kind != "seg_add" and not segs:
        return
    if kind == "seg_flip":
        p = segs[a % len(segs)]
        os.chmod(p, 0o644)
        data = bytearray(p.read_bytes())
        data[b % len(data)] ^= c
        p.write_bytes(bytes(data))
    elif kind == "seg_truncate":
        p = segs[a % len(segs)]
        os.truncate(p, b % max(1, p.stat().st_size))
    elif kind == "seg_delete":
        os.chmod(segs[a % len(segs)], 0o644)
        segs[a % len(segs)].unlink()
    elif kind == "seg_add":
        src = segments(other)[0]
        dest = root / "recordings" / ["r1", "r2", "x1"][a % 3] / f"added_{b % 1000}.ts"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    elif kind == "seg_append":
        p = segs[a % len(segs)]
        with open(p, "ab") as f:
            f.write(bytes([c]) * (1 + b % 400))
    elif kind == "rec_delete" and ls:
        del ls[a % len(ls)]
    elif kind == "rec_swap" and len(ls) > 1:
        i, j = a % len(ls), b % len(ls)
        ls[i], ls[j] = ls[j], ls[i]
    elif kind == "rec_dup" and ls:
        ls.insert(b % (len(ls) + 1), ls[a % len(ls)])
    elif kind == "rec_byte" and ls:
        i = a % len(ls)
        line = bytearray(ls[i])
        line[b % len(line)] ^= c
        ls[i] = bytes(line)
    elif kind == "rec_resign" and ls:
        i = a % len(ls)
        try:
            msg = ls[i].rstrip(b"\n").split(b"\t")[0]
            m = json.loads(msg)
            m["payload"]["edited"] = c
            msg = records.canonical_json(m)
        except (ValueError, TypeError, KeyError):
            msg = ls[i].rstrip(b"\n").split(b"\t")[0]
        sig = Ed25519PrivateKey.generate().sign(msg)
        ls[i] = msg + b"\t" + base64.b64encode(sig) + b"\n"
    elif kind == "splice":
        foreign = (other / JOURNAL_NAME).read_bytes().splitlines(keepends=True)
        ls.insert(b % (len(ls) + 1), foreign[a % len(foreign)])
    elif kind == "tail_cut" and ls:
        del ls[len(ls) - 1 - a % min(len(ls), 3):]
    jpath.write_bytes(b"".join(ls))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(mutation, min_size=0, max_size=3))
def test_any_change_fails_and_no_change_passes(pristine, mutations):
    root, pem, other, head = pristine
    original = snapshot(root)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "ev"
        shutil.copytree(root, work)
        for kind, a, b, c in mutations:
            apply(kind, a, b, c, work, other)
        result = verify.verify_directory(work, pem, anchor=head)
        if snapshot(work) == original:
            assert result.ok, result.failure
        else:
            assert not result.ok, f"undetected: {mutations}"
            assert isinstance(result.failure, verify.VerificationFailure)
            assert result.failure.reason in str(result.failure)


def test_untouched_copy_passes_without_anchor(pristine, tmp_path):
    root, pem, _, _ = pristine
    shutil.copytree(root, tmp_path / "ev")
    assert verify.verify_directory(tmp_path / "ev", pem).ok
