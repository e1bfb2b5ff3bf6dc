"""The timeline component alone, in headless Chromium: literal text, one event per action with ids, drag and drop,
and a caption being typed survives a redraw. The server side records events instead of calling services."""

from __future__ import annotations

import threading

import gradio as gr
import pytest

from studio.ui.timeline import Timeline
from tests.ui.conftest import serve

pytestmark = pytest.mark.browser

NASTY = ["${document.title}", "<img src=x onerror=alert(1)>", "{{value}}"]


def shot(shot_id: int, scene_id: int, caption: str) -> dict:
    return {
        "id": shot_id,
        "scene_id": scene_id,
        "caption": caption,
        "num_frames": 17,
        "seconds": 2.12,
        "characters": ["<b>Mara</b>"],
        "shot_size": "wide",
        "camera_move": None,
        "transition": "cut",
        "transition_seconds": 0.0,
        "take_count": 0,
        "thumb": None,
    }


def model(version: str, captions: list[str], order: list[int] | None = None) -> dict:
    order = order or [1, 2, 3]
    shots = {i: shot(i, 10, captions[i - 1]) for i in (1, 2, 3)}
    return {
        "project_id": 7,
        "version": version,
        "open_shot_id": None,
        "selected": [],
        "scenes": [
            {"id": 10, "caption": "${1+1} scene", "shots": [shots[i] for i in order]},
            {"id": 11, "caption": "", "shots": []},
        ],
        "bin": [],
    }


@pytest.fixture(scope="module")
def timeline_app():
    events: list[dict] = []
    lock = threading.Lock()
    state = {"value": model("v1", NASTY)}

    def timeline_edit(payload: dict) -> dict:
        with lock:
            events.append(dict(payload))
        return {"ok": True, "message": f"applied {payload.get('op')}", "model": state["value"]}

    with gr.Blocks(title="TITLE-LEAK") as app:
        timeline = Timeline(state["value"], timeline_edit=timeline_edit, elem_id="tl")
        push = gr.Button("push", elem_id="push")

        def on_select(evt: gr.EventData):
            with lock:
                events.append({"select": dict(evt._data)})

        def on_push():
            state["value"] = model("v2", ["pushed one", "pushed two", "pushed three"], order=[3, 1, 2])
            return state["value"]

        timeline.select(on_select, None, None, trigger_mode="multiple")
        push.click(on_push, None, timeline)
    url = serve(app)
    yield url, events, state
    app.close()


def wait_events(page, events: list, count: int) -> list:
    page.wait_for_function("1", timeout=100)
    for _ in range(400):
        if len(events) >= count:
            return events
        page.wait_for_timeout(50)
    raise AssertionError(f"expected {count} events, got {events}")


def test_user_strings_show_literally_and_run_nothing(page, timeline_app):
    url, events, _ = timeline_app
    page.goto(url)
    page.wait_for_selector(".tl-card")
    captions = page.eval_on_selector_all(".tl-caption", "nodes => nodes.map(n => n.value)")
    assert captions == NASTY
    assert page.input_value(".tl-scene-caption >> nth=0") == "${1+1} scene"
    assert page.locator(".tl-meta").first.inner_text().startswith("<b>Mara</b>")
    assert page.locator("#tl img").count() == 0  # the <img onerror> caption made no element
    assert "TITLE-LEAK" not in page.locator("#tl").inner_text()
    assert page.watch.dialogs == []
    labels = page.eval_on_selector_all(".tl-index", "nodes => nodes.map(n => n.textContent)")
    assert labels == ["#1", "#2", "#3"]


def test_buttons_send_one_event_with_the_card_ids(page, timeline_app):
    url, events, _ = timeline_app
    page.goto(url)
    page.wait_for_selector(".tl-card")
    events.clear()
    page.locator(".tl-card").nth(1).locator("button[data-action=duplicate]").click()
    page.locator(".tl-card").nth(2).locator("button[data-action=left]").click()
    page.locator(".tl-card").nth(0).locator("button[data-action=delete]").click()
    got = wait_events(page, events, 3)
    assert [(e["op"], e["shot_id"]) for e in got] == [("duplicate", 2), ("move", 3), ("delete", 1)]
    assert got[1]["position"] == 1 and got[1]["to_scene_id"] == 10
    assert all(e["version"] == "v1" and e["project_id"] == 7 for e in got)


