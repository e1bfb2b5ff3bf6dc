"""Alembic migrations driven by our engine, run at every start; an existing database is backed up first.

Backups: SQLite is copied with the sqlite3 online backup API (consistent even in WAL mode) to
data_dir/backups/. For PostgreSQL we write a JSON dump of every table instead of calling pg_dump: pg_dump may be
missing or of another major version than the server, while a JSON dump needs nothing but the connection we already
have and is enough to recover the studio's rows (asset files are never touched by a migration).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, inspect, select

from studio.db.engine import create_database_engine, is_sqlite, sqlite_path

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x5107_11E0  # any constant: the PostgreSQL advisory lock that serialises migrations


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


class MigrationError(RuntimeError):
    """A migration failed; the message names the revisions, the error and the backup written before it."""


def upgrade(url: str, backup_dir: Path | None = None, revision: str = "head") -> Path | None:
    """Bring the database at `url` to `revision`; returns the backup written (None if nothing needed one)."""
    engine = create_database_engine(url)
    try:
        current = current_revision(engine)
        target = head_revision() if revision == "head" else revision
        if current == target:
            return None
        backup = None
        has_tables = bool(inspect(engine).get_table_names())
        if has_tables and backup_dir is not None:
            backup = _backup(engine, url, backup_dir, current)
        logger.info("migrating database from %s to %s", current, target)
        try:
            _upgrade_locked(engine, revision)
        except Exception as error:
            kept = f"the backup written before it is {backup}" if backup else "nothing needed a backup"
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()
            raise MigrationError(
                f"migrating the database from revision {current or 'none'} to {target} failed: "
                f"{reason[0] if reason else type(error).__name__}; {kept}. The database is as it was before the "
                "failed step; restore the backup if needed and report the error"
            ) from error
        return backup
    finally:
        engine.dispose()


def _upgrade_locked(engine: Engine, revision: str) -> None:
    """Run Alembic while holding the database's migration lock, so processes starting together (the app and its
    worker, several workers on one PostgreSQL) migrate once: the others wait, then find the schema current.

    SQLite: the migration's transaction begins IMMEDIATE (the write lock) before Alembic reads its version table.
    PostgreSQL: a session advisory lock around the run.
    """
    config = alembic_config(engine)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.execution_options(sqlite_begin="IMMEDIATE")
        else:
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
            connection.commit()
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, revision)
        finally:
            if not sqlite:
                connection.rollback()
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
                connection.commit()


def downgrade(url: str, revision: str) -> None:
    engine = create_database_engine(url)
    try:
        command.downgrade(alembic_config(engine), revision)
    finally:
        engine.dispose()


def _backup(engine: Engine, url: str, backup_dir: Path, current: str | None) -> Path:
    backup_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    if is_sqlite(url):
        source_path = sqlite_path(url)
        target = backup_dir / f"studio-{stamp}-{current or 'unversioned'}.db"
        source = sqlite3.connect(source_path)
        destination = sqlite3.connect(target)
        try:
            source.backup(destination)
        finally:
            destination.close()
            source.close()
        logger.info("backed up %s to %s before migrating", source_path, target)
        return target
    target = backup_dir / f"studio-{stamp}-{current or 'unversioned'}.json"
    metadata = MetaData()
    metadata.reflect(engine)
    dump: dict[str, list[dict]] = {}
    with engine.connect() as connection:
        for table in sorted(metadata.tables.values(), key=lambda t: t.name):
            dump[table.name] = [dict(row._mapping) for row in connection.execute(select(table))]
    target.write_text(json.dumps({"revision": current, "tables": dump}, default=str))
    logger.info("wrote a JSON dump of the PostgreSQL database to %s before migrating (pg_dump is not used)", target)
    return target
