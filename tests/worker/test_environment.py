"""The local worker's environment: the child process must start whatever folder the studio was started from."""

from __future__ import annotations

import subprocess
from pathlib import Path

from studio.worker.process import settings_environment, worker_command


def test_worker_command_imports_from_any_working_directory(sqlite_settings, tmp_path):
    env = settings_environment(sqlite_settings)
    # `--help` parses the worker's command line without touching a database: it proves `python -m studio.worker`
    # resolves from a folder that is not the checkout.
    command = [*worker_command(sqlite_settings, "check:1", ()), "--help"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--worker-id" in done.stdout
    assert env["STUDIO_DATA_DIR"] == str(sqlite_settings.data_dir)


def test_a_python_path_set_by_the_user_is_kept(sqlite_settings, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/opt/extra")
    parts = settings_environment(sqlite_settings)["PYTHONPATH"].split(":")
    assert parts[-1] == "/opt/extra"
    assert (Path(parts[0]) / "studio" / "__init__.py").exists()
