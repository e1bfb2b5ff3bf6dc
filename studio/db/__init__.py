"""The project database: SQLAlchemy 2 models, the engine (SQLite WAL or PostgreSQL) and Alembic migrations."""

from studio.db.engine import Database, create_database_engine
from studio.db.migrate import upgrade

__all__ = ["Database", "create_database_engine", "upgrade"]
