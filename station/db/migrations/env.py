"""Alembic's entry point for the station catalogue (run through station.db.engine, never by hand)."""
from __future__ import annotations

from alembic import context

from station.db.engine import make_engine
from station.db.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
connectable = config.attributes.get("connection") or make_engine(url)


def run() -> None:
    if hasattr(connectable, "connect"):
        with connectable.connect() as connection:
            context.configure(connection=connection, target_metadata=Base.metadata,
                              render_as_batch=connection.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
    else:
        context.configure(connection=connectable, target_metadata=Base.metadata)  # type: ignore[arg-type]
        with context.begin_transaction():
            context.run_migrations()


run()
