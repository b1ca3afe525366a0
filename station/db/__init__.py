"""The catalogue database: models, engine, Alembic migrations (SQLite by default, PostgreSQL for an agency)."""
