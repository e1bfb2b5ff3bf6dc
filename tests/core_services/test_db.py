"""Engine rules and migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text

from studio.db import models
from studio.db.engine import Database
from studio.db.migrate import alembic_config, current_revision, downgrade, head_revision, upgrade
from studio.services.job_specs import ExportFilm

ALL_TABLES = {
    "assets",
    "projects",
    "characters",
    "reference_images",
    "adapters",
    "scenes",
    "shots",
    "shot_characters",
    "takes",
    "jobs",
    "exports",
    "alembic_version",
}
REVISIONS = [r.revision for r in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))]


def test_sqlite_connections_have_wal_foreign_keys_and_busy_timeout(sqlite_url):
    db = Database(sqlite_url)
    try:
        for _ in range(2):  # every pooled connection, not only the first
            with db.engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        db.dispose()


def test_migrations_create_exactly_the_models(db_url):
    upgrade(db_url)
    db = Database(db_url)
    try:
        assert set(inspect(db.engine).get_table_names()) == ALL_TABLES
        with db.engine.connect() as connection:
            differences = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}), models.Base.metadata
            )
        assert differences == []
        assert current_revision(db.engine) == head_revision()
    finally:
        db.dispose()


def test_foreign_keys_are_enforced(db_url):
    upgrade(db_url)
    db = Database(db_url)
    try:
        with pytest.raises(Exception, match="(?i)foreign key"):
            with db.unit_of_work() as session:
                session.add(models.Scene(project_id=12345, position=0, caption=""))
    finally:
        db.dispose()


def _populate(db: Database) -> dict[str, int]:
    with db.engine.begin() as connection:  # SQL of the 0001 schema: the model has speed settings since 0003
        connection.execute(
            text(
                "INSERT INTO projects (name, preset, width, height, fps, steps, guidance, negative_prompt, created_at,"
                " updated_at) VALUES ('P', 'demo', 64, 64, 8, 2, 3.0, '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        project_id = connection.execute(text("SELECT id FROM projects WHERE name = 'P'")).scalar_one()
    with db.unit_of_work() as session:
        asset = models.Asset(sha256="a" * 64, kind="video", mime="video/mp4", size_bytes=3)
        session.add(asset)
        session.flush()
        character = models.Character(project_id=project_id, name="Mara", trigger="<mara>")
        scene = models.Scene(project_id=project_id, position=0, caption="coast")
        session.add_all([character, scene])
        session.flush()
        shot = models.Shot(scene_id=scene.id, position=0, caption="wide", num_frames=17, characters=[character])
        job = models.Job(kind="generate_scene", payload={"scene_id": scene.id})
        session.add_all([shot, job])
        session.flush()
        character_id, asset_id, shot_id, job_id = character.id, asset.id, shot.id, job.id
    with db.engine.begin() as connection:  # SQL of the 0001 schema: the model has a take bin since 0004
        take_id = connection.execute(
            text(
                "INSERT INTO takes (shot_id, number, job_id, video_asset_id, thumbnail_asset_id, seed, params,"
                " created_at) VALUES (:shot, 1, :job, :asset, :asset, 7, '{}', CURRENT_TIMESTAMP) RETURNING id"
            ),
            {"shot": shot_id, "job": job_id, "asset": asset_id},
        ).scalar_one()
        connection.execute(
            text("UPDATE shots SET chosen_take_id = :take WHERE id = :shot"), {"take": take_id, "shot": shot_id}
        )
    with db.engine.begin() as connection:  # SQL of the 0001 schema: the model has a caption column since 0002
        connection.execute(
            text(
                "INSERT INTO reference_images (character_id, asset_id, original_name, width, height, flags,"
                " created_at) VALUES (:character, :asset, 'mara.png', 64, 64, '[]', CURRENT_TIMESTAMP)"
            ),
            {"character": character_id, "asset": asset_id},
        )
    with db.engine.connect() as connection:
        return {
            table: connection.execute(select(func.count()).select_from(text(table))).scalar()
            for table in ALL_TABLES - {"alembic_version"}
        }


@pytest.mark.parametrize("revision", REVISIONS)
def test_each_migration_on_empty_database(db_url, revision):
    upgrade(db_url, revision=revision)
    db = Database(db_url)
    try:
        assert current_revision(db.engine) == revision
    finally:
        db.dispose()
    upgrade(db_url)  # and on to head from there
    downgrade(db_url, "base")
    db = Database(db_url)
    try:
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    finally:
        db.dispose()


# How to fill a database at each revision, for the populated-database test of the migration that follows it.
# A new migration NNNN needs an entry for the revision before it (written with SQL of that schema, not the models,
# once the models have moved on). The first revision is tested by populating right after it and upgrading to head.
POPULATE_AT = {"0001": _populate, "0002": _populate, "0003": _populate}  # later columns are left unset there


@pytest.mark.parametrize("revision", REVISIONS)
def test_each_migration_on_populated_database_keeps_rows(db_url, revision, tmp_path):
    index = REVISIONS.index(revision)
    start = revision if index == 0 else REVISIONS[index - 1]
    assert start in POPULATE_AT, f"add a POPULATE_AT[{start!r}] entry to test migration {revision} with data"
    upgrade(db_url, revision=start)
    db = Database(db_url)
    try:
        counts = POPULATE_AT[start](db)
    finally:
        db.dispose()
    backup = upgrade(db_url, backup_dir=tmp_path / "backups")
    db = Database(db_url)
    try:
        with db.engine.connect() as connection:
            after = {
                table: connection.execute(select(func.count()).select_from(text(table))).scalar() for table in counts
            }
        assert after == counts  # no row lost on the way to head
        assert after["takes"] == 1 and after["shot_characters"] == 1 and after["reference_images"] == 1
        with db.engine.connect() as connection:  # 0002: an existing reference has no caption (trains as before)
            assert connection.execute(text("SELECT caption FROM reference_images")).scalars().all() == [""]
            # 0003: an existing project has no speed settings (runs on its preset's defaults)
            settings = connection.execute(text("SELECT acceleration FROM projects")).scalars().all()
            assert [json.loads(s) if isinstance(s, str) else s for s in settings] == [{}]
            # 0004: an existing take is shown with its shot, not in the bin
            assert connection.execute(text("SELECT deleted_at FROM takes")).scalars().all() == [None]
        assert current_revision(db.engine) == head_revision()
    finally:
        db.dispose()
    if start == head_revision():
        assert backup is None  # nothing to migrate, nothing backed up
    else:
        assert backup is not None and backup.exists()


def test_backup_is_written_before_a_migration_runs(db_url, tmp_path):
    """A database that needs migrating is backed up first, so even a migration that breaks leaves a copy."""
    upgrade(db_url, revision=REVISIONS[0])
    db = Database(db_url)
    try:
        _populate(db)
        # Forget the revision: upgrade now believes every migration is pending (and the first one will fail,
        # because its tables exist). The backup must already be on disk when it fails.
        with db.unit_of_work() as session:
            session.execute(text("DELETE FROM alembic_version"))
    finally:
        db.dispose()
    with pytest.raises(Exception, match="(?i)already exists"):
        upgrade(db_url, backup_dir=tmp_path / "backups")
    backups = list((tmp_path / "backups").iterdir())
    assert len(backups) == 1
    if db_url.startswith("sqlite"):
        assert backups[0].suffix == ".db"
        with sqlite3.connect(backups[0]) as connection:
            assert connection.execute("SELECT count(*) FROM projects").fetchone()[0] == 1
            assert connection.execute("SELECT count(*) FROM takes").fetchone()[0] == 1
    else:
        dump = json.loads(backups[0].read_text())
        assert len(dump["tables"]["projects"]) == 1
        assert dump["tables"]["takes"][0]["seed"] == 7


def _start_studio(url: str, data_dir: str, start, results) -> None:
    from studio.config import load_settings
    from studio.services import build_services

    start.wait()
    try:
        services = build_services(load_settings(data_dir=data_dir, database_url=url))
        services.projects.create(f"made by {data_dir[-1]}")
        services.close()
        results.put("ok")
    except Exception:  # reported to the test, which shows it with the statement that failed
        import traceback

        results.put(traceback.format_exc())


def test_two_processes_starting_on_a_new_database_migrate_once(db_url, tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    processes = [
        context.Process(target=_start_studio, args=(db_url, str(tmp_path / f"data{n}"), start, results))
        for n in range(2)
    ]
    for process in processes:
        process.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert outcomes == ["ok", "ok"]
    db = Database(db_url)
    try:
        assert current_revision(db.engine) == head_revision()
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM projects")).scalar() == 2
    finally:
        db.dispose()


def test_sqlite_read_then_write_waits_instead_of_failing(sqlite_services):
    """A unit of work that reads, then writes after another connection committed, must not fail with
    'database is locked' (SQLITE_BUSY_SNAPSHOT): the second writer waits for the first."""
    import threading

    services = sqlite_services
    job = services.jobs.enqueue(ExportFilm())
    services.jobs.claim_next_job("w")
    other_done = threading.Event()
    errors: list[BaseException] = []

    def other_writer() -> None:
        try:
            services.jobs.report_progress(job.id, 0.5, "from another connection")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            other_done.set()

    with services.db.unit_of_work() as session:
        row = session.get(models.Job, job.id)  # read first
        thread = threading.Thread(target=other_writer)
        thread.start()
        assert not other_done.wait(0.5)  # the other writer waits for this unit of work
        row.message = "written after reading"
    thread.join(timeout=30)
    assert errors == []
    assert services.jobs.get(job.id).message == "from another connection"  # it ran after, not lost


def test_read_only_units_do_not_block_writers(sqlite_services):
    services = sqlite_services
    with services.db.unit_of_work(read_only=True) as session:
        session.execute(select(func.count()).select_from(models.Job)).scalar()
        # Another connection writes meanwhile (its own thread: a writing unit nested in this one would be an error).
        with ThreadPoolExecutor(max_workers=1) as pool:
            job = pool.submit(services.jobs.enqueue, ExportFilm()).result(timeout=10)
    assert services.jobs.get(job.id).status == "queued"


def test_sqlite_wal_switch_retries_while_another_connection_switches():
    """SQLite fails a journal-mode change that races another connection's at once ("database is locked", no busy
    handler): two processes opening a new database together must retry it, not fail to start."""
    import sqlite3

    from studio.db.engine import _enable_wal

    class RacingCursor:
        def __init__(self, busy_answers: int) -> None:
            self.busy_answers, self.calls = busy_answers, 0

        def execute(self, statement: str) -> None:
            assert statement == "PRAGMA journal_mode=WAL"
            self.calls += 1
            if self.calls <= self.busy_answers:
                raise sqlite3.OperationalError("database is locked")

    cursor = RacingCursor(busy_answers=3)
    _enable_wal(cursor)
    assert cursor.calls == 4
    # A lock held past the timeout still fails, with SQLite's own message; other errors are not retried.
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _enable_wal(RacingCursor(busy_answers=10**9), timeout_s=0.05)

    class BrokenCursor:
        calls = 0

        def execute(self, statement: str) -> None:
            self.calls += 1
            raise sqlite3.OperationalError("disk I/O error")

    broken = BrokenCursor()
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        _enable_wal(broken)
    assert broken.calls == 1
