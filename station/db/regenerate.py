"""Development only: rewrite migration 0001 from the models (``python -m station.db.regenerate``).

Until the first release there is one migration, the whole schema; a change to
``station/db/models.py`` is followed by this. After a release, changes get new revisions
(``alembic revision --autogenerate``) instead. tests/test_station_schema.py checks that the
migrations and the models agree.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command

from station.db.engine import MIGRATIONS, alembic_config


def main() -> None:
    for old in (MIGRATIONS / "versions").glob("0001_*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as d:
        cfg = alembic_config(f"sqlite:///{Path(d) / 'gen.sqlite'}")
        command.revision(cfg, message="the catalogue", autogenerate=True, rev_id="0001")
    for new in (MIGRATIONS / "versions").glob("0001_*.py"):
        lines = new.read_text().splitlines(keepends=True)
        new.write_text("".join(ln.rstrip() + "\n" for ln in lines if "### " not in ln))


if __name__ == "__main__":
    main()
