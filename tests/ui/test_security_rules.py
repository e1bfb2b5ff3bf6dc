"""The guard's rules as pure functions: origin, host, upload cap, asset references and escaping."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from studio.ui.panels import esc
from studio.ui.security import MULTIPART_SLACK_BYTES, refusal_reason, resolve_asset_file

CAP = 1_000_000


def headers(**extra: str) -> dict[str, str]:
    return {"host": "127.0.0.1:7860", **{k.replace("_", "-"): v for k, v in extra.items()}}


@pytest.mark.parametrize(
    ("method", "extra", "status"),
    [
        ("POST", {"origin": "https://evil.example"}, 403),
        ("POST", {"origin": "null"}, 403),
        ("POST", {"origin": "http://127.0.0.1:9999"}, 403),  # another port is another origin
        ("POST", {"origin": "http://127.0.0.1:7860"}, None),
        ("POST", {"sec_fetch_site": "cross-site"}, 403),
        ("POST", {}, None),  # CLI clients send no Origin
        ("PUT", {"origin": "https://evil.example"}, 403),
        ("DELETE", {"origin": "https://evil.example"}, 403),
        ("GET", {"origin": "https://evil.example"}, None),  # reads change nothing
        ("POST", {"content_length": str(CAP + MULTIPART_SLACK_BYTES + 1)}, 413),
        ("POST", {"content_length": str(CAP)}, None),
        ("POST", {"content_length": "ten"}, 400),
    ],
)
def test_state_changing_requests_from_elsewhere_are_refused(method, extra, status):
    reason = refusal_reason(method, headers(**extra), CAP, loopback_only=True)
    assert (reason[0] if reason else None) == status


def test_loopback_studio_refuses_foreign_host_headers():
    assert refusal_reason("GET", {"host": "attacker.example:7860"}, CAP, loopback_only=True)[0] == 403
    assert refusal_reason("GET", {"host": "localhost:7860"}, CAP, loopback_only=True) is None
    assert refusal_reason("GET", {"host": "[::1]:7860"}, CAP, loopback_only=True) is None
    assert refusal_reason("GET", {"host": "studio.lan:7860"}, CAP, loopback_only=False) is None


def fake_services(tmp_path: Path) -> SimpleNamespace:
    store = tmp_path / "data" / "assets"
    store.mkdir(parents=True)
    (store / "ab.png").write_bytes(b"png")
    (tmp_path / "data" / "studio.db").write_bytes(b"db")
    paths = {1: store / "ab.png", 2: tmp_path / "data" / "studio.db", 3: store / ".." / "studio.db"}

    def path_of(asset_id: int) -> Path:
        if asset_id not in paths:
            raise LookupError(f"no asset {asset_id}")
        return paths[asset_id]

    return SimpleNamespace(settings=SimpleNamespace(assets_dir=store), assets=SimpleNamespace(path_of=path_of))


@pytest.mark.parametrize("ref", ["../studio.db", "/etc/passwd", "..%2fstudio.db", "ab.png", "1/../2", "-1", "", "9"])
def test_asset_references_other_than_known_ids_are_refused(tmp_path, ref):
    with pytest.raises(LookupError):
        resolve_asset_file(fake_services(tmp_path), ref)


def test_asset_rows_pointing_outside_the_store_are_refused(tmp_path):
    services = fake_services(tmp_path)
    assert resolve_asset_file(services, "1")[0].read_bytes() == b"png"
    for ref in ("2", "3"):
        with pytest.raises(LookupError):
            resolve_asset_file(services, ref)


def test_esc_leaves_no_markup_or_template_syntax():
    text = esc("${document.title} <img src=x onerror=alert(1)> {{value}} `x` \\")
    for raw in ("$", "<", ">", "{", "}", "`", "\\"):
        assert raw not in text
    assert text.startswith("&#36;&#123;document.title&#125; &lt;img")
