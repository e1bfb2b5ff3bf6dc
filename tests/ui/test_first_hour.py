"""The page as a film-maker finds it in a first hour: edits made in two places, double clicks, reloads, cancelled
trainings and refused files. No worker runs here: jobs are read from the queue as the page enqueued them (a test that
needs a job to end claims and finishes it itself)."""

from __future__ import annotations

import pytest

from tests.ui.conftest import open_board, project_with_shots

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def no_jobs_left_over(studio):
    """Each test claims the jobs it queued: what one leaves queued must not be the next one's first claim."""
    yield
    services, _ = studio
    for job in services.jobs.list_jobs():
        if not job.is_finished:
            services.jobs.request_cancel(job.id)
            if job.status == "running":
                services.jobs.mark_cancelled(job.id)


def status_says(page, text: str) -> None:
    page.wait_for_function("(t) => document.querySelector('#sl-status').innerText.includes(t)", arg=text)


def card_caption(page, shot_id: int):
    return page.locator(f".tl-card[data-shot-id='{shot_id}'] .tl-caption")


def commit_card_caption(page, shot_id: int, text: str) -> None:
    field = card_caption(page, shot_id)
    field.fill(text)
    field.press("Enter")


def test_regenerate_with_this_caption_keeps_a_card_edit_made_after_the_panel_opened(page, studio):
    services, base = studio
    project, _, shots = project_with_shots(services, "regenerate stale", 2)
    open_board(page, base, project.id)
    page.locator(f".tl-card[data-shot-id='{shots[0]}'] button[data-action=open]").click()
    page.wait_for_function("document.querySelector('#sl-shot-title').innerText.includes('Shot #1')")
    panel_box = page.locator("#sl-shot-caption textarea, #sl-shot-caption input").first
    assert panel_box.input_value() == "shot 1"
    # the caption is rewritten on the card while the panel still shows the old one
    commit_card_caption(page, shots[0], "close-up, the keeper lights the lamp")
    page.wait_for_function(
        "(id) => document.querySelector(`.tl-card[data-shot-id='${id}']`).dataset.savedCaption.includes('keeper')",
        arg=shots[0],
    )
    page.locator("#sl-regen-caption").click()
    status_says(page, "Regeneration queued")
    assert services.storyboard.get_shot(shots[0]).caption == "close-up, the keeper lights the lamp"
    page.wait_for_function("document.querySelector('#sl-shot-caption textarea').value.includes('keeper')")
    # A caption typed in the panel while the card changed too is refused, both edits kept.
    commit_card_caption(page, shots[0], "wide shot, the lamp turns")
    page.wait_for_function(
        "(id) => document.querySelector(`.tl-card[data-shot-id='${id}']`).dataset.savedCaption.includes('turns')",
        arg=shots[0],
    )
    panel_box.fill("medium shot, a ship passes")
    page.locator("#sl-regen-caption").click()
    page.get_by_text("changed elsewhere", exact=False).first.wait_for()
    assert services.storyboard.get_shot(shots[0]).caption == "wide shot, the lamp turns"
    assert panel_box.input_value() == "medium shot, a ship passes"


