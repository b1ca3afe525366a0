"""S7 export for the case file: labelled copies that verify with the documented recipe only.

Fed by real dockings (tests/station_fixture.py); the case, label, copy request and approval
go through the station's own actions. A package is checked the way a court's expert would:
``sh check-evidence.sh -s ...`` from the package itself, with PATH=/usr/bin:/bin (sh, openssl,
sha256sum, python3's standard library) and nothing of this repository.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from recorder.verify import verify_directory
from station.access.requests import approve, request_access
from station.audit.integrity import verify_station
from station.casework.cases import open_case
from station.casework.labels import LabelInput, label_recording
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound, Unavailable
from station.export.package import LOCK_NAME, PARTIAL_PREFIX, export
from station.keeping.purge import purge
from tests.station_fixture import UNIT, sqlite_station_world, station_world  # noqa: F401
from tests.test_evidence_recipe import SYSTEM_PATH, doc_block, recipe  # noqa: F401  (fixture)
from tests.tmpfs import tmpfs

CASE_NO = "厦城管罚〔2026〕42号"
CASE_NAME = "某餐饮店占道经营案"
MAKER, EXTRACTOR = "陈晓东", "林海峰"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t, path=SYSTEM_PATH) for t in ("sh", "openssl", "sha256sum", "python3")),
    reason="needs sh, openssl, sha256sum and python3 in /usr/bin:/bin")


def _now_is_real(w):
    """The station CLI runs on the system clock: move the test clock there before grants."""
    w.clock.advance(max(0, time.time_ns() - w.clock.now_ns()))


def _case_world(w, recordings=None, *, grant=True):
    """Device ``dev`` docked with r1 (2 segments, linked to the case) and r2 (1 segment, not exported)."""
    w.dock_device("dev", recordings or {"r1": 2, "r2": 1})
    clerk = w.user("clerk")
    open_case(w.st, clerk, CASE_NO, CASE_NAME, "行政处罚", "市容科")
    label_recording(w.st, clerk, "r1", LabelInput(case_no=CASE_NO, counterpart="某餐饮店", content="占道经营检查",
                                                   place="思明区湖滨南路"))
    with w.st.db.session() as s:
        ids = {r.recording_id: r.id for r in s.scalars(select(m.Recording))}
    if grant:
        _grant(w, ids["r1"])
    return ids


def _grant(w, rec_id, user="clerk"):
    req = request_access(w.st, w.user(user), rec_id, "copy", "案卷归档")
    approve(w.st, w.user("chief"), req.id)


def run_package_recipe(copy: Path, device: dict, selection: Path | None = None):
    """The package's own check-evidence.sh, as its README says, with the system tools only."""
    sel = selection or copy / device["selection"]
    return subprocess.run(["sh", "check-evidence.sh", "-s", str(sel), device["evidence"], device["public_key"],
                           device["journal_head"]], cwd=copy, capture_output=True, text=True, timeout=120,
                          env={"PATH": SYSTEM_PATH, "LC_ALL": "C"})


def _flip_byte(path: Path, at: int) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def _exports(w):
    with w.st.db.session() as s:
        return s.scalars(select(m.Export)).all()


