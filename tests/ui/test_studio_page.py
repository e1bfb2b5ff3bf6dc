"""The real studio page in headless Chromium on SQLite services: projects, characters, storyboard edits, errors."""

from __future__ import annotations

import pytest

from studio.ui.latency import card_order
from tests.ui.conftest import screenshot

pytestmark = pytest.mark.browser

NASTY = ["${document.title}", "<img src=x onerror=alert(1)>", "{{value}}"]


def make_project(services, name: str, shots: list[str]) -> tuple[int, int, list[int]]:
    project = services.projects.create(name, preset="tiny")
    scene = services.storyboard.add_scene(project.id, caption="a lighthouse")
    ids = [services.storyboard.add_shot(scene.id, caption).id for caption in shots]
    return project.id, scene.id, ids


def open_storyboard(page, base: str, project_id: int) -> None:
    page.goto(f"{base}/?project={project_id}")
    page.get_by_role("tab", name="Storyboard").click()
    page.wait_for_selector(".tl-card")


def wait_order(page, expected: list[int]) -> None:
    page.wait_for_function(
        "(want) => JSON.stringify(Array.from(document.querySelectorAll('.tl-card'))"
        ".map(n => Number(n.dataset.shotId))) === JSON.stringify(want)",
        arg=expected,
    )


def live_order(services, scene_id: int) -> list[int]:
    return [shot.id for shot in services.storyboard.get_scene(scene_id).shots]


def test_project_and_character_names_show_literally(page, studio):
    services, base = studio
    page.goto(base)
    page.get_by_role("tab", name="Projects").click()
    page.locator("#sl-new-project-name textarea, #sl-new-project-name input").first.fill(NASTY[1])
    page.locator("#sl-create-project").click()
    page.wait_for_function("document.querySelector('#sl-project-title').innerText.includes('onerror')")
    assert NASTY[1] in page.locator("#sl-project-title").inner_text()
    project = services.projects.get_by_name(NASTY[1])
    page.get_by_role("tab", name="Characters").click()
    for name in (NASTY[0], NASTY[2]):
        page.locator("#sl-char-new-name textarea, #sl-char-new-name input").first.fill(name)
        page.locator("#sl-char-create").click()
        page.wait_for_function("(n) => document.querySelector('#sl-characters').innerText.includes(n)", arg=name)
    gallery = page.locator("#sl-characters").inner_text()
    assert NASTY[0] in gallery and NASTY[2] in gallery
    assert [c.name for c in services.characters.list(project.id)] == [NASTY[0], NASTY[2]]
    assert page.locator("#sl-project-title img, #sl-characters img").count() == 0
    assert page.watch.dialogs == [] and page.watch.errors == []


def test_service_refusal_is_a_readable_message_and_the_page_stays_usable(page, studio):
    services, base = studio
    project_id, _, _ = make_project(services, "refusals", ["one"])
    services.characters.create(project_id, "Mara")
    page.goto(f"{base}/?project={project_id}")
    page.get_by_role("tab", name="Characters").click()
    page.locator("#sl-char-new-name textarea, #sl-char-new-name input").first.fill("Mara")
    page.locator("#sl-char-create").click()
    toast = page.get_by_text("already", exact=False).first
    toast.wait_for()
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and 'File "' not in body
    # a toast, and the form left as it was: no "Error" badge over the fields the message asks to change
    page.wait_for_timeout(500)
    assert page.get_by_text("Error", exact=True).count() == 0
    assert page.locator("#sl-char-new-name textarea, #sl-char-new-name input").first.input_value() == "Mara"
    # A refusal that quotes a hostile name shows it as text.
    services.characters.create(project_id, NASTY[1])
    page.locator("#sl-char-new-name textarea, #sl-char-new-name input").first.fill(NASTY[1])
    page.locator("#sl-char-create").click()
    page.get_by_text("onerror", exact=False).first.wait_for()
    page.wait_for_timeout(300)
    assert page.watch.dialogs == []
    assert page.locator("img[src='x']").count() == 0
    page.locator("#sl-char-new-name textarea, #sl-char-new-name input").first.fill("Theo")
    page.locator("#sl-char-create").click()
    page.wait_for_function("document.querySelector('#sl-characters').innerText.includes('Theo')")
    assert sorted(c.name for c in services.characters.list(project_id)) == sorted(["Mara", "Theo", NASTY[1]])


