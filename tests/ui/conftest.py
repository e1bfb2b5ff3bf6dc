"""Browser harness: Debian chromium driven by Playwright against real Gradio apps served on a free local port.

Browser tests carry `@pytest.mark.browser` and are skipped with a reason when /usr/bin/chromium is missing
(`apt-get install -y chromium`). Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("STUDIO_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(blocks, **kwargs) -> str:
    """Launch `blocks` in this process on a free loopback port without blocking; returns its base URL."""
    kwargs.setdefault("server_name", "127.0.0.1")
    kwargs.setdefault("server_port", free_port())
    kwargs.setdefault("quiet", True)
    kwargs.setdefault("ssr_mode", False)
    blocks.launch(prevent_thread_lock=True, **kwargs)
    return blocks.local_url.rstrip("/")


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"chromium not found at {CHROMIUM}: run `apt-get install -y chromium` to run browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """The studio page (UI only, no worker) on a fresh data folder and a free port: `(services, base URL)`. A test
    module that needs another set-up defines its own `studio`."""
    from studio.config import load_settings
    from studio.services import build_services
    from studio.ui.app import build_app

    settings = load_settings(data_dir=tmp_path_factory.mktemp("studio") / "data", port=free_port())
    services = build_services(settings)
    app = build_app(services)
    app.launch(prevent_thread_lock=True, quiet=True)
    yield services, app.local_url.rstrip("/")
    app.close()
    services.close()


def project_with_shots(services, name: str, count: int):
    """A tiny-preset project with one scene of `count` shots: (project, scene, shot ids)."""
    project = services.projects.create(name, preset="tiny")
    scene = services.storyboard.add_scene(project.id, caption="the harbour")
    shots = [services.storyboard.add_shot(scene.id, f"shot {i + 1}").id for i in range(count)]
    return project, scene, shots


def open_board(page, base: str, project_id: int) -> None:
    """Open a project's Storyboard tab and wait for its cards."""
    page.goto(f"{base}/?project={project_id}")
    page.get_by_role("tab", name="Storyboard").click()
    page.wait_for_selector(".tl-card")


class PageWatch:
    """What the page did that a test must know about: dialogs opened (an XSS would open one), page errors."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.console: list[str] = []


@pytest.fixture
def page(browser, request) -> Iterator:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    watch = PageWatch()
    page.on("dialog", lambda dialog: (watch.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    page.on("console", lambda message: watch.console.append(f"{message.type}: {message.text}"))
    page.watch = watch
    page.set_default_timeout(20_000)
    yield page
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"), full_page=True)
        log = "\n".join(watch.console + [f"pageerror: {e}" for e in watch.errors])
        (ARTIFACTS / f"failed-{request.node.name}.console.txt").write_text(log, encoding="utf-8")
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
