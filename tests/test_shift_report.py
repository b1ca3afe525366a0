"""The shift report (``bodycam report``, written by ``bodycam scenario`` beside its output) for the
shipped one-hour shift: the picture shows what the journal holds, and the summary's figures are
the journal's own, counted here independently."""
import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from firmware import cli
from recorder.journal import iter_records

REPO = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def shift(shift_1h):
    """The session's one-hour shift (tests/shift_fixture.py), run by ``run_file`` as the CLI runs it."""
    recs = list(iter_records(shift_1h.evidence / "journal.log"))
    return shift_1h.evidence, shift_1h.public_key, recs, ET.parse(shift_1h.report).getroot(), shift_1h.report


def of(recs, kind):
    return [r for r in recs if r.type == kind]


def wall(rec):
    return rec.message["wall_ns"]


def els(root, cls, tag=None):
    return [e for e in root.iter() if cls in (e.get("class") or "").split()
            and (tag is None or e.tag == SVG + tag)]


def x_of(root, ns):
    """Where the picture's own axis puts a wall time."""
    start, end = int(root.get("data-start-ns")), int(root.get("data-end-ns"))
    left, width = float(root.get("data-left")), float(root.get("data-plot-width"))
    return left + (ns - start) * width / (end - start)


def test_scenario_writes_the_report_beside_the_evidence(shift):
    out, _, recs, root, svg = shift
    assert svg.parent == out.parent and svg.with_suffix(".txt").read_text().startswith(f"evidence {out}")
    assert not any(p.name.endswith(("-report.svg", "-report.txt")) for p in out.rglob("*"))
    assert root.tag == SVG + "svg"
    lanes = {g.get("data-kind") for g in els(root, "lane", "g")}
    assert lanes == {"states", "recordings", "segments", "interruptions", "events", "battery", "storage",
                     "time-quality", "docking"}
    assert "journal verified" in root.find(f".//{SVG}text[@id='verdict']").text


def test_one_bar_per_recording_and_segment_at_the_journal_times(shift):
    _, _, recs, root, _ = shift
    segs = [r.payload for r in of(recs, "segment")]
    bars = {e.get("data-path"): e for e in els(root, "segment", "rect")}
    assert len(bars) == len(segs) == 204
    for p in segs:
        bar = bars[p["path"]]
        start, end = p["wall_start"]["wall_ns"], p["wall_end"]["wall_ns"]
        assert (int(bar.get("data-start-ns")), int(bar.get("data-end-ns"))) == (start, end)
        assert float(bar.get("x")) == pytest.approx(x_of(root, start), abs=0.01)
        assert float(bar.get("x")) + float(bar.get("width")) == pytest.approx(x_of(root, end), abs=1.01)
    recordings = {e.get("data-recording-id"): e for e in els(root, "recording", "rect")}
    stops = {r.payload["recording_id"]: r.payload for r in of(recs, "recording-stop")}
    assert set(recordings) == {r.payload["recording_id"] for r in of(recs, "recording-start")} == set(stops)
    for rid, bar in recordings.items():
        mine = [p for p in segs if p["recording_id"] == rid]
        assert int(bar.get("data-start-ns")) == min(p["wall_start"]["wall_ns"] for p in mine)
        assert int(bar.get("data-end-ns")) == max(p["wall_end"]["wall_ns"] for p in mine)
        assert int(bar.get("data-segments")) == len(mine) == stops[rid]["segments"]
        assert bar.get("data-stop-cause") == stops[rid]["cause"]
        assert float(bar.get("x")) == pytest.approx(x_of(root, int(bar.get("data-start-ns"))), abs=0.01)
    # the state lane: one bar per state record, from it to the next
    states = of(recs, "state")
    bars = els(root, "state", "rect")
    assert [b.get("data-state") for b in bars] == [r.payload["to"] for r in states]
    assert [int(b.get("data-start-ns")) for b in bars] == [wall(r) for r in states]
    assert [int(b.get("data-end-ns")) for b in bars[:-1]] == [wall(r) for r in states[1:]]
    [docked] = els(root, "docked", "rect")
    dock_to, dock_from = [wall(r) for r in states if "docked" in (r.payload["to"], r.payload["from"])]
    assert (int(docked.get("data-start-ns")), int(docked.get("data-end-ns"))) == (dock_to, dock_from)


def test_interruptions_are_marked_with_their_reasons(shift):
    _, _, recs, root, _ = shift
    marks = els(root, "interruption", "path")
    assert [(int(m.get("data-seq")), m.get("data-cause")) for m in marks] == \
        [(r.seq, r.payload["cause"]) for r in of(recs, "interruption")]
    owed = els(root, "reason-owed", "g")
    pending = of(recs, "reason-pending")
    assert [int(g.get("data-seq")) for g in owed] == [r.seq for r in pending]
    by_cause = {g.get("data-cause"): g for g in owed}
    [given] = of(recs, "reason-given")
    [missing] = of(recs, "reason-missing")
    g = by_cause[given.payload["cause"]]
    assert g.get("data-status") == "given" and g.get("data-reason") == given.payload["reason"]["en"]
    assert int(g.get("data-answered-ns")) == wall(given)
    assert given.payload["reason"]["en"] in g.find(f"{SVG}text").text
    m = by_cause[missing.payload["cause"]]
    assert m.get("data-status") == "missing" and "MISSING" in m.find(f"{SVG}text").text
    [paused] = els(root, "not-recording", "g")
    [nr] = of(recs, "not-recording")
    assert paused.get("data-reason") == nr.payload["reason"]["en"] and int(paused.get("data-seq")) == nr.seq
    assert nr.payload["reason"]["en"] in paused.find(f"{SVG}text").text