def test_a_double_click_on_generate_scene_queues_it_once(page, studio):
    services, base = studio
    project, scene, shots = project_with_shots(services, "double click", 2)
    open_board(page, base, project.id)
    generate = page.locator(f".tl-scene[data-scene-id='{scene.id}'] button[data-action=generate_scene]")
    generate.dblclick()
    # "generation queued", or "not queued twice" when the second click reached the server before the first answer
    status_says(page, "queued")
    generate.click()  # the same request once more, after the first was answered: joined, never a second job
    status_says(page, "not queued twice")
    jobs = [job for job in services.jobs.list_jobs(project_id=project.id) if job.kind == "generate_scene"]
    assert len(jobs) == 1 and jobs[0].payload["target_shot_ids"] == sorted(shots)
    # a regeneration of one of those shots would make it a second take from the same storyboard: refused
    page.locator(f".tl-card[data-shot-id='{shots[1]}'] button[data-action=regenerate]").click()
    page.wait_for_function("document.querySelector('#sl-status').innerText.includes('already being generated')")
    assert [job.kind for job in services.jobs.list_jobs(project_id=project.id)] == ["generate_scene"]
    # ... and from the panel with a new caption: refused before the caption is changed
    page.locator(f".tl-card[data-shot-id='{shots[1]}'] button[data-action=open]").click()
    page.wait_for_function("document.querySelector('#sl-shot-title').innerText.includes('Shot #2')")
    page.locator("#sl-shot-caption textarea, #sl-shot-caption input").first.fill("close-up, a new idea")
    page.locator("#sl-regen-caption").click()
    page.wait_for_function(  # the toast (the status line said it already, of the card's click)
        "Array.from(document.querySelectorAll('body *')).some(n => !n.children.length && !n.closest('#sl-status')"
        " && !n.closest('#sl-timeline') && n.textContent.includes('already being generated'))"
    )
    assert services.storyboard.get_shot(shots[1]).caption == "shot 2"
    assert len(services.jobs.list_jobs(project_id=project.id)) == 1
    # once it is over, the scene can be generated again
    services.jobs.request_cancel(jobs[0].id)
    page.locator(f".tl-scene[data-scene-id='{scene.id}'] button[data-action=generate_scene]").click()
    status_says(page, "generation queued")
    assert len(services.jobs.list_jobs(project_id=project.id)) == 2


def test_two_tabs_editing_one_card_caption_the_later_one_is_told(browser, studio):
    services, base = studio
    project, _, shots = project_with_shots(services, "two tabs", 1)
    # a window each: two pages of one window share its focus, and the one in the background gets no focus events
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    try:
        first, second = (context.new_page() for context in contexts)
        open_board(first, base, project.id)
        open_board(second, base, project.id)
        commit_card_caption(first, shots[0], "wide shot, fog on the water")
        first.wait_for_function("document.querySelector('.tl-status').innerText.includes('caption saved')")
        # the second tab still shows "shot 1": its edit is refused, quoting the other one, and its text stays
        commit_card_caption(second, shots[0], "close-up, a gull lands")
        second.wait_for_function("document.querySelector('.tl-status').innerText.includes('changed elsewhere')")
        assert "fog on the water" in second.locator(".tl-status").inner_text()
        assert services.storyboard.get_shot(shots[0]).caption == "wide shot, fog on the water"
        second.wait_for_timeout(1500)  # a timer redraw or two
        assert card_caption(second, shots[0]).input_value() == "close-up, a gull lands"
        # committing it again, having read the message, saves it over the other
        card_caption(second, shots[0]).press("Enter")
        for _ in range(120):
            if services.storyboard.get_shot(shots[0]).caption == "close-up, a gull lands":
                break
            second.wait_for_timeout(250)
        state = second.evaluate(
            "[document.querySelector('.tl-status').innerText, document.querySelector('.tl-caption').value,"
            " document.querySelector('.tl-card').dataset.savedCaption, document.activeElement.className]"
        )
        assert services.storyboard.get_shot(shots[0]).caption == "close-up, a gull lands", state
        assert not card_caption(second, shots[0]).evaluate("box => box.classList.contains('tl-unsaved')")
    finally:
        for context in contexts:
            context.close()


def test_a_refused_long_caption_stays_in_its_card(page, studio):
    services, base = studio
    project, _, shots = project_with_shots(services, "long caption", 1)
    open_board(page, base, project.id)
    long_text = "a very long caption " * 250  # 5,000 characters
    commit_card_caption(page, shots[0], long_text)
    page.wait_for_function("document.querySelector('.tl-status').classList.contains('tl-refused')")
    page.wait_for_timeout(1500)
    assert card_caption(page, shots[0]).input_value() == long_text
    assert services.storyboard.get_shot(shots[0]).caption == "shot 1"


