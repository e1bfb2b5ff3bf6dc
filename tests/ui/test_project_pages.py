"""Projects tab (create, rename, settings, bin, restore), storyboard file export and import, and the job queue's
Cancel, in headless Chromium against the real app on SQLite."""

from __future__ import annotations

import pytest

from studio.services.job_specs import GenerateScene

pytestmark = pytest.mark.browser


def fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(text)


def title_has(page, text: str) -> None:
    page.wait_for_function(
        "(t) => { const n = document.querySelector('#sl-project-title'); return !!n && n.innerText.includes(t); }",
        arg=text,
    )


def upload_import_file(page, path) -> None:
    """Put `path` in the storyboard upload box and wait until the upload has finished (the box shows its name)."""
    page.locator("#sl-import-file input[type=file]").set_input_files(str(path))
    page.locator(f"#sl-import-file td.filename[aria-label='{path.name}']").wait_for()


def test_create_rename_settings_bin_and_restore(page, studio):
    services, base = studio
    page.goto(base)
    fill(page, "sl-new-project-name", "Alpha")
    page.locator("#sl-create-project").click()
    title_has(page, "Alpha")
    project = services.projects.get_by_name("Alpha")
    # The preset's defaults are shown beside the settings.
    assert "Defaults:" in page.locator("#sl-preset-info").inner_text()
    assert page.locator("#sl-set-fps input").input_value() == str(project.fps)
    page.get_by_text("Rename, delete, restore").click()
    fill(page, "sl-rename-box", "Beta")
    page.locator("#sl-rename-project").click()
    title_has(page, "Beta")
    assert services.projects.get(project.id).name == "Beta"
    page.locator("#sl-set-fps input").fill("12")
    fill(page, "sl-set-negative", "blurry, text")
    page.locator("#sl-save-settings").click()
    page.wait_for_function("document.querySelector('#sl-status').innerText.includes('Settings saved')")
    saved = services.projects.get(project.id)
    assert (saved.fps, saved.negative_prompt) == (12, "blurry, text")
    # A refused setting is a readable message; the project keeps its value.
    page.locator("#sl-set-fps input").fill("5000")
    page.locator("#sl-save-settings").click()
    page.get_by_text("fps", exact=False).last.wait_for()
    assert services.projects.get(project.id).fps == 12
    page.locator("#sl-delete-project").click()
    title_has(page, "No project open")
    assert services.projects.get(project.id).in_bin
    page.locator("#sl-project-bin input").click()
    page.get_by_role("option", name="Beta").click()
    page.locator("#sl-restore-project").click()
    title_has(page, "Beta")
    assert not services.projects.get(project.id).in_bin


def test_storyboard_file_round_trip(page, studio, tmp_path):
    services, base = studio
    project = services.projects.create("Lighthouse file", preset="tiny")
    scene = services.storyboard.add_scene(project.id, caption="a stormy coast")
    services.storyboard.add_shot(scene.id, "Mara climbs the stairs")
    services.storyboard.add_shot(scene.id, "the lamp turns")
    page.goto(f"{base}/?project={project.id}")
    title_has(page, "Lighthouse file")  # the page has opened the project
    page.locator("#sl-export-storyboard").click()
    # Wait for the link to this project's file itself, not just any node in the file component.
    link = page.locator("#sl-storyboard-file a[download='Lighthouse-file.yaml']")
    link.wait_for()
    with page.expect_download() as download:
        link.click()
    exported = tmp_path / "exported.yaml"
    download.value.save_as(exported)
    text = exported.read_text(encoding="utf-8")
    assert "Mara climbs the stairs" in text and "the lamp turns" in text
    # Import it back under another title: a second project with the same shots.
    renamed = tmp_path / "copy.yaml"
    renamed.write_text(text.replace("Lighthouse file", "Lighthouse copy", 1), encoding="utf-8")
    upload_import_file(page, renamed)
    page.locator("#sl-import").click()
    title_has(page, "Lighthouse copy")
    # A successful import empties the upload box: wait for that before the next upload.
    page.locator("#sl-import-file td.filename").wait_for(state="detached")
    copy = services.projects.get_by_name("Lighthouse copy")
    assert [s.caption for s in services.storyboard.film_shots(copy.id)] == ["Mara climbs the stairs", "the lamp turns"]
    # A broken file: the message names the file and the line; nothing is created.
    broken = tmp_path / "broken.yaml"
    broken.write_text("title: Broken\nscenes: [\n", encoding="utf-8")
    upload_import_file(page, broken)
    page.locator("#sl-import").click()
    page.get_by_text("broken.yaml line", exact=False).first.wait_for()
    assert "Broken" not in [p.name for p in services.projects.list()]


def test_queue_shows_jobs_and_cancels_them(page, studio):
    services, base = studio
    project = services.projects.create("Queue", preset="tiny")
    scene = services.storyboard.add_scene(project.id)
    services.storyboard.add_shot(scene.id, "one")
    job = services.jobs.enqueue(GenerateScene(scene_id=scene.id), project.id)
    page.goto(f"{base}/?project={project.id}")
    row = page.locator(f"#sl-jobs .sl-job[data-job-id='{job.id}']")
    row.wait_for()
    assert "Generate scene" in row.inner_text() and "queued" in row.inner_text()
    row.locator("button[data-action=cancel_job]").click()
    page.wait_for_selector(f"#sl-jobs .sl-job[data-job-id='{job.id}'][data-status='cancelled']")
    assert services.jobs.get(job.id).status == "cancelled"