# ---- the main path ---------------------------------------------------------------------------------------
def test_two_labelled_copies_verify_with_the_documented_recipe_only(station_world, tmp_path):
    w = station_world
    _now_is_real(w)
    ids = _case_world(w)
    out = tmp_path / "导出"
    r = w.cli_json("export", "--case", CASE_NO, "--out", str(out), "--maker", MAKER, "--extractor", EXTRACTOR,
                   "--copies", "2", user="clerk")
    copies = [Path(p) for p in r["copies"]]
    assert [p.name for p in copies] == [f"{r['name']}-副本1", f"{r['name']}-副本2"]
    assert r["name"].startswith("厦城管罚〔2026〕42号_某餐饮店占道经营案_2026")
    assert sorted(p.name for p in out.iterdir()) == sorted([c.name for c in copies] + [LOCK_NAME])
    mirror = w.st.store / "devices"
    for n, copy in enumerate(copies, start=1):
        man_bytes = (copy / "manifest.json").read_bytes()
        man = json.loads(man_bytes)
        assert hashlib.sha256(man_bytes).hexdigest() == r["manifest_sha256"][n - 1]
        # the labels S7 asks for: unit, maker, time, case name and number, copy
        assert (man["unit"], man["maker"], man["extractor"]) == (UNIT, MAKER, EXTRACTOR)
        assert man["case"]["case_no"] == CASE_NO and man["case"]["name"] == CASE_NAME
        assert man["copy"] == {"number": n, "of": 2, "label": f"副本 {n}/2"}
        assert man["extracted_at"].endswith("+08:00") and man["extracted_at"][:4] == "2026"
        assert [rec["id"] for rec in man["recordings"]] == [ids["r1"]]
        rec = man["recordings"][0]
        assert rec["officer_id"] == "031337" and rec["officer_name"] == "wang" and rec["device_id"]
        assert rec["start"] < rec["end"] and len(rec["segments"]) == 2
        # every file listed with its size and SHA-256, and nothing else in the copy
        listed = {f["path"]: f for f in man["files"]}
        on_disk = {p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()}
        assert on_disk == set(listed) | {"manifest.json", "清单.txt", "说明.pdf", "SHA256SUMS"}
        for path, f in listed.items():
            data = (copy / path).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (f["size"], f["sha256"]), path
        assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=copy, capture_output=True,
                              env={"PATH": SYSTEM_PATH}).returncode == 0
        # the originals byte for byte, the whole journal, the documented recipe as printed
        dev = man["devices"][0]
        device_id = dev["device_id"]
        for seg in rec["segments"]:
            rel = seg["path"].split("/evidence/", 1)[1]
            assert (copy / seg["path"]).read_bytes() == (mirror / device_id / "mirror" / rel).read_bytes()
        assert (copy / dev["evidence"] / "journal.log").read_bytes() == \
            (mirror / device_id / "mirror" / "journal.log").read_bytes()
        assert not list((copy / dev["evidence"]).rglob("r2_*")), "a recording not exported is in the package"
        assert (copy / "check-evidence.sh").read_text(encoding="utf-8") == doc_block("check-evidence.sh")
        # the agency CA certificate, its fingerprint as openssl prints it
        fp = subprocess.run(["openssl", "x509", "-in", "agency-ca.pem", "-noout", "-fingerprint", "-sha256"],
                            cwd=copy, capture_output=True, text=True, env={"PATH": SYSTEM_PATH}, check=True)
        assert fp.stdout.strip().split("=", 1)[1] == man["agency_ca"]["sha256_fingerprint"]
        # the device key is certified by the agency: the documented certificate commands, as printed
        assert dev["certificate"] == f"{dev['dir']}/device-cert.pem"
        assert (copy / "device-certificate.sh").read_text(encoding="utf-8") == doc_block("device-certificate.sh")
        c = subprocess.run(["sh", "../../device-certificate.sh"], cwd=copy / dev["dir"], capture_output=True,
                           text=True, env={"PATH": SYSTEM_PATH, "LC_ALL": "C"}, timeout=60)
        assert c.returncode == 0 and "device-cert.pem: OK" in c.stdout, c.stdout + c.stderr
        assert f"device {device_id}: key certified by the agency CA" in c.stdout
        # verified with the documented recipe only
        v = run_package_recipe(copy, dev)
        assert v.returncode == 0, v.stderr
        assert v.stdout.startswith(f"PASS device {device_id}: records ") and "files 2 (selected in" in v.stdout
        assert v.stdout.strip().endswith(dev["journal_head"])
        readme = (copy / "README.txt").read_text(encoding="utf-8")
        assert f"副本 {n}/2" in readme and dev["verify_command"] in readme and MAKER in readme
        listing = (copy / "清单.txt").read_text(encoding="utf-8")
        assert f"制作人：{MAKER}" in listing and f"提取人：{EXTRACTOR}" in listing
        assert r["manifest_sha256"][n - 1] in listing
        # the printed note: same facts, the files with their hashes, signature lines
        text = _pdf_text(copy / "说明.pdf")
        flat = "".join(text.split())
        for want in (UNIT, CASE_NO, CASE_NAME, MAKER, EXTRACTOR, f"副本{n}/2", "制作人（签名）", "提取人（签名）",
                     r["manifest_sha256"][n - 1], man["extracted_at"], listed[rec["segments"][1]["path"]]["sha256"]):
            assert want in flat, want
    # one Export row, one audit record naming both manifests
    rows = _exports(w)
    assert [(x.copies, x.maker, x.extractor, x.manifest_sha256, x.status, x.created_by) for x in rows] == [
        (2, MAKER, EXTRACTOR, r["manifest_sha256"][0], "complete", "clerk")]
    assert json.loads(rows[0].recordings) == [ids["r1"]] and rows[0].case_id is not None
    with w.st.db.session() as s:
        entry = s.scalars(select(m.AuditEntry).where(m.AuditEntry.type == "export")).one()
        copies_ok = s.scalars(select(m.Access).where(m.Access.action == "copy", m.Access.granted.is_(True))).all()
    details = json.loads(entry.line.split("\t")[0])["payload"]["details"]
    assert entry.subject == f"export:{rows[0].id}" and details["manifest_sha256"] == r["manifest_sha256"]
    assert [a.recording for a in copies_ok] == [ids["r1"]]          # S8: the copy is registered
    assert verify_station(w.st).ok

    # one byte of one segment changed: the recipe fails (and so does the verifier)
    bad = shutil.copytree(copies[1], tmp_path / "tampered", symlinks=True)
    man = json.loads((bad / "manifest.json").read_text(encoding="utf-8"))
    dev = man["devices"][0]
    _flip_byte(bad / man["recordings"][0]["segments"][1]["path"], 5000)
    v = run_package_recipe(bad, dev)
    assert v.returncode == 1 and v.stderr.startswith("FAIL SegmentHashMismatch"), v.stderr
    sel = (bad / dev["selection"]).read_text(encoding="utf-8").split()
    assert not verify_directory(bad / dev["evidence"], (bad / dev["public_key"]).read_bytes(), selection=sel).ok


