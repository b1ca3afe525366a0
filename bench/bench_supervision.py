"""The supervision dashboard (/supervision) with a generated catalogue: its figures and charts vs.
``station stats`` alone, and vs. the naive per-officer weekly breakdown, in one run.

An initialised station on SQLite (tests/station_fixture.py) with N generated recordings
(tests/catalogue_gen.py: 40 officers, 1-20 one-minute segments each, bulk-inserted, bypassing
the audit trail). For the whole history and for the default period (the last 8 weeks), it
times, in-process: ``stats.compute(by="officer")`` (what ``station stats`` does; the floor),
the dashboard (``supervision.dashboard``: that, plus recorded time per officer per week in one
query, plus drawing the SVG charts), and the naive breakdown (one ``stats.compute(by="week")``
per officer). It checks that the dashboard's weekly figures equal the naive ones, and prints
seconds and ratios to the floor.

    .venv/bin/python bench/bench_supervision.py [--recordings 10000] [--skip-naive]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from station.supervision import stats  # noqa: E402
from station.web.routes import supervision as sv  # noqa: E402
from tests.catalogue_gen import generate  # noqa: E402
from tests.station_fixture import make_station_world  # noqa: E402


def timed(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure(w, g, label: str, frm: str, naive_too: bool) -> str:  # type: ignore[no-untyped-def]
    q = sv._query(w.st, frm, "", "")
    floor_s = timed(lambda: stats.compute(w.st, period=q.period, by="officer"))[1]
    dash_s = timed(lambda: sv.dashboard(w.st, q, None))[1]
    line = f"{label:24} station stats {floor_s:6.2f} s | dashboard {dash_s:6.2f} s (x{dash_s / floor_s:.2f})"
    if naive_too:
        mine = sv.recorded_ms_by_officer_week(w.st, q.period, None)

        def naive() -> dict[tuple[str, str], int]:
            out = {}
            for o in g.officers:
                for x in stats.compute(w.st, period=q.period, by="week", officer=o).groups:
                    if x.recorded_ms:
                        out[(o, x.key)] = x.recorded_ms
            return out
        want, naive_s = timed(naive)
        assert {k: v for k, v in mine.items() if v} == want, "weekly figures differ"
        line += f" | naive per-officer {naive_s:6.2f} s (x{naive_s / floor_s:.2f}); figures equal"
    return line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=int, default=10_000)
    ap.add_argument("--skip-naive", action="store_true", help="leave out the per-officer baseline (slow)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        w = make_station_world(Path(d), "", "sqlite")
        try:
            g = generate(w.st, args.recordings)
            print(f"catalogue: {g.recordings} recordings, {g.segments} segments, {len(g.officers)} officers (SQLite)")
            for label, frm in (("whole history", "2000-01-01"), ("default: last 8 weeks", "")):
                print(measure(w, g, label, frm, not args.skip_naive))
        finally:
            w.st.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
