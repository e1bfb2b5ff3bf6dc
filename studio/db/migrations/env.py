"""Alembic environment: runs on the engine `studio.db.migrate` hands over (never a URL from an ini file)."""

from __future__ import annotations

from alembic import context

from studio.db.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        transactional_ddl=True,  # SQLite and PostgreSQL both roll back DDL: a failed migration leaves no half
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # studio.db.migrate.upgrade holds the migration lock on this connection
        _run(connection)
        return
    with config.attributes["engine"].connect() as connection:
        _run(connection)


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run studio.db.migrate.upgrade(url)")
run_migrations_online()