def test_the_selection_is_as_strict_as_the_full_check(sqlite_station_world, tmp_path):
    """Recipe and verifier agree on a package's evidence directory with a selection, changed or not."""
    w = sqlite_station_world
    _case_world(w)
    r = export(w.st, w.user("clerk"), case_no=CASE_NO, out=tmp_path / "out", maker=MAKER, extractor=EXTRACTOR)
    copy = r.copies[0]
    man = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    dev = man["devices"][0]
    segs = [s["path"].split("/evidence/", 1)[1] for s in man["recordings"][0]["segments"]]
    mirror = w.st.store / "devices" / dev["device_id"] / "mirror"
    r2 = next(p.relative_to(mirror).as_posix() for p in mirror.rglob("r2_*.ts"))

    def case(name, change):
        work = shutil.copytree(copy, tmp_path / name, symlinks=True)
        sel_file = work / dev["selection"]
        selection = change(work, work / dev["evidence"], sel_file) or sel_file.read_text(encoding="utf-8").split()
        ok = verify_directory(work / dev["evidence"], (work / dev["public_key"]).read_bytes(),
                              selection=selection).ok
        v = run_package_recipe(work, dev, sel_file)
        assert v.returncode in (0, 1), v.stderr
        assert (v.returncode == 0) == ok, f"{name}: recipe {v.stdout}{v.stderr} / verifier {ok}"
        return ok

    def drop_selected_file(work, ev, sel):          # a selected segment removed (and its line kept)
        (ev / segs[0]).chmod(0o644)
        (ev / segs[0]).unlink()

    def drop_file_and_line(work, ev, sel):
        """The file and its selection line removed: every selected file is intact, so this passes;
        the manifest (its SHA-256 on the signed note) still names both segments."""
        drop_selected_file(work, ev, sel)
        sel.write_text(segs[1] + "\n", encoding="utf-8")

    def add_unselected_attested(work, ev, sel):     # another recording's original, not selected
        (ev / r2).parent.mkdir(parents=True)
        shutil.copy(mirror / r2, ev / r2)

    def select_unattested(work, ev, sel):
        sel.write_text(sel.read_text(encoding="utf-8") + "recordings/r9/r9_00000.ts\n", encoding="utf-8")

    def stray_file(work, ev, sel):
        (ev / "recordings" / "notes.txt").write_text("x")

    def select_everything(work, ev, sel):           # the whole device selected, r2 absent: missing
        sel.write_text("\n".join(segs + [r2]) + "\n", encoding="utf-8")

    def edit_journal(work, ev, sel):
        j = ev / "journal.log"
        j.chmod(0o644)
        lines = j.read_bytes().splitlines(keepends=True)
        j.write_bytes(b"".join(lines[:2] + lines[3:]))

    assert case("untouched", lambda *a: None)
    assert case("drop-file-and-line", drop_file_and_line)
    for change in (drop_selected_file, add_unselected_attested, select_unattested, stray_file, select_everything,
                   edit_journal):
        assert not case(change.__name__, change), change.__name__
    # without a selection the recipe is unchanged: the package's evidence lacks r2, so it fails
    v = subprocess.run(["sh", "check-evidence.sh", dev["evidence"], dev["public_key"]], cwd=copy,
                       capture_output=True, text=True, env={"PATH": SYSTEM_PATH, "LC_ALL": "C"})
    assert v.returncode == 1 and "SegmentMissing" in v.stderr


