"""`python app.py`: refuses to expose itself without auth; serves a Gradio page bound to 127.0.0.1 only."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_public_host_without_auth_is_refused(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    try:
        from app import main
    finally:
        sys.path.remove(str(ROOT))
    assert main(["--data-dir", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert "also set --auth user:password" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path), "--port", "99999"]) == 2
    assert "setting port (--port / STUDIO_PORT)" in capsys.readouterr().err
    assert not (tmp_path / "studio.db").exists()  # refused before anything was created


@pytest.mark.slow
def test_app_serves_a_page_on_loopback_only(tmp_path):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "app.py", "--data-dir", str(tmp_path / "data"), "--port", str(port), "--no-worker"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        page = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = (response.status, response.read().decode("utf-8", "replace"))
                    break
            except OSError:
                time.sleep(1)
        assert page is not None, "the studio did not answer"
        status, html = page
        assert status == 200 and "gradio" in html.lower()
        listening = [
            c.laddr for c in psutil.Process(process.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
        ]
        assert listening and all(address.ip == "127.0.0.1" for address in listening), listening
        assert (tmp_path / "data" / "studio.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=30)