def test_a_reload_during_a_generation_reopens_the_project_and_its_jobs(page, studio):
    services, base = studio
    project, scene, _ = project_with_shots(services, "reload one", 1)
    project_with_shots(services, "reload other", 1)  # two projects: the page cannot guess which
    page.goto(base)
    page.get_by_role("tab", name="Projects").click()
    page.locator("#sl-project-pick input").click()
    page.get_by_role("option", name="reload one", exact=True).click()
    page.wait_for_function("(document.querySelector('#sl-project-title')?.innerText || '').includes('reload one')")
    page.get_by_role("tab", name="Storyboard").click()
    page.locator(f".tl-scene[data-scene-id='{scene.id}'] button[data-action=generate_scene]").click()
    status_says(page, "generation queued")
    job = services.jobs.list_jobs(project_id=project.id)[0]
    services.jobs.claim_next_job("test-worker")
    services.jobs.report_progress(job.id, 0.3, "denoising step 3/10", step=3, total=10)
    page.reload()
    page.wait_for_function("(document.querySelector('#sl-project-title')?.innerText || '').includes('reload one')")
    row = page.locator(f"#sl-jobs .sl-job[data-job-id='{job.id}'][data-status='running']")
    row.wait_for()
    assert "30%" in row.inner_text()
    services.jobs.finish(job.id, {})


def test_cancelling_the_training_a_generation_waits_for_fails_it_with_that_reason(page, studio):
    from studio.worker.process import Worker
    from tests.core_services.helpers import png_bytes

    services, base = studio
    project = services.projects.create("called off", preset="tiny", width=32, height=32, steps=2)
    kai = services.characters.create(project.id, "Kai", adapter_kind="lora")
    services.characters.add_reference(kai.id, "kai.png", png_bytes(64, 64))
    scene = services.storyboard.add_scene(project.id, "snow")
    shot = services.storyboard.add_shot(scene.id, "Kai waves", characters=[kai.id], num_frames=5)
    open_board(page, base, project.id)
    page.locator(f".tl-scene[data-scene-id='{scene.id}'] button[data-action=generate_scene]").click()
    status_says(page, "after the adapter training it needs")
    jobs = {job.kind: job for job in services.jobs.list_jobs(project_id=project.id)}
    page.locator(f"#sl-jobs .sl-job[data-job-id='{jobs['train_adapter'].id}'] button[data-action=cancel_job]").click()
    page.wait_for_selector(f"#sl-jobs .sl-job[data-job-id='{jobs['train_adapter'].id}'][data-status='cancelled']")
    Worker(services, worker_id="page-worker", kinds=("generate_scene",), poll_interval_s=0.01).run_once()
    row = f"#sl-jobs .sl-job[data-job-id='{jobs['generate_scene'].id}']"
    page.wait_for_selector(f"{row}[data-status='failed']")
    text = page.locator(row).inner_text()
    assert "the training of Kai's LoRA it waited for" in text and "was cancelled" in text
    assert services.takes.list_takes(shot.id) == []


def test_a_music_file_without_audio_is_refused_at_once_by_its_name(page, studio, tmp_path):
    from tests.core_services.helpers import add_take

    services, base = studio
    project, _, shots = project_with_shots(services, "bad music", 1)
    add_take(services, shots[0])
    notes = tmp_path / "notes.mp3"
    notes.write_text("la la la, the words of the song\n", encoding="utf-8")
    page.goto(f"{base}/?project={project.id}")
    page.get_by_role("tab", name="Export").click()
    page.locator("#sl-export-music input[type=file]").set_input_files(str(notes))
    page.locator("#sl-export-music").get_by_text("notes.mp3").wait_for()
    page.locator("#sl-export").click()
    page.get_by_text("notes.mp3 has no audio ffmpeg can read", exact=False).first.wait_for()
    page.wait_for_timeout(500)
    assert "Export queued" not in page.locator("#sl-status").inner_text()
    assert [job.kind for job in services.jobs.list_jobs(project_id=project.id)] == []


