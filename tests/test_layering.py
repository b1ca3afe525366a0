"""The import arrows between the packages (see common/__init__.py), read from the source.

Every ``import`` counts, also those inside functions: a lazy import is still an arrow.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT = ("common", "recorder", "hw", "sim", "firmware", "station")

# The evidence-format layer: what a stranger (the dock station, a court's expert) needs to
# read and check evidence. It stands on its own: these modules and ``common`` only.
EVIDENCE_FORMAT = {"recorder.records", "recorder.journal", "recorder.verify", "recorder.receipt",
                   "recorder.identity", "recorder.segment_info", "recorder.failures",
                   "recorder.dock_protocol", "recorder.assignment", "recorder.age"}


def _modules(package_dir: Path, package: str) -> dict[str, Path]:
    return {package + "".join("." + p for p in f.relative_to(package_dir).with_suffix("").parts
                              if p != "__init__"): f
            for f in package_dir.rglob("*.py")}


MODULES = {**_modules(REPO / "common", "common"), **_modules(REPO / "recorder", "recorder"),
           **_modules(REPO / "hw", "hw"), **_modules(REPO / "sim", "sim"),
           **_modules(REPO / "firmware", "firmware"),
           **_modules(REPO / "station", "station")}


def imports(module: str) -> set[str]:
    """The project modules ``module`` imports (``from recorder import records`` counts as
    ``recorder.records``)."""
    tree = ast.parse(MODULES[module].read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            names = [n for n in names if n == node.module or n in MODULES]
        else:
            continue
        out.update(n for n in names if n.split(".")[0] in PROJECT)
    return out


def _in(module: str, *packages: str) -> bool:
    return module.split(".")[0] in packages


@pytest.mark.parametrize("package, forbidden", [
    ("common", ("recorder", "hw", "sim", "firmware", "station")),
    ("recorder", ("hw", "sim", "firmware", "station")),
    ("hw", ("recorder", "sim", "firmware", "station")),
    ("firmware", ("station",)),
])
def test_packages_import_only_downwards(package, forbidden):
    wrong = {m: sorted(i for i in imports(m) if _in(i, *forbidden))
             for m in MODULES if _in(m, package)}
    assert {m: w for m, w in wrong.items() if w} == {}


def test_production_code_reaches_the_simulation_only_through_the_device_builder():
    wrong = {m: sorted(i for i in imports(m) if _in(i, "sim"))
             for m in MODULES if not _in(m, "sim") and m != "firmware.hardware"}
    assert {m: w for m, w in wrong.items() if w} == {}


def test_evidence_format_layer_stands_on_its_own():
    wrong = {m: sorted(i for i in imports(m)
                       if not _in(i, "common") and i not in EVIDENCE_FORMAT and i != "recorder")
             for m in EVIDENCE_FORMAT}
    assert {m: w for m, w in wrong.items() if w} == {}


def test_dock_station_imports_only_the_evidence_format_layer():
    wrong = {m: sorted(i for i in imports(m) if not _in(i, "common", "station")
                       and i not in EVIDENCE_FORMAT and i != "recorder")
             for m in MODULES if _in(m, "station")}
    assert {m: w for m, w in wrong.items() if w} == {}
