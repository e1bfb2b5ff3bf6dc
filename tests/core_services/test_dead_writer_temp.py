"""A writer killed mid-write leaves its temp file in the asset folder; the next process that opens the store (app,
command or worker) removes it at once, while a live writer's temp file stays (the name carries host and pid)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from studio.config import load_settings
from studio.services import build_services
from studio.services.assets import TEMP_PREFIX, temp_file_name

ROOT = Path(__file__).resolve().parents[2]

# Opens the store, starts an asset write whose bytes never finish arriving, says so, and waits to be killed.
WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from studio.config import load_settings
    from studio.services import build_services

    services = build_services(load_settings(data_dir=sys.argv[1]))

    def chunks():
        yield b"half of a video"
        print("writing", flush=True)
        time.sleep(600)
        yield b""

    session = services.db.session_factory()  # no write lock yet: the file is written before the row
    services.assets._add(session, chunks(), "video", "video/mp4", "take.mp4")
    """
)


def _start_writer(data_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data_dir), str(ROOT)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert process.stdout.readline().strip() == "writing"
    return process


def _temp_files(data_dir: Path) -> dict[int, Path]:
    """Temp files in the asset folder by the pid their name carries."""
    return {int(p.name.split("-")[-2]): p for p in (data_dir / "assets").glob(f"{TEMP_PREFIX}*")}


def test_the_next_start_removes_a_killed_writers_temp_file_and_keeps_a_live_ones(tmp_path):
    data_dir = tmp_path / "data"
    build_services(load_settings(data_dir=data_dir)).close()  # migrate once, so the writers start quickly
    killed = _start_writer(data_dir)
    live = _start_writer(data_dir)
    try:
        assert set(_temp_files(data_dir)) == {killed.pid, live.pid}
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        services = build_services(load_settings(data_dir=data_dir))  # the next writer or worker start
        services.close()
        left = _temp_files(data_dir)
        assert set(left) == {live.pid}  # the live writer's file is untouched
    finally:
        for process in (killed, live):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


def test_temp_names_carry_host_and_pid():
    name = temp_file_name()
    assert name.startswith(TEMP_PREFIX) and name.split("-")[-2] == str(os.getpid())
