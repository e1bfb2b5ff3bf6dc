"""The card of a shot the model cannot film as captioned shows the model's note under its caption (ⓘ), literally;
the other cards show none, and the note goes when a redraw brings none."""

from __future__ import annotations

import gradio as gr
import pytest

from studio.ui.timeline import Timeline
from tests.ui.conftest import serve
from tests.ui.test_timeline_component import model

pytestmark = pytest.mark.browser

NOTE = "camera moves: the demo model draws the background still in most shots <b>(5 of 40)</b>"


def test_a_card_shows_its_shots_note_and_drops_it_on_redraw(page):
    first = model("v1", ["wide shot, tom moves up, camera pans left", "medium shot, mara stays still", "c"])
    first["scenes"][0]["shots"][0]["limits"] = NOTE
    second = model("v2", ["wide shot, tom moves up, camera is static", "medium shot, mara stays still", "c"])

    def timeline_edit(payload: dict) -> dict:
        return {"ok": True, "model": first}

    with gr.Blocks() as app:
        timeline = Timeline(first, timeline_edit=timeline_edit, elem_id="tl")
        push = gr.Button("push", elem_id="push")
        push.click(lambda: second, None, timeline)
    url = serve(app)
    try:
        page.goto(url)
        page.wait_for_selector(".tl-card")
        notes = page.eval_on_selector_all(".tl-card .tl-limits", "nodes => nodes.map(n => n.textContent)")
        assert notes == ["\u24d8 " + NOTE, "", ""]
        assert page.locator("#tl b").count() == 0  # the note is text, never markup
        page.click("#push")
        page.wait_for_function("document.querySelector('.tl-caption').value.endsWith('camera is static')")
        notes = page.eval_on_selector_all(".tl-card .tl-limits", "nodes => nodes.map(n => n.textContent)")
        assert notes == ["", "", ""]
    finally:
        app.close()
