"""What stops `python app.py`, `python -m studio ...` or `python -m studio.worker` is one `error:` line naming the
setting or the resource and what to do, never a traceback; `character add` keeps nothing when a picture fails."""

from __future__ import annotations

import errno
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

import studio.db.engine as engine_module
from studio.cli import main as cli_main
from studio.db import migrate
from studio.db.migrate import upgrade
from studio.worker.__main__ import main as worker_main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from app import main as app_main  # noqa: E402

sys.path.remove(str(ROOT))

ENTRIES = {
    "app": lambda args: app_main([*args, "--no-worker", "--port", str(_free_port())]),
    "cli": lambda args: cli_main([*args, "project", "list"]),
    "worker": lambda args: worker_main([*args, "--exit-when-idle"]),
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (seed * 60 % 256, 90, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("entry", ENTRIES)
def test_an_unreachable_postgresql_server_is_one_line_with_its_address(entry, tmp_path, capsys):
    url = "postgresql+psycopg://postgres:secret@127.0.0.1:9/nowhere"  # port 9 (discard): nothing listens
    assert ENTRIES[entry](["--data-dir", str(tmp_path / "data"), "--db", url]) == 1
    line = _one_error_line(capsys)
    assert "cannot reach the PostgreSQL server at 127.0.0.1:9" in line and "--db" in line
    assert "secret" not in line


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_data_dir_that_is_a_file_or_cannot_be_made_is_one_line(entry, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert ENTRIES[entry](["--data-dir", str(afile)]) == 1
    line = _one_error_line(capsys)
    assert f"the data folder {afile} is a file" in line and "--data-dir" in line
    assert ENTRIES[entry](["--data-dir", str(afile / "below")]) == 1
    line = _one_error_line(capsys)
    assert "cannot be created" in line and str(afile / "below") in line


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_sqlite_url_outside_the_data_dir_needs_its_folder(entry, tmp_path, capsys):
    nowhere = tmp_path / "not" / "made"
    args = ["--data-dir", str(tmp_path / "data"), "--db", f"sqlite:///{nowhere / 'studio.db'}"]
    assert ENTRIES[entry](args) == 1
    line = _one_error_line(capsys)
    assert f"the folder {nowhere} of the SQLite database does not exist" in line and "--db" in line
    assert not (tmp_path / "not").exists()  # no folders created outside the data folder


def test_a_sqlite_url_inside_the_data_dir_gets_its_folder(tmp_path, capsys):
    data = tmp_path / "data"
    args = ["--data-dir", str(data), "--db", f"sqlite:///{data / 'db' / 'studio.db'}"]
    assert cli_main([*args, "project", "create", "Inside"]) == 0
    assert (data / "db" / "studio.db").is_file()


def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = app_main(["--data-dir", str(tmp_path / "data"), "--port", str(port)])
    assert code == 1
    line = _one_error_line(capsys)
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port" in line
    assert not (tmp_path / "data").exists()  # refused before the database, the worker or the UI


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_failed_migration_is_one_line_naming_the_backup(entry, tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    assert cli_main(["--data-dir", str(data), "project", "create", "Kept"]) == 0
    capsys.readouterr()
    url = f"sqlite:///{(data / 'studio.db').resolve()}"
    with sqlite3.connect(data / "studio.db") as connection:  # the next start believes every migration is pending
        connection.execute("DELETE FROM alembic_version")
    assert ENTRIES[entry](["--data-dir", str(data), "--db", url]) == 1
    line = _one_error_line(capsys)
    assert "migrating the database from revision none to" in line and "already exists" in line
    [backup] = (data / "backups").iterdir()
    assert str(backup) in line


def test_migration_error_keeps_the_original_error_as_its_cause(tmp_path):
    url = f"sqlite:///{tmp_path / 'studio.db'}"
    upgrade(url)
    database = engine_module.Database(url)
    with database.unit_of_work() as session:
        session.execute(text("DELETE FROM alembic_version"))
    database.dispose()
    with pytest.raises(migrate.MigrationError, match="already exists") as error:
        upgrade(url, backup_dir=tmp_path / "backups")
    assert error.value.__cause__ is not None


def test_a_lock_held_past_the_busy_timeout_is_one_line(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    assert cli_main(["--data-dir", str(data), "project", "create", "Busy"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 300)
    holder = sqlite3.connect(data / "studio.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than the busy timeout
    try:
        assert cli_main(["--data-dir", str(data), "project", "create", "Waiting"]) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    line = _one_error_line(capsys)
    assert f"the SQLite database {(data / 'studio.db').resolve()} stayed locked" in line
    assert "more than 0.3 s" in line and "run this again" in line


def test_disk_full_during_character_add_keeps_nothing(tmp_path, capsys, monkeypatch):
    from studio.services.assets import AssetStore

    data = tmp_path / "data"
    assert cli_main(["--data-dir", str(data), "project", "create", "Full"]) == 0
    refs = []
    for index in range(3):
        ref = tmp_path / f"ref{index}.png"
        ref.write_bytes(_png(index))
        refs.append(ref)
    original = AssetStore._add
    calls = {"n": 0}

    def add(self, session, chunks, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the third reference: the disk fills up while it is written

            def full():
                yield b"\x89PNG"
                raise OSError(errno.ENOSPC, "No space left on device", str(self.root / "tmp-file"))

            return original(self, session, full(), *args, **kwargs)
        return original(self, session, chunks, *args, **kwargs)

    monkeypatch.setattr(AssetStore, "_add", add)
    capsys.readouterr()
    argv = ["--data-dir", str(data), "character", "add", "Full", "Mara"]
    assert cli_main([*argv, *(arg for ref in refs for arg in ("--ref", str(ref)))]) == 1
    line = _one_error_line(capsys)
    assert "no space left on the device" in line and "free some space" in line
    monkeypatch.undo()
    assert cli_main(["--data-dir", str(data), "project", "show", "Full"]) == 0
    assert "Mara" not in capsys.readouterr().out  # no character with 2 of its 3 references
    assert [p for p in (data / "assets").rglob("*") if p.is_file()] == []  # and no files of them


def test_a_refused_picture_in_character_add_keeps_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    assert cli_main(["--data-dir", str(data), "project", "create", "Refs"]) == 0
    good = tmp_path / "good.png"
    good.write_bytes(_png(0))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    capsys.readouterr()
    argv = ["--data-dir", str(data), "character", "add", "Refs", "Mara", "--ref", str(good), "--ref", str(bad)]
    assert cli_main(argv) == 1
    line = _one_error_line(capsys)
    assert "bad.png" in line and "nothing was added" in line
    assert cli_main(["--data-dir", str(data), "project", "show", "Refs"]) == 0
    assert "Mara" not in capsys.readouterr().out


@pytest.mark.slow
def test_the_real_commands_print_one_line_and_no_traceback(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for command in (
        [sys.executable, "app.py", "--data-dir", str(afile), "--no-worker", "--port", str(_free_port())],
        [sys.executable, "-m", "studio", "--data-dir", str(afile), "project", "list"],
        [sys.executable, "-m", "studio.worker", "--data-dir", str(afile), "--exit-when-idle"],
    ):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("error: the data folder"), done.stderr