def test_caption_saved_once_on_enter_not_per_keystroke(page, timeline_app):
    url, events, _ = timeline_app
    page.goto(url)
    page.wait_for_selector(".tl-card")
    events.clear()
    field = page.locator(".tl-caption").nth(1)
    field.click()
    field.fill("")
    field.press_sequentially("ABCDEFGHIJ")
    page.wait_for_timeout(200)
    assert events == []  # nothing sent while typing
    field.press("Enter")
    got = wait_events(page, events, 1)
    assert got == [
        {
            "op": "caption",
            "shot_id": 2,
            "caption": "ABCDEFGHIJ",
            "was": NASTY[1],  # the caption the card showed: an edit made meanwhile elsewhere is not overwritten
            "version": "v1",
            "project_id": 7,
            "selected": [],
            "open_shot_id": None,
        }
    ]
    page.wait_for_function("document.querySelector('.tl-status').textContent === 'applied caption'")


def test_redraw_keeps_the_caption_being_typed(page, timeline_app):
    url, events, state = timeline_app
    page.goto(url)
    page.wait_for_selector(".tl-card")
    field = page.locator(".tl-card[data-shot-id='2'] .tl-caption")
    field.click()
    field.fill("half typed")
    # Another action redraws the timeline (new order, new captions) while the field has focus.
    page.evaluate("document.querySelector('#push').click()")
    page.wait_for_function("document.querySelector('.tl-root').dataset.version === 'v2'")
    assert page.input_value(".tl-card[data-shot-id='2'] .tl-caption") == "half typed"
    assert page.input_value(".tl-card[data-shot-id='3'] .tl-caption") == "pushed three"
    order = page.eval_on_selector_all(".tl-card", "nodes => nodes.map(n => Number(n.dataset.shotId))")
    assert order == [3, 1, 2]
    state["value"] = model("v1", NASTY)


def test_drag_and_drop_sends_a_move_to_the_drop_place(page, timeline_app):
    url, events, state = timeline_app
    state["value"] = model("v1", NASTY)
    page.goto(url)
    page.wait_for_selector(".tl-card")
    events.clear()
    source = page.locator(".tl-card[data-shot-id='1'] .tl-meta")
    target = page.locator(".tl-card[data-shot-id='3']")
    box = target.bounding_box()
    source.drag_to(target, target_position={"x": box["width"] - 5, "y": box["height"] / 2})
    got = wait_events(page, events, 1)
    assert got[0]["op"] == "move" and got[0]["shot_id"] == 1
    assert got[0]["to_scene_id"] == 10 and got[0]["position"] == 2  # after shot 3, among the other two
    events.clear()
    empty_scene = page.locator(".tl-scene").nth(1).locator(".tl-shots")
    page.locator(".tl-card[data-shot-id='2'] .tl-meta").drag_to(empty_scene)
    got = wait_events(page, events, 1)
    assert (got[0]["shot_id"], got[0]["to_scene_id"], got[0]["position"]) == (2, 11, 0)


def test_dragging_inside_a_caption_selects_text_and_moves_nothing(page, timeline_app):
    url, events, state = timeline_app
    state["value"] = model("v1", ["a long caption to select", "two", "three"])
    page.goto(url)
    page.wait_for_selector(".tl-card")
    events.clear()
    box = page.locator(".tl-card[data-shot-id='1'] .tl-caption").bounding_box()
    page.mouse.move(box["x"] + 6, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 6, box["y"] + 10, steps=8)
    page.mouse.move(page.locator(".tl-card[data-shot-id='3']").bounding_box()["x"] + 20, box["y"] + 10, steps=8)
    page.mouse.up()
    page.wait_for_timeout(500)
    assert [e for e in events if e.get("op") == "move"] == []
    selected = page.eval_on_selector(
        ".tl-card[data-shot-id='1'] .tl-caption", "n => n.selectionEnd - n.selectionStart"
    )
    assert selected > 0
    state["value"] = model("v1", NASTY)
