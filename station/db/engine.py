"""Opening the catalogue: one engine per URL, SQLite made safe for several processes, schema by Alembic.

SQLite (the one-office default) runs in WAL mode with ``synchronous=FULL`` and foreign keys
on. A writing transaction (``session(write=True)``, which every audited action uses) starts
with ``BEGIN IMMEDIATE``, so two processes (say two devices docking at once) queue for the
write lock (``busy_timeout``) instead of failing on a lock upgrade; a reading one starts
with a plain ``BEGIN`` and never waits for a writer (WAL). PostgreSQL (an agency's shared
catalogue) needs nothing of that.

The schema is made and upgraded only by Alembic (``upgrade``); ``open_database`` refuses a
database that is not at the newest revision, so old code never writes into a newer schema
and a new one never runs on an old schema.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 60_000
_WRITE = "station_write"


class DatabaseError(Exception):
    """The catalogue cannot be used: unreachable, not initialised, or at another schema revision."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None       # we issue BEGIN ourselves (below)
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN"))
        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> Any:
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


class Database:
    """The catalogue behind one URL. ``session()`` is a unit of work: committed or rolled back whole."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A transaction: commits when the block ends, rolls back if it raises.

        ``write``: it will write (SQLite: take the write lock at its start). A reading one may
        still write (SQLite then takes the lock at the first write and can fail with "database
        is locked" if another process wrote in between): writers say so.
        """
        with self._sessions() as s, s.begin():
            if write:
                s.connection(execution_options={_WRITE: True})
            yield s

    def upgrade(self) -> None:
        """Create or upgrade the schema to the newest revision (Alembic)."""
        from alembic import command
        try:
            command.upgrade(alembic_config(self.url), "head")
        except OperationalError as exc:
            raise DatabaseError(f"cannot upgrade the catalogue at {self.safe_url}: {exc.orig}") from None

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory
        return ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()

    def check(self) -> None:
        """DatabaseError unless reachable and at the newest schema revision."""
        try:
            current = self.revision()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot reach the catalogue at {self.safe_url}: "
                                f"{getattr(exc, 'orig', exc)}") from None
        head = self.head_revision()
        if current is None:
            raise DatabaseError(f"the catalogue at {self.safe_url} is empty: run `station init` "
                                "(or `station db upgrade`) first")
        if current != head:
            raise DatabaseError(f"the catalogue at {self.safe_url} is at schema {current}, this station "
                                f"needs {head}: run `station db upgrade`")

    @property
    def safe_url(self) -> str:
        """The URL without a password, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str, *, check: bool = True) -> Database:
    db = Database(url)
    if check:
        db.check()
    return db
