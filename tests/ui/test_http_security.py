"""The security defaults (docs/ARCHITECTURE.md, "Security defaults") over real HTTP: the studio app as
`build_app(...).launch()` serves it, on SQLite."""

from __future__ import annotations

import httpx
import pytest

from studio.config import load_settings
from studio.services import build_services
from studio.ui.app import build_app
from tests.core_services.helpers import png_bytes
from tests.ui.conftest import free_port

CAP = 64 * 1024


def launch(tmp_path, **overrides):
    settings = load_settings(data_dir=tmp_path / "data", upload_max_bytes=CAP, port=free_port(), **overrides)
    services = build_services(settings)
    app = build_app(services)
    app.launch(prevent_thread_lock=True, quiet=True)
    return app, services


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    app, services = launch(tmp_path_factory.mktemp("security"))
    base = app.local_url.rstrip("/")
    with httpx.Client(base_url=base, timeout=10) as client:
        yield app, services, client, base
    app.close()
    services.close()


def upload(client, size: int, **headers):
    files = {"files": ("ref.png", b"x" * size, "image/png")}
    return client.post("/gradio_api/upload", files=files, headers=headers)


def test_binds_loopback_without_share_link(studio):
    app, _, _, base = studio
    assert base.startswith("http://127.0.0.1:")
    assert app.share is False and app.share_url is None


def test_cross_origin_upload_is_refused(studio):
    _, _, client, base = studio
    refused = upload(client, 100, Origin="https://evil.example")
    assert refused.status_code == 403 and "cross-origin" in refused.text
    assert upload(client, 100, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
    accepted = upload(client, 100, Origin=base)
    assert accepted.status_code == 200, accepted.text


def test_cross_origin_event_is_refused(studio):
    _, _, client, _ = studio
    response = client.post(
        "/gradio_api/queue/join",
        json={"data": [], "fn_index": 0, "session_hash": "x"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403


def test_cross_origin_timeline_edit_is_refused(studio):
    """The timeline's server function (direct POST, no queue) sits behind the same origin check."""
    _, services, client, base = studio
    project = services.projects.create("guarded", preset="tiny")
    scene = services.storyboard.add_scene(project.id)
    shot = services.storyboard.add_shot(scene.id, "before")
    config = client.get("/config").json()
    timeline_id = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "sl-timeline")
    body = {
        "session_hash": "abc",
        "component_id": timeline_id,
        "fn_name": "timeline_edit",
        "data": {"op": "caption", "project_id": project.id, "shot_id": shot.id, "caption": "evil"},
    }
    refused = client.post("/gradio_api/component_server", json=body, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert services.storyboard.get_shot(shot.id).caption == "before"
    accepted = client.post("/gradio_api/component_server", json=body, headers={"Origin": base})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["ok"] is True
    assert services.storyboard.get_shot(shot.id).caption == "evil"


def test_upload_over_the_cap_is_refused(studio):
    _, _, client, base = studio
    response = upload(client, 5 * CAP, Origin=base)
    assert response.status_code == 413
    assert str(CAP) in response.text


def test_foreign_host_header_is_refused(studio):
    _, _, client, _ = studio
    assert client.get("/", headers={"Host": "rebind.attacker.example"}).status_code == 403


def test_file_route_serves_the_asset_store_and_nothing_else(studio):
    _, services, client, _ = studio
    png = png_bytes()
    asset = services.assets.put_bytes(png, "test", "image/png", filename="a.png")
    ok = client.get(f"/studio/asset/{asset.id}")
    assert ok.status_code == 200 and ok.content == png
    assert ok.headers["content-type"] == "image/png"
    db_file = services.settings.resolved_database_url.removeprefix("sqlite:///")
    asset_file = str(services.assets.path_of(asset.id))
    for path in (
        "/studio/asset/..%2fstudio.db",
        "/studio/asset/../studio.db",
        "/studio/asset/%2e%2e/%2e%2e/etc/passwd",
        f"/studio/asset/{db_file}",
        "/studio/asset//etc/passwd",
        "/studio/asset/999999",
        f"/gradio_api/file={db_file}",
        f"/gradio_api/file={asset_file}",
        "/gradio_api/file=/etc/passwd",
        f"/gradio_api/file={services.settings.data_dir}/../studio-data/studio.db",
    ):
        response = client.get(path)
        assert response.status_code in (403, 404), (path, response.status_code)
        assert b"SQLite" not in response.content and b"root:" not in response.content


def test_auth_protects_pages_and_files(tmp_path):
    app, services = launch(tmp_path, auth="mara:secret")
    try:
        asset = services.assets.put_bytes(b"data", "test", "application/octet-stream")
        with httpx.Client(base_url=app.local_url.rstrip("/"), timeout=10) as client:
            assert client.get(f"/studio/asset/{asset.id}").status_code == 401
            assert client.get("/config").status_code == 401
            login = client.post("/login", data={"username": "mara", "password": "secret"})
            assert login.status_code == 200
            assert client.get(f"/studio/asset/{asset.id}").content == b"data"
    finally:
        app.close()
        services.close()
