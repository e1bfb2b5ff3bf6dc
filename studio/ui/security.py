"""The studio's HTTP guard rails (docs/ARCHITECTURE.md, "Security defaults"), added around the Gradio app.

Stock Gradio 6.31 answers a cross-origin `POST /gradio_api/upload` with 200, so every state-changing request goes
through `StudioGuard` first: a request whose `Origin` is another site is refused, as is one the browser marks
cross-site; a body over the upload cap is refused before it is read; and when the studio binds a loopback address
the `Host` header must name a loopback host too (a DNS-rebinding page cannot reach it). Files reach the page only
through `/studio/asset/<id>`, which serves asset-store files by numeric id and nothing else; the data folder
(database, config, models) is on Gradio's blocked list so its own `/file=` route cannot serve it either. An asset is
served inline only as a type of `INLINE_TYPES` (or audio), and only when its first bytes are that type too; anything
else is an `attachment` of type application/octet-stream, so no asset is ever rendered as HTML, SVG or script.
Every asset answer carries `X-Content-Type-Options: nosniff` and a sandboxing Content-Security-Policy.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# A multipart body carries boundaries and part headers around the file; allow that much beyond the cap.
MULTIPART_SLACK_BYTES = 64 * 1024
SPOOL_IN_MEMORY_BYTES = 1024 * 1024  # a request body beyond this waits in an anonymous temp file
REPLAY_CHUNK_BYTES = 64 * 1024
# Gradio's cache of uploaded (and served) files: every minute, files older than 15 minutes are removed (and all of
# them when the server stops); a refused upload or one already stored in the asset store does not stay there.
UPLOAD_CACHE_CLEANUP_S = (60, 15 * 60)
ASSET_ROUTE_PREFIX = "/studio/asset/"
# The types an asset may be served as inline (the row's type -> the Content-Type sent); audio/* is allowed too.
INLINE_TYPES = {
    "image/png": "image/png",
    "image/jpeg": "image/jpeg",
    "image/webp": "image/webp",
    "video/mp4": "video/mp4",
    "application/json": "application/json",
    "application/vnd.opentimelineio+json": "application/json",
}
_AUDIO_TYPE = re.compile(r"audio/[a-z0-9][a-z0-9.+-]{0,60}")
# Even if a browser were talked into rendering an asset as a page, it would get no script, no origin, no requests.
ASSET_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; media-src 'self'; img-src 'self'; sandbox",
}
TAKE_THUMBNAIL_PREFIX = "/studio/take-thumbnail/"


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """`example.com:7860` -> `example.com`; `[::1]:7860` -> `::1`."""
    return urlsplit(f"//{host_header}").hostname or ""


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def refusal_reason(
    method: str, headers: dict[str, str], upload_max_bytes: int, loopback_only: bool
) -> tuple[int, str] | None:
    """Why a request must be refused, as (status, message), or None when it may pass.

    `headers` uses lower-case names. Pure function so the rules are tested without a server.
    """
    host_header = headers.get("host", "")
    if loopback_only and host_header and not is_loopback_host(_host_name(host_header)):
        return 403, f"host {host_header!r} refused: the studio only answers on its loopback address"
    if method.upper() in SAFE_METHODS:
        return None
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or not parts.netloc or parts.netloc.lower() != host_header.lower():
            return 403, f"cross-origin request refused (origin {origin!r}, host {host_header!r})"
    elif headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return 403, "cross-origin request refused (the browser marked it cross-site)"
    length = headers.get("content-length")
    if length is not None:
        try:
            size = int(length)
        except ValueError:
            return 400, "bad Content-Length header"
        if size > upload_max_bytes + MULTIPART_SLACK_BYTES:
            return 413, f"request body of {size} bytes is over the upload cap of {upload_max_bytes} bytes"
    return None


class StudioGuard:
    """ASGI middleware applying `refusal_reason` to every HTTP request, and receiving every request body first.

    A state-changing request's body is read whole into a spool (memory up to 1 MiB, then an anonymous temp file that
    no crash can leave behind) before the app sees any of it, counted as it arrives whatever Content-Length says:
    over the cap it is answered 413 and the app never starts (Gradio writes no temp file for it); a client that goes
    away mid-body leaves nothing either. The app then reads the spooled body as if it came from the client.
    """

    def __init__(self, app: Callable, *, upload_max_bytes: int, loopback_only: bool) -> None:
        self.app = app
        self.upload_max_bytes = upload_max_bytes
        self.loopback_only = loopback_only

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
        reason = refusal_reason(method, headers, self.upload_max_bytes, self.loopback_only)
        if reason is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            status, message = reason
            await PlainTextResponse(message, status_code=status)(scope, receive, send)
            return
        if scope["type"] != "http" or method.upper() in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115 - closed below
        try:
            outcome = await self._receive_body(receive, spool)
            if outcome == "disconnected":
                return
            if outcome == "too large":
                message = f"request body is over the upload cap of {self.upload_max_bytes} bytes"
                await PlainTextResponse(message, status_code=413)(scope, receive, send)
                return
            await self.app(scope, _replay(spool, receive), send)
        finally:
            spool.close()

    async def _receive_body(self, receive: Callable, spool) -> str:
        """Read the whole body into `spool`: "complete", "too large" (the rest is read and dropped, up to another
        cap's worth, so the client gets to read the 413) or "disconnected"."""
        limit = self.upload_max_bytes + MULTIPART_SLACK_BYTES
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return "disconnected"
            body = message.get("body", b"")
            size += len(body)
            if size <= limit:
                spool.write(body)
            elif size > 2 * limit:
                return "too large"
            if not message.get("more_body", False):
                return "complete" if size <= limit else "too large"


def _replay(spool, receive: Callable) -> Callable:
    """A `receive` giving the app the spooled body in chunks, then the client's own messages (its disconnect)."""
    total = spool.seek(0, 2)
    spool.seek(0)
    finished = False

    async def replay() -> dict[str, Any]:
        nonlocal finished
        if finished:
            return await receive()
        chunk = spool.read(REPLAY_CHUNK_BYTES)
        more = spool.tell() < total
        finished = not more
        return {"type": "http.request", "body": chunk, "more_body": more}

    return replay


def _is_logged_in(request: Request) -> bool:
    """Gradio's own rule (routes.get_current_user): no auth configured, or a known access-token cookie."""
    app = request.app
    if getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None:
        return True
    cookie_id = getattr(app, "cookie_id", "")
    token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(
        f"access-token-unsecure-{cookie_id}"
    )
    return token is not None and token in getattr(app, "tokens", {})


def resolve_asset_file(services: Any, asset_ref: str) -> tuple[Path, str, str | None]:
    """(path, mime, original name) of the asset `asset_ref` names, or raise LookupError.

    Only a decimal asset id is accepted, so `../`, absolute paths and file names never reach the file system; the
    resolved path must also lie inside the asset store (a corrupted row cannot point elsewhere).
    """
    if not asset_ref.isdigit() or len(asset_ref) > 18:
        raise LookupError("asset references are numeric ids")
    asset_id = int(asset_ref)
    try:
        path = Path(services.assets.path_of(asset_id)).resolve()
    except Exception as error:  # NotFoundError and friends: the page only learns "not found"
        raise LookupError(str(error)) from None
    store = Path(services.settings.assets_dir).resolve()
    if not path.is_relative_to(store) or not path.is_file():
        raise LookupError("asset outside the asset store")
    mime, name = "application/octet-stream", None
    get = getattr(services.assets, "get", None)
    if get is not None:
        try:
            view = get(asset_id)
            mime, name = view.mime or mime, view.original_name
        except Exception:
            pass
    return path, mime, name


def served_type(stored_mime: str, head: bytes) -> str | None:
    """The Content-Type an asset is served inline as, or None: then it goes out as a download (attachment).

    Inline needs both the row's type on the allow-list and the file's first bytes of that same type, so neither a
    row written by hand nor a file swapped on disk can make the studio serve markup or script.
    """
    from studio.services.assets import is_markup, sniff_mime

    if is_markup(head):
        return None
    content = sniff_mime(head)
    if stored_mime in INLINE_TYPES:
        served = INLINE_TYPES[stored_mime]
        same = content is not None and INLINE_TYPES.get(content) == served
        return served if same else None
    if _AUDIO_TYPE.fullmatch(stored_mime) and content is not None and content.startswith("audio/"):
        return content
    return None


def asset_response(path: Path, stored_mime: str, name: str | None, download: str | None, cache: str) -> Response:
    """A FileResponse for an asset file under the serving rules of this module (see `served_type`)."""
    with path.open("rb") as reader:
        head = reader.read(4096)
    media_type = served_type(stored_mime, head)
    filename = None
    if download:
        filename = download if download not in ("1", "true") else (name or path.name)
        filename = Path(filename).name or path.name
    if media_type is None:
        media_type, filename = "application/octet-stream", Path(filename or name or path.name).name or path.name
    headers = {**ASSET_SECURITY_HEADERS, "Cache-Control": cache}
    return FileResponse(
        path, media_type=media_type, filename=filename, headers=headers, content_disposition_type="attachment"
    )


def asset_routes(services: Any) -> list[Route]:
    """The studio's file route: `GET /studio/asset/<id>` (add `?download=1` to save it under its name)."""

    async def serve_asset(request: Request) -> Response:
        if not _is_logged_in(request):
            return PlainTextResponse("log in first", status_code=401)
        try:
            path, mime, name = resolve_asset_file(services, request.path_params["asset_ref"])
        except LookupError:
            return PlainTextResponse("not found", status_code=404)
        download = request.query_params.get("download")
        return asset_response(path, mime, name, download, "private, max-age=3600")

    async def serve_take_thumbnail(request: Request) -> Response:
        # Takes never change, so a take's thumbnail URL is stable and the browser may cache it.
        if not _is_logged_in(request):
            return PlainTextResponse("log in first", status_code=401)
        take_ref = request.path_params["take_ref"]
        try:
            if not take_ref.isdigit() or len(take_ref) > 18:
                raise LookupError("take references are numeric ids")
            take = services.takes.get(int(take_ref))
            path, mime, name = resolve_asset_file(services, str(take.thumbnail_asset_id))
        except Exception:
            return PlainTextResponse("not found", status_code=404)
        return asset_response(path, mime, name, None, "private, max-age=86400, immutable")

    return [
        Route(ASSET_ROUTE_PREFIX + "{asset_ref:path}", serve_asset, methods=["GET", "HEAD"]),
        Route(TAKE_THUMBNAIL_PREFIX + "{take_ref:path}", serve_take_thumbnail, methods=["GET", "HEAD"]),
    ]


def asset_url(asset_id: int | None, download: str | None = None) -> str | None:
    if asset_id is None:
        return None
    url = f"{ASSET_ROUTE_PREFIX}{int(asset_id)}"
    if download:
        from urllib.parse import quote

        url += "?download=" + quote(download)
    return url


def take_thumbnail_url(take_id: int | None) -> str | None:
    return None if take_id is None else f"{TAKE_THUMBNAIL_PREFIX}{int(take_id)}"


def blocked_paths(settings: Any) -> list[str]:
    """What Gradio's own file route must never serve: the whole data folder (db, assets, models) and a db file
    elsewhere. Assets reach the page through `/studio/asset/<id>` only."""
    paths = [str(Path(settings.data_dir).resolve())]
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        db_file = Path(url.removeprefix("sqlite:///")).resolve()
        paths += [str(db_file), str(db_file) + "-wal", str(db_file) + "-shm"]
    for extra in (getattr(settings, "model_dir", None), getattr(settings, "face_model_dir", None)):
        if extra:
            paths.append(str(Path(extra).resolve()))
    return paths


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    if not auth:
        return None
    user, _, password = auth.partition(":")
    return user, password


def security_launch_kwargs(services: Any) -> dict[str, Any]:
    """The `Blocks.launch` arguments that apply the security defaults from the studio settings."""
    from starlette.middleware import Middleware

    settings = services.settings
    loopback_only = is_loopback_host(settings.host)
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "share": False,
        "auth": parse_auth(settings.auth),
        "max_file_size": settings.upload_max_bytes,
        "blocked_paths": blocked_paths(settings),
        "allowed_paths": [],
        "show_error": False,
        "app_kwargs": {
            "middleware": [
                Middleware(StudioGuard, upload_max_bytes=settings.upload_max_bytes, loopback_only=loopback_only)
            ],
            "routes": asset_routes(services),
        },
    }


def json_for_html(value: Any) -> str:
    """JSON safe to embed in an HTML attribute or text (no `<`, `>`, `&`, quotes, `$` or backticks raw)."""
    text = json.dumps(value, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027"), ("$", "\\u0024")):
        text = text.replace(raw, escaped)
    return text.replace("`", "\\u0060")