def test_a_take_is_deleted_to_the_shot_bin_and_restored_on_the_page(page, studio):
    from tests.core_services.helpers import add_take

    services, base = studio
    project, _, shots = project_with_shots(services, "take bin page", 1)
    first, second = add_take(services, shots[0], seed=1), add_take(services, shots[0], seed=2)
    open_board(page, base, project.id)
    page.locator(f".tl-card[data-shot-id='{shots[0]}'] button[data-action=open]").click()
    page.wait_for_selector(f"#sl-takes .sl-take[data-take-id='{second.id}']")
    page.locator(f"#sl-takes .sl-take[data-take-id='{first.id}'] button[data-action=delete_take]").click()
    status_says(page, "Take 1 moved to the shot's take bin")
    page.wait_for_selector(f"#sl-takes .sl-bin-take[data-take-id='{first.id}']")
    assert page.locator(f"#sl-takes .sl-take[data-take-id='{first.id}']").count() == 0
    assert [t.id for t in services.takes.list_takes(shots[0])] == [second.id]
    page.wait_for_function(
        "(id) => document.querySelector(`.tl-card[data-shot-id='${id}'] .tl-meta`).innerText.includes('1 take')",
        arg=shots[0],
    )
    page.locator(f"#sl-takes .sl-bin-take[data-take-id='{first.id}'] button[data-action=restore_take]").click()
    page.wait_for_selector(f"#sl-takes .sl-take[data-take-id='{first.id}']")
    assert [t.id for t in services.takes.list_takes(shots[0])] == [first.id, second.id]


def test_numbers_read_as_the_page_shows_them_and_takes_show_their_thumbnail(page, studio):
    from tests.core_services.helpers import add_take

    services, base = studio
    other, _, _ = project_with_shots(services, "numbers elsewhere", 1)
    services.exports.create(other.id, None, {}, b"another project's film")
    project, _, shots = project_with_shots(services, "numbers", 2)
    mara = services.characters.create(project.id, "Mara")
    services.storyboard.update_shot(shots[1], characters=[mara.id])
    take = add_take(services, shots[1])
    services.takes.set_identity_scores(take.id, {"Mara": 0.61})
    for film in (b"first film", b"second film"):
        services.exports.create(project.id, None, {}, film)
    page.goto(f"{base}/?project={project.id}")
    # exports numbered within the project: 1 and 2, whatever the other project exported
    page.get_by_role("tab", name="Export").click()
    exports = page.locator("#sl-exports")
    exports.get_by_text("Export 2").wait_for()
    assert [e.inner_text() for e in exports.locator("b").all()] == ["Export 2", "Export 1"]
    assert exports.locator("a[href$='download=numbers-1.mp4']").count() == 1
    # the identity table names the shot as its card does (#2), not by its database id
    page.get_by_role("tab", name="Characters").click()
    page.locator(f"#sl-characters [data-character-id='{mara.id}'] button[data-action=open_character]").click()
    page.wait_for_function("(document.querySelector('#sl-identity')?.innerText || '').includes('0.61')")
    assert "#2" in page.locator("#sl-identity").inner_text()
    # a take reads at a glance: its thumbnail is the player's poster
    page.get_by_role("tab", name="Storyboard").click()
    page.locator(f".tl-card[data-shot-id='{shots[1]}'] button[data-action=open]").click()
    video = page.locator(f"#sl-takes .sl-take[data-take-id='{take.id}'] video")
    video.wait_for()
    assert video.get_attribute("poster") == f"/studio/asset/{take.thumbnail_asset_id}"
    assert (
        page.evaluate("(url) => fetch(url).then(r => r.headers.get('content-type'))", video.get_attribute("poster"))
        == "image/png"
    )


