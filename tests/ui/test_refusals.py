"""Refused clicks, without a browser: a toast that says what to change, and the page left as it was."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import pytest

from studio.services.errors import ConflictError, ServiceError
from studio.services.job_specs import ExportFilm
from studio.ui.app import build_app
from studio.ui.common import guarded
from tests.core_services.helpers import add_take, png_bytes


def _handler(app, name: str):
    return next(f.fn for f in app.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_a_refusal_is_a_toast_and_leaves_every_output_alone():
    @guarded
    def refused():
        raise ServiceError("the name <Kai> is taken; pick another")

    @guarded
    def broken():
        raise KeyError("oops")

    with pytest.warns(UserWarning, match="the name &lt;Kai&gt; is taken; pick another"):
        assert refused() == gr.skip()  # not gr.Error: that puts an "Error" badge over each output field
    with pytest.warns(
        UserWarning, match="Something went wrong \\(KeyError: &#x27;oops&#x27;\\); the server log has details"
    ):
        assert broken() == gr.skip()


def test_export_is_refused_at_once_when_a_shot_has_no_take(services):
    project = services.projects.create("Film", preset="tiny")
    scene = services.storyboard.add_scene(project.id, "dawn")
    shots = [services.storyboard.add_shot(scene.id, f"shot {i}").id for i in range(3)]
    add_take(services, shots[0])
    on_export = _handler(build_app(services), "on_export")
    with pytest.warns(UserWarning, match="Shots #2, #3 have no take yet: .*tick “Grey card for shots without a take”"):
        assert on_export(project.id, None, 0.0, False) == gr.skip()
    assert services.jobs.list_jobs(project_id=project.id) == []  # nothing queued
    _, message, _ = on_export(project.id, None, 0.0, True)  # grey cards asked for: queued
    assert message.startswith("Export queued (job ")
    assert "Note:" not in message
    services.storyboard.update_shot(shots[0], num_frames=5)  # the card changed after its take was made
    _, message, _ = on_export(project.id, None, 0.0, True)
    assert "Note: #1 will show takes that differ from their cards" in message


def test_a_character_in_a_shot_is_not_deleted_until_taken_out(services):
    project = services.projects.create("Cast", preset="tiny")
    tom = services.characters.create(project.id, "Tom")
    services.characters.add_reference(tom.id, "tom.png", png_bytes(64, 64))
    first = services.storyboard.add_scene(project.id, "one")
    second = services.storyboard.add_scene(project.id, "two")
    services.storyboard.add_shot(first.id, "a road")
    used = services.storyboard.add_shot(second.id, "tom waits", characters=[tom.id])
    with pytest.raises(ConflictError, match="Tom is in shot #2 of the storyboard; take Tom out of it first"):
        services.characters.delete(tom.id)
    on_delete = _handler(build_app(services), "on_delete_character")
    with pytest.warns(UserWarning, match="Tom is in shot #2"):
        assert on_delete(project.id, tom.id) == gr.skip()
    assert services.characters.list_references(tom.id)  # nothing lost
    services.storyboard.update_shot(used.id, characters=[])
    services.characters.delete(tom.id)
    assert services.characters.list(project.id) == []


def test_force_deletes_a_character_in_use_and_its_shots_lose_it(services):
    project = services.projects.create("Cast", preset="tiny")
    tom = services.characters.create(project.id, "Tom")
    scene = services.storyboard.add_scene(project.id, "one")
    shot = services.storyboard.add_shot(scene.id, "tom waits", characters=[tom.id])
    services.characters.delete(tom.id, force=True)
    assert services.storyboard.film_shots(project.id)[0].id == shot.id
    assert services.storyboard.film_shots(project.id)[0].character_ids == ()


def test_a_card_still_captioned_new_shot_is_not_generated(services):
    from studio.services.errors import ValidationError
    from studio.services.generations import NEW_SHOT_CAPTION
    from studio.ui.storyboard import apply_edit

    project = services.projects.create("Cards", preset="tiny")
    scene = services.storyboard.add_scene(project.id, "dawn")
    services.storyboard.add_shot(scene.id, "a lighthouse at dawn")
    apply_edit(services, project.id, {"op": "add_shot", "scene_id": scene.id})
    apply_edit(services, project.id, {"op": "add_shot", "scene_id": scene.id})
    blank = [shot.id for shot in services.storyboard.film_shots(project.id) if shot.caption == NEW_SHOT_CAPTION]
    assert len(blank) == 2
    with pytest.raises(ValidationError, match="shots #2, #3 still have the caption “new shot” a new card starts"):
        apply_edit(services, project.id, {"op": "generate_scene", "scene_id": scene.id})
    with pytest.raises(ValidationError, match="shot #3 still has the caption"):
        apply_edit(services, project.id, {"op": "regenerate", "shot_id": blank[1]})
    assert services.jobs.list_jobs(project_id=project.id) == []
    apply_edit(services, project.id, {"op": "caption", "shot_id": blank[0], "caption": "waves on rocks"})
    apply_edit(services, project.id, {"op": "caption", "shot_id": blank[1], "caption": "a gull"})
    message, _ = apply_edit(services, project.id, {"op": "generate_scene", "scene_id": scene.id})
    assert message.startswith("generation queued")


def test_an_import_without_the_pictures_it_names_says_which_to_add(services):
    on_import = _handler(build_app(services), "on_import")
    yaml = "assets/examples/lighthouse.yaml"
    with pytest.warns(UserWarning, match="lighthouse.yaml names reference pictures that were not added: mara_1.png"):
        assert on_import(None, yaml, None) == gr.skip()
    assert services.projects.list() == []  # nothing imported
    refs = sorted(str(p) for p in Path("assets/examples/refs").glob("*.png"))
    outputs = on_import(None, yaml, refs)
    assert outputs[-3].startswith("Imported:") and [p.name for p in services.projects.list()] == ["The Lighthouse"]


def test_a_storyboard_exported_here_imports_again_without_its_pictures(services, tmp_path):
    from studio.storyboard_file import export_storyboard

    on_import = _handler(build_app(services), "on_import")
    refs = sorted(str(p) for p in Path("assets/examples/refs").glob("*.png"))
    project_id = on_import(None, "assets/examples/lighthouse.yaml", refs)[0]
    mara = services.characters.list(project_id)[0]
    services.characters.add_reference(mara.id, "mara_upload.png", png_bytes(48, 48))  # added on the page later
    text = export_storyboard(services, project_id).replace("Mara climbs", "Mara climbs slowly")
    (tmp_path / "edited.yaml").write_text(text, encoding="utf-8")
    before = [r.id for r in services.characters.list_references(mara.id)]
    outputs = on_import(project_id, str(tmp_path / "edited.yaml"), None)  # the project holds every picture it names
    assert outputs[-3].startswith("Imported:")
    assert [r.id for r in services.characters.list_references(mara.id)] == before  # none added twice
    assert "wide shot, Mara climbs slowly the stairs" in [
        x.caption for x in services.storyboard.film_shots(project_id)
    ]
    # a picture the project does not hold is still asked for, by name, and nothing is imported
    (tmp_path / "more.yaml").write_text(text.replace("mara_upload.png", "mara_new.png"), encoding="utf-8")
    with pytest.warns(UserWarning, match="names reference pictures that were not added: mara_new.png"):
        assert on_import(project_id, str(tmp_path / "more.yaml"), None) == gr.skip()


def test_the_shot_panel_numbers_shots_as_cards_and_closes_when_its_shot_was_binned(services):
    project = services.projects.create("Panel", preset="tiny")
    first = services.storyboard.add_scene(project.id, "one")
    second = services.storyboard.add_scene(project.id, "two")
    services.storyboard.add_shot(first.id, "a road")
    shot = services.storyboard.add_shot(second.id, "a gate")  # film shot #2, whatever its database id
    services.storyboard.add_shot(first.id, "a field")  # ... until this one joins scene one: now #3
    add_take(services, shot.id)
    app = build_app(services)
    on_save = _handler(app, "on_save_shot")
    fields = ("a gate at dusk", [], 5, "", "", "cut", 0.0, None)
    outputs = on_save(project.id, shot.id, [], None, *fields)
    assert outputs[2] == "**Shot #3** (1 take)" and outputs[-1].startswith("Shot saved. · ")
    assert services.storyboard.film_shots(project.id)[2].caption == "a gate at dusk"
    services.storyboard.delete_shot(shot.id)  # from its card, while the panel still shows it
    outputs = on_save(project.id, shot.id, [], None, "edited in the bin", *fields[1:])
    assert outputs[1] is None and outputs[2] == "No shot open: click “Takes” on a card."  # the panel closed,
    assert outputs[3] == {"__type__": "update", "visible": False}  # its fields hidden
    assert outputs[-1].startswith("Not saved: that shot was deleted")
    services.storyboard.restore_shot(shot.id)
    assert services.storyboard.film_shots(project.id)[2].caption == "a gate at dusk"  # untouched in the bin


def test_status_lines_carry_their_time_and_new_fields_empty_once_used(services):
    app = build_app(services)
    outputs = _handler(app, "on_create")("Harbour", "tiny")
    project_id, status, name_box = outputs[0], outputs[-2], outputs[-1]
    assert status.startswith("Project Harbour created. · ") and name_box == ""  # the "new project" box empties
    assert re.fullmatch(r".* · \d\d:\d\d:\d\d", status)  # an old line reads as old once the film-maker moves on
    assert _handler(app, "on_open")(project_id)[-1] == ""  # a line about the project left is cleared
    outputs = _handler(app, "on_create_character")(project_id, "Mara", "red coat")
    assert outputs[-3].startswith("Mara added (trigger &lt;mara&gt;)") and outputs[-2:] == ("", "")
    assert _handler(app, "on_delete_project")(project_id)[-1].startswith("Harbour moved to the bin: ")


def test_the_timer_refreshes_the_open_shots_take_count_and_the_character_cards(services):
    project = services.projects.create("Ticks", preset="tiny")
    scene = services.storyboard.add_scene(project.id, "dawn")
    shot = services.storyboard.add_shot(scene.id, "a road").id
    add_take(services, shot)
    on_tick = _handler(build_app(services), "on_tick")
    first = on_tick(project.id, [], shot, None, True, None)
    assert first[4] == "**Shot #1** (1 take)"
    add_take(services, shot)  # a regeneration finished meanwhile
    services.characters.create(project.id, "Mara")
    services.jobs.enqueue(ExportFilm(), project_id=project.id)  # the list changed
    outputs = on_tick(project.id, [], shot, None, True, first[-1])
    assert outputs[4] == "**Shot #1** (2 takes)" and "Take 2" in outputs[15]
    # not written back, as a click may have changed them meanwhile: the open shot id and a scene being picked
    assert outputs[3] == outputs[14] == {"__type__": "update"}
    assert "Mara" in outputs[-3]  # the character cards


def test_save_shot_sends_only_what_changed_in_the_panel_and_refuses_a_clash(services):
    from studio.ui.shot_panel import shot_form_of

    project = services.projects.create("Merge", preset="tiny")
    scene = services.storyboard.add_scene(project.id, "dawn")
    shot = services.storyboard.add_shot(scene.id, "a gate")
    on_save = _handler(build_app(services), "on_save_shot")
    loaded = shot_form_of(shot)  # what the panel showed when the shot was opened
    services.storyboard.update_shot(shot.id, caption="a gate at dusk")  # then edited on its card
    panel = ("a gate", [], 5, "", "", "cut", 0.0, None)  # the panel: caption untouched, frames 9 -> 5
    outputs = on_save(project.id, shot.id, [], loaded, *panel)
    assert outputs[-1].startswith("Shot saved.")
    saved = services.storyboard.get_shot(shot.id)
    assert (saved.caption, saved.num_frames) == ("a gate at dusk", 5)  # the card's edit kept, the panel's saved
    assert outputs[-2] == shot_form_of(saved)  # the panel reloaded from the shot as it now is
    # both changed the caption: refused, naming the field; nothing written, the panel keeps what was typed
    services.storyboard.update_shot(shot.id, caption="a gate at night")
    with pytest.warns(UserWarning, match="Not saved: the shot&#x27;s caption changed elsewhere"):
        assert (
            on_save(project.id, shot.id, [], outputs[-2], "a red gate", [], 5, "", "", "cut", 0.0, None) == gr.skip()
        )
    assert services.storyboard.get_shot(shot.id).caption == "a gate at night"
