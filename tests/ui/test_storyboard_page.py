"""Storyboard page features beyond the card edits: the shot inspector (characters, frames, size, transition), move
between scenes, scene caption, insert, generate selected shots, regenerate with a new caption, live job progress and
training from the Characters tab. No worker runs here: jobs are checked in the queue as the page enqueued them."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from studio.services.job_specs import ExportFilm, job_spec, spec_of
from studio.ui.latency import card_order
from tests.core_services.helpers import add_take
from tests.ui.conftest import open_board, project_with_shots

pytestmark = pytest.mark.browser


def pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def png(colour: tuple[int, int, int] = (200, 120, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_inspector_sets_characters_frames_size_and_transition(page, studio):
    services, base = studio
    project, scene, shots = project_with_shots(services, "inspector", 2)
    mara = services.characters.create(project.id, "Mara")
    open_board(page, base, project.id)
    page.locator(f".tl-card[data-shot-id='{shots[1]}'] button[data-action=open]").click()
    page.wait_for_function("document.querySelector('#sl-shot-title').innerText.includes('Shot')")
    page.locator("#sl-shot-characters").get_by_label("Mara").check()
    page.locator("#sl-shot-frames input").fill("17")
    pick(page, "sl-shot-size", "close-up")
    pick(page, "sl-shot-transition", "dissolve")
    page.locator("#sl-shot-transition-s input").fill("0.5")
    page.locator("#sl-save-shot").click()
    page.wait_for_function("document.querySelector('#sl-status').innerText.includes('Shot saved')")
    shot = services.storyboard.get_shot(shots[1])
    assert shot.character_ids == (mara.id,) and shot.num_frames == 17 and shot.shot_size == "close-up"
    assert (shot.transition_type, shot.transition_seconds) == ("dissolve", 0.5)
    meta = page.locator(f".tl-card[data-shot-id='{shots[1]}'] .tl-meta").inner_text()
    assert "Mara" in meta and "17 f" in meta and "close-up" in meta and "dissolve 0.5 s" in meta
    # A value the service refuses (frames must be 4n+1) is a message; the shot keeps its frames.
    page.locator("#sl-shot-frames input").fill("18")
    page.locator("#sl-save-shot").click()
    page.get_by_text("frames", exact=False).last.wait_for()
    assert services.storyboard.get_shot(shots[1]).num_frames == 17


def test_scene_caption_insert_and_move_between_scenes(page, studio):
    services, base = studio
    project, scene, shots = project_with_shots(services, "scenes", 2)
    open_board(page, base, project.id)
    caption = page.locator(".tl-scene-caption").first
    caption.fill("a harbour at dawn, mist")
    caption.press("Enter")
    page.wait_for_function("document.querySelector('.tl-scene').dataset.savedCaption === 'a harbour at dawn, mist'")
    assert services.storyboard.get_scene(scene.id).caption == "a harbour at dawn, mist"
    page.locator(f".tl-card[data-shot-id='{shots[0]}'] button[data-action=insert]").click()
    page.wait_for_function("document.querySelectorAll('.tl-card').length === 3")
    live = services.storyboard.get_scene(scene.id).shots
    assert [s.id for s in live][0] == shots[0] and [s.id for s in live][2] == shots[1]
    page.locator("#sl-new-scene-caption textarea, #sl-new-scene-caption input").first.fill("the lighthouse at night")
    page.locator("#sl-add-scene").click()
    page.wait_for_function("document.querySelectorAll('.tl-scene').length === 2")
    second = services.storyboard.list_scenes(project.id)[1]
    assert second.caption == "the lighthouse at night" and len(second.shots) == 1
    target = page.locator(".tl-scene").nth(1).locator(".tl-shots")
    page.locator(f".tl-card[data-shot-id='{shots[1]}'] .tl-meta").drag_to(target)
    page.wait_for_function(
        f"document.querySelectorAll('.tl-scene')[1].querySelector(\".tl-card[data-shot-id='{shots[1]}']\") !== null"
    )
    assert services.storyboard.get_shot(shots[1]).scene_id == second.id
    assert card_order(page) == [s.id for s in services.storyboard.film_shots(project.id)]


def test_generate_selected_and_regenerate_with_a_new_caption(page, studio):
    services, base = studio
    project, scene, shots = project_with_shots(services, "generate", 3)
    open_board(page, base, project.id)
    for shot_id in (shots[0], shots[2]):
        page.locator(f".tl-card[data-shot-id='{shot_id}'] .tl-pick").check()
    page.wait_for_timeout(300)
    page.locator("#sl-generate-selected").click()
    page.wait_for_function("document.querySelector('#sl-status').innerText.includes('Generation queued')")
    jobs = services.jobs.list_jobs(project_id=project.id)
    assert len(jobs) == 1 and jobs[0].kind == "generate_scene"
    assert jobs[0].payload["scene_id"] == scene.id and sorted(jobs[0].payload["shot_ids"]) == [shots[0], shots[2]]
    page.locator(f".tl-card[data-shot-id='{shots[1]}'] button[data-action=open]").click()
    page.wait_for_function("document.querySelector('#sl-shot-title').innerText.includes('Shot')")
    page.locator("#sl-shot-caption textarea, #sl-shot-caption input").first.fill("close-up, a new idea")
    page.locator("#sl-regen-caption").click()
    page.wait_for_function("document.querySelector('#sl-status').innerText.includes('Regeneration queued')")
    regen = [job for job in services.jobs.list_jobs(project_id=project.id) if job.kind == "regenerate_shot"]
    assert len(regen) == 1 and regen[0].payload["shot_id"] == shots[1]
    assert services.storyboard.get_shot(shots[1]).caption == "close-up, a new idea"
    assert [s.caption for s in services.storyboard.get_scene(scene.id).shots][::2] == ["shot 1", "shot 3"]


def test_queue_shows_live_progress_and_eta(page, studio):
    services, base = studio
    project, scene, _ = project_with_shots(services, "progress", 1)
    payload = {"project_id": project.id, "scene_id": scene.id}
    job = services.jobs.enqueue(
        job_spec("generate_scene", payload), project.id, priority=10
    )  # claimed before other tests'
    page.goto(f"{base}/?project={project.id}")
    page.wait_for_selector(f"#sl-jobs .sl-job[data-job-id='{job.id}'][data-status='queued']")
    claimed = services.jobs.claim_next_job("test-worker")
    assert claimed.id == job.id
    services.jobs.report_progress(job.id, 0.5, "step 5/10", step=5, total=10, eta_s=75)
    row = page.locator(f"#sl-jobs .sl-job[data-job-id='{job.id}'][data-status='running']")
    row.wait_for(timeout=15_000)
    page.wait_for_function(
        f"document.querySelector(\"#sl-jobs .sl-job[data-job-id='{job.id}']\").innerText.includes('ETA 1:15')"
    )
    assert "50%" in row.inner_text() and "step 5/10" in row.inner_text()
    services.jobs.finish(job.id, {})
    page.wait_for_selector(f"#sl-jobs .sl-job[data-job-id='{job.id}'][data-status='done']", timeout=15_000)


def test_train_button_queues_training_for_the_open_character(page, studio):
    services, base = studio
    project, _, _ = project_with_shots(services, "training", 1)
    mara = services.characters.create(project.id, "Mara")
    services.characters.add_reference(mara.id, "mara.png", png())
    page.goto(f"{base}/?project={project.id}")
    page.get_by_role("tab", name="Characters").click()
    page.locator(f"#sl-characters .sl-card[data-character-id='{mara.id}'] button[data-action=open_character]").click()
    page.wait_for_selector("#sl-references .sl-ref")
    assert "No adapter yet" in page.locator("#sl-adapter-status").inner_text()
    page.locator("#sl-train").click()
    page.wait_for_function("document.querySelector('#sl-status').innerText.includes('Training queued')")
    jobs = [job for job in services.jobs.list_jobs(project_id=project.id) if job.kind == "train_adapter"]
    assert len(jobs) == 1 and jobs[0].payload["character_id"] == mara.id and jobs[0].payload["kind"] == "lora"
    # The character's panel shows the training job's progress bar while it runs (the timer refreshes it).
    page.wait_for_selector(f"#sl-adapter-status .sl-training[data-job-id='{jobs[0].id}']")
    assert "0%" in page.locator("#sl-adapter-status").inner_text()


def test_a_deleted_scene_comes_back_from_the_bin_with_its_shots(page, studio):
    services, base = studio
    project, scene, shots = project_with_shots(services, "scene bin", 2)
    other = services.storyboard.add_scene(project.id, caption="the second scene")
    kept = services.storyboard.add_shot(other.id, "kept").id
    open_board(page, base, project.id)
    page.locator(".tl-scene").first.locator("button[data-action=delete_scene]").click()
    page.wait_for_function("document.querySelectorAll('.tl-scene').length === 1")
    assert card_order(page) == [kept]
    assert "the harbour (2 shots)" in page.locator(".tl-bin").inner_text()
    page.locator(".tl-bin-scene button[data-action=restore_scene]").click()
    page.wait_for_function("document.querySelectorAll('.tl-scene').length === 2")
    assert [s.id for s in services.storyboard.film_shots(project.id)] == [*shots, kept]
    assert card_order(page) == [*shots, kept]


def test_export_queues_a_film_job_with_its_settings(page, studio):
    services, base = studio
    project, _, _ = project_with_shots(services, "export settings", 1)
    page.goto(f"{base}/?project={project.id}")
    page.get_by_role("tab", name="Export").click()
    page.locator("#sl-export-fade input").fill("2.5")
    page.locator("#sl-export-placeholder input").check()
    page.locator("#sl-export").click()
    page.wait_for_function("document.querySelector('#sl-status').innerText.includes('Export queued')")
    jobs = [job for job in services.jobs.list_jobs(project_id=project.id) if job.kind == "export_film"]
    assert len(jobs) == 1
    assert jobs[0].project_id == project.id
    assert spec_of(jobs[0]) == ExportFilm(music_fade_seconds=2.5, placeholder=True)


def test_scene_moves_later_and_earlier_with_its_shots(page, studio):
    services, base = studio
    project, first, shots = project_with_shots(services, "scene order", 1)
    second = services.storyboard.add_scene(project.id, caption="the lighthouse")
    other = services.storyboard.add_shot(second.id, "inside").id
    open_board(page, base, project.id)
    page.locator(f".tl-scene[data-scene-id='{first.id}'] button[data-action=scene_right]").click()
    page.wait_for_function(f"document.querySelector('.tl-scene').dataset.sceneId === '{second.id}'")
    assert [s.id for s in services.storyboard.list_scenes(project.id)] == [second.id, first.id]
    assert card_order(page) == [other, shots[0]] == [s.id for s in services.storyboard.film_shots(project.id)]
    assert page.locator(".tl-scene-label").first.inner_text().startswith("Scene 1 · ")  # and its running time
    page.locator(f".tl-scene[data-scene-id='{first.id}'] button[data-action=scene_left]").click()
    page.wait_for_function(f"document.querySelector('.tl-scene').dataset.sceneId === '{first.id}'")
    assert [s.id for s in services.storyboard.list_scenes(project.id)] == [first.id, second.id]


def test_a_job_queued_elsewhere_shows_running_and_done(page, studio):
    """A job the page did not queue (CLI, another tab, the worker's follow-up) shows as soon as it exists."""
    services, base = studio
    project, scene, _ = project_with_shots(services, "elsewhere", 1)
    page.goto(f"{base}/?project={project.id}")
    page.wait_for_function("(document.querySelector('#sl-jobs')?.innerText || '').includes('No jobs yet')")
    payload = {"project_id": project.id, "scene_id": scene.id}
    job = services.jobs.enqueue(job_spec("generate_scene", payload), project.id, priority=20)
    row = f"#sl-jobs .sl-job[data-job-id='{job.id}']"
    page.wait_for_selector(f"{row}[data-status='queued']", timeout=15_000)
    assert services.jobs.claim_next_job("cli-worker").id == job.id
    services.jobs.report_progress(job.id, 0.5, "step 5/10", step=5, total=10)
    page.wait_for_selector(f"{row}[data-status='running']", timeout=15_000)
    page.wait_for_function(f"(document.querySelector(\"{row}\")?.innerText || '').includes('running 0:')")
    assert "50%" in page.locator(row).inner_text()
    services.jobs.finish(job.id, {})
    page.wait_for_selector(f"{row}[data-status='done']", timeout=15_000)


def test_picking_a_reference_loads_its_caption_at_once_and_keeps_what_is_typed(page, studio):
    services, base = studio
    project, _, _ = project_with_shots(services, "reference pick", 1)
    kai = services.characters.create(project.id, "Kai")
    services.characters.add_reference(kai.id, "kai_1.png", png())
    services.characters.add_reference(kai.id, "kai_2.png", png((0, 128, 128)), caption="wide shot, <kai> waits ${x}")
    page.goto(f"{base}/?project={project.id}")
    page.get_by_role("tab", name="Characters").click()
    page.locator(f"#sl-characters .sl-card[data-character-id='{kai.id}'] button[data-action=open_character]").click()
    page.wait_for_selector("#sl-references .sl-ref")
    pick(page, "sl-ref-choice", "2. kai_2.png")
    box = page.locator("#sl-ref-caption textarea")
    assert box.input_value() == "wide shot, <kai> waits ${x}"  # loaded in the page: no round trip, nothing to wait for
    pick(page, "sl-ref-choice", "1. kai_1.png")
    box.fill("close-up shot, <kai> stays still")  # typed at once: a late answer from the server must not replace it
    page.wait_for_timeout(1500)
    assert box.input_value() == "close-up shot, <kai> stays still"
    page.locator("#sl-ref-caption-save").click()
    page.wait_for_function("document.querySelector('#sl-status').innerText.includes('Caption of kai_1.png saved')")
    assert services.characters.list_references(kai.id)[0].caption == "close-up shot, <kai> stays still"


def test_the_shot_editor_shows_once_a_shot_is_open_and_a_random_seed_stays_random(page, studio):
    services, base = studio
    project, _, shots = project_with_shots(services, "closed panel", 2)
    services.storyboard.update_shot(shots[0], seed=7)
    open_board(page, base, project.id)
    assert not page.locator("#sl-shot-frames").is_visible()  # nothing open: no fields (an empty Number shows 0)
    page.locator(f".tl-card[data-shot-id='{shots[0]}'] button[data-action=open]").click()
    page.wait_for_function("document.querySelector('#sl-shot-seed input')?.value === '7'")
    page.locator(f".tl-card[data-shot-id='{shots[1]}'] button[data-action=open]").click()  # no seed: random
    page.wait_for_function("document.querySelector('#sl-shot-title').innerText.includes('Shot #2')")
    page.locator("#sl-shot-caption textarea, #sl-shot-caption input").first.fill("shot 2, wider")
    page.locator("#sl-save-shot").click()
    page.wait_for_function("document.querySelector('#sl-status').innerText.includes('Shot saved')")
    saved = services.storyboard.film_shots(project.id)[1]
    assert saved.caption == "shot 2, wider" and saved.seed is None  # saving the caption did not fix the seed at 0


def test_the_open_shot_panel_follows_a_card_moved_on_the_timeline(page, studio):
    services, base = studio
    project, _, shots = project_with_shots(services, "panel follows", 3)
    services.storyboard.add_shot(services.storyboard.add_scene(project.id, "the second scene").id, "far away")
    open_board(page, base, project.id)
    page.wait_for_timeout(2500)  # past the timer's first refresh, which would redraw everything anyway
    page.locator(f".tl-card[data-shot-id='{shots[0]}'] button[data-action=open]").click()
    page.wait_for_function("document.querySelector('#sl-shot-title').innerText.includes('Shot #1')")
    page.locator("#sl-shot-caption textarea, #sl-shot-caption input").first.fill("typed, not saved")
    page.locator(f".tl-card[data-shot-id='{shots[0]}'] button[data-action=right]").click()  # right after opening
    page.wait_for_function("document.querySelector('#sl-shot-title').innerText.includes('Shot #2')")  # as its card
    assert "Shot #2" in page.locator("#sl-takes").inner_text()
    assert page.locator("#sl-shot-caption textarea").input_value() == "typed, not saved"  # the fields left alone
    pick(page, "sl-move-scene", "Scene 2")  # "Move to scene" renumbers it too
    page.locator("#sl-move-shot").click()
    page.wait_for_function("document.querySelector('#sl-shot-title').innerText.includes('Shot #4')")


def test_a_card_says_when_its_chosen_take_was_made_from_another_version_of_it(page, studio):
    services, base = studio
    project, _, shots = project_with_shots(services, "drift", 2)
    add_take(services, shots[0])
    add_take(services, shots[1])
    services.storyboard.update_shot(shots[0], num_frames=5)  # edited after its take was made
    open_board(page, base, project.id)
    drift = page.locator(f".tl-card[data-shot-id='{shots[0]}'] .tl-drift")
    assert drift.inner_text() == "\u26a0 take is 9 frames, the shot 5"
    assert page.locator(f".tl-card[data-shot-id='{shots[1]}'] .tl-drift").inner_text() == ""
    box = page.locator(f".tl-card[data-shot-id='{shots[1]}'] img.tl-thumb").bounding_box()
    project = services.projects.get(project.id)
    assert abs(box["width"] / box["height"] - project.width / project.height) < 0.05  # the film's shape, not 16:9
