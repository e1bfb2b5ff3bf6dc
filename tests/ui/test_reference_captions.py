"""The character panel's reference captions, without a browser: each caption shows under its picture (escaped),
and "Save caption" calls the service, whose refusal (a caption without the trigger) reaches the page as a message."""

from __future__ import annotations

import io
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from studio.ui.app import build_app
from studio.ui.characters_tab import save_reference_caption
from studio.ui.panels import reference_choices, references_html

HOSTILE = "<img src=x onerror=alert(1)> ${document.title} {{value}}"


def _png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _kai(services):
    project = services.projects.create("Captions", preset="tiny")
    kai = services.characters.create(project.id, "Kai")
    refs = [
        services.characters.add_reference(kai.id, "kai_1.png", _png((0, 128, 128))),
        services.characters.add_reference(kai.id, "kai_2.png", _png((0, 100, 100)), caption="wide shot, <kai> waits"),
    ]
    return project, kai, refs


def _ref(**fields):
    base = dict(id=1, asset_id=10, crop_asset_id=None, flags=(), analyzed_at=None, original_name="a.png", caption="")
    return SimpleNamespace(**{**base, **fields})


def test_captions_show_under_each_reference_escaped():
    html = references_html([_ref(caption=f"close-up shot, <kai> stays still {HOSTILE}"), _ref(id=2, caption="")])
    assert "close-up shot, &lt;kai&gt; stays still" in html
    assert 'data-caption="close-up shot, &lt;kai&gt; stays still &lt;img' in html  # what the caption box loads
    assert "<img src=x" not in html and "${" not in html and "{{" not in html
    assert "no caption: trained on the trigger and description" in html
    assert reference_choices([_ref(original_name="x.png"), _ref(id=7, original_name="")]) == [
        ("1. x.png", 1),
        ("2. reference", 7),
    ]


def test_save_caption_calls_the_service_and_its_refusal_is_a_message(services):
    _, kai, (first, second) = _kai(services)
    message = save_reference_caption(services, kai.id, first.id, "close-up shot, <kai> stays still")
    assert message == "Caption of kai_1.png saved."
    assert [r.caption for r in services.characters.list_references(kai.id)] == [
        "close-up shot, <kai> stays still",
        "wide shot, <kai> waits",
    ]
    assert "cleared" in save_reference_caption(services, kai.id, second.id, "")
    with pytest.raises(gr.Error, match="Pick the reference"):
        save_reference_caption(services, kai.id, None, "close-up shot, <kai> stays still")
    other = services.characters.create(services.projects.list()[0].id, "Mara")
    with pytest.raises(gr.Error, match="no longer this character's"):
        save_reference_caption(services, other.id, first.id, "close-up shot, <mara> stays still")
    assert services.characters.list_references(kai.id)[0].caption == "close-up shot, <kai> stays still"


def test_the_panel_handler_redraws_with_the_caption_or_shows_the_refusal(services):
    project, kai, (first, _) = _kai(services)
    app = build_app(services)
    handler = next(f.fn for f in app.fns.values() if getattr(f.fn, "__name__", "") == "on_save_reference_caption")
    outputs = handler(project.id, kai.id, first.id, "medium shot, <kai> stays still, camera is static")
    references, choice, caption, status = outputs[7], outputs[-3], outputs[-2], outputs[-1]
    assert "medium shot, &lt;kai&gt; stays still, camera is static" in references
    assert choice["value"] == first.id
    assert [c[1] for c in choice["choices"]] == [r.id for r in services.characters.list_references(kai.id)]
    assert caption["value"] == "medium shot, <kai> stays still, camera is static"
    assert status.startswith("Caption of kai_1.png saved. · ")  # stamped with the time it was said
    # the service's refusal, escaped, as a toast; every output is left as it was (no "Error" badge over the form)
    with pytest.warns(UserWarning, match="must name Kai by the trigger &lt;kai&gt;"):
        assert handler(project.id, kai.id, first.id, "medium shot, kai stays still") == gr.skip()
    assert services.characters.list_references(kai.id)[0].caption == "medium shot, <kai> stays still, camera is static"