def test_time_quality_battery_storage_and_events_lanes(shift):
    _, _, recs, root, _ = shift
    runs = els(root, "time-quality", "rect")
    qualities = [r.message["time_quality"] for r in recs]
    expected = [q for i, q in enumerate(qualities) if i == 0 or q != qualities[i - 1]]
    assert [b.get("data-quality") for b in runs] == expected
    assert int(runs[0].get("data-start-ns")) == wall(recs[0]) and int(runs[-1].get("data-end-ns")) == wall(recs[-1])
    battery = sorted(int(e.get("data-value")) for e in els(root, "battery-point", "circle"))
    levels = [r.payload["permille"] for r in recs if r.type in ("battery-low", "battery-critical")]
    levels += [i["measured"]["permille"] for r in of(recs, "self-check") for i in r.payload["items"]
               if i["name"] == "battery"]
    levels += [r.payload["permille"] for r in of(recs, "state") if "permille" in r.payload]
    assert battery == sorted(levels) and min(battery) == 40
    storage = [int(e.get("data-value")) for e in els(root, "storage-point", "circle")]
    assert min(storage) == of(recs, "storage-low")[0].payload["free_bytes"]
    events = Counter(e.get("data-type") for e in els(root, "event", "g"))
    assert events["mark"] == 2 and events["voice-note"] == 2 and events["self-check"] == 3


def test_summary_figures_are_the_journals(shift, capsys, tmp_path):
    out, key, recs, _, _ = shift
    svg = tmp_path / "r.svg"
    assert cli.main(["report", str(out), "--pubkey", str(key), "--out", str(svg), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    ET.parse(svg)
    types = Counter(r.type for r in recs)
    attested = len(of(recs, "segment")) + sum(len(r.payload.get("attachments", [])) for r in recs)
    assert s["verification"]["ok"] and s["verification"]["records"] == len(recs) == s["records"]
    assert s["verification"]["files"] == attested
    assert s["verification"]["head"] == f"{recs[-1].seq}:{recs[-1].hash}"
    assert s["record_types"] == dict(types)
    assert s["segments"] == types["segment"] == sum(r.payload["segments"] for r in of(recs, "recording-stop"))
    assert len(s["recordings"]) == types["recording-start"] == types["recording-stop"]
    assert [r["stop_cause"] for r in s["recordings"]] == [r.payload["cause"] for r in of(recs, "recording-stop")]
    assert s["recorded_seconds"] == sum(p["wall_end"]["wall_ns"] - p["wall_start"]["wall_ns"]
                                        for p in (r.payload for r in of(recs, "segment"))) // 10**9
    assert len(s["interruptions"]) == types["interruption"]
    assert s["reasons"] == {"owed": types["reason-pending"], "given": types["reason-given"],
                            "missing": types["reason-missing"], "open": 0}
    assert [o["cause"] for o in s["reasons_owed"]] == [r.payload["cause"] for r in of(recs, "reason-pending")]
    assert [n["reason"] for n in s["not_recording"]] == [r.payload["reason"]["en"] for r in of(recs, "not-recording")]
    assert s["time_quality"]["records"] == dict(Counter(r.message["time_quality"] for r in recs))
    assert s["time_quality"]["clock_steps"] == types["clock-step"]
    assert s["dockings"] == sum(1 for r in of(recs, "state") if r.payload["to"] == "docked")
    assert (s["marks"], s["voice_notes"]) == (types["mark"], types["voice-note"])
    assert s["sessions"] == 1 and s["abnormal_restarts"] == 0
    assert s["span"]["seconds"] == 3600
    # the text form says the same
    assert cli.main(["report", str(out), "--pubkey", str(key), "--out", str(svg)]) == 0
    text = capsys.readouterr().out
    assert "verification: PASS" in text and f"segments: {types['segment']}" in text
    assert "camera-stall  -> given: device fault" in text and "low-battery  -> MISSING" in text


def test_report_refuses_to_write_into_the_evidence(shift, capsys):
    out, key, _, _, _ = shift
    assert cli.main(["report", str(out), "--pubkey", str(key), "--out", str(out / "r.svg")]) == 2
    assert "inside the evidence directory" in capsys.readouterr().err
    assert not (out / "r.svg").exists()


def test_the_picture_opens_in_a_browser_and_shows_the_shift(shift, tmp_path):
    """Opened in Chromium as an engineer would: it renders at its stated size, and the
    recordings lane is red where the journal says the device recorded, not where it did not."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    _, _, recs, root, svg = shift
    width, height = int(float(root.get("width"))), int(float(root.get("height")))
    png = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(svg.as_uri())
            box = page.locator("svg").bounding_box()
            page.screenshot(path=str(png))
        finally:
            browser.close()
    assert box is not None and (round(box["width"]), round(box["height"])) == (width, height)
    image = Image.open(png).convert("RGB")
    bars = els(root, "recording", "rect")
    longest = max(bars, key=lambda b: float(b.get("width")))
    x = float(longest.get("x")) + float(longest.get("width")) / 4
    y = float(longest.get("y")) + float(longest.get("height")) / 2
    r, g, b = image.getpixel((round(x), round(y)))
    assert r > 180 and g < 120 and b < 120, (r, g, b)            # the recording red (#d62728)
    gaps = sorted((float(b.get("x")), float(b.get("x")) + float(b.get("width"))) for b in bars)
    gap = max(zip(gaps, gaps[1:], strict=False), key=lambda pair: pair[1][0] - pair[0][1])
    x_idle = (gap[0][1] + gap[1][0]) / 2
    r, g, b = image.getpixel((round(x_idle), round(y)))
    assert not (r > 180 and g < 120 and b < 120), (r, g, b)      # no recording drawn there
