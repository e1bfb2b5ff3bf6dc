"""`/studio/asset/<id>` serves a file inline only as an allow-listed type its content agrees with; everything else
is a download, and no asset is ever served as HTML, SVG or script, whatever its row says."""

from __future__ import annotations

import hashlib

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from studio.db import models
from studio.ui.security import asset_routes
from tests.core_services.helpers import png_bytes, safetensors_bytes

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64
OGG_HEAD = b"OggS\x00\x02" + b"\x00" * 64
HTML = b"<html><body><script>fetch('/gradio_api/upload')</script></body></html>"
SVG = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>"


def stored_row(services, data: bytes, mime: str, name: str = "file") -> int:
    """An asset row written straight into the database, as an older studio or a hand-edited row could have."""
    sha256 = hashlib.sha256(data).hexdigest()
    path = services.assets.path_for(sha256, mime)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    with services.db.unit_of_work() as session:
        row = models.Asset(sha256=sha256, kind="test", mime=mime, size_bytes=len(data), original_name=name)
        session.add(row)
        session.flush()
        return row.id


@pytest.fixture
def client(sqlite_services):
    with TestClient(Starlette(routes=asset_routes(sqlite_services))) as test_client:
        yield sqlite_services, test_client


@pytest.mark.parametrize(
    ("data", "mime", "served"),
    [
        (png_bytes(), "image/png", "image/png"),
        (MP4_HEAD, "video/mp4", "video/mp4"),
        (b'{"OTIO_SCHEMA": "Timeline.1"}', "application/vnd.opentimelineio+json", "application/json"),
        (b'{"steps": 4}', "application/json", "application/json"),
        (OGG_HEAD, "audio/ogg", "audio/ogg"),
    ],
    ids=["png", "mp4", "otio", "json", "ogg"],
)
def test_allow_listed_types_are_served_inline(client, data, mime, served):
    services, http = client
    response = http.get(f"/studio/asset/{stored_row(services, data, mime)}")
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"].split(";")[0] == served
    assert "content-disposition" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (HTML, "text/html"),  # a row claiming HTML (what an imported bundle could write)
        (SVG, "image/svg+xml"),
        (b"alert(document.cookie)", "application/javascript"),
        (HTML, "image/png"),  # an allow-listed type whose file is markup
        (HTML, "audio/mpeg"),
        (b"\x00\x01binary", "video/mp4"),  # the content is not what the row says
        (safetensors_bytes(), "application/x-safetensors"),
        (b"data", "application/octet-stream"),
    ],
    ids=[
        "html",
        "svg",
        "script",
        "png-row-html-file",
        "audio-row-html-file",
        "mp4-row-other-file",
        "safetensors",
        "octet-stream",
    ],
)
def test_anything_else_is_a_download_never_a_page(client, data, mime):
    services, http = client
    asset_id = stored_row(services, data, mime, name="take.html")
    response = http.get(f"/studio/asset/{asset_id}")
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


def test_download_query_keeps_the_type_and_only_a_file_name(client):
    services, http = client
    asset_id = stored_row(services, png_bytes(), "image/png", name="mara.png")
    response = http.get(f"/studio/asset/{asset_id}?download=../../evil.png")
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == 'attachment; filename="evil.png"'


def test_take_thumbnail_route_applies_the_same_rules(client):
    services, http = client
    project = services.projects.create("Thumbs")
    scene = services.storyboard.add_scene(project.id, "night")
    shot = services.storyboard.add_shot(scene.id, "wide", num_frames=17)
    with services.db.unit_of_work() as session:
        take = models.Take(
            shot_id=shot.id,
            number=1,
            video_asset_id=stored_row(services, MP4_HEAD, "video/mp4"),
            thumbnail_asset_id=stored_row(services, HTML, "text/html"),
            seed=1,
            params={},
        )
        session.add(take)
        session.flush()
        take_id = take.id
    response = http.get(f"/studio/take-thumbnail/{take_id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment;")


@pytest.mark.browser
def test_chromium_runs_no_script_from_an_asset(sqlite_services, page):
    """An HTML or SVG file in the store (however its row got there), framed by a page or opened directly, never runs
    script on the studio's origin: Chromium downloads it instead."""
    import threading
    import time

    import uvicorn
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    from tests.ui.conftest import free_port

    script = b"<script>window.parent.postMessage('ran', '*'); document.title = 'ran'</script>"
    asset_ids = [
        stored_row(sqlite_services, b"<html>" + script + b"</html>", "text/html"),
        stored_row(sqlite_services, b"<svg xmlns='http://www.w3.org/2000/svg'>" + script + b"</svg>", "image/svg+xml"),
        stored_row(sqlite_services, b"<html><!-- a row saying PNG -->" + script + b"</html>", "image/png"),
    ]

    async def framing_page(request):
        frames = "".join(f'<iframe src="/studio/asset/{asset_id}"></iframe>' for asset_id in asset_ids)
        listener = "<script>window.got = []; addEventListener('message', e => window.got.push(e.data))</script>"
        return HTMLResponse(f"<html><body>{listener}{frames}</body></html>")

    app = Starlette(routes=[Route("/", framing_page), *asset_routes(sqlite_services)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        page.goto(base + "/")
        page.wait_for_load_state("load")
        assert page.evaluate("window.got") == []
        for asset_id in asset_ids:
            with page.expect_download() as download:
                try:
                    page.goto(f"{base}/studio/asset/{asset_id}")
                except Exception:  # noqa: BLE001 - Chromium aborts a navigation that turns into a download
                    pass
            assert download.value.suggested_filename == "file"  # the row's name, saved, never rendered
            assert page.title() != "ran"
        assert page.watch.dialogs == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)
