"""Engine and units of work for SQLite (default) and PostgreSQL (by URL).

SQLite: WAL journal (readers never block the writer), foreign keys on every connection (SQLite defaults them off),
a busy timeout so concurrent writers wait instead of failing, and transactions we begin ourselves so a job claim
can take the write lock up front (BEGIN IMMEDIATE) instead of upgrading a read lock and deadlocking.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Session.info key holding callbacks run after a unit of work rolls back (the asset store removes its new files).
ON_ROLLBACK = "studio_on_rollback"
# Session.info key holding file paths to remove once the unit of work has committed (rows of dropped assets).
AFTER_COMMIT_UNLINK = "studio_after_commit_unlink"
# The units of work open in the current context (thread or task), per Database: a nested `unit_of_work()` joins the
# outer one, so a caller can make several service calls one transaction (a storyboard import is all-or-nothing).
_OPEN_UNITS: contextvars.ContextVar[dict[int, tuple[Session, bool]] | None] = contextvars.ContextVar(
    "studio_open_units", default=None
)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for in-memory databases)."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def create_database_engine(url: str, echo: bool = False) -> Engine:
    """An engine configured for the studio's rules (see the module docstring)."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Autocommit at the driver level: we emit BEGIN ourselves in the "begin" hook below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL, much faster than FULL
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """Engine + session factory. `unit_of_work()` is one transaction: commit on success, rollback on error."""

    def __init__(self, url: str, echo: bool = False) -> None:
        self.url = url
        self.engine = create_database_engine(url, echo=echo)
        self.session_factory = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def unit_of_work(self, write_lock: bool = True, read_only: bool = False) -> Iterator[Session]:
        """A session inside one transaction: commit on success, rollback (and rollback callbacks) on error.
        Opened while a writing unit of this database is open in the same context (thread or task), it joins that
        one (see `_joined_unit`): only the outermost commits or rolls back. Inside a read-only unit a new unit is
        its own transaction, as before.

        SQLite: a unit of work that may write begins IMMEDIATE, taking the write lock before it reads. A deferred
        transaction that read first and writes after another connection committed fails at once with "database
        is locked" (SQLITE_BUSY_SNAPSHOT), whatever the busy timeout; with the lock taken up front it waits its
        turn instead. Pure reads pass `read_only=True` and never block writers (WAL).
        """
        open_units = _OPEN_UNITS.get() or {}
        outer = open_units.get(id(self))
        if outer is not None and not outer[1]:  # inside a read-only unit, a unit stays its own transaction
            yield from self._joined_unit(outer[0], read_only)
            return
        session = self.session_factory()
        token = _OPEN_UNITS.set({**open_units, id(self): (session, read_only)})
        try:
            if self.dialect == "sqlite" and write_lock and not read_only:
                session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            yield session
            session.commit()
            for path in session.info.pop(AFTER_COMMIT_UNLINK, []):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        except BaseException:
            session.rollback()
            callbacks: list[Callable[[], None]] = session.info.pop(ON_ROLLBACK, [])
            for callback in callbacks:
                with contextlib.suppress(Exception):
                    callback()
            raise
        finally:
            _OPEN_UNITS.reset(token)
            session.close()

    @staticmethod
    def _joined_unit(session: Session, read_only: bool) -> Iterator[Session]:
        """A unit of work inside an open writing one: the same session and transaction. Nothing commits here; a
        flush makes the inner work's ids and constraint errors appear where they would have with a commit, and an
        error rolls back the whole outer unit when it reaches it (its ON_ROLLBACK callbacks run once, there)."""
        yield session
        if not read_only:
            session.flush()

    def dispose(self) -> None:
        self.engine.dispose()
