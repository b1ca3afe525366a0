"""The catalogue's schema is made by Alembic alone, and the migrations match the models, on both backends."""
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from station.db.engine import Database, DatabaseError, open_database
from station.db.models import Base


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'c.sqlite'}"
    return request.getfixturevalue("pg_cluster").create_database()


def test_migrations_build_exactly_the_models(url):
    db = Database(url)
    with pytest.raises(DatabaseError, match="empty: run `station init`"):
        db.check()
    db.upgrade()
    db.check()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == [], f"models and migrations differ (run python -m station.db.regenerate): {diff}"
    assert set(Base.metadata.tables) <= tables
    db.dispose()
    open_database(url).dispose()


def test_an_unreachable_database_is_a_clear_error(tmp_path):
    with pytest.raises(DatabaseError, match="cannot reach the catalogue"):
        open_database(f"postgresql+psycopg://nobody@/none?host={tmp_path}&port=1")
