"""Alembic environment: runs on the connection Cellar hands over, or on sqlalchemy.url.

It imports nothing of Cellar (``registry.store.sql.migrate`` runs these files, so an import back
would be a loop); tests/integration/test_schema.py compares the tables with the metadata."""

from alembic import context
from sqlalchemy import create_engine

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    with create_engine(config.get_main_option("sqlalchemy.url")).connect() as conn:
        _run(conn)
