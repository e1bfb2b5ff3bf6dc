"""Shared fixtures: database URLs (SQLite file and a fresh PostgreSQL database), settings and services.

PostgreSQL: a database named shotline_test_<random> is created on 127.0.0.1:5432 for each test and dropped after;
when no server answers, the PostgreSQL variant is skipped with the reason.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

PG_HOST = os.environ.get("SHOTLINE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SHOTLINE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("SHOTLINE_TEST_PG_USER", "postgres")
PG_MAINTENANCE_DB = os.environ.get("SHOTLINE_TEST_PG_DB", "test")

_pg_unavailable_reason: str | None = None
_pg_checked = False
# Dropping a database costs about a second; it runs in the background while the next test starts.
_pg_dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-drop")
_pg_drops: list[Future] = []


def _pg_admin_connection():
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_MAINTENANCE_DB, autocommit=True, connect_timeout=3
    )


def postgres_unavailable_reason() -> str | None:
    """None when the PostgreSQL test server answers, else why not (checked once per session)."""
    global _pg_checked, _pg_unavailable_reason
    if not _pg_checked:
        _pg_checked = True
        try:
            with _pg_admin_connection() as connection:
                connection.execute("SELECT 1")
        except Exception as error:  # any failure means: no usable server here
            _pg_unavailable_reason = (
                f"no PostgreSQL server answers on {PG_HOST}:{PG_PORT} as user {PG_USER} "
                f"(database {PG_MAINTENANCE_DB}): {str(error).strip().splitlines()[0] if str(error) else error!r}"
            )
    return _pg_unavailable_reason


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    reason = postgres_unavailable_reason()
    if reason:
        pytest.skip(reason)
    name = f"shotline_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin_connection() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _pg_drops.append(_pg_dropper.submit(_drop_database, name))


def _drop_database(name: str) -> None:
    # A loaded 2-core machine can miss the 3-second connect timeout; a drop is retried before it fails the session.
    for attempt in range(5):
        try:
            with _pg_admin_connection() as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except Exception:
            if attempt == 4:
                raise
            time.sleep(2)


@pytest.fixture(scope="session", autouse=True)
def _wait_for_database_drops() -> Iterator[None]:
    yield
    for drop in _pg_drops:
        drop.result()  # a drop that failed fails the session loudly rather than leaving databases behind
    _pg_dropper.shutdown()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    (tmp_path / "db").mkdir(exist_ok=True)  # a SQLite URL outside the data folder needs its folder to exist
    return f"sqlite:///{tmp_path / 'db' / 'studio.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(autouse=True)
def _clean_studio_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's STUDIO_* variables must not leak into tests."""
    for key in list(os.environ):
        if key.startswith("STUDIO_"):
            monkeypatch.delenv(key, raising=False)


def _make_settings(tmp_path: Path, url: str):
    from studio.config import load_settings

    return load_settings(data_dir=tmp_path / "studio-data", database_url=url)


@pytest.fixture
def settings(tmp_path: Path, db_url: str):
    return _make_settings(tmp_path, db_url)


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_url: str):
    return _make_settings(tmp_path, sqlite_url)


@pytest.fixture
def services(settings):
    from studio.services import build_services

    built = build_services(settings)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def sqlite_services(sqlite_settings):
    from studio.services import build_services

    built = build_services(sqlite_settings)
    try:
        yield built
    finally:
        built.close()
