"""Regenerate docs/screenshot-storyboard.png: the example storyboard (assets/examples/lighthouse.yaml) generated
with the bundled demo model by a real worker, shown on the storyboard page in headless Chromium.

    .venv/bin/python tests/ui/make_screenshot.py [--out docs/screenshot-storyboard.png]

Takes a few minutes on CPU (every shot is generated). Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from studio.config import load_settings  # noqa: E402
from studio.services import build_services  # noqa: E402
from studio.services.job_specs import GenerateScene  # noqa: E402
from studio.storyboard_file import import_storyboard, parse_storyboard  # noqa: E402
from studio.ui.app import build_app  # noqa: E402
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402

EXAMPLE = ROOT / "assets" / "examples" / "lighthouse.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot-storyboard.png")
    parser.add_argument("--timeout-s", type=float, default=1200)
    args = parser.parse_args()
    from studio.worker.process import LocalWorkerProcess

    with tempfile.TemporaryDirectory(prefix="shotline-shot-") as folder:
        settings = load_settings(data_dir=Path(folder) / "data", port=free_port(), model_preset="demo")
        services = build_services(settings)
        doc = parse_storyboard(EXAMPLE.read_text(encoding="utf-8"), source=str(EXAMPLE))
        report = import_storyboard(services, doc, EXAMPLE.parent)
        project_id = report.project_id
        for scene in services.storyboard.list_scenes(project_id):
            services.jobs.enqueue(GenerateScene(scene_id=scene.id), project_id)
        worker = LocalWorkerProcess(settings, output=open(Path(folder) / "worker.log", "wb")).start()  # noqa: SIM115
        app = build_app(services)
        app.launch(prevent_thread_lock=True, quiet=True)
        try:
            deadline = time.monotonic() + args.timeout_s
            while any(not job.is_finished for job in services.jobs.list_jobs(project_id=project_id)):
                if time.monotonic() > deadline:
                    raise TimeoutError("generation did not finish in time")
                time.sleep(2)
            failed = [j for j in services.jobs.list_jobs(project_id=project_id) if j.status != "done"]
            if failed:
                print("not done:", [(j.id, j.kind, j.status, j.error) for j in failed])
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{app.local_url.rstrip('/')}/?project={project_id}")
                page.get_by_role("tab", name="Storyboard").click()
                page.wait_for_function("document.querySelectorAll('.tl-card img.tl-thumb').length >= 4")
                second = services.storyboard.film_shots(project_id)[1]
                page.locator(f".tl-card[data-shot-id='{second.id}'] button[data-action=open]").click()
                page.wait_for_selector("#sl-takes .sl-take video")
                page.wait_for_timeout(1500)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(
                    path=str(args.out), clip={"x": 0, "y": 0, "width": 1400, "height": 1400}, full_page=True
                )
                browser.close()
            print(f"wrote {args.out}")
        finally:
            app.close()
            worker.stop()
            services.close()


if __name__ == "__main__":
    main()
