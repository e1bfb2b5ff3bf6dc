"""Uploads over a real server: a body over the cap is refused with 413 whether or not it says its length, and leaves
nothing in Gradio's upload folder; uploads that were taken leave Gradio's cache after a while."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from gradio.utils import get_upload_folder

import studio.ui.app as ui_app
from tests.ui.test_http_security import CAP, launch

BOUNDARY = "shotline-test-boundary"


def _multipart(size: int, name: str = "ref.png") -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + b"x" * size + f"\r\n--{BOUNDARY}--\r\n".encode()


def _chunked(body: bytes, chunk: int = 16 * 1024):
    """A generator body: httpx sends it with Transfer-Encoding: chunked and no Content-Length."""

    def chunks():
        for start in range(0, len(body), chunk):
            yield body[start : start + chunk]

    return chunks()


def _upload_files() -> set[Path]:
    folder = Path(get_upload_folder())
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    app, services = launch(tmp_path_factory.mktemp("streamed"))
    base = app.local_url.rstrip("/")
    with httpx.Client(base_url=base, timeout=20) as client:
        yield app, client, base
    app.close()
    services.close()


def _post(client, base, content, **headers):
    return client.post(
        "/gradio_api/upload",
        content=content,
        headers={"Origin": base, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **headers},
    )


def test_a_chunked_upload_over_the_cap_is_413_and_leaves_no_file(studio):
    _, client, base = studio
    before = _upload_files()
    for size in (2 * CAP, 20 * CAP):  # just over, and far over (the rest is not read)
        try:
            response = _post(client, base, _chunked(_multipart(size)))
        except httpx.TransportError:  # the server may close while a far-over body is still being sent
            response = None
        if response is not None:
            assert response.status_code == 413, response.text
            assert str(CAP) in response.text
    assert _upload_files() == before  # nothing written to Gradio's upload folder


def test_a_chunked_upload_within_the_cap_goes_through(studio):
    _, client, base = studio
    response = _post(client, base, _chunked(_multipart(CAP // 2, "small.png")))
    assert response.status_code == 200, response.text
    [stored] = response.json()
    assert Path(stored).name == "small.png" and Path(stored).stat().st_size == CAP // 2


def test_taken_uploads_leave_gradios_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(ui_app, "UPLOAD_CACHE_CLEANUP_S", (1, 1))  # every second, files older than a second
    app, services = launch(tmp_path)
    try:
        base = app.local_url.rstrip("/")
        with httpx.Client(base_url=base, timeout=20) as client:
            response = _post(client, base, _multipart(1000, "taken.png"))
        assert response.status_code == 200, response.text
        [stored] = response.json()
        deadline = time.monotonic() + 60
        while Path(stored).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not Path(stored).exists()
    finally:
        app.close()
        services.close()