# ---- refusals ------------------------------------------------------------------------------------------------
def test_refused_exports_write_nothing(station_world, tmp_path):
    w = station_world
    ids = _case_world(w, grant=False)
    out = tmp_path / "out"
    kw = dict(out=out, maker=MAKER, extractor=EXTRACTOR)
    with pytest.raises(NotAllowed):                                   # an officer is not a clerk
        export(w.st, w.user("wang"), case_no=CASE_NO, **kw)
    with pytest.raises(NotAllowed, match="no approved request"):     # S8: no approved copy request
        export(w.st, w.user("clerk"), case_no=CASE_NO, **kw)
    with pytest.raises(NotFound):
        export(w.st, w.user("clerk"), case_no="无此案", **kw)
    with pytest.raises(InvalidInput, match="not linked to case"):
        export(w.st, w.user("clerk"), case_no=CASE_NO, refs=["r2"], **kw)
    with pytest.raises(InvalidInput, match="制作人"):
        export(w.st, w.user("clerk"), case_no=CASE_NO, out=out, maker=" ", extractor=EXTRACTOR)
    # a purged recording: refused (Conflict), and the attempt is registered
    _grant(w, ids["r2"])
    w.clock.advance(400 * 24 * 3600 * 10**9)
    purge(w.st, w.user("admin"), [str(ids["r2"])], reason="保存期限届满")
    with pytest.raises(Conflict, match="purged"):
        export(w.st, w.user("clerk"), refs=["r2"], **kw)
    with w.st.db.session() as s:
        refused = s.scalars(select(m.Access).where(m.Access.granted.is_(False))).all()
        assert {(a.recording, a.action) for a in refused} == {(ids["r1"], "copy"), (ids["r2"], "copy")}
    assert _exports(w) == []
    assert not out.exists() or [p.name for p in out.iterdir()] == []
    # on the command line: the exit codes
    r = w.cli("export", "--case", CASE_NO, "--out", str(out), "--maker", MAKER, "--extractor", EXTRACTOR,
              user="clerk")
    assert r.returncode == 3 and "copy" in r.stderr
    r = w.cli("export", "--recording", "r2", "--out", str(out), "--maker", MAKER, "--extractor", EXTRACTOR,
              user="clerk")
    assert r.returncode == 6 and "purged" in r.stderr
    assert _exports(w) == [] and verify_station(w.st).ok