def test_timeline_edits_reach_the_services(page, studio):
    services, base = studio
    project_id, scene_id, ids = make_project(services, "edits", ["first", "second", "third"])
    open_storyboard(page, base, project_id)
    # Caption typed in place, saved once on Enter; hostile text stays text.
    field = page.locator(f".tl-card[data-shot-id='{ids[1]}'] .tl-caption")
    field.fill(NASTY[0])
    field.press("Enter")
    page.wait_for_function(
        f"document.querySelector(\".tl-card[data-shot-id='{ids[1]}']\").dataset.savedCaption"
        f" === '$' + '{{document.title}}'"
    )
    assert services.storyboard.get_shot(ids[1]).caption == NASTY[0]
    # Move buttons, then drag and drop.
    page.locator(f".tl-card[data-shot-id='{ids[0]}'] button[data-action=right]").click()
    wait_order(page, [ids[1], ids[0], ids[2]])
    assert live_order(services, scene_id) == [ids[1], ids[0], ids[2]]
    target = page.locator(f".tl-card[data-shot-id='{ids[1]}']")
    page.locator(f".tl-card[data-shot-id='{ids[2]}'] .tl-meta").drag_to(target, target_position={"x": 5, "y": 40})
    wait_order(page, [ids[2], ids[1], ids[0]])
    assert live_order(services, scene_id) == [ids[2], ids[1], ids[0]]
    # Delete to the bin, restore, duplicate.
    page.locator(f".tl-card[data-shot-id='{ids[1]}'] button[data-action=delete]").click()
    wait_order(page, [ids[2], ids[0]])
    assert page.locator(".tl-bin").inner_text().count("Restore") == 1
    page.locator(".tl-bin button[data-action=restore]").click()
    page.wait_for_function("document.querySelectorAll('.tl-card').length === 3")
    assert sorted(live_order(services, scene_id)) == sorted(ids)
    page.locator(f".tl-card[data-shot-id='{ids[0]}'] button[data-action=duplicate]").click()
    page.wait_for_function("document.querySelectorAll('.tl-card').length === 4")
    shots = services.storyboard.get_scene(scene_id).shots
    assert len(shots) == 4 and [s.caption for s in shots].count("first") == 2
    assert page.watch.dialogs == [] and page.watch.errors == []
    screenshot(page, "storyboard-edits")


def test_a_move_against_a_stale_page_is_refused_and_the_page_redraws(browser, studio):
    services, base = studio
    project_id, scene_id, ids = make_project(services, "stale", ["a", "b", "c"])
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        first, second = context.new_page(), context.new_page()
        open_storyboard(first, base, project_id)
        open_storyboard(second, base, project_id)
        second.locator(f".tl-card[data-shot-id='{ids[2]}'] button[data-action=left]").click()
        wait_order(second, [ids[0], ids[2], ids[1]])
        # The first tab still shows a, b, c; its move is refused and it redraws the current order.
        first.locator(f".tl-card[data-shot-id='{ids[0]}'] button[data-action=right]").click()
        wait_order(first, [ids[0], ids[2], ids[1]])
        assert "changed since the page drew it" in first.locator("#sl-timeline .tl-status").inner_text()
        assert live_order(services, scene_id) == [ids[0], ids[2], ids[1]]
    finally:
        context.close()


def test_quick_actions_apply_in_order_without_losing_a_shot(page, studio):
    services, base = studio
    project_id, scene_id, ids = make_project(services, "quick", [f"shot {i}" for i in range(6)])
    open_storyboard(page, base, project_id)
    # Five quick clicks on the same shot's "later" button: each applies against the state the previous left.
    for _ in range(5):
        page.locator(f".tl-card[data-shot-id='{ids[0]}'] button[data-action=right]").click()
        page.wait_for_timeout(10)
    # Each click applied or was refused as stale; none may lose or duplicate a shot, and the page ends on the truth.
    for _ in range(60):
        page.wait_for_timeout(250)
        order = live_order(services, scene_id)
        if card_order(page) == order:
            break
    assert sorted(order) == sorted(ids)
    assert card_order(page) == order