def test_cards_show_running_times_and_which_are_being_generated(page, studio):
    services, base = studio
    project = services.projects.create("running time", preset="tiny", fps=8)
    first = services.storyboard.add_scene(project.id, caption="dawn")
    second = services.storyboard.add_scene(project.id, caption="dusk")
    a = services.storyboard.add_shot(first.id, "wide, the bay", num_frames=17).id
    b = services.storyboard.add_shot(first.id, "close-up, a rope", num_frames=9).id
    c = services.storyboard.add_shot(
        second.id, "the boat leaves", num_frames=17, transition="dissolve", transition_seconds=0.5
    ).id
    open_board(page, base, project.id)
    labels = page.locator(".tl-scene-label")
    # 17 + 9 frames at 8 fps; then 17 frames less the 4 the dissolve overlaps with the shot before
    assert [labels.nth(i).inner_text() for i in range(2)] == ["Scene 1 · 3.3 s", "Scene 2 · 1.6 s"]
    assert page.locator(".tl-film-text").inner_text() == "Film: 4.9 s · 2 scenes · 3 shots"
    page.locator(f".tl-scene[data-scene-id='{first.id}'] button[data-action=generate_scene]").click()
    status_says(page, "generation queued")
    (job,) = services.jobs.list_jobs(project_id=project.id)
    for shot_id in (a, b):
        note = page.locator(f".tl-card[data-shot-id='{shot_id}'] .tl-busy-note")
        assert note.inner_text() == f"queued (job {job.id})"
    assert page.locator(f".tl-card[data-shot-id='{c}'] .tl-busy-note").count() == 0
    services.jobs.claim_next_job("test-worker")
    services.jobs.report_progress(job.id, 0.2, "denoising step 2/10")
    page.wait_for_function(
        "(id) => (document.querySelector(`.tl-card[data-shot-id='${id}'] .tl-busy-note`)?.innerText || '')"
        ".startsWith('generating')",
        arg=a,
    )
    services.jobs.finish(job.id, {})
    page.wait_for_function("document.querySelectorAll('.tl-busy-note').length === 0")


def test_a_red_refusal_above_the_timeline_goes_once_the_page_says_something_newer(page, studio):
    services, base = studio
    project, scene, shots = project_with_shots(services, "stale status", 2)
    open_board(page, base, project.id)
    commit_card_caption(page, shots[0], "x" * 5000)  # refused: too long
    page.wait_for_function("document.querySelector('.tl-status').classList.contains('tl-refused')")
    page.locator(f".tl-card[data-shot-id='{shots[1]}'] .tl-pick").check()
    page.wait_for_timeout(300)
    page.locator("#sl-generate-selected").click()
    status_says(page, "Generation queued")
    page.wait_for_function("document.querySelector('.tl-status').innerText === ''")


def test_a_reference_is_removed_and_a_character_deleted_only_when_confirmed(browser, studio):
    from tests.core_services.helpers import png_bytes

    services, base = studio
    project = services.projects.create("cast", preset="tiny")
    kai = services.characters.create(project.id, "Kai")
    one = services.characters.add_reference(kai.id, "kai-front.png", png_bytes(64, 64))
    services.characters.add_reference(kai.id, "kai-side.png", png_bytes(64, 64, color=(20, 90, 200)))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    answers, asked = [False], []  # the next confirm() answer; what was asked

    def on_dialog(dialog):
        asked.append(dialog.message)
        dialog.accept() if answers[0] else dialog.dismiss()

    try:
        page = context.new_page()
        page.on("dialog", on_dialog)
        page.goto(f"{base}/?project={project.id}")
        page.get_by_role("tab", name="Characters").click()
        page.locator(f"#sl-characters [data-character-id='{kai.id}'] button[data-action=open_character]").click()
        page.wait_for_selector(f"#sl-references [data-reference-id='{one.id}']")
        # the face models are not installed here: the panel says so for as long as it holds, not once
        assert "face models not found" in page.locator("#sl-references .sl-ref-note").inner_text().lower()
        remove = page.locator(f"#sl-references [data-reference-id='{one.id}'] button[data-action=remove_reference]")
        remove.click()  # asked, and told no: kept
        page.wait_for_timeout(500)
        assert asked == ["Remove kai-front.png for good?"] and len(services.characters.list_references(kai.id)) == 2
        answers[0] = True
        remove.click()
        page.wait_for_function(
            "(id) => !document.querySelector(`#sl-references [data-reference-id='${id}']`)", arg=one.id
        )
        assert [r.original_name for r in services.characters.list_references(kai.id)] == ["kai-side.png"]
        assert "face models not found" in page.locator("#sl-references .sl-ref-note").inner_text().lower()
        # deleting the character asks first, naming it
        answers[0] = False
        page.locator("#sl-char-delete").click()
        page.wait_for_timeout(800)
        assert asked[-1].startswith("Delete Kai for good") and services.characters.list(project.id) != []
        answers[0] = True
        page.locator("#sl-char-delete").click()
        page.wait_for_function("document.querySelector('#sl-status').innerText.includes('Kai deleted')")
        assert services.characters.list(project.id) == []
        # and the preview box says why no preview will come from this worker
        assert "sends no preview frames" in page.locator("#sl-show-preview").inner_text()
    finally:
        context.close()


