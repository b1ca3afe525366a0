"""The documented shell recipes, cut out of docs/evidence-format.md at export time.

A package carries ``check-evidence.sh`` (and ``device-certificate.sh``) exactly as the
document prints them, so what a court's expert runs is what the project documents and
tests (``tests/test_evidence_recipe.py`` cuts the same blocks the same way).
"""
from __future__ import annotations

import re
from pathlib import Path

from station.errors import Unavailable

DOC = Path(__file__).resolve().parents[2] / "docs" / "evidence-format.md"
_BLOCK = re.compile(r"\s*```sh\n(.*?)^```$", re.S | re.M)


def doc_block(marker: str, doc: Path = DOC) -> str:
    """The fenced ``sh`` block right after ``<!-- recipe: MARKER -->`` in the document."""
    try:
        text = doc.read_text(encoding="utf-8")
    except OSError as exc:
        raise Unavailable(f"the documented recipe is not installed ({doc}: {exc.strerror})") from None
    tag = f"<!-- recipe: {marker} -->"
    if text.count(tag) != 1:
        raise Unavailable(f"{doc} does not hold exactly one {tag}")
    m = _BLOCK.match(text, text.index(tag) + len(tag))
    if m is None:
        raise Unavailable(f"{doc}: no ```sh block right after {tag}")
    return m.group(1)
