"""Engine and units of work for SQLite (default) and PostgreSQL (by URL).

SQLite: WAL journal (readers never block the writer), foreign keys on every connection (SQLite defaults them off),
a busy timeout so concurrent writers wait instead of failing, and transactions we begin ourselves so a job claim
can take the write lock up front (BEGIN IMMEDIATE) instead of upgrading a read lock and deadlocking.
"""

from __future__ import annotations

import contextlib
import contextvars
import sqlite3
import threading
import time
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
# The units of work open in the current context (thread or task), per Database id: (session, read_only, thread id).
# A nested `unit_of_work()` joins the outer one, so a caller can make several service calls one transaction (a
# storyboard import is all-or-nothing).
_OPEN_UNITS: contextvars.ContextVar[dict[int, tuple[Session, bool, int]] | None] = contextvars.ContextVar(
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
        # The folder is not created here: `build_services` creates it only inside the data folder.
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
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL, much faster than FULL
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _enable_wal(cursor, timeout_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> None:
    """Switch the database to WAL, retrying while another connection holds it. SQLite answers a journal-mode change
    that races another connection's with an immediate "database is locked" (it does not call the busy handler), so
    processes opening a new database together (the app and its worker) could fail to start: 4-12 of 150 starts of
    four processes, without this retry."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _run_rollback_callbacks(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        with contextlib.suppress(Exception):
            callback()


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

        Re-entrant: opened while a unit of this database is open in the same thread and context, it joins that one
        (see `_joined_unit`): the same session and transaction; only the outermost commits (then removes the
        AFTER_COMMIT_UNLINK files) or rolls back (then runs the ON_ROLLBACK callbacks, once). A read-only unit may
        join a writing one; a writing unit inside a read-only one raises RuntimeError (a programming error).

        SQLite: a unit of work that may write begins IMMEDIATE, taking the write lock before it reads. A deferred
        transaction that read first and writes after another connection committed fails at once with "database
        is locked" (SQLITE_BUSY_SNAPSHOT), whatever the busy timeout; with the lock taken up front it waits its
        turn instead. Pure reads pass `read_only=True` and never block writers (WAL).
        """
        open_units = _OPEN_UNITS.get() or {}
        outer = open_units.get(id(self))
        # A context copied into another thread (asyncio.to_thread, copy_context().run) must not share the session.
        if outer is not None and outer[2] == threading.get_ident():
            with self._joined_unit(outer[0], outer[1], read_only) as session:
                yield session
            return
        session = self.session_factory()
        token = _OPEN_UNITS.set({**open_units, id(self): (session, read_only, threading.get_ident())})
        try:
            try:
                if self.dialect == "sqlite" and write_lock and not read_only:
                    session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
                yield session
            finally:
                # Closed for joining before the commit or rollback: the callbacks below run their own units.
                _OPEN_UNITS.reset(token)
            session.commit()
            for path in session.info.pop(AFTER_COMMIT_UNLINK, []):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        except BaseException:
            session.rollback()
            _run_rollback_callbacks(session.info.pop(ON_ROLLBACK, []))
            raise
        finally:
            session.close()

    @staticmethod
    @contextlib.contextmanager
    def _joined_unit(session: Session, outer_read_only: bool, read_only: bool) -> Iterator[Session]:
        """A unit of work inside an open one: the same session and transaction, nothing committed here.

        It starts and ends from what the transaction holds (objects expired, as a fresh session would load them),
        so a service sees the work of the calls before it as it would have after their commits. A writing unit
        runs in a SAVEPOINT: if it fails, its own writes are undone, its new files removed and its pending file
        removals dropped, whether or not the caller goes on; the error reaching the outermost rolls back all.
        """
        if read_only:
            session.flush()
            session.expire_all()
            yield session
            return
        if outer_read_only:
            raise RuntimeError(
                "a writing unit of work was opened inside a read-only one; open the outer unit without read_only"
            )
        rollbacks = len(session.info.get(ON_ROLLBACK, ()))
        unlinks = len(session.info.get(AFTER_COMMIT_UNLINK, ()))
        savepoint = session.begin_nested()  # flushes the outer work first
        session.expire_all()
        try:
            yield session
            savepoint.commit()  # flushes: ids and constraint errors appear here, as at a commit
        except BaseException:
            if savepoint.is_active:
                savepoint.rollback()
            del session.info.get(AFTER_COMMIT_UNLINK, [])[unlinks:]
            callbacks = session.info.get(ON_ROLLBACK, [])
            failed, callbacks[rollbacks:] = callbacks[rollbacks:], []
            _run_rollback_callbacks(failed)
            raise
        session.expire_all()

    def dispose(self) -> None:
        self.engine.dispose()