def test_a_scene_and_the_film_play_from_the_storyboard_in_order_with_their_transitions(page, studio):
    from tests.core_services.helpers import add_take

    services, base = studio
    project = services.projects.create("player", preset="tiny", fps=8)
    first = services.storyboard.add_scene(project.id, caption="dawn")
    second = services.storyboard.add_scene(project.id, caption="dusk")
    a = services.storyboard.add_shot(first.id, "wide, the bay", num_frames=9).id
    b = services.storyboard.add_shot(
        first.id, "a rope", num_frames=9, transition="dissolve", transition_seconds=0.5
    ).id
    c = services.storyboard.add_shot(second.id, "the boat leaves", num_frames=9).id  # no take yet: a grey card
    take_a, take_b = add_take(services, a), add_take(services, b)
    open_board(page, base, project.id)
    page.locator(f".tl-scene[data-scene-id='{first.id}'] button[data-play=scene]").click()
    player = page.locator(".tl-player")
    player.wait_for()
    assert player.get_attribute("data-playlist") == f'[[{a},"cut"],[{b},"dissolve"]]'
    assert player.get_attribute("data-playing") == str(a)
    sources = [v.get_attribute("src") for v in player.locator("video").all()]
    assert f"/studio/asset/{take_a.video_asset_id}" in sources
    assert "Shot #1 (1 of 2)" in player.inner_text()
    # it goes on by itself to the next take, then closes at the scene's end
    page.wait_for_function("(id) => document.querySelector('.tl-player').dataset.playing === String(id)", arg=b)
    assert f"/studio/asset/{take_b.video_asset_id}" in [v.get_attribute("src") for v in player.locator("video").all()]
    player.wait_for(state="hidden")
    # the film: every scene, the shot without a take as a grey card in its place
    page.locator(".tl-film button[data-play=film]").click()
    player.wait_for()
    assert player.get_attribute("data-playlist") == f'[[{a},"cut"],[{b},"dissolve"],[{c},"cut"]]'
    page.locator(".tl-player button[data-player=next]").click()
    page.locator(".tl-player button[data-player=next]").click()
    assert "Shot #3 (3 of 3): no take yet" in player.inner_text()
    page.locator(".tl-player button[data-player=close]").click()
    player.wait_for(state="hidden")


def test_a_job_that_fails_after_it_was_queued_is_a_toast_and_replaces_queued_in_the_status(page, studio):
    services, base = studio
    project, _, _ = project_with_shots(services, "late failure", 1)
    page.goto(f"{base}/?project={project.id}")
    page.get_by_role("tab", name="Export").click()
    page.locator("#sl-export-placeholder input").check()
    page.locator("#sl-export").click()
    status_says(page, "Export queued")
    (job,) = services.jobs.list_jobs(project_id=project.id)
    page.wait_for_timeout(1500)  # the page has seen it queued
    services.jobs.claim_next_job("test-worker", kinds=("export_film",))
    services.jobs.fail(job.id, "ExportError: the disk is full")
    page.get_by_text(f"Export film (job {job.id}) failed: ExportError: the disk is full").first.wait_for()
    status_says(page, f"Export film (job {job.id}) failed")
    assert "Export queued" not in page.locator("#sl-status").inner_text()