# ---- the playable copy -----------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_playable_copy_is_a_recorded_remux_beside_the_originals(sqlite_station_world, tmp_path):
    w = sqlite_station_world
    _case_world(w)
    r = export(w.st, w.user("clerk"), refs=["r1"], out=tmp_path / "out", maker=MAKER, extractor=EXTRACTOR,
               want_playable=True)
    copy = r.copies[0]
    man = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    assert man["case"]["case_no"] == CASE_NO           # found from the recording's label
    (p,) = man["playable"]
    assert p["path"].startswith("playable/") and p["path"].endswith(".mp4") and p["tool"] == "ffmpeg"
    assert p["tool_version"].startswith("ffmpeg version") and ["-c", "copy"] == p["command"][
        p["command"].index("-c"):p["command"].index("-c") + 2]
    assert [s["sha256"] for s in p["sources"]] == [s["sha256"] for s in man["recordings"][0]["segments"]]
    assert {"path": p["path"], "size": p["size"], "sha256": p["sha256"]} in man["files"]
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json",
                                       str(copy / p["path"])], capture_output=True, text=True, check=True).stdout)
    assert sorted(s["codec_name"] for s in probe["streams"]) == ["aac", "h264"]
    assert "mp4" in probe["format"]["format_name"] and float(probe["format"]["duration"]) > 1.5
    # the derivation is re-playable: the recorded command on the package gives the same bytes
    again = shutil.copytree(copy, tmp_path / "again", symlinks=True)
    (again / p["path"]).unlink()
    subprocess.run(p["command"], cwd=again, check=True, capture_output=True)
    assert hashlib.sha256((again / p["path"]).read_bytes()).hexdigest() == p["sha256"]
    # the originals still verify; the MP4 is outside the evidence directory
    assert run_package_recipe(copy, man["devices"][0]).returncode == 0


# ---- faults ---------------------------------------------------------------------------------------------------
def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)


def test_a_full_export_disk_is_unavailable_and_leaves_nothing(sqlite_station_world, tmp_path):
    w = sqlite_station_world
    _now_is_real(w)
    _case_world(w)
    clerk = w.user("clerk")
    with tmpfs(tmp_path / "disk", "size=4m") as disk:
        out = disk / "out"
        out.mkdir()
        with w.st.db.session() as s:
            seg_bytes = sum(g.size for g in s.scalars(select(m.Segment)) if "r1" in g.path)
        # leave room for the originals and a page more: the journal or the note finds the disk full
        free = shutil.disk_usage(disk).free
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * (free - (seg_bytes // 4096 + 2) * 4096))
        with pytest.raises(Unavailable, match="full"):
            export(w.st, clerk, case_no=CASE_NO, out=out, maker=MAKER, extractor=EXTRACTOR)
        assert _leftovers(out) == [] and _exports(w) == []
        # two copies cannot even hold the originals: refused before writing, on the command line too
        r = w.cli("export", "--case", CASE_NO, "--out", str(out), "--maker", MAKER, "--extractor", EXTRACTOR,
                  "--copies", "2", user="clerk")
        assert r.returncode == 7 and "not enough space" in r.stderr
        assert _leftovers(out) == [] and _exports(w) == []
        ballast.unlink()
        done = export(w.st, clerk, case_no=CASE_NO, out=out, maker=MAKER, extractor=EXTRACTOR, copies=2)
        assert _leftovers(out) == sorted(p.name for p in done.copies)
    assert len(_exports(w)) == 1 and verify_station(w.st).ok


@pytest.mark.parametrize("point", ["export-copy:2", "export-commit:1"])
def test_kill_9_mid_export_leaves_nothing_taken_for_a_package(sqlite_station_world, tmp_path, point):
    w = sqlite_station_world
    _now_is_real(w)
    _case_world(w)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "station", "export", "--case", CASE_NO, "--out", str(out), "--maker", MAKER,
            "--extractor", EXTRACTOR, "--copies", "2", "--json"]
    env = dict(w.env("clerk"), BODYCAM_CRASHPOINT=point)
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    left = _leftovers(out)
    if point.startswith("export-copy"):
        assert len(left) == 1 and left[0].startswith(PARTIAL_PREFIX)     # recognisably unfinished
    else:                       # renamed, but never committed: looks whole, is not recorded
        assert len(left) == 3 and left[0].startswith(PARTIAL_PREFIX) and all("-副本" in x for x in left[1:])
    assert _exports(w) == []
    w.reopen()
    again = subprocess.run(args, env=w.env("clerk"), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    r = json.loads(again.stdout)
    assert sorted(r["cleaned"]) == left
    assert _leftovers(out) == sorted(Path(p).name for p in r["copies"])
    assert [x.id for x in _exports(w)] == [r["export"]]
    for copy in map(Path, r["copies"]):
        man = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
        assert run_package_recipe(copy, man["devices"][0]).returncode == 0
    assert verify_station(w.st).ok
    assert os.environ.get("BODYCAM_CRASHPOINT") is None
