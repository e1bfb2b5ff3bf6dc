"""Edit latency of the storyboard page: caption edit and reorder at 5, 20 and 60 shots, in headless Chromium.

    .venv/bin/python bench/ui_latency.py [--shots 5 20 60] [--repeats 15]

Builds a studio on a temporary SQLite data folder, serves the real app (`studio.ui.app.build_app`), opens the
storyboard in Debian chromium and times, inside the page, "action to page updated" (see studio/ui/latency.py).
Prints one table; the numbers go into docs/PERFORMANCE.md (UI section).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

from studio.config import load_settings  # noqa: E402
from studio.services import build_services  # noqa: E402
from studio.ui.app import build_app  # noqa: E402
from studio.ui.latency import card_order, last_render_ms, measure_caption_edit, measure_drag, measure_move  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]


SERVER_MS: list[float] = []


def time_server_side() -> None:
    """Record the Python time of each timeline edit (apply the edit + read the new timeline) in SERVER_MS."""
    import studio.ui.board_tab as board_tab
    from studio.ui import storyboard as edits

    def timed(fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                SERVER_MS.append((time.perf_counter() - start) * 1000)

        return wrapper

    edits.apply_edit = timed(edits.apply_edit)
    board_tab.timeline_model = timed(board_tab.timeline_model)  # the timeline's edits redraw it from board_tab


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed_project(services, shots: int) -> int:
    project = services.projects.create(f"bench-{shots}", preset="tiny")
    scene = services.storyboard.add_scene(project.id, caption="a lighthouse at night")
    for index in range(shots):
        services.storyboard.add_shot(scene.id, f"shot {index + 1}: the keeper climbs the stairs")
    return project.id


def open_storyboard(page, base: str, project_name: str) -> None:
    page.goto(f"{base}/?project={project_name}")
    page.get_by_role("tab", name="Storyboard").click()
    page.wait_for_selector(".tl-card")


def summarise(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return statistics.median(ordered), p90, ordered[-1]


def run(shot_counts: list[int], repeats: int) -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="shotline-bench-") as folder:
        settings = load_settings(data_dir=Path(folder) / "data", port=free_port())
        services = build_services(settings)
        projects = {count: seed_project(services, count) for count in shot_counts}
        time_server_side()
        app = build_app(services)
        app.launch(prevent_thread_lock=True, quiet=True)
        base = app.local_url.rstrip("/")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                for count in shot_counts:
                    open_storyboard(page, base, f"bench-{count}")
                    order = card_order(page)
                    assert len(order) == count, (count, len(order))
                    middle = order[len(order) // 2]
                    measure_caption_edit(page, middle, "warm-up")  # first event pays one-off costs
                    SERVER_MS.clear()
                    edits = [measure_caption_edit(page, middle, f"caption {i} {time.time()}") for i in range(repeats)]
                    edit_server = sum(SERVER_MS) / repeats
                    SERVER_MS.clear()
                    moves = [measure_move(page, middle, "right" if i % 2 == 0 else "left") for i in range(repeats)]
                    move_server = sum(SERVER_MS) / repeats
                    SERVER_MS.clear()
                    drags = []
                    for i in range(repeats):
                        now = card_order(page)
                        first, last = now[0], now[-1]
                        # Alternately the last card to the front and the first card to the end.
                        drags.append(
                            measure_drag(page, last, first, after=False)
                            if i % 2 == 0
                            else measure_drag(page, first, last, after=True)
                        )
                    drag_server = sum(SERVER_MS) / repeats
                    assert sorted(card_order(page)) == sorted(order)  # nothing lost
                    render = last_render_ms(page)
                    assert sorted(card_order(page)) == sorted(order)  # nothing lost
                    rows.append((count, "caption edit", *summarise(edits), edit_server, render))
                    rows.append((count, "reorder (move button)", *summarise(moves), move_server, render))
                    rows.append((count, "reorder (drag and drop)", *summarise(drags), drag_server, render))
                    del projects[count]
                browser.close()
        finally:
            app.close()
            services.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 20, 60])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rows = run(args.shots, args.repeats)
    print(
        f"UI edit latency, action to page updated (ms), {args.repeats} repeats; {platform.machine()}, "
        f"{platform.python_version()}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'shots':>5}  {'edit':<24} {'median':>8} {'p90':>8} {'max':>8} {'server':>8} {'redraw':>8}")
    for count, name, median, p90, worst, server, render in rows:
        print(f"{count:>5}  {name:<24} {median:>8.1f} {p90:>8.1f} {worst:>8.1f} {server:>8.1f} {render:>8.1f}")


if __name__ == "__main__":
    main()
